"""Several streams in one run: per-stream outputs and ids, cross-stream batching of the landmark
model, failures that end one stream only, output templates, ``[[sources]]`` configs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stubs import StubDetector, StubLandmarker, stub_tracker

from tracker.api import Tracker, TrackerOptions, assembly, run_many
from tracker.cli.app import ExitCode, main
from tracker.config.schema import ConfigError, load_config
from tracker.config.sources import SourceEntry, stream_names
from tracker.errors import SourceError, UsageError
from tracker.tracking.batcher import SharedLandmarker
from tracker.types import Box

A = "lavfi:testsrc2=size=64x48:rate=30:duration=0.4"  # 12 frames
B = "lavfi:testsrc2=size=80x60:rate=30:duration=0.8"  # 24 frames


def cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(list(args), tracker_factory=stub_tracker)
    return code, capsys.readouterr().err


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- outputs and ids -------------------------------------------------------------------------


def test_two_sources_write_their_own_jsonl(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(["run", "--source", A, "--source", B, "--jsonl",
                     str(tmp_path / "lm_{stream}.jsonl")], capsys)
    assert code == 0, err
    a, b = records(tmp_path / "lm_0.jsonl"), records(tmp_path / "lm_1.jsonl")
    assert [r["frame"] for r in a] == list(range(12))
    assert [r["frame"] for r in b] == list(range(24))
    # each stream has its own ids (both start at 0) and its own frame size
    assert {f["id"] for r in a for f in r["faces"]} == {0}
    assert {f["id"] for r in b for f in r["faces"]} == {0}
    assert a[0]["faces"][0]["box"] == [16.0, 12.0, 48.0, 36.0]
    assert b[0]["faces"][0]["box"] == [20.0, 15.0, 60.0, 45.0]
    assert "2 streams, finished" in err and "stream0" in err and "stream1" in err


def test_one_source_keeps_the_single_stream_summary(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(["run", "--source", A, "--jsonl", str(tmp_path / "x.jsonl")], capsys)
    assert code == 0 and "tracker run: finished" in err and "streams" not in err
    assert len(records(tmp_path / "x.jsonl")) == 12


# --- batching --------------------------------------------------------------------------------


class CountingLandmarker(StubLandmarker):
    """Records the frame sizes (one per stream here) of the requests in each call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []

    def predict_many(self, requests: Sequence[tuple[np.ndarray, Sequence[Box], Any]]
                     ) -> list[list[Any]]:
        self.calls.append([img.shape[:2] for img, _, _ in requests])
        return [self.predict(img, boxes, angles) for img, boxes, angles in requests]


class SlowCountingLandmarker(CountingLandmarker):
    """A model call takes 1 ms, so each stream runs for a while and both overlap."""

    def predict_many(self, requests: Sequence[tuple[np.ndarray, Sequence[Box], Any]]
                     ) -> list[list[Any]]:
        time.sleep(0.001)
        return super().predict_many(requests)


def test_the_shared_model_batches_faces_of_both_streams(tmp_path: Path) -> None:
    lm = SlowCountingLandmarker()
    cfg = load_config(None).with_overrides({"pipeline.batch_wait_ms": 50.0})
    tracker = Tracker(TrackerOptions(cfg), detector=StubDetector(), landmarker=lm)
    a, b = (f"lavfi:testsrc2=size={s}:rate=30:duration=2" for s in ("64x48", "80x60"))
    report = run_many(tracker, [a, b], [str(tmp_path / "{name}.jsonl")])
    assert [s.name for s in report.streams] == ["stream0", "stream1"]
    assert not report.failed
    mixed = [c for c in lm.calls if len(set(c)) == 2]
    assert len(mixed) >= 20, lm.calls  # of 60 frames each
    assert report.batching is not None and report.batching.streams_per_call > 1.2
    assert sum(len(c) for c in lm.calls) == report.batching.requests
    assert len(records(tmp_path / "stream1.jsonl")) == 60


def test_without_batching_each_stream_calls_alone(tmp_path: Path) -> None:
    lm = CountingLandmarker()
    cfg = load_config(None).with_overrides({"pipeline.batch_streams": False})
    tracker = Tracker(TrackerOptions(cfg), detector=StubDetector(), landmarker=lm)
    report = run_many(tracker, [A, B], [str(tmp_path / "{stream}.jsonl")])
    assert report.batching is None and not report.failed
    assert lm.calls == []  # predict, one stream at a time, never predict_many


