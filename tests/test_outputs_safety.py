"""Outputs survive crashes: SIGKILL, a full disk and a closed stdout leave usable files."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tracker.errors import OutputError
from tracker.io.source import mp4_problem
from tracker.outputs import encode
from tracker.outputs.encode import EncodeError, VideoWriter
from tracker.outputs.sinks import JsonlSink
from tracker.runtime.pipeline import StopRequested
from tracker.types import Frame, TrackedFrame

ROOT = Path(__file__).parents[1]
STUBS = Path(__file__).with_name("stubs.py")
ENDLESS = "lavfi:testsrc2=size=160x120:rate=30"  # no duration: runs until stopped
LONG = "lavfi:testsrc2=size=160x120:rate=30:duration=60"
TB = Fraction(1, 30)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")

# Child process: writes frames with VideoWriter, printing how many are written after each.
WRITER_CHILD = """
import sys, time
import numpy as np
from fractions import Fraction
from tracker.outputs.encode import VideoWriter
w = VideoWriter(sys.argv[1], 64, 48, 30.0, time_base=Fraction(1, 30))
for i in range(1000):
    image = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
    image[: i % 48] = 255 - image[0, 0]
    w.write(image, i / 30)
    print(i + 1, flush=True)
    time.sleep(0.002)
"""


def decode_times(path: Path) -> list[Fraction]:
    """Pts (seconds) of every frame PyAV decodes; raises if the file cannot be read to its end."""
    with av.open(str(path)) as c:
        tb = Fraction(c.streams.video[0].time_base)
        return [f.pts * tb for f in c.decode(video=0)]


def boxes(path: Path) -> list[tuple[bytes, int]]:
    """(type, size) of the top-level MP4 boxes; asserts none runs past the end of the file."""
    data, pos, found = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        assert size >= 8 and pos + size <= len(data), f"box {kind!r} at {pos} is cut off"
        found.append((kind, size))
        pos += size
    assert pos == len(data)
    return found


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(n)]


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


# --- SIGKILL ---------------------------------------------------------------------------------


def test_a_clean_file_is_fragmented_with_the_index_first(tmp_path: Path) -> None:
    out = tmp_path / "clean.mp4"
    with VideoWriter(str(out), 64, 48, 30.0, time_base=TB) as writer:
        for i, image in enumerate(frames(60)):
            writer.write(image, i / 30)
    kinds = [k for k, _ in boxes(out)]
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds[-1] == b"mfra"  # index first, seek table
    assert kinds[2:-1] == [b"moof", b"mdat"] * (len(kinds[2:-1]) // 2)
    assert len(kinds[2:-1]) // 2 >= 60 / 30 / encode.FRAGMENT_S  # a fragment per FRAGMENT_S
    assert decode_times(out) == [i * TB for i in range(60)]
    with av.open(str(out)) as c:  # seekable: a seek lands at or before the asked time
        c.seek(int(1.5 * av.time_base))
        assert next(c.decode(video=0)).time <= 1.5


def test_only_whole_fragments_reach_the_disk(tmp_path: Path) -> None:
    clean = tmp_path / "clean.mp4"
    with VideoWriter(str(clean), 64, 48, 30.0, time_base=TB) as writer:
        for i, image in enumerate(frames(60)):
            writer.write(image, i / 30)
    data = clean.read_bytes()
    copy = tmp_path / "copy.mp4"
    file = encode._FragmentFile(str(copy), sync=False)
    file.open()
    sizes = set()
    for start in range(0, len(data), 1000):  # as the muxer hands them over, in pieces
        file.write(data[start:start + 1000])
        found = boxes(copy)  # never a box cut off
        assert not found or found[-1][0] != b"moof"  # never a moof without its mdat
        sizes.add(copy.stat().st_size)
    file.close()
    assert copy.read_bytes() == data and len(sizes) > 4


def test_sigkill_keeps_every_whole_fragment(tmp_path: Path) -> None:
    out = tmp_path / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line) >= 90:  # 3 s of video written
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert mp4_problem(out) is None
    kinds = [k for k, _ in boxes(out)]
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds[-1] == b"mdat"
    times = decode_times(out)  # decodes to the end without an error
    # all but the fragment in progress (0.5 s) and the encoder's few frames of delay
    assert len(times) >= 90 - 15 - 20
    assert times == [i * TB for i in range(len(times))]


def test_sigkill_of_tracker_run_keeps_the_video(tmp_path: Path) -> None:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(STUBS), "run", "--source", ENDLESS, "--out", str(out),
         "--jsonl", str(jsonl)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 150):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no 150 JSONL lines in 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        stop(proc)
    assert mp4_problem(out) is None
    times = decode_times(out)
    # 150 tracked; the video lags by at most its two queues (64), a fragment and the encoder
    assert len(times) >= 30
    assert times == [i * TB for i in range(len(times))]
    text = jsonl.read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["frame"] for line in text.splitlines()][:60] == list(range(60))


# --- full disk -------------------------------------------------------------------------------


def fill_up_at(limit: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``os.write`` of the encoder behave like a disk that is full after ``limit`` bytes:
    a short write up to the limit, then ENOSPC. Returns [bytes written]."""
    real = os.write
    written = [0]

    def write(fd: int, data: Any) -> int:
        room = limit - written[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:room]))
        written[0] += n
        return n

    monkeypatch.setattr(encode.os, "write", write)
    return written


