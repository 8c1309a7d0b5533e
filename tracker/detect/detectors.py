"""Face detectors behind one small interface.

``create_detector()`` returns the default detector: MediaPipe's BlazeFace short-range network
(weights shipped in ``tracker/detectors/``, run with onnxruntime). ``"haar"`` is OpenCV's
frontal-face Haar cascade, kept as a dependency-light fallback and as the baseline it was chosen
against (figures: ``python benchmarks/detector_eval.py``).

Every detector returns boxes *calibrated* to the landmark convention used elsewhere: the tight
box of the 68 landmarks (``tracker.geometry.box_from_points``), in frame pixels, sorted by score.
Boxes may reach past the frame edge when the face does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import cv2
import numpy as np

from tracker.types import Box

DETECTOR_NAMES = ("default", "blazeface", "haar")


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Which face detector runs and which of its boxes count (the ``[detector]`` config section)."""

    name: str = "default"  # one of DETECTOR_NAMES
    min_score: float = 0.0  # detections scoring below this are ignored (by the track stage)


class Detector(Protocol):
    """Finds faces in an RGB uint8 image; boxes in frame pixels, best score first."""

    def detect(self, image: np.ndarray) -> list[Box]: ...


@dataclass(frozen=True, slots=True)
class Calibration:
    """Maps a raw detector box onto the tight 68-landmark box.

    centre += (dx * w, dy * h); size *= (sx, sy), with w, h the raw box size.
    """

    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def apply(self, x0: float, y0: float, x1: float, y1: float, score: float) -> Box:
        w, h = x1 - x0, y1 - y0
        cx = 0.5 * (x0 + x1) + self.dx * w
        cy = 0.5 * (y0 + y1) + self.dy * h
        hw, hh = 0.5 * self.sx * w, 0.5 * self.sy * h
        return Box(float(cx - hw), float(cy - hh), float(cx + hw), float(cy + hh), float(score))