def _in_thread(fn: Any) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_batch_waits_for_streams_mid_frame_only() -> None:
    lm = CountingLandmarker()
    shared = SharedLandmarker(lm, wait_s=5.0)
    a, b, idle = shared.client("a"), shared.client("b"), shared.client("idle")
    img_a, img_b = np.zeros((40, 40, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)
    box = [Box(10, 10, 30, 30)]
    a.begin()
    b.begin()
    got: dict[str, Any] = {}
    t = _in_thread(lambda: got.setdefault("a", a.predict(img_a, box)))
    time.sleep(0.05)
    assert not lm.calls  # a waits for b, which is mid-frame
    start = time.monotonic()
    got["b"] = b.predict(img_b, box)  # now every stream mid-frame has a request in
    t.join(2.0)
    assert time.monotonic() - start < 2.0 and lm.calls == [[(40, 40), (50, 50)]]
    assert len(got["a"]) == len(got["b"]) == 1
    b.end()  # idle never began a frame and b is done: a alone is not kept waiting
    start = time.monotonic()
    a.predict(img_a, box)
    assert time.monotonic() - start < 1.0 and lm.calls[-1] == [(40, 40)]
    del idle


def test_batch_runs_after_the_deadline_without_a_slow_stream() -> None:
    lm = CountingLandmarker()
    shared = SharedLandmarker(lm, wait_s=0.05)
    fast, slow = shared.client("fast"), shared.client("slow")
    fast.begin()
    slow.begin()  # mid-frame, but never asks
    start = time.monotonic()
    fast.predict(np.zeros((40, 40, 3), np.uint8), [Box(10, 10, 30, 30)])
    assert 0.04 <= time.monotonic() - start < 1.0
    assert shared.stats.calls == 1 and shared.stats.full == 0


class PickyLandmarker(CountingLandmarker):
    def predict(self, image: np.ndarray, boxes: Sequence[Box], angles: Any = None) -> Any:
        if image.shape[0] == 13:
            raise ValueError("bad crop")
        return super().predict(image, boxes, angles)


def test_a_failing_request_fails_only_its_stream() -> None:
    shared = SharedLandmarker(PickyLandmarker(), wait_s=5.0)
    good, bad = shared.client("good"), shared.client("bad")
    good.begin()
    bad.begin()
    errors: list[BaseException] = []

    def ask_bad() -> None:
        try:
            bad.predict(np.zeros((13, 13, 3), np.uint8), [Box(1, 1, 5, 5)])
        except ValueError as exc:
            errors.append(exc)

    t = _in_thread(ask_bad)
    assert len(good.predict(np.zeros((40, 40, 3), np.uint8), [Box(10, 10, 30, 30)])) == 1
    t.join(2.0)
    assert [str(e) for e in errors] == ["bad crop"]


# --- failures --------------------------------------------------------------------------------


def test_a_stream_that_cannot_open_ends_alone(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(["run", "--source", "tcp://127.0.0.1:1", "--source", B, "--jsonl",
                     str(tmp_path / "{stream}.jsonl")], capsys)
    assert code == 0, err
    assert len(records(tmp_path / "1.jsonl")) == 24 and not (tmp_path / "0.jsonl").exists()
    warning = [x for x in err.splitlines() if x.startswith("warning: stream 'stream0'")]
    assert warning and "tcp://127.0.0.1:1" in warning[0] and "1 of 2 streams failed" in err


def test_a_source_error_mid_run_ends_that_stream_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = assembly.open_video

    def open_video(cfg: Any) -> Any:
        video = real_open(cfg)
        if "size=80x60" in cfg.run.source:
            frames = video.frames

            def failing() -> Any:
                for i, frame in enumerate(frames()):
                    if i == 5:
                        raise SourceError("the camera went away")
                    yield frame

            video.frames = failing
        return video

    monkeypatch.setattr(assembly, "open_video", open_video)
    long_a = "lavfi:testsrc2=size=64x48:rate=30:duration=1"
    code, err = cli(["run", "--source", long_a, "--source", B, "--jsonl",
                     str(tmp_path / "{stream}.jsonl")], capsys)
    assert code == 0, err
    assert len(records(tmp_path / "0.jsonl")) == 30
    assert len(records(tmp_path / "1.jsonl")) <= 5
    assert "warning: stream 'stream1'" in err and "the camera went away" in err
    # every stream failing: the first stream's error decides the exit code, naming it
    code, err = cli(["run", "--source", B, "--source", "tcp://127.0.0.1:1"], capsys)
    assert code == ExitCode.SOURCE
    assert err.strip().splitlines()[-1].startswith("error: stream 'stream0': decode: ")


# --- templates and usage errors --------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--out", "out.mp4"], "--out out.mp4 with several sources must name a file per stream"),
    (["--jsonl", "-"], "--jsonl - with several sources must name a file per stream"),
    (["--vmc", "9000"], "--vmc with several sources is not supported yet"),
])
def test_several_sources_usage_errors(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(["run", "--source", A, "--source", B, *args], capsys)
    assert code == ExitCode.USAGE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), err


