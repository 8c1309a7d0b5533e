"""Face crops -> landmark model -> heatmap decode -> points in frame pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from tracker.detect.detectors import Detector, create_detector
from tracker.engines.base import DEFAULT_MAX_BATCH, Engine
from tracker.engines.registry import create_engine
from tracker.geometry import box_affine
from tracker.models.checkpoint import DEFAULT_WEIGHTS, Checkpoint, load_checkpoint
from tracker.types import Box


@dataclass(frozen=True, slots=True)
class FacePrediction:
    """Landmarks of one face: points (68, 2) in frame pixels, per-point confidence, presence."""

    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class Landmarker:
    """Batches every face of a frame into one engine call.

    Crop, model-input and affine buffers are allocated once and grown when more faces come;
    the arrays handed out in :class:`FacePrediction` are fresh each call (they outlive it).
    Not thread-safe: one landmarker per thread.
    """

    def __init__(self, checkpoint: Checkpoint, engine: Engine,
                 detector: Detector | None = None) -> None:
        self.checkpoint = checkpoint
        self.engine = engine
        self.detector = detector
        self.size = checkpoint.net.size
        self.channels = checkpoint.net.in_channels
        self.preprocess = checkpoint.preprocess
        self.point_offset = checkpoint.point_offset
        self._reserve(1, force=True)

    @classmethod
    def from_pretrained(cls, name: str = "default", engine: str = "auto", *,
                        detector: str | Detector = "default", max_faces: int = 1) -> Landmarker:
        """A shipped model by name (see :func:`tracker.list_models`) or a weights path, on
        ``engine``; ``detector`` finds faces when :meth:`predict` is given no boxes."""
        lm = load_landmarker(None if name == "default" else name, engine, max_faces=max_faces)
        lm.detector = create_detector(detector) if isinstance(detector, str) else detector
        return lm

    def warmup(self, max_faces: int = 1) -> None:
        """Run every batch size that up to ``max_faces`` faces can use through every step
        (loads compiled kernels, allocates engine memory, compiles OpenVINO's per-batch-size
        graphs before the first frame): 1..8, then powers of two up to 64."""
        from tracker.engines.openvino import warm_sizes

        image = np.zeros((self.size * 2, self.size * 2, 3), np.uint8)
        box = Box(0.5 * self.size, 0.5 * self.size, 1.5 * self.size, 1.5 * self.size)
        for n in warm_sizes(max_faces):
            self.predict(image, [box] * n)

    def _reserve(self, n: int, force: bool = False) -> None:
        if not force and self._crops.shape[0] >= n:
            return
        s = self.size
        self._crops = np.empty((n, s, s, 3), np.uint8)
        self._input = np.empty((n, self.channels, s, s), np.float32)
        self._to_frame = np.empty((n, 2, 3), np.float64)

    def predict(self, image: np.ndarray, boxes: Sequence[Box] | None = None,
                angles: Sequence[float] | None = None) -> list[FacePrediction]:
        """Landmarks for each face box of an RGB ``uint8 (H, W, 3)`` image (``angles`` in
        radians rotate the crops upright); without boxes, the detector finds the faces."""
        if boxes is None:
            if self.detector is None:
                self.detector = create_detector("default")
            boxes = sorted(self.detector.detect(image), key=lambda b: -b.score)
        n = len(boxes)
        if n == 0:
            return []
        self._reserve(n)
        s = self.size
        for i, box in enumerate(boxes):
            m = box_affine(box, s, angle=angles[i] if angles else 0.0)
            cv2.warpAffine(image, m, (s, s), dst=self._crops[i], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
            self._to_frame[i] = cv2.invertAffineTransform(m)
        x = self.preprocess(self._crops[:n], out=self._input[:n])
        points, conf = self.engine.predict(x)
        if self.point_offset is not None:
            points = points + self.point_offset
        inv = self._to_frame[:n]
        pts = (np.matmul(points, inv[:, :, :2].transpose(0, 2, 1)) + inv[:, None, :, 2])
        pts = pts.astype(np.float32)
        conf = np.ascontiguousarray(conf, dtype=np.float32)
        presence = conf.mean(axis=1)
        lo = pts.min(axis=1)
        hi = pts.max(axis=1)
        return [
            FacePrediction(pts[i], conf[i], float(presence[i]),
                           Box(float(lo[i, 0]), float(lo[i, 1]), float(hi[i, 0]), float(hi[i, 1])))
            for i in range(n)
        ]


def model_name(weights: str | Path | None) -> str:
    """Name a model by its weights file (``rcn_lite`` for the embedded default)."""
    return Path(weights).stem if weights else DEFAULT_WEIGHTS.stem


def load_landmarker(weights: str | None = None, engine: str = "auto",
                    threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH,
                    precision: str = "fp16", max_faces: int = 1) -> Landmarker:
    """The embedded default model (or ``weights``) on the requested engine, warmed up for
    1..``max_faces`` faces a call.

    ``max_batch`` and ``precision`` apply to GPU engines (see :mod:`tracker.engines.gpu`).
    """
    ckpt = load_checkpoint(weights)
    config = {"net": asdict(ckpt.net), "dkm": asdict(ckpt.dkm) if ckpt.dkm else None}
    eng = create_engine(ckpt.model, ckpt.net.size, ckpt.net.in_channels, engine, threads,
                        max_batch=max_batch, precision=precision, name=model_name(weights),
                        config=config)
    landmarker = Landmarker(ckpt, eng)
    landmarker.warmup(max_faces)
    return landmarker