# Fitted by `python benchmarks/detector_eval.py --fit` on faces68/train (3,402 images): for each
# image the raw detection matching the face (box holds the nose tip, size within 2x of the
# landmark box) is paired with the tight box of the 0-based landmarks; each constant is the
# median over those pairs of the centre offset / size ratio, in units of the raw box size.
# BlazeFace: 3,396 of 3,402 faces matched; Haar (default cascade): 3,354.
BLAZEFACE_CALIBRATION = Calibration(dx=0.0039, dy=0.0536, sx=0.9749, sy=0.9422)
HAAR_CALIBRATION = Calibration(dx=0.0, dy=0.1596, sx=0.8648, sy=0.8333)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array as contiguous uint8 RGB (values read as 0..255)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWxC image (C in 1, 3, 4), got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(np.nan_to_num(img.astype(np.float32)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection over the smaller area) of one box ``a`` (4,) with each of ``b`` (N, 4)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.maximum(area_a + area_b - inter, 1e-9)
    return inter / union, inter / np.maximum(np.minimum(area_a, area_b), 1e-9)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (4,) with each of ``b`` (N, 4)."""
    return _overlaps(np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(-1, 4))[0]


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou: float, contained: float = 0.5
) -> list[tuple[np.ndarray, float]]:
    """Non-maximum suppression that averages instead of discarding.

    Boxes overlapping the best remaining one by IoU > ``iou`` become its score-weighted mean
    (keeping the best score); weaker boxes lying mostly inside or around it (intersection over
    the smaller box > ``contained``: partial faces, face parts) are dropped. Best first.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    alive = np.ones(len(boxes), dtype=bool)
    out = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        iou_i, inside = _overlaps(boxes[i], boxes)
        members = alive & (iou_i > iou)
        members[i] = True
        w = scores[members][:, None]
        out.append(((boxes[members] * w).sum(0) / w.sum(), float(scores[i])))
        alive &= ~(members | (inside > contained))
    return out


def _blazeface_anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres (N, 2) in input pixels for an input of ``height`` x ``width`` (16k each).

    The short-range network predicts 2 boxes per cell of its stride-8 grid, then 6 per cell of
    its stride-16 grid, cells in row-major order.
    """
    parts = []
    for stride, per_cell in ((8, 2), (16, 6)):
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5
        parts.append(np.repeat(centres * stride, per_cell, axis=0))
    return np.concatenate(parts)


class BlazeFaceDetector:
    """BlazeFace short-range (MediaPipe) at two scales, with onnxruntime on the CPU.

    On a 128x128 input the network finds faces whose landmark box spans about 15-80 % of the
    side (measured on faces68/val). Pass 1 shrinks the whole frame into 128x128 (large faces).
    Pass 2 runs the fully convolutional network once over the frame resized so that a face of
    ``min_face`` frame pixels becomes about 20 input pixels (small faces); that pass is capped at
    ``scan_pixels`` input pixels, so on large frames the smallest face found grows instead of the
    time (640x480: 40 px; 1280x720: ~70 px; 1920x1080: ~100 px). Detections of both passes
    are merged by weighted non-maximum suppression. ``score_threshold`` 0.6 (MediaPipe uses 0.5)
    keeps val recall at 100 % while halving boxes on hands and blurred crowds (detector_eval.py).
    """

    INPUT = 128
    FACE_FRACTION = 0.16  # smallest reliably found landmark-box side / network input side

    def __init__(
        self,
        min_face: float = 40.0,
        score_threshold: float = 0.6,
        nms_iou: float = 0.3,
        scan_pixels: int = 320 * 256,
        threads: int = 1,
        calibration: Calibration = BLAZEFACE_CALIBRATION,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        model = resources.files("tracker") / "detectors" / "blazeface_short.onnx"
        self.session = ort.InferenceSession(
            model.read_bytes(), opts, providers=["CPUExecutionProvider"]
        )
        self.min_face = min_face
        self.logit_threshold = math.log(score_threshold / (1.0 - score_threshold))
        self.nms_iou = nms_iou
        self.scan_pixels = scan_pixels
        self.calibration = calibration
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    def _run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (boxes x0y0x1y1, scores) in ``image`` pixels; ``image`` sides are 16k."""
        h, w = image.shape[:2]
        x = cv2.dnn.blobFromImage(image, 1 / 127.5, mean=(127.5, 127.5, 127.5))  # NCHW, [-1, 1]
        reg, logit = self.session.run(None, {"image": x})
        keep = np.flatnonzero(logit[0, :, 0] > self.logit_threshold)
        if keep.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        if (h, w) not in self._anchors:
            self._anchors[(h, w)] = _blazeface_anchors(h, w)
        r = reg[0, keep]
        centre = self._anchors[(h, w)][keep] + r[:, :2]
        half = 0.5 * r[:, 2:4]
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logit[0, keep, 0], -100, 100)))
        return boxes, scores

    @staticmethod
    def _padded(image: np.ndarray, h: int, w: int) -> np.ndarray:
        """``image`` in the top-left corner of a black canvas of h x w."""
        canvas = np.zeros((h, w, 3), np.uint8)
        canvas[: image.shape[0], : image.shape[1]] = image
        return canvas

    def detect_raw(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Uncalibrated detections (box x0y0x1y1 in frame pixels, score), best first."""
        img = as_rgb(image)
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            return []
        n = self.INPUT
        found_boxes, found_scores = [], []
        # pass 2 (small faces): scale where min_face -> FACE_FRACTION * INPUT, capped in area
        scan = self.FACE_FRACTION * n / self.min_face
        scan = min(scan, math.sqrt(self.scan_pixels / (h * w)), 1.0)
        src = img
        if scan > 1.5 * n / max(h, w):
            # sides snapped to multiples of 16 (the network's stride): no padding needed
            sh, sw = max(round(h * scan / 16), 1) * 16, max(round(w * scan / 16), 1) * 16
            src = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
            boxes, scores = self._run(src)
            found_boxes.append(boxes * np.array([w / sw, h / sh, w / sw, h / sh], np.float32))
            found_scores.append(scores)
        # pass 1 (large faces): the whole frame letterboxed into INPUT x INPUT
        k = n / max(src.shape[:2])
        th, tw = max(round(src.shape[0] * k), 1), max(round(src.shape[1] * k), 1)
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        boxes, scores = self._run(self._padded(cv2.resize(src, (tw, th), interpolation=interp), n, n))
        found_boxes.append(boxes * np.array([w / tw, h / th, w / tw, h / th], np.float32))
        found_scores.append(scores)
        return weighted_nms(np.concatenate(found_boxes), np.concatenate(found_scores), self.nms_iou)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Calibrated face boxes, best score first."""
        return [self.calibration.apply(*b, s) for b, s in self.detect_raw(image)]


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on an equalised grayscale image (baseline/fallback).

    The frame is shrunk so its long side is at most ``max_side`` before scanning; the score is
    n / (n + 5) for the n raw windows merged into a detection.
    """

    def __init__(
        self,
        cascade: str = "default",
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_face: float = 20.0,
        max_side: int = 320,
        calibration: Calibration = HAAR_CALIBRATION,
    ) -> None:
        path = f"{cv2.data.haarcascades}haarcascade_frontalface_{cascade}.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ValueError(f"cannot load Haar cascade {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.max_side = max_side
        self.calibration = calibration

    def detect_raw(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Uncalibrated detections (box x0y0x1y1 in frame pixels, score), best first."""
        img = as_rgb(image)
        if img.shape[0] < 2 or img.shape[1] < 2:
            return []
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        s = min(1.0, self.max_side / max(gray.shape))
        if s < 1.0:
            gray = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        side = max(int(self.min_face * s), 8)
        rects, neighbours = self.cascade.detectMultiScale2(
            cv2.equalizeHist(gray), self.scale_factor, self.min_neighbors, minSize=(side, side)
        )
        out = []
        for (x, y, w, h), n in zip(rects, np.ravel(neighbours), strict=True):
            box = np.array([x, y, x + w, y + h], np.float32) / s
            out.append((box, float(n) / (float(n) + 5.0)))
        return sorted(out, key=lambda d: -d[1])

    def detect(self, image: np.ndarray) -> list[Box]:
        """Calibrated face boxes, best score first."""
        return [self.calibration.apply(*b, s) for b, s in self.detect_raw(image)]


def create_detector(name: str = DetectorConfig().name) -> Detector:
    """The named detector: ``default``/``blazeface`` (BlazeFace short-range) or ``haar``."""
    if name in ("default", "blazeface"):
        return BlazeFaceDetector()
    if name == "haar":
        return HaarDetector()
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