def test_stream_names_from_files_and_explicit_names() -> None:
    entries = [SourceEntry("a/cam.mp4"), SourceEntry("b/cam.mp4"), SourceEntry("x.mp4"),
               SourceEntry("rtsp://h/1", "door"), SourceEntry("webcam")]
    assert stream_names(entries) == ["stream0", "stream1", "x", "door", "stream4"]
    with pytest.raises(UsageError, match="two sources are named 'door'"):
        stream_names([SourceEntry("a", "door"), SourceEntry("b", "door")])
    with pytest.raises(UsageError, match="may hold only"):
        stream_names([SourceEntry("a", "../x")])


# --- [[sources]] configs ---------------------------------------------------------------------


def test_sources_config_runs_every_entry(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "multi.toml"
    conf.write_text(f'[track]\nmax_faces = 1\n\n[[sources]]\nsource = "{A}"\nname = "left"\n\n'
                    f'[[sources]]\nsource = "{B}"\n')
    cfg = load_config(conf)
    assert cfg.sources == (SourceEntry(A, "left"), SourceEntry(B))
    code, err = cli(["run", "--config", str(conf), "--jsonl", str(tmp_path / "{name}.jsonl")],
                    capsys)
    assert code == 0, err
    assert len(records(tmp_path / "left.jsonl")) == 12
    assert len(records(tmp_path / "stream1.jsonl")) == 24


@pytest.mark.parametrize("text, message", [
    ('[[sources]]\nsource = "a.mp4"\nurl = "x"\n', "unknown config key 'sources[0].url'"),
    ('[[sources]]\nname = "x"\n', "'sources[0].source' must be a non-empty string"),
    ('sources = "a.mp4"\n', "'sources' must be a list of tables"),
    ('[run]\nsource = "a.mp4"\n\n[[sources]]\nsource = "b.mp4"\n', "not both"),
])
def test_bad_sources_config(text: str, message: str, tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(conf)


# --- the real model: one call over several images ---------------------------------------------


def test_predict_many_matches_predict_per_image() -> None:
    from tracker.landmarker import load_landmarker

    lm = load_landmarker(None, "onnxruntime")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (120, 160, 3), np.uint8)
    b = rng.integers(0, 255, (90, 100, 3), np.uint8)
    boxes_a, boxes_b = [Box(20, 20, 80, 80), Box(60, 30, 130, 100)], [Box(10, 10, 60, 70)]
    many = lm.predict_many([(a, boxes_a, [0.0, 0.3]), (b, boxes_b, None), (b, [], None)])
    alone = [lm.predict(a, boxes_a, [0.0, 0.3]), lm.predict(b, boxes_b), []]
    assert [len(x) for x in many] == [2, 1, 0]
    for got, want in zip([p for x in many for p in x], [p for x in alone for p in x],
                         strict=True):
        np.testing.assert_allclose(got.points, want.points, atol=1e-4)
        np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-5)


# --- Ctrl-C ----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_every_stream_and_finalises_its_outputs(tmp_path: Path) -> None:
    endless = "lavfi:testsrc2=size=96x64:rate=30"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("stubs.py")), "run", "--source", endless,
         "--source", endless, "--jsonl", str(tmp_path / "{stream}.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "0.jsonl"
    deadline = time.monotonic() + 60
    while not (first.exists() and first.read_text().count("\n") >= 10):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "2 streams, interrupted" in err and "Traceback" not in err
    for name in ("0.jsonl", "1.jsonl"):
        text = (tmp_path / name).read_text()
        frames = [json.loads(line)["frame"] for line in text.splitlines()]
        assert text.endswith("\n") and frames == list(range(len(frames))) and frames
