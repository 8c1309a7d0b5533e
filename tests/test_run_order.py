"""A run checks everything it can before it opens (truncates) an output, opens a live source
only once the models are loaded, and maps a signal during start-up to its exit code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from stubs import stub_tracker
from synthetic import make_clip

from tracker.api import Tracker, TrackerOptions, assembly
from tracker.cli import main
from tracker.cli.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "tests" / "stubs.py"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("order") / "clip.mp4", n_frames=8, width=96,
                     height=64)


def test_a_busy_websocket_port_leaves_existing_outputs_alone(tmp_path: Path, clip: Path) -> None:
    out, jsonl = tmp_path / "keep.mp4", tmp_path / "keep.jsonl"
    out.write_bytes(b"an earlier result")
    jsonl.write_text("an earlier result\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl),
                     "--ws", f"127.0.0.1:{port}"], tracker_factory=stub_tracker)
    assert code == ExitCode.OUTPUT
    assert out.read_bytes() == b"an earlier result"
    assert jsonl.read_text() == "an earlier result\n"


def test_an_unavailable_preview_leaves_existing_outputs_alone(tmp_path: Path, clip: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    jsonl = tmp_path / "keep.jsonl"
    jsonl.write_text("an earlier result\n")
    code = main(["run", str(clip), "--jsonl", str(jsonl), "--show"], tracker_factory=stub_tracker)
    assert code == ExitCode.OUTPUT
    assert jsonl.read_text() == "an earlier result\n"


def test_an_output_hard_linked_to_the_input_is_refused(tmp_path: Path, clip: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "same.mp4"
    os.link(clip, link)
    before = clip.read_bytes()
    code = main(["run", str(clip), "--out", str(link)], tracker_factory=stub_tracker)
    assert code == ExitCode.USAGE and "overwrite the input" in capsys.readouterr().err
    assert clip.read_bytes() == before


@pytest.mark.parametrize("live, order", [(False, ["open", "models"]),
                                         (True, ["models", "open"])])
def test_a_live_source_opens_after_the_models(clip: Path, monkeypatch: pytest.MonkeyPatch,
                                              live: bool, order: list[str]) -> None:
    events: list[str] = []
    real_open = assembly.open_video

    def open_video(cfg: Any) -> Any:
        events.append("open")
        return real_open(cfg)

    class Recording(Tracker):
        def _track_stage(self, cfg: Any, *, temporal: bool = True) -> Any:
            events.append("models")
            return super()._track_stage(cfg, temporal=temporal)

    monkeypatch.setattr(assembly, "open_video", open_video)
    base = stub_tracker(TrackerOptions())
    t = Recording(base.options, detector=base._detector, landmarker=base._landmarker)
    source = "lavfi:testsrc2=size=96x64:rate=30:duration=0.2" if live else str(clip)
    t.run(source, outputs=[])
    assert events == order


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_the_models_load_gives_its_exit_code(tmp_path: Path, sig: signal.Signals,
                                                            code: int, word: str) -> None:
    env = {**os.environ, "STUB_SLOW_LOAD": "30"}
    proc = subprocess.Popen([sys.executable, str(STUBS), "run", "--source",
                             "lavfi:testsrc2=size=96x64:rate=30", "--jsonl",
                             str(tmp_path / "x.jsonl")],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "loading models" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"exited early: {proc.returncode}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert f"error: {word}" in err and "Traceback" not in err
