"""Face crops -> landmark model -> heatmap decode -> points in frame pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path

import cv2
import numba as nb
import numpy as np

from tracker.detect.detectors import Detector, create_detector
from tracker.engines.base import DEFAULT_MAX_BATCH, Engine
from tracker.engines.registry import CPU_ONNX_ENGINES, create_cpu_engine, create_engine, resolve_engine
from tracker.geometry import box_affine
from tracker.models.checkpoint import DEFAULT_WEIGHTS, Checkpoint, ModelInfo, load_checkpoint
from tracker.runtime.threads import Worker
from tracker.types import Box

Request = tuple[np.ndarray, Sequence[Box], Sequence[float] | None]  # image, boxes, angles


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

    def __init__(self, checkpoint: Checkpoint | ModelInfo, engine: Engine,
                 detector: Detector | None = None) -> None:
        """``checkpoint``: the loaded model, or only its :class:`ModelInfo` (the CPU engines
        need no torch module)."""
        self.checkpoint = checkpoint
        self.engine = engine
        self.detector = detector
        self.size = checkpoint.net.size
        self.channels = checkpoint.net.in_channels
        self.preprocess = checkpoint.preprocess
        self.point_offset = checkpoint.point_offset
        k = checkpoint.net.n_points
        self._offset = (np.zeros((k, 2), np.float32) if self.point_offset is None
                        else np.ascontiguousarray(self.point_offset, np.float32))
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
        graphs before the first frame): the sizes of a tuned engine's plan, else 1..8, then
        powers of two up to 64."""
        sizes = getattr(self.engine, "warm_sizes", None)
        if sizes is None:
            from tracker.engines.openvino import warm_sizes as sizes

        image = np.zeros((self.size * 2, self.size * 2, 3), np.uint8)
        box = Box(0.5 * self.size, 0.5 * self.size, 1.5 * self.size, 1.5 * self.size)
        for n in sizes(max_faces):
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
        return self.predict_many([(image, boxes, angles)])[0]

    def predict_many(self, requests: Sequence[Request]) -> list[list[FacePrediction]]:
        """:meth:`predict` of several ``(image, boxes, angles)`` requests (e.g. one frame of
        each stream) at once: every crop is warped into one buffer and the engine runs once
        over all of them (its batch plan decides how); one list per request, in order."""
        counts = [len(boxes) for _, boxes, _ in requests]
        n = sum(counts)
        if n == 0:
            return [[] for _ in requests]
        self._reserve(n)
        s = self.size
        i = 0
        for image, boxes, angles in requests:
            for j, box in enumerate(boxes):
                m = box_affine(box, s, angle=angles[j] if angles else 0.0)
                cv2.warpAffine(image, m, (s, s), dst=self._crops[i], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
                self._to_frame[i] = cv2.invertAffineTransform(m)
                i += 1
        x = self.preprocess(self._crops[:n], out=self._input[:n])
        points, conf = self.engine.predict(x)
        conf = np.ascontiguousarray(conf, dtype=np.float32)
        pts = np.empty((n, points.shape[1], 2), np.float32)
        box = np.empty((n, 4), np.float64)
        presence = np.empty(n, np.float32)
        _to_frame(np.ascontiguousarray(points, np.float32), self._offset, self._to_frame[:n],
                  conf, pts, box, presence)
        if conf.shape[1] > PAIRWISE_MAX:  # NumPy's sum recurses above one block
            presence = conf.mean(axis=1)
        faces = [FacePrediction(pts[i], conf[i], float(presence[i]), Box(*box[i].tolist()))
                 for i in range(n)]
        ends = list(accumulate(counts))
        return [faces[end - c:end] for c, end in zip(counts, ends, strict=True)]


PAIRWISE_MAX = 128  # NumPy sums blocks of up to this many values with 8 running sums


@nb.njit(cache=True, nogil=True)
def _block_sum(a: np.ndarray) -> np.float32:
    """float32 sum of ``a`` (at most PAIRWISE_MAX values) in NumPy's pairwise order: the
    same bits as ``a.sum()`` (tested). Not recursive: Numba's cache breaks recursion."""
    n = a.size
    if n < 8:
        res = np.float32(-0.0)
        for i in range(n):
            res += a[i]
        return res
    r = a[:8].copy()
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += a[i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[i]
        i += 1
    return res


@nb.njit(cache=True, nogil=True)
def _to_frame(points: np.ndarray, offset: np.ndarray, inv: np.ndarray, conf: np.ndarray,
              out: np.ndarray, box: np.ndarray, presence: np.ndarray) -> None:
    """Heatmap points ``(N, K, 2)`` plus the calibration ``offset`` ``(K, 2)`` (float32 sum)
    through each crop's inverse affine ``inv`` (N, 2, 3) (float64) into frame pixels ``out``
    (float32), their tight box ``box`` (N, 4) (NaN where any point is NaN), and ``presence``,
    the mean of each face's ``conf`` as ``conf.mean(axis=1)`` computes it (K <= PAIRWISE_MAX)."""
    n, k = points.shape[0], points.shape[1]
    for i in range(n):
        presence[i] = _block_sum(conf[i]) / np.float32(k)
        a00, a01, a02 = inv[i, 0, 0], inv[i, 0, 1], inv[i, 0, 2]
        a10, a11, a12 = inv[i, 1, 0], inv[i, 1, 1], inv[i, 1, 2]
        x0 = y0 = np.inf
        x1 = y1 = -np.inf
        nan_x = nan_y = False
        for j in range(k):
            px = np.float64(points[i, j, 0] + offset[j, 0])
            py = np.float64(points[i, j, 1] + offset[j, 1])
            x = np.float32(px * a00 + py * a01 + a02)
            y = np.float32(px * a10 + py * a11 + a12)
            out[i, j, 0] = x
            out[i, j, 1] = y
            nan_x |= math.isnan(x)
            nan_y |= math.isnan(y)
            x0, x1 = min(x0, x), max(x1, x)
            y0, y1 = min(y0, y), max(y1, y)
        box[i, 0] = np.nan if nan_x else x0
        box[i, 1] = np.nan if nan_y else y0
        box[i, 2] = np.nan if nan_x else x1
        box[i, 3] = np.nan if nan_y else y1


def _load_kernels(info: ModelInfo) -> None:
    """Load the preprocessing and heatmap-decode kernels (from Numba's disk cache)."""
    from tracker.models import heatmap

    s, k = info.net.size, info.net.n_points
    info.preprocess(np.zeros((1, s, s, 3), np.uint8))
    heatmap.decode(np.zeros((1, k, s, s), np.float32))
    _to_frame(np.zeros((1, k, 2), np.float32), np.zeros((k, 2), np.float32),
              np.zeros((1, 2, 3)), np.zeros((1, k), np.float32), np.empty((1, k, 2), np.float32),
              np.empty((1, 4)), np.empty(1, np.float32))


def model_name(weights: str | Path | None) -> str:
    """Name a model by its weights file (``rcn_lite`` for the embedded default)."""
    return Path(weights).stem if weights else DEFAULT_WEIGHTS.stem


def load_landmarker(weights: str | None = None, engine: str = "auto",
                    threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH,
                    precision: str = "fp16", max_faces: int = 1,
                    retune: bool = False) -> Landmarker:
    """The embedded default model (or ``weights``) on the requested engine, warmed up for
    1..``max_faces`` faces a call.

    On a CPU, ``auto`` is the engine measured fastest on this machine (tuned on first use, see
    :mod:`tracker.engines.tuning`; ``retune`` measures again), and the CPU engines run the
    cached ONNX export (:mod:`tracker.engines.export`): torch is imported only to export it.
    ``max_batch`` and ``precision`` apply to GPU engines (see :mod:`tracker.engines.gpu`).
    """
    wanted = resolve_engine(engine)
    if wanted in CPU_ONNX_ENGINES:
        from tracker.engines.export import model_files

        files = model_files(weights)
        # the Numba kernels load (~0.17 s from Numba's cache, holding the GIL) on a thread
        # while the engine is built (OpenVINO reads its compiled graph without the GIL)
        kernels = Worker(_load_kernels, args=(files.info,), name="numba-kernels")
        kernels.start()
        try:
            eng = create_cpu_engine(files, "auto" if engine == "auto" else wanted, threads,
                                    retune=retune)
        finally:
            kernels.wait()
        if kernels.error is not None:
            raise kernels.error
        landmarker = Landmarker(files.info, eng)
        landmarker.warmup(max_faces)
        return landmarker
    ckpt = load_checkpoint(weights)
    config = {"net": asdict(ckpt.net), "dkm": asdict(ckpt.dkm) if ckpt.dkm else None}
    eng = create_engine(ckpt.model, ckpt.net.size, ckpt.net.in_channels, engine, threads,
                        max_batch=max_batch, precision=precision, name=model_name(weights),
                        config=config)
    landmarker = Landmarker(ckpt, eng)
    landmarker.warmup(max_faces)
    return landmarker
