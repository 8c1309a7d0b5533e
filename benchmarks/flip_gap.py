"""How far the labels sit from the mirror-symmetric position of what they mark (x, crop pixels).

A model trained *without* flips learns the labels' convention; run on a mirrored crop and mirrored
back, its points move by -2 * offset. The architecture and the decoder are exactly mirror-
equivariant (checked in tests), so the gap measures the data. The offset is fitted as
``a * scale + b`` (``scale`` = crop px per image px): ``b`` is a constant in crop pixels (a fraction
of the face size), ``a`` a constant in image pixels.

    python benchmarks/flip_gap.py MODEL.pt [--data ../shared/data/faces68/train]

faces68/train with a no-flip model (runs/r5_noflip, 2026-11-26): mean offset 0.75 crop px,
fit 0.07 * scale + 0.69, i.e. about 0.011 of the crop side (``tracker train --flip-shift``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tracker.face68 import FLIP_PERM
from tracker.geometry import MARGIN, box_from_points
from tracker.io.pts import load_folder
from tracker.models import heatmap
from tracker.models.checkpoint import load_checkpoint
from tracker.training.data import batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="../shared/data/faces68/train")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.model)
    size = ckpt.net.size
    pre = ckpt.preprocess
    samples = load_folder(args.data)
    gaps = []
    for crops, _ in batches(samples, size, 256, np.random.default_rng(0), None, shuffle=False):
        x = pre(crops)
        with torch.no_grad():
            p = heatmap.decode(ckpt.model(torch.from_numpy(x)).numpy())[0]
            mirrored = np.ascontiguousarray(x[..., ::-1])
            q = heatmap.decode(ckpt.model(torch.from_numpy(mirrored)).numpy())[0][:, FLIP_PERM]
        gaps.append((size - 1 - q[..., 0] - p[..., 0]).mean(axis=1))
    offset = -np.concatenate(gaps) / 2
    side = np.array([MARGIN * max(box_from_points(s.points).width, box_from_points(s.points).height)
                     for s in samples])
    scale = size / side
    (a, b), *_ = np.linalg.lstsq(np.stack([scale, np.ones_like(scale)], 1), offset, rcond=None)
    print(f"{len(samples)} images: mean offset {offset.mean():.3f} crop px "
          f"({offset.mean() / size:.4f} of the crop side); fit {a:.3f} * scale + {b:.3f}")


if __name__ == "__main__":
    main()
