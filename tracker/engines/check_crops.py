"""Synthetic face crops for engine accuracy checks (no image data ships with the package).

A crop is a drawn face: the mean 68-point shape of the faces68 training set in the standard
crop (:data:`MEAN_SHAPE`), randomly rotated, scaled and shifted, with a filled face, eyes,
brows, nose and lips in random colours over a shaded background, blurred, with noise. The
default model is confident on these (mean point confidence ~0.5, real val crops ~0.46), so a
reduced-precision engine's point error on them tracks its error on real faces (OpenVINO bf16
against ONNX Runtime fp32, p99: 0.17 px on 24 drawn faces, 0.28 px on 64 faces68/val crops).
Real labelled crops are used instead when ``$TRACKER_CHECK_DATA`` names a folder of images
with ``.pts`` files.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Mean of the 3,402 faces68/train landmark sets in the standard crop (tracker.geometry.MARGIN
# around the landmarks' box), as thousandths of the crop side from its centre, (x, y) pairs.
_MEAN_MILLI = (
    # jaw (0-16)
    -388, -216, -380, -116, -361, -23, -339, 66, -303, 165, -246, 249, -182, 303, -101, 351, 20,
    379, 138, 344, 214, 295, 272, 239, 324, 157, 353, 57, 369, -31, 383, -124, 384, -226,
    # brows (17-26)
    -293, -313, -247, -344, -191, -353, -139, -348, -91, -335, 97, -337, 141, -350, 193, -355,
    249, -346, 294, -317,
    # nose (27-35)
    5, -225, 7, -157, 11, -92, 13, -37, -52, 4, -25, 12, 12, 19, 47, 10, 73, 1,
    # eyes (36-47)
    -219, -232, -182, -244, -136, -245, -95, -227, -133, -213, -182, -212, 102, -229, 145, -247,
    191, -249, 227, -235, 190, -216, 143, -215,
    # mouth (48-67)
    -123, 131, -76, 102, -17, 84, 13, 90, 42, 84, 98, 100, 141, 128, 96, 168, 58, 191, 15, 197,
    -30, 194, -73, 171, -113, 129, -26, 118, 13, 117, 51, 118, 131, 126, 50, 145, 13, 150, -26,
    147,
)
MEAN_SHAPE = np.asarray(_MEAN_MILLI, np.float32).reshape(68, 2) / 1000.0


def draw_face(size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic RGB ``uint8 (size, size, 3)`` face crop."""
    big = size * 4  # drawn at 4x, then area-averaged
    angle = rng.normal(0.0, 0.15)
    scale = rng.uniform(0.9, 1.1)
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    shape = MEAN_SHAPE @ np.array([[c, s], [-s, c]], np.float32).T
    shape = shape * rng.uniform(0.95, 1.05, 2) + rng.uniform(-0.04, 0.04, 2)
    px = ((shape + 0.5) * big).astype(np.float32)
    img = np.full((big, big, 3), rng.uniform(30, 220), np.float32)
    img += np.linspace(-30, 30, big, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
    skin = np.array([rng.uniform(120, 230), rng.uniform(90, 190), rng.uniform(70, 170)])
    dark = (skin * rng.uniform(0.2, 0.45)).tolist()
    forehead = px[17:27][::-1] - np.array([0.0, 0.12 * big * scale], np.float32)
    cv2.fillPoly(img, [np.concatenate([px[:17], forehead]).astype(np.int32)], skin.tolist(),
                 cv2.LINE_AA)
    line = max(1, big // 80)
    for a, b in ((17, 22), (22, 27)):  # brows
        cv2.polylines(img, [px[a:b].astype(np.int32)], False, dark, max(2, big // 40), cv2.LINE_AA)
    for a in (36, 42):  # eyes: white, an iris, an outline
        eye = px[a:a + 6].astype(np.int32)
        cv2.fillPoly(img, [eye], (235, 235, 235), cv2.LINE_AA)
        centre = tuple(int(v) for v in px[a:a + 6].mean(axis=0))
        cv2.circle(img, centre, max(2, big // 45), dark, -1, cv2.LINE_AA)
        cv2.polylines(img, [eye], True, dark, max(1, big // 90), cv2.LINE_AA)
    cv2.polylines(img, [px[27:31].astype(np.int32)], False, (skin * 0.7).tolist(), line, cv2.LINE_AA)
    cv2.polylines(img, [px[31:36].astype(np.int32)], False, (skin * 0.5).tolist(), line, cv2.LINE_AA)
    cv2.fillPoly(img, [px[48:60].astype(np.int32)], (skin * [0.8, 0.45, 0.45]).tolist(),
                 cv2.LINE_AA)
    cv2.fillPoly(img, [px[60:68].astype(np.int32)], (skin * 0.25).tolist(), cv2.LINE_AA)
    cv2.polylines(img, [px[:17].astype(np.int32)], False, (skin * 0.6).tolist(), max(1, big // 60),
                  cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), big / 120)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0.0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def check_crops(size: int, count: int = 24, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` RGB crops for accuracy checks and where they came from: real labelled faces
    from ``$TRACKER_CHECK_DATA`` when set, else :func:`draw_face` faces."""
    root = os.environ.get("TRACKER_CHECK_DATA")
    if root and Path(root).is_dir():
        from tracker.geometry import landmark_crop
        from tracker.io.pts import load_folder

        samples = load_folder(root, limit=count)
        if samples:
            crops = np.stack([landmark_crop(s.image, s.points, size) for s in samples])
            return crops, f"{Path(root).name}: {len(samples)} real crops"
    rng = np.random.default_rng(seed)
    return np.stack([draw_face(size, rng) for _ in range(count)]), f"{count} drawn faces"
