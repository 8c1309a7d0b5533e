"""68-point landmark data: 300-W ``.pts`` files, folders of images, crops and augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numba as nb
import numpy as np

from tracker.roi import MARGIN, box_from_points, crop_affine, transform_points, warp_crop

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
N_POINTS = 68


def _flip_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose bottom
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer mouth
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner mouth
    perm = np.arange(N_POINTS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM = _flip_permutation()


def read_pts(path: str | Path) -> np.ndarray:
    """Read a 300-W ``.pts`` file; returns 0-based ``(n, 2)`` float32 points."""
    text = Path(path).read_text().split("{", 1)
    if len(text) != 2 or "}" not in text[1]:
        raise ValueError(f"{path}: not a .pts file (no {{ }} block)")
    body = text[1].split("}", 1)[0]
    values = np.array(body.split(), dtype=np.float64)
    if values.size % 2:
        raise ValueError(f"{path}: odd number of coordinates")
    return (values.reshape(-1, 2) - 1.0).astype(np.float32)


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write 0-based points as a 1-based 300-W ``.pts`` file."""
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in np.asarray(points, dtype=np.float64)]
    body = "\n".join(lines)
    Path(path).write_text(f"version: 1\nn_points: {len(lines)}\n{{\n{body}\n}}\n")


def find_samples(root: str | Path) -> list[tuple[Path, Path]]:
    """All (image, .pts) pairs under ``root`` (recursive, sorted; 300-W/LFPW/HELEN/AFW/iBUG layout)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    pairs = []
    for pts in sorted(root.rglob("*.pts")):
        for suffix in IMAGE_SUFFIXES:
            image = pts.with_suffix(suffix)
            if image.exists():
                pairs.append((image, pts))
                break
    return pairs


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image held in memory."""

    name: str
    image: np.ndarray
    points: np.ndarray


def load_folder(root: str | Path, limit: int | None = None) -> list[Sample]:
    """Load every labelled 68-point image under ``root`` into memory."""
    samples = []
    for image_path, pts_path in find_samples(root)[:limit]:
        points = read_pts(pts_path)
        if points.shape != (N_POINTS, 2):
            continue
        samples.append(Sample(image_path.stem, read_image(image_path), points))
    return samples


@dataclass(frozen=True, slots=True)
class Preprocess:
    """How a crop becomes model input (stored with the weights)."""

    size: int = 64
    channels: int = 1
    lcn: bool = False

    def __call__(self, crops: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 crops ``(N, S, S, 3)`` RGB -> float32 ``(N, C, S, S)`` normalised input."""
        return preprocess_crops(crops, self.channels, self.lcn, out)


GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
MIN_STD = 4.0  # floor of the per-crop standard deviation (flat crops are not blown up)


@nb.njit(cache=True, nogil=True)
def _gray_standardise(crops: np.ndarray, out: np.ndarray, min_std: float) -> None:
    """Grey conversion + per-crop standardisation of uint8 RGB crops into ``out`` (N, 1, H, W).

    The grey value is the same float32 weighted sum as the NumPy path; mean and variance are
    accumulated in float64 (the NumPy path uses float32 pairwise sums: differences ~1e-6).
    """
    n, h, w, _ = crops.shape
    wr, wg, wb = GRAY_WEIGHTS[0], GRAY_WEIGHTS[1], GRAY_WEIGHTS[2]
    inv = 1.0 / (h * w)
    for i in range(n):
        total = 0.0
        for y in range(h):
            for x in range(w):
                g = (np.float32(crops[i, y, x, 0]) * wr + np.float32(crops[i, y, x, 1]) * wg
                     + np.float32(crops[i, y, x, 2]) * wb)
                out[i, 0, y, x] = g
                total += g
        mean = total * inv
        var = 0.0
        for y in range(h):
            for x in range(w):
                d = out[i, 0, y, x] - mean
                var += d * d
        scale = np.float32(1.0 / max(np.sqrt(var * inv), min_std))
        m32 = np.float32(mean)
        for y in range(h):
            for x in range(w):
                out[i, 0, y, x] = (out[i, 0, y, x] - m32) * scale


def preprocess_crops(crops: np.ndarray, channels: int, lcn: bool,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Grayscale/colour conversion and per-crop (or local) contrast normalisation.

    ``out`` (float32 ``(N, C, S, S)``, C-contiguous) receives the result when given (no
    allocation on the grey, non-LCN path used at run time).
    """
    n, h, w = crops.shape[:3]
    if out is None:
        out = np.empty((n, channels, h, w), np.float32)
    if channels == 1 and not lcn and crops.dtype == np.uint8 and out.flags.c_contiguous:
        _gray_standardise(np.ascontiguousarray(crops), out, MIN_STD)
        return out
    x = crops.astype(np.float32)
    if channels == 1:
        x = x @ GRAY_WEIGHTS
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
    if lcn:
        for i in range(x.shape[0]):
            for c in range(x.shape[1]):
                plane = np.ascontiguousarray(x[i, c])
                mean = cv2.GaussianBlur(plane, (0, 0), 4.0)
                centred = plane - mean
                std = np.sqrt(cv2.GaussianBlur(centred * centred, (0, 0), 4.0))
                out[i, c] = centred / np.maximum(std, 8.0)
        return out
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    np.divide(x - mean, np.maximum(std, MIN_STD), out=out)
    return out


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
    aug: Augment | None, shuffle: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (crops uint8 (B,S,S,3), points float32 (B,68,2)) batches."""
    order = rng.permutation(len(samples)) if shuffle else np.arange(len(samples))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        crops, pts = zip(
            *(face_crop(samples[i].image, samples[i].points, size, rng, aug) for i in idx),
            strict=True,
        )
        yield np.stack(crops), np.stack(pts).astype(np.float32)
