"""Per-landmark offset calibration of a trained model, fitted on its training images.

A heatmap model's argmax is the mode of each landmark's distribution; where that distribution is
skewed (jaw contour) or the labels sit off the pixel-centre convention (the flip augmentation
then averages two conventions), the mode is off the labels by a consistent amount. The offset is
the mean of ``label - prediction`` per landmark, in heatmap pixels of the standard upright crop,
over the training set (never the validation set); the landmarker adds it before mapping points
back to the frame. Stored in the checkpoint's metadata as ``point_offset``.

Run: python -m tracker.training.calibrate CKPT [--train DIR] [--out OUT]  (OUT defaults to CKPT)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tracker.io.pts import load_folder
from tracker.models import heatmap
from tracker.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tracker.training.data import batches


def fit_point_offset(ckpt: Checkpoint, folder: str | Path, batch: int = 128) -> np.ndarray:
    """Mean ``label - prediction`` per landmark (heatmap px, float32 ``(K, 2)``) over ``folder``."""
    samples = load_folder(folder)
    if not samples:
        raise ValueError(f"no labelled images in {folder}")
    size = ckpt.net.size
    pre = ckpt.preprocess
    model = ckpt.model.eval()
    total = np.zeros((ckpt.net.n_points, 2), np.float64)
    rng = np.random.default_rng(0)
    for crops, pts in batches(samples, size, batch, rng, None, shuffle=False):
        with torch.no_grad():
            logits = model(torch.from_numpy(pre(crops))).numpy()
        points, _ = heatmap.decode(np.ascontiguousarray(logits))
        total += (pts - points).sum(axis=0)
    return (total / len(samples)).astype(np.float32)


def calibrate(path: str | Path, train: str | Path, out: str | Path | None = None) -> np.ndarray:
    """Fit the offset of the checkpoint at ``path`` on ``train`` and save it into ``out``."""
    ckpt = load_checkpoint(path)
    offset = fit_point_offset(ckpt, train)
    meta = {**ckpt.meta, "point_offset": offset.round(4).tolist(), "point_offset_data": str(train)}
    save_checkpoint(out or path, ckpt.model, ckpt.net, ckpt.dkm, meta)
    return offset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--train", default="../shared/data/faces68/train")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    offset = calibrate(args.checkpoint, args.train, args.out)
    print(f"point offset (heatmap px): mean x {offset[:, 0].mean():+.3f}, y {offset[:, 1].mean():+.3f}, "
          f"max |offset| {np.abs(offset).max():.3f} -> {args.out or args.checkpoint}")


if __name__ == "__main__":
    main()
