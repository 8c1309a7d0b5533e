"""Ctrl-C / SIGTERM on a real ``tracker run`` process: outputs finalised; a second one exits now."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tracker.io.source import mp4_problem
from tracker.runtime.signals import exit_code, graceful_signals

ROOT = Path(__file__).parents[1]
STUBS = Path(__file__).with_name("stubs.py")
ENDLESS = "lavfi:testsrc2=size=160x120:rate=30"  # no duration: runs until stopped

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start(tmp: Path, *, slow_close_s: float = 0.0) -> tuple[subprocess.Popen[str], Path, Path]:
    out, jsonl = tmp / "out.mp4", tmp / "out.jsonl"
    env = {**os.environ, "STUB_SLOW_CLOSE": str(slow_close_s)}
    proc = subprocess.Popen(
        [sys.executable, str(STUBS), "run", "--source", ENDLESS, "--out", str(out),
         "--jsonl", str(jsonl)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, out, jsonl


def wait_for_lines(proc: subprocess.Popen[str], path: Path, n: int, limit_s: float = 60) -> None:
    """Block until ``path`` has ``n`` lines (the run is writing), failing if the process died."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tracker exited early ({proc.returncode}): {proc.stderr.read()}")
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} lines in {path} after {limit_s} s")


def video_stage_count(stderr: str) -> int:
    """Frames the video sink received, from the summary table's stage rows."""
    found = re.findall(r"^\s*video\s+(\d+)\s+[\d.]+\s+[\d.]+\s*$", stderr, re.M)
    assert found, stderr
    return int(found[-1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_writing_finalises_the_outputs(tmp_path: Path, sig: signal.Signals) -> None:
    proc, out, jsonl = start(tmp_path)
    wait_for_lines(proc, jsonl, 10)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("tracker did not stop after one signal")
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert ("terminated" if sig == signal.SIGTERM else "interrupted") in err
    # the MP4 is finalised (index written) and every frame that reached the encoder is in it
    assert mp4_problem(out) is None
    with av.open(str(out)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert decoded == video_stage_count(err) > 0
    # the JSONL ends on a complete line, frames in order from 0
    text = jsonl.read_text()
    assert text.endswith("\n")
    frames = [json.loads(line)["frame"] for line in text.splitlines()]
    assert frames == list(range(len(frames))) and len(frames) >= 10
    # a clean stop drains every branch: the video and the JSONL end on the same frame
    assert decoded == len(frames)


def test_second_ctrl_c_exits_immediately(tmp_path: Path) -> None:
    proc, _, jsonl = start(tmp_path, slow_close_s=120)  # finalising would take two minutes
    wait_for_lines(proc, jsonl, 5)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # shutdown under way: the video sink is closing
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)  # far less than the close would take
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a second Ctrl-C did not exit")
    assert proc.returncode == 130
    assert "again" in err and "Traceback" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_exit_codes_follow_the_shell_convention(sig: signal.Signals, code: int) -> None:
    assert exit_code(sig) == code


def test_first_signal_raises_keyboard_interrupt_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), graceful_signals() as state:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler long before this ends
    assert state.first == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