class FillingFile:
    """A binary file on a disk that is full after ``limit`` bytes (short write, then ENOSPC)."""

    def __init__(self, file: Any, limit: int) -> None:
        self.file, self.room = file, limit

    def write(self, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.file.write(data[: self.room])
        self.room -= n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def test_full_disk_keeps_a_playable_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = frames(60)
    full = tmp_path / "full.mp4"
    with VideoWriter(str(full), 64, 48, 30.0, time_base=TB) as writer:
        for i, image in enumerate(images):
            writer.write(image, i / 30)
    limit = full.stat().st_size // 2
    out = tmp_path / "half.mp4"
    written = fill_up_at(limit, monkeypatch)
    writer = VideoWriter(str(out), 64, 48, 30.0, time_base=TB)
    with pytest.raises(EncodeError) as caught:
        for i, image in enumerate(images):
            writer.write(image, i / 30)
    writer.close()  # releases everything; the error was already raised
    assert str(caught.value) == f"cannot write {out}: No space left on device"
    assert written[0] == limit  # the disk really filled up
    assert out.stat().st_size < limit  # cut back to the last whole fragment
    assert mp4_problem(out) is None and boxes(out)[-1][0] == b"mdat"
    times = decode_times(out)
    assert 10 <= len(times) < 60
    assert times == [i * TB for i in range(len(times))]


def tracked(index: int) -> TrackedFrame:
    return TrackedFrame(Frame(index, index / 30, np.zeros((4, 4, 3), np.uint8)), ())


def test_full_disk_leaves_the_jsonl_on_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(str(path))
    line = len(json.dumps({"frame": 0, "time": 0.0, "faces": []}, separators=(",", ":"))) + 1
    sink._file = FillingFile(sink._file, 5 * line + line // 2)
    with pytest.raises(OutputError, match=f"^cannot write {path}: No space left on device$"):
        for i in range(10):
            sink.process(tracked(i))
    sink.close()
    text = path.read_text()
    assert text.endswith("\n")
    assert [json.loads(row)["frame"] for row in text.splitlines()] == list(range(5))


def run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    """``tracker ARGS`` (stub models) in a process that cannot write files beyond ``limit``
    bytes: writes then fail with EFBIG, as on a full disk."""
    import resource

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(STUBS), "run", *args], cwd=ROOT, env=env,
                          preexec_fn=limit_files, capture_output=True, text=True, timeout=120)


def assert_one_line_output_error(run: subprocess.CompletedProcess[str], path: Path) -> None:
    assert run.returncode == 6, run.stderr
    assert "Traceback" not in run.stderr
    assert "Errno" not in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].endswith(f"cannot write {path}: File too large")


def test_tracker_run_on_a_full_disk_keeps_a_playable_video(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run = run_with_file_size_limit(["--source", LONG, "--out", str(out)], 150_000)
    assert_one_line_output_error(run, out)
    assert mp4_problem(out) is None and boxes(out)[-1][0] == b"mdat"
    times = decode_times(out)
    assert len(times) >= 15
    assert times == [i * TB for i in range(len(times))]


def test_tracker_run_on_a_full_disk_ends_the_jsonl_on_a_whole_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "out.jsonl"
    run = run_with_file_size_limit(["--source", LONG, "--jsonl", str(jsonl)], 50_000)
    assert_one_line_output_error(run, jsonl)
    text = jsonl.read_text()
    assert text.endswith("\n") and len(text) <= 50_000
    frames_written = [json.loads(line)["frame"] for line in text.splitlines()]
    assert frames_written == list(range(len(frames_written))) and len(frames_written) >= 5


# --- closed stdout ---------------------------------------------------------------------------


class ClosedPipe:
    """A stdout whose reader has gone away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_closed_stdout_stops_the_jsonl_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    sink = JsonlSink("-")
    with pytest.raises(StopRequested):
        sink.process(tracked(0))
    sink.close()  # no second error


def test_jsonl_to_a_closed_pipe_ends_the_run_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(STUBS), "run", "--source", ENDLESS, "--jsonl", "-",
         "--max-frames", "300"],  # ~400 KB: more than the pipe holds
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        head = [json.loads(proc.stdout.readline()) for _ in range(3)]
        proc.stdout.close()  # `| head -3` exits
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert [r["frame"] for r in head] == [0, 1, 2]
    assert proc.returncode == 0, err
    for problem in ("Traceback", "Broken pipe", "Exception ignored", "error:"):
        assert problem not in err
