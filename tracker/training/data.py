"""Training crops and augmentation: geometric jitter, photometric changes, occluders, batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from tracker.face68 import FLIP_PERM
from tracker.geometry import MARGIN, box_from_points, crop_affine, transform_points, warp_crop
from tracker.io.pts import Sample


@dataclass(frozen=True, slots=True)
class Augment:
    """Random geometric and photometric augmentation parameters."""

    scale: float = 0.15
    rotate_deg: float = 30.0
    rotate_sigma: float = 0.0  # > 0: normal(0, sigma) clipped to +-rotate_deg; 0: uniform
    shift: float = 0.08
    box_jitter: float = 0.05
    flip: bool = True
    # x offset of the labels from the mirror-symmetric position of what they mark, as a fraction
    # of the standard crop's side; a flipped crop's labels keep it (faces68: ~0.011, measured
    # with a model trained without flips, ``benchmarks/flip_gap.py``)
    flip_shift: float = 0.0
    photometric: bool = True
    occlude_p: float = 0.3


def face_crop(
    image: np.ndarray, points: np.ndarray, size: int, rng: np.random.Generator | None,
    aug: Augment | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face (box from landmarks) to ``size``; random augmentation when ``aug`` is set.

    Returns the RGB uint8 crop and the points in crop pixels.
    """
    box = box_from_points(points)
    cx, cy = box.center
    side = std_side = MARGIN * max(box.width, box.height, 1.0)
    angle = 0.0
    if aug is not None and rng is not None:
        j = aug.box_jitter
        side *= math.exp(rng.uniform(-aug.scale, aug.scale)) * (1 + rng.uniform(-j, j))
        cx += side * rng.uniform(-aug.shift, aug.shift)
        cy += side * rng.uniform(-aug.shift, aug.shift)
        angle = math.radians(_rotation(rng, aug))
    m = crop_affine((cx, cy), side, angle, size)
    crop = warp_crop(image, m, size)
    pts = transform_points(m, points)
    if aug is not None and rng is not None:
        if aug.flip and rng.random() < 0.5:
            crop = np.ascontiguousarray(crop[:, ::-1])
            pts = pts[FLIP_PERM].copy()
            pts[:, 0] = size - 1 - pts[:, 0] + 2.0 * aug.flip_shift * std_side * m[0, 0]
        if aug.photometric:
            crop = photometric(crop, rng)
        if rng.random() < aug.occlude_p:
            crop = occlude(crop, rng)
    return crop, pts


def _rotation(rng: np.random.Generator, aug: Augment) -> float:
    """Random angle in degrees within +-rotate_deg (uniform, or normal when rotate_sigma > 0)."""
    if aug.rotate_sigma > 0:
        return float(np.clip(rng.normal(0.0, aug.rotate_sigma), -aug.rotate_deg, aug.rotate_deg))
    return float(rng.uniform(-aug.rotate_deg, aug.rotate_deg))


def photometric(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/gamma, blur, noise and JPEG artefacts."""
    x = crop.astype(np.float32) / 255.0
    x = np.clip(x ** math.exp(rng.uniform(-0.4, 0.4)), 0, 1)
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2)
    if rng.random() < 0.3:
        x = x * rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.01, 0.06), size=x.shape).astype(np.float32)
    out = (np.clip(x, 0, 1) * 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(10, 60))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def occlude(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paste a random rectangle (flat colour or noise) over part of the crop."""
    s = crop.shape[0]
    w, h = (int(v) for v in rng.integers(s // 8, s // 2, size=2))
    x0, y0 = int(rng.integers(0, s - w)), int(rng.integers(0, s - h))
    out = crop.copy()
    if rng.random() < 0.5:
        out[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3, dtype=np.uint8)
    else:
        out[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return out


def batches(
    samples: list[Sample], size: int, batch_size: int, rng: np.random.Generator,
    aug: Augment | None, shuffle: bool = True, order: np.ndarray | None = None,
    flip: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (crops uint8 (B,S,S,3), points float32 (B,68,2)) batches, in ``order`` (indices
    into ``samples``) when given, else shuffled or in turn; ``flip`` (one bool per sample),
    when given with ``aug``, says which samples are flipped (p 0.5), whatever ``aug.flip``."""
    augs = None
    if flip is not None and aug is not None:
        augs = (replace(aug, flip=False), replace(aug, flip=True))
    if order is None:
        order = rng.permutation(len(samples)) if shuffle else np.arange(len(samples))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        crops, pts = zip(
            *(face_crop(samples[i].image, samples[i].points, size, rng,
                        aug if augs is None else augs[int(flip[i])]) for i in idx),
            strict=True,
        )
        yield np.stack(crops), np.stack(pts).astype(np.float32)
