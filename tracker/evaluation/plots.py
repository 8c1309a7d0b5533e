"""Evaluation figures drawn with OpenCV only: CED curves and the best/median/worst grid.

Both functions return the drawn RGB image and write it as a PNG (parent folders are created).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from tracker.evaluation import metrics

__all__ = ["ced_plot", "representative_grid"]

# Distinct RGB line colours (cycled).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SUB = 4  # fixed-point bits for sub-pixel drawing
_ONE = 1 << _SUB


def _write_png(path: str | Path, rgb: np.ndarray) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {out}")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = (0, 0, 0), anchor: str = "left") -> None:
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, text, (x, y + h // 2), _FONT, scale, color, 1, cv2.LINE_AA)


def ced_plot(nmes_by_name: Mapping[str, np.ndarray], path: str | Path,
             threshold: float = 0.10, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """Cumulative error distribution curves (NME 0..threshold) with AUC/FR in the legend.

    ``size`` is (width, height) of the PNG. Returns the RGB image.
    """
    if not nmes_by_name:
        raise ValueError("no curves to plot")
    width, height = size
    left, right, top, bottom = 64, 16, 34, 48
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = left, width - right, height - bottom, top  # y0 is the bottom edge

    def px(e: float) -> int:
        return int(round((x0 + (x1 - x0) * e / threshold) * _ONE))

    def py(f: float) -> int:
        return int(round((y0 + (y1 - y0) * f) * _ONE))

    for i in range(11):
        gx = x0 + (x1 - x0) * i // 10
        gy = y0 + (y1 - y0) * i // 10
        cv2.line(img, (gx, y0), (gx, y1), (225, 225, 225), 1)
        cv2.line(img, (x0, gy), (x1, gy), (225, 225, 225), 1)
        if i % 2 == 0:
            _text(img, f"{threshold * i / 10:.2f}", (gx, y0 + 12), anchor="center")
            _text(img, f"{i / 10:.1f}", (x0 - 6, gy), anchor="right")
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    _text(img, "NME (inter-ocular)", ((x0 + x1) // 2, height - 14), 0.5, anchor="center")
    _text(img, "fraction of images", (8, top - 18), 0.5)
    _text(img, f"CED up to {threshold:.2f}", (x1, top - 18), 0.5, anchor="right")

    for i, (name, nmes) in enumerate(nmes_by_name.items()):
        color = PALETTE[i % len(PALETTE)]
        xs, ys = metrics.ced_curve(nmes, threshold)
        steps = [(px(xs[0]), py(ys[0]))]
        for j in range(1, len(xs)):
            steps.append((px(xs[j]), py(ys[j - 1])))
            steps.append((px(xs[j]), py(ys[j])))
        cv2.polylines(img, [np.array(steps, np.int32)], False, color, 2, cv2.LINE_AA, _SUB)
        ly = y1 + 14 + 18 * i
        cv2.line(img, (x0 + 10, ly), (x0 + 34, ly), color, 2, cv2.LINE_AA)
        label = (f"{name}  AUC {metrics.auc(nmes, threshold):.3f}  "
                 f"FR {100 * metrics.failure_rate(nmes, threshold):.1f}%  n={len(nmes)}")
        _text(img, label, (x0 + 40, ly))
    _write_png(path, img)
    return img


def _panel(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, caption: str,
           tile: int, caption_h: int) -> np.ndarray:
    """One grid cell: the image letterboxed into tile x tile, points drawn, caption below."""
    im = np.asarray(image)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    im = np.ascontiguousarray(im[..., :3], dtype=np.uint8)
    h, w = im.shape[:2]
    scale = tile / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    ox, oy = (tile - nw) // 2, (tile - nh) // 2
    cell = np.full((tile + caption_h, tile, 3), 40, np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    cell[oy:oy + nh, ox:ox + nw] = cv2.resize(im, (nw, nh), interpolation=interp)
    radius = max(2, tile // 128)
    for pts, color in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        p = np.asarray(pts, np.float64)
        p = (p + 0.5) * [nw / w, nh / h] - 0.5 + [ox, oy]
        for x, y in p[np.isfinite(p).all(axis=1)]:
            centre = (int(round(x * _ONE)), int(round(y * _ONE)))
            cv2.circle(cell, centre, radius * _ONE, color, -1, cv2.LINE_AA, _SUB)
    cell[tile:] = 255
    _text(cell, caption, (6, tile + caption_h // 2), 0.45)
    return cell


def representative_grid(images: Sequence[np.ndarray] | np.ndarray, preds: np.ndarray,
                        gts: np.ndarray, nmes: np.ndarray, path: str | Path,
                        tile: int = 256) -> np.ndarray:
    """Best, median and worst prediction side by side (green ground truth, red prediction).

    ``preds``/``gts`` (N, K, 2) are in each image's pixels. The PNG is (tile + 28) x 3*tile.
    Returns the RGB image.
    """
    e = np.asarray(nmes, dtype=np.float64).reshape(-1)
    n = len(images)
    if n == 0 or e.size != n or len(preds) != n or len(gts) != n:
        raise ValueError(f"need matching non-empty images/preds/gts/nmes, got {n}/"
                         f"{len(preds)}/{len(gts)}/{e.size}")
    order = np.argsort(e, kind="stable")
    picks = [("best", order[0]), ("median", order[(n - 1) // 2]), ("worst", order[-1])]
    caption_h = 28
    cells = [
        _panel(images[i], preds[i], gts[i], f"{label}  NME {e[i]:.4f}  #{i}", tile, caption_h)
        for label, i in picks
    ]
    grid = np.concatenate(cells, axis=1)
    _write_png(path, grid)
    return grid
