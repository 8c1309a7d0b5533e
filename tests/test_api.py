"""The public Python API: Tracker in its three modes, track() and run(), the stills API."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from stubs import StubDetector, StubLandmarker, face_box
from synthetic import make_clip

import tracker
from tracker import ConfigError, SourceError, Tracker, TrackerError, TrackerOptions
from tracker.config.schema import Config

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
needs_clip = pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/data/videos")


class CountingDetector(StubDetector):
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        return super().detect(image)


def stub(mode: str = "video", **overrides: object) -> tuple[Tracker, CountingDetector]:
    det = CountingDetector()
    cfg = Config().with_overrides({f"{k.replace('__', '.')}": v for k, v in overrides.items()})
    return Tracker(TrackerOptions(cfg, mode), detector=det, landmarker=StubLandmarker()), det


def image(w: int = 96, h: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_public_names_are_exported_lazily() -> None:
    for name in tracker.__all__:
        assert getattr(tracker, name) is not None
    assert "default" in tracker.list_models() and "rcn_lite_fast" in tracker.list_models()
    with pytest.raises(AttributeError):
        tracker.nothing_here  # noqa: B018


@pytest.mark.parametrize("mode, detector_calls", [("image", 3), ("video", 1), ("live", 1)])
def test_modes_decide_whether_state_carries_over(mode: str, detector_calls: int) -> None:
    t, det = stub(mode)
    frames = [t.process(image(), time=i / 30) for i in range(3)]
    assert det.calls == detector_calls
    assert [f.index for f in frames] == [0, 1, 2]
    for f in frames:
        (face,) = f.faces
        assert face.points.shape == (68, 2) and face.points.dtype == np.float32
        assert face.confidence.shape == (68,) and 0 <= face.presence <= 1
        assert face.id == face.face_id == 0
        b = face_box(f.image)
        assert b.x0 - 1 <= face.box.x0 and face.box.x1 <= b.x1 + 1


def test_video_mode_times_default_to_30_fps_and_bgr_is_converted() -> None:
    t, _ = stub("video")
    img = image()
    first = t.process(img)
    second = t.process(img[:, :, ::-1].copy(), color="bgr")
    assert (first.time, second.time) == (0.0, pytest.approx(1 / 30))
    assert np.array_equal(second.image, img)
    t.reset()
    assert t.process(img).index == 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8)])
def test_bad_images_raise_a_tracker_error(bad: np.ndarray) -> None:
    t, _ = stub()
    with pytest.raises(TrackerError, match="uint8"):
        t.process(bad)
    with pytest.raises(ConfigError, match="color"):
        t.process(image(), color="hsv")


def test_from_config_takes_presets_and_short_names() -> None:
    t = Tracker.from_config("offline", max_faces=3, min_presence=0.3, **{"track.rescan_every": 7})
    assert (t.options.max_faces, t.options.min_presence) == (3, 0.3)
    assert t.config.track.rescan_every == 7 and t.config.pipeline.policy == "block"
    with pytest.raises(ConfigError, match="unknown option"):
        Tracker.from_config(None, nonsense=1)
    with pytest.raises(ConfigError, match="mode"):
        TrackerOptions(mode="batch")


def test_track_yields_every_frame_of_a_file_in_order(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", n_frames=12, width=96, height=64)
    t, _ = stub()
    with t:
        frames = list(t.track(str(clip)))
    assert [f.index for f in frames] == list(range(12))
    assert all(len(f.faces) == 1 for f in frames)
    assert frames[-1].time > frames[0].time


def _track_threads() -> set[threading.Thread]:
    return {th for th in threading.enumerate() if th is not threading.main_thread()}


def test_leaving_track_early_stops_its_threads_and_closes_the_source() -> None:
    before = _track_threads()
    t, _ = stub()
    it = t.track("lavfi:testsrc2=size=96x64:rate=30")  # endless live source
    got = [next(it) for _ in range(3)]
    assert len(got) == 3 and len(_track_threads()) > len(before)
    it.close()  # what a `break` out of the for loop does
    deadline = time.monotonic() + 10
    while _track_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (_track_threads() - before)


def test_track_reports_a_missing_file_as_a_source_error(tmp_path: Path) -> None:
    t, _ = stub()
    with pytest.raises(SourceError, match="no such file"):
        next(t.track(str(tmp_path / "missing.mp4")))


def test_run_writes_the_outputs_it_is_given(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", n_frames=10, width=96, height=64)
    jsonl = tmp_path / "out.jsonl"
    t, _ = stub()
    report = t.run(str(clip), outputs=[str(jsonl)])
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert report.status == "finished" and not report.interrupted
    assert report.outputs == (str(jsonl),) and report.stats.frames == 10
    assert [r["frame"] for r in lines] == list(range(10))


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@needs_clip
def test_the_readme_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = _readme_example().replace("landmarks.jsonl", str(tmp_path / "landmarks.jsonl"))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"^frame 0: 1 face", out, re.M), out
    assert (tmp_path / "landmarks.jsonl").read_text().count("\n") >= 10


@needs_clip
def test_stills_api_finds_the_face_itself() -> None:
    import av

    with av.open(str(CLIP)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    lm = tracker.Landmarker.from_pretrained("default", engine="onnxruntime")
    (face,) = lm.predict(img)
    h, w = img.shape[:2]
    assert face.points.shape == (68, 2) and face.presence > 0.2
    assert (face.points >= 0).all() and (face.points[:, 0] < w).all() and (face.points[:, 1] < h).all()
    again = lm.predict(img, boxes=[face.box])
    assert np.abs(again[0].points - face.points).max() < 0.25 * face.box.width
