"""Face crops -> landmark model -> heatmap decode -> points in frame pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracker import heatmap
from tracker.data import Preprocess
from tracker.engine import Engine, create_engine
from tracker.model import Checkpoint, load_checkpoint
from tracker.roi import box_affine, box_from_points, invert_affine, warp_crop
from tracker.types import Box


@dataclass(frozen=True, slots=True)
class FacePrediction:
    """Landmarks of one face: points (68, 2) in frame pixels, per-point confidence, presence."""

    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class Landmarker:
    """Batches every face of a frame into one engine call."""

    def __init__(self, checkpoint: Checkpoint, engine: Engine) -> None:
        self.checkpoint = checkpoint
        self.engine = engine
        self.size = checkpoint.net.size
        pre = checkpoint.meta.get("preprocess", {})
        self.preprocess = Preprocess(self.size, checkpoint.net.in_channels, bool(pre.get("lcn")))
        self._crops = np.empty((0, self.size, self.size, 3), np.uint8)

    def predict(self, image: np.ndarray, boxes: Sequence[Box],
                angles: Sequence[float] | None = None) -> list[FacePrediction]:
        """Landmarks for each face box (``angles`` in radians rotate the crops upright)."""
        n = len(boxes)
        if n == 0:
            return []
        if self._crops.shape[0] < n:
            self._crops = np.empty((n, self.size, self.size, 3), np.uint8)
        to_frame = []
        for i, box in enumerate(boxes):
            m = box_affine(box, self.size, angle=angles[i] if angles else 0.0)
            self._crops[i] = warp_crop(image, m, self.size)
            to_frame.append(invert_affine(m))
        logits = self.engine.infer(self.preprocess(self._crops[:n]))
        points, conf = heatmap.decode(np.ascontiguousarray(logits, dtype=np.float32))
        out = []
        for i in range(n):
            inv = to_frame[i]
            pts = (points[i] @ inv[:, :2].T + inv[:, 2]).astype(np.float32)
            c = conf[i]
            out.append(FacePrediction(pts, c, float(c.mean()), box_from_points(pts)))
        return out


def load_landmarker(weights: str | None = None, engine: str = "auto",
                    threads: int | None = None) -> Landmarker:
    """The embedded default model (or ``weights``) on the requested engine."""
    ckpt = load_checkpoint(weights)
    eng = create_engine(ckpt.model, ckpt.net.size, ckpt.net.in_channels, engine, threads)
    return Landmarker(ckpt, eng)
