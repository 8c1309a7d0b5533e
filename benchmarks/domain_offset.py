"""What a constant per-domain offset correction buys: fitted on one folder, scored on another.

Run: python benchmarks/domain_offset.py [--fit ../shared/data/wild68/train]
         [--score ../shared/data/wild68/val] [--weights W] [--no-detector]

Both folders are run through ``tracker eval --detector``'s code. The corrections are fitted on
``--fit`` only and scored once on ``--score``:

- ``global``: one (x, y) offset, the mean ``true - predicted`` over all points, in the frame of
  the *predicted* outer eye corners (x along the eye line, unit = predicted inter-ocular
  distance), so it applies at run time without labels;
- ``per-landmark``: the same, one offset per landmark (68 x 2);
- ``calibration``: the landmarker's own per-landmark offset (``tracker.training.calibrate``,
  heatmap px of the upright landmark-box crop) refitted on ``--fit``, replacing the model's
  faces68 calibration.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from tracker.detect.detectors import create_detector
from tracker.evaluation.metrics import nme
from tracker.evaluation.stills import evaluate, load_eval_set
from tracker.face68 import OUTER_EYE_CORNERS
from tracker.landmarker import load_landmarker
from tracker.models.checkpoint import resolve_weights
from tracker.training.calibrate import calibrate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def eye_frame(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: unit vector along the predicted eye line, its normal, and the predicted IOD."""
    a, b = OUTER_EYE_CORNERS
    d = pred[:, b] - pred[:, a]
    s = np.linalg.norm(d, axis=1)
    u = d / s[:, None]
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)  # u turned 90 deg: image down for an upright face
    return u, v, s


def to_local(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``gt - pred`` per point in the predicted eye frame, in predicted-IOD units (N, 68, 2)."""
    u, v, s = eye_frame(pred)
    d = gt - pred
    return np.stack([(d * u[:, None]).sum(-1), (d * v[:, None]).sum(-1)], -1) / s[:, None, None]


def apply(pred: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Move the points by ``local`` (68 x 2 or 2) given in the predicted eye frame."""
    u, v, s = eye_frame(pred)
    loc = np.broadcast_to(local, pred.shape)
    return pred + s[:, None, None] * (loc[..., :1] * u[:, None] + loc[..., 1:] * v[:, None])


def found_pairs(result, samples) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    keep = np.isfinite(result.nmes)
    gts = np.stack([s.points for s in samples]).astype(np.float64)
    return result.preds[keep].astype(np.float64), gts[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", default=str(DATA / "wild68" / "train"))
    parser.add_argument("--score", default=str(DATA / "wild68" / "val"))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--no-detector", action="store_true", help="tight landmark boxes")
    args = parser.parse_args()
    det = None if args.no_detector else create_detector()
    lm = load_landmarker(args.weights)
    fit_samples, score_samples = load_eval_set(args.fit), load_eval_set(args.score)
    fit_pred, fit_gt = found_pairs(evaluate(fit_samples, lm, det), fit_samples)
    score_res = evaluate(score_samples, lm, det)
    pred, gt = found_pairs(score_res, score_samples)
    local = to_local(fit_pred, fit_gt)
    offsets = {"global": local.reshape(-1, 2).mean(0), "per-landmark": local.mean(0)}
    g = offsets["global"]
    print(f"fitted on {args.fit} ({len(fit_pred)} faces): global offset (true - predicted) "
          f"{100 * g[0]:+.2f} % IOD along the eyes, {100 * g[1]:+.2f} % across")
    rows = [("none (shipped model)", nme(pred, gt))]
    rows += [(name, nme(apply(pred, off), gt)) for name, off in offsets.items()]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "calibrated.pt"
        calibrate(resolve_weights(args.weights), args.fit, ckpt)
        res = evaluate(score_samples, load_landmarker(str(ckpt)), det)
        rows.append(("calibration refitted", res.nmes[np.isfinite(res.nmes)]))
    print(f"\nscored once on {args.score} ({len(pred)} faces found"
          f"{'' if args.no_detector else ', package detector'}):")
    print("| correction fitted on the fit folder | mean NME | median NME |\n|---|---|---|")
    for name, e in rows:
        print(f"| {name} | {100 * e.mean():.2f} % | {100 * np.median(e):.2f} % |")


if __name__ == "__main__":
    main()
