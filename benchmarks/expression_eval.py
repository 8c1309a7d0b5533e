"""How well the expression signals of predicted points follow the labelled ones, and whether the
smoothing filter keeps a blink.

Run: python benchmarks/expression_eval.py [--data ../shared/data/faces68/val
         --data ../shared/data/wild68/val] [--weights W] [--limit N] [--json OUT.json]

1. Stills: the shipped model (``Landmarker.from_pretrained``) predicts each labelled face from
   the tight box of its true landmarks; every raw ratio of ``tracker.outputs.expression`` is
   computed on the true and on the predicted points, and the Pearson correlation is reported
   per folder, with percentiles of the true ratios (what the 0-1 mappings are set from).
2. Closed eyes: the eyes whose true eye aspect ratio is below ``--closed`` (0.12): the
   predicted ratio beside the true one, to see whether the model closes the lids at all.
3. Synthetic blinks: a predicted face held still at 30 fps with the RCN's measured jitter
   (0.145 % of the inter-ocular distance per point), its upper lids moved down and back over
   3, 4 and 5 frames, either until the lids (nearly) meet or as far as the model moves them on
   a truly closed eye (the ratio of its closed to open eye aspect ratio measured in 2.).
   Reported per clip: the minimum ``eye_open_left`` and the frames a blink fired, for the
   signals of the raw points, of the points after the default landmark ``Smoother`` (what a
   stage after smoothing would see), and of what ships (``ExpressionStage``: raw points,
   signals filtered); and 0 blinks expected over 10 s of a still face.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tracker.config.schema import Config
from tracker.evaluation.stills import load_eval_set
from tracker.geometry import box_from_points
from tracker.landmarker import Landmarker
from tracker.outputs.describe import ExpressionStage
from tracker.outputs.expression import (
    BLINK_CLOSED,
    eye_openness,
    raw_measures,
)
from tracker.temporal.smoothing import Smoother
from tracker.types import Box, Expression, Frame, Landmarks, TrackedFrame

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEYS = ("ear_left", "ear_right", "mouth_gap", "mouth_width", "brow_left", "brow_right")
JITTER = 0.0015  # the RCN's frame-to-frame jitter on still faces, 0.145 % IOD (README)
HALF = 0.5  # a still eye "reads closed" when eye_open is below this
OPEN = 0.2  # true eye aspect ratio above which an eye counts as open
UPPER_TO_LOWER = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper lid point -> lower lid point


def measures(points: np.ndarray) -> np.ndarray:
    m = raw_measures(points)
    return np.array([m[k] for k in KEYS])


def stills(folder: Path, lm: Landmarker, limit: int | None, closed: float) -> dict[str, object]:
    samples = load_eval_set(folder, limit)
    true = np.stack([measures(s.points) for s in samples])
    pred = np.stack([measures(lm.predict(s.image, [box_from_points(s.points)])[0].points)
                     for s in samples])
    ok = np.isfinite(true).all(axis=1) & np.isfinite(pred).all(axis=1)
    true, pred = true[ok], pred[ok]
    out: dict[str, object] = {"faces": int(ok.sum())}
    for j, key in enumerate(KEYS):
        out[key] = {
            "pearson": round(float(np.corrcoef(true[:, j], pred[:, j])[0, 1]), 3),
            "true_pct": {p: round(float(np.percentile(true[:, j], p)), 3)
                         for p in (1, 5, 50, 95, 99)},
            "pred_pct": {p: round(float(np.percentile(pred[:, j], p)), 3)
                         for p in (1, 5, 50, 95, 99)},
        }
    ears = np.concatenate([true[:, :2], pred[:, :2]], axis=1)  # true L, true R, pred L, pred R
    eyes = [(ears[i, k], ears[i, k + 2]) for i in range(len(ears)) for k in (0, 1)
            if ears[i, k] < closed]
    both = np.array([(t, p) for t, p in eyes]).reshape(-1, 2)
    out["closed_eyes"] = {
        "count": len(eyes),
        "true_ear_median": round(float(np.median(both[:, 0])), 3) if len(eyes) else None,
        "pred_ear_median": round(float(np.median(both[:, 1])), 3) if len(eyes) else None,
        "pred_ear_max": round(float(both[:, 1].max()), 3) if len(eyes) else None,
        "pred_openness_median": round(float(np.median([eye_openness(p) for _, p in eyes])), 3)
        if len(eyes) else None,
        "eyes": [[round(float(t), 3), round(float(p), 3)] for t, p in eyes],
    }
    open_pred = pred[:, :2][true[:, :2] > OPEN]
    out["open_eyes"] = {
        "count": int(open_pred.size),
        "pred_ear_pct": {p: round(float(np.percentile(open_pred, p)), 3) for p in (1, 5, 50)},
        "read_closed": round(float(np.mean([eye_openness(e) < HALF for e in open_pred])), 3),
    }
    if eyes:
        out["closed_eyes"]["read_closed"] = round(  # type: ignore[index]
            float(np.mean([eye_openness(p) < HALF for _, p in eyes])), 3)
    return out


def blink_clip(points: np.ndarray, frames: int, target: float | None, seed: int = 0) -> list[np.ndarray]:
    """15 open frames, the upper lids moving down and back over ``frames`` frames (peak in the
    middle), 15 open frames; noise of :data:`JITTER` x the inter-ocular distance on every
    point. At the peak each eye's aspect ratio is ``target`` times its open one (None: the
    lids go 0.9 of the way onto the lower lids)."""
    rng = np.random.default_rng(seed)
    sigma = JITTER * float(np.hypot(*(points[45] - points[36])))
    depth = {eye: 0.9 if target is None else 1.0 - target for eye in ("left", "right")}
    k = (frames + 1) // 2
    closure = [0.0] * 15 + [min(i + 1, frames - i) / k for i in range(frames)] + [0.0] * 15
    clip = []
    for c in closure:
        p = points.astype(np.float64).copy()
        for up, lo in UPPER_TO_LOWER:
            p[up] += depth["left" if up >= 42 else "right"] * c * (points[lo] - points[up])
        clip.append((p + rng.normal(0.0, sigma, p.shape)).astype(np.float32))
    return clip


def _left(tracked: TrackedFrame) -> Expression:
    e = tracked.faces[0].expression
    assert e is not None
    return e


def blinks(points: np.ndarray, closed_ratio: float) -> list[dict[str, object]]:
    """Lids that meet (depth 0.9) and lids that stop at ``closed_ratio`` of the open eye
    aspect ratio (the model's median on labelled closed eyes over its median on open ones, in
    the folder whose closed eyes are most closed). ``jitter``: the standard deviation of
    eye_open_left over the still frames 5-14 (after the filters settle)."""
    rows = []
    params = Config().smooth.params()
    blank = np.zeros((1, 1, 3), np.uint8)
    for (label, target), frames in [(d, n) for d in (("lids meet", None),
                                                     ("model-like", closed_ratio))
                                    for n in (3, 4, 5)]:
        clip = blink_clip(points, frames, target)
        smoother, stage = Smoother(params), ExpressionStage()
        unfiltered, after_smoothing = ExpressionStage(None), ExpressionStage(None)
        raw, after, ships = [], [], []
        fired_after, fired_ships = [], []
        for i, p in enumerate(clip):
            face = Landmarks(i, i / 30.0, 1, p, np.ones(68, np.float32), 1.0, Box(0, 0, 1, 1))
            tracked = TrackedFrame(Frame(i, i / 30.0, blank), (face,))
            raw.append(_left(unfiltered.process(tracked)).eye_open_left)
            e = _left(after_smoothing.process(smoother(tracked)))
            after.append(e.eye_open_left)
            fired_after += [i] if e.blink_left else []
            e = _left(stage.process(tracked))
            ships.append(e.eye_open_left)
            fired_ships += [i] if e.blink_left else []
        rows.append({
            "closure": label, "frames": frames,
            "threshold": BLINK_CLOSED,
            "raw_min": round(min(raw), 3), "raw_jitter": round(float(np.std(raw[5:15])), 3),
            "smoothed_points_min": round(min(after), 3), "smoothed_points_blinks": fired_after,
            "shipped_min": round(min(ships), 3), "shipped_blinks": fired_ships,
            "shipped_jitter": round(float(np.std(ships[5:15])), 3),
        })
    return rows


def still(points: np.ndarray, frames: int = 300) -> int:
    """Blink events that the shipped stage fires on a still face (noise only) over 10 s."""
    rng = np.random.default_rng(1)
    sigma = JITTER * float(np.hypot(*(points[45] - points[36])))
    stage, blank, fired = ExpressionStage(), np.zeros((1, 1, 3), np.uint8), 0
    for i in range(frames):
        p = (points + rng.normal(0.0, sigma, points.shape)).astype(np.float32)
        face = Landmarks(i, i / 30.0, 1, p, np.ones(68, np.float32), 1.0, Box(0, 0, 1, 1))
        e = stage.process(TrackedFrame(Frame(i, i / 30.0, blank), (face,))).faces[0].expression
        assert e is not None
        fired += int(e.blink_left) + int(e.blink_right)
    return fired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", type=Path)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--closed", type=float, default=0.12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    folders = args.data or [DATA / "faces68" / "val", DATA / "wild68" / "val"]
    lm = Landmarker.from_pretrained(args.weights)
    report: dict[str, object] = {}
    for folder in folders:
        report[str(folder)] = stills(folder, lm, args.limit, args.closed)
        print(folder, json.dumps(report[str(folder)], indent=1))
    first = load_eval_set(folders[0], 40)
    ears = [measures(lm.predict(s.image, [box_from_points(s.points)])[0].points)[:2].mean()
            for s in first]
    face = first[int(np.argsort(ears)[len(ears) // 2])]  # a typical open-eyed face
    pts = lm.predict(face.image, [box_from_points(face.points)])[0].points
    folders_closed = [r for r in report.values() if r["closed_eyes"]["count"]]  # type: ignore[index]
    tightest = min(folders_closed, key=lambda r: r["closed_eyes"]["true_ear_median"])  # type: ignore[index]
    ratio = tightest["closed_eyes"]["pred_ear_median"] / tightest["open_eyes"]["pred_ear_pct"][50]  # type: ignore[index]
    report["blinks"] = {"face": face.name, "closed_ratio": round(ratio, 3),
                        "clips": blinks(pts, ratio), "false_blinks_10s_still": still(pts)}
    print(json.dumps(report["blinks"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
