"""Stand-in face models for pipeline tests that are about plumbing, not accuracy.

``python tests/stubs.py run ...`` runs the real ``tracker`` CLI with these models (for tests
that must signal a real process). ``STUB_SLOW_CLOSE=S`` makes the video sink take S seconds to
close, so a test can interrupt a shutdown in progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracker.api import Tracker, TrackerOptions  # noqa: E402
from tracker.geometry import box_from_points  # noqa: E402
from tracker.landmarker import FacePrediction as Pred  # noqa: E402
from tracker.tracking.face_tracker import TrackConfig, TrackStage  # noqa: E402
from tracker.types import Box  # noqa: E402


def face_box(image: np.ndarray) -> Box:
    """Where the stub face is: the middle half of the frame."""
    h, w = image.shape[:2]
    return Box(w * 0.25, h * 0.25, w * 0.75, h * 0.75, 0.9)


class StubDetector:
    """One face box in the middle of every frame."""

    def detect(self, image: np.ndarray) -> list[Box]:
        return [face_box(image)]


class StubLandmarker:
    """For each box, 68 points on the diagonal of the stub face (wherever the box is, as a real
    model finds the face in a loose crop), confidence 0.9."""

    def predict(self, image: np.ndarray, boxes: Sequence[Box],
                angles: Sequence[float] | None = None) -> list[Pred]:
        b = face_box(image)
        t = np.linspace(0, 1, 68, dtype=np.float32)
        pts = np.stack([b.x0 + t * b.width, b.y0 + t * b.height], 1).astype(np.float32)
        return [Pred(pts.copy(), np.full(68, 0.9, np.float32), 0.9, box_from_points(pts))
                for _ in boxes]


def stub_track(cfg: Any) -> TrackStage:
    options = TrackConfig(max_faces=cfg.track.max_faces, rescan_every=cfg.track.rescan_every)
    return TrackStage(StubDetector(), StubLandmarker(), options)


class SlowLoadLandmarker(StubLandmarker):
    """A stub whose loading takes ``seconds`` (as the real models' start-up does), announced on
    stderr so a test knows when to signal."""

    def __init__(self, seconds: float) -> None:
        sys.stderr.write("loading models\n")
        sys.stderr.flush()
        time.sleep(seconds)


def stub_tracker(options: TrackerOptions) -> Tracker:
    """A real :class:`Tracker` with the stub models injected (no temporal denoiser);
    ``STUB_SLOW_LOAD=S`` makes the models take S seconds to load, when the run starts."""
    slow = float(os.environ.get("STUB_SLOW_LOAD", "0"))
    if slow > 0:
        return _SlowTracker(options, slow)
    return Tracker(options, detector=StubDetector(), landmarker=StubLandmarker())


class _SlowTracker(Tracker):
    def __init__(self, options: TrackerOptions, seconds: float) -> None:
        super().__init__(options, detector=StubDetector())
        self._seconds = seconds

    def _models(self, cfg: Any) -> Any:
        if self._landmarker is None:
            self._landmarker = SlowLoadLandmarker(self._seconds)
            self._injected = True
        return super()._models(cfg)


def run_cli(args: Sequence[str]) -> int:
    """``tracker ARGS`` in this process, with the stub models."""
    from tracker.cli import main

    return main(list(args), tracker_factory=stub_tracker)


def install(slow_close_s: float = 0.0) -> None:
    """Optionally make the video sink slow to close (for interrupt tests)."""
    from tracker.outputs import sinks

    if slow_close_s > 0:
        close = sinks.VideoSink.close

        def slow_close(self: sinks.VideoSink) -> None:
            time.sleep(slow_close_s)
            close(self)

        sinks.VideoSink.close = slow_close  # type: ignore[method-assign]


if __name__ == "__main__":
    install(float(os.environ.get("STUB_SLOW_CLOSE", "0")))
    sys.exit(run_cli(sys.argv[1:]))
