"""300-W ``.pts`` landmark files and folders of labelled images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tracker.face68 import N_POINTS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


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
