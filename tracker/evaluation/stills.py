"""Landmark accuracy on a 300-W style folder: NME, failure rate, CED/AUC, speed, plots."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.evaluation.metrics import nme, summarize
from tracker.face68 import EYES, MOUTH, N_POINTS
from tracker.geometry import box_from_points
from tracker.io.pts import Sample, load_folder
from tracker.landmarker import Landmarker
from tracker.types import Box

OCCLUDERS: dict[str, range] = {"eyes": EYES, "mouth": MOUTH}
"""Regions :func:`occlude` can cover, by name (the ``--occlude`` choices)."""


@dataclass(frozen=True)
class EvalResult:
    """Per-image NMEs (inf for a face the detector missed) and predictions."""

    nmes: np.ndarray
    preds: np.ndarray
    ms_per_face: float

    def summary(self) -> dict[str, float | int]:
        """n, nme_mean, nme_median (over found faces), fr_010, auc_010 (misses fail), ms_per_face."""
        found = np.isfinite(self.nmes)
        out = summarize(self.nmes)
        if not found.all():
            inner = summarize(self.nmes[found]) if found.any() else {"nme_mean": float("nan"),
                                                                       "nme_median": float("nan")}
            out["nme_mean"], out["nme_median"] = inner["nme_mean"], inner["nme_median"]
        out["misses"] = int((~found).sum())
        out["ms_per_face"] = self.ms_per_face
        return out


def occlude(image: np.ndarray, points: np.ndarray, region: str, seed: int) -> np.ndarray:
    """Paste a noise patch over the given facial region (for occlusion robustness tests)."""
    pts = points[OCCLUDERS[region]]
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    pad = int(0.15 * max(x1 - x0, y1 - y0)) + 2
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    out = image.copy()
    rng = np.random.default_rng(seed)
    out[y0:y1, x0:x1] = rng.integers(0, 256, size=(y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return out


def _match(boxes: list[Box], truth: Box) -> Box | None:
    """The detection whose centre lies inside the true box and is nearest its centre."""
    best, best_d = None, float("inf")
    tx, ty = truth.center
    for b in boxes:
        cx, cy = b.center
        if truth.x0 <= cx <= truth.x1 and truth.y0 <= cy <= truth.y1:
            d = (cx - tx) ** 2 + (cy - ty) ** 2
            if d < best_d:
                best, best_d = b, d
    return best


def evaluate(samples: list[Sample], landmarker: Landmarker, detector: object | None = None,
             occluder: str | None = None) -> EvalResult:
    """Predict every sample; the face box is the tight landmark box unless ``detector`` is given."""
    preds = np.zeros((len(samples), N_POINTS, 2), np.float32)
    gts = np.stack([s.points for s in samples])
    errs = np.zeros(len(samples))
    times = []
    for i, s in enumerate(samples):
        image = occlude(s.image, s.points, occluder, i) if occluder else s.image
        truth = box_from_points(s.points)
        box = truth if detector is None else _match(detector.detect(image), truth)
        if box is None:
            errs[i] = np.inf
            continue
        t0 = time.perf_counter()
        preds[i] = landmarker.predict(image, [box])[0].points
        times.append(time.perf_counter() - t0)
        errs[i] = nme(preds[i][None], gts[i][None])[0]
    ms = 1000 * float(np.median(times)) if times else float("nan")
    return EvalResult(errs, preds, ms)


def write_plots(samples: list[Sample], result: EvalResult, out_dir: str | Path,
                name: str = "model") -> list[Path]:
    """CED plot and the best/median/worst representative grid as PNGs."""
    from tracker.evaluation.plots import ced_plot, representative_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ced, grid = out / "ced.png", out / "representative.png"
    found = np.isfinite(result.nmes)
    ced_plot({name: result.nmes}, ced)
    keep = [i for i in range(len(samples)) if found[i]]
    representative_grid([samples[i].image for i in keep], result.preds[keep],
                        np.stack([samples[i].points for i in keep]), result.nmes[keep], grid)
    return [ced, grid]


def load_eval_set(data: str | Path, limit: int | None = None) -> list[Sample]:
    """Labelled samples of a folder, failing clearly when there are none."""
    samples = load_folder(data, limit)
    if not samples:
        raise FileNotFoundError(f"no labelled 68-point images (.jpg/.png + .pts) under {data}")
    return samples
