"""Landmark accuracy on 300-W style folders: NME, failure rate, CED/AUC, bias, speed, plots.

Results are reported over all images and per data folder; a folder holding InfAnFace's
``train_``/``test_`` file-name splits is also reported per split.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.evaluation.metrics import EVAL_REGIONS, bias_report, nme, summarize
from tracker.face68 import EYES, MOUTH, N_POINTS
from tracker.geometry import box_from_points
from tracker.io.pts import Sample, load_folder
from tracker.landmarker import Landmarker
from tracker.types import Box

OCCLUDERS: dict[str, range] = {"eyes": EYES, "mouth": MOUTH}
"""Regions :func:`occlude` can cover, by name (the ``--occlude`` choices)."""

SPLIT_PREFIXES = ("train_", "test_")
"""File-name prefixes of InfAnFace's own splits (``wild68/infant``); ``test_`` is held out."""


@dataclass(frozen=True)
class EvalResult:
    """Per-image NMEs (inf for a face the detector missed), predictions and, when known, the
    ground truth, per-image model ms (NaN for a miss), sample names and data folders."""

    nmes: np.ndarray
    preds: np.ndarray
    ms_per_face: float
    gts: np.ndarray | None = None
    ms: np.ndarray | None = None
    names: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """n, nme_mean, nme_median (over found faces), fr_010, auc_010 (misses fail), misses,
        ms_per_face and, with ground truth, the signed offset and per-region NME/offset
        (:func:`tracker.evaluation.metrics.bias_report`, over found faces)."""
        found = np.isfinite(self.nmes)
        out: dict[str, object] = dict(summarize(self.nmes))
        if not found.all():
            inner = summarize(self.nmes[found]) if found.any() else {"nme_mean": float("nan"),
                                                                       "nme_median": float("nan")}
            out["nme_mean"], out["nme_median"] = inner["nme_mean"], inner["nme_median"]
        out["misses"] = int((~found).sum())
        out["ms_per_face"] = self.ms_per_face
        if self.gts is not None:
            if found.any():
                out.update(bias_report(self.preds[found], self.gts[found]))
            else:
                nan = float("nan")
                out.update({"offset_x": nan, "offset_y": nan, "regions": {
                    r: {"nme_mean": nan, "offset_x": nan, "offset_y": nan} for r in EVAL_REGIONS}})
        return out

    def subset(self, mask: np.ndarray) -> EvalResult:
        """The images where ``mask`` is true (ms_per_face: their median)."""
        m = np.asarray(mask, bool)
        ms = None if self.ms is None else self.ms[m]
        median = self.ms_per_face
        if ms is not None:
            median = float(np.nanmedian(ms)) if np.isfinite(ms).any() else float("nan")
        pick = [i for i in range(len(m)) if m[i]]
        return EvalResult(self.nmes[m], self.preds[m], median,
                          None if self.gts is None else self.gts[m], ms,
                          tuple(self.names[i] for i in pick) if self.names else (),
                          tuple(self.groups[i] for i in pick) if self.groups else ())

    def report(self) -> dict[str, object]:
        """:meth:`summary` plus ``folders``: the same summary per data folder (in order), with
        ``splits`` per :data:`SPLIT_PREFIXES` prefix for a folder whose names carry them."""
        out = self.summary()
        if not self.groups:
            return out
        folders: dict[str, object] = {}
        groups = np.array(self.groups, dtype=object)
        for folder in dict.fromkeys(self.groups):
            part = self.subset(groups == folder)
            entry = part.summary()
            if any(n.startswith(SPLIT_PREFIXES[1]) for n in part.names):
                entry["splits"] = {
                    p: part.subset(np.array([n.startswith(p) for n in part.names])).summary()
                    for p in SPLIT_PREFIXES if any(n.startswith(p) for n in part.names)}
            folders[folder] = entry
        out["folders"] = folders
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
             occluder: str | None = None, groups: Sequence[str] = ()) -> EvalResult:
    """Predict every sample; the face box is the tight landmark box unless ``detector`` is given.

    ``groups`` names each sample's data folder (for :meth:`EvalResult.report`).
    """
    if groups and len(groups) != len(samples):
        raise ValueError(f"{len(groups)} group labels for {len(samples)} samples")
    preds = np.zeros((len(samples), N_POINTS, 2), np.float32)
    gts = np.stack([s.points for s in samples])
    errs = np.zeros(len(samples))
    ms = np.full(len(samples), np.nan)
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
        ms[i] = 1000 * times[-1]
        errs[i] = nme(preds[i][None], gts[i][None])[0]
    median = 1000 * float(np.median(times)) if times else float("nan")
    return EvalResult(errs, preds, median, gts, ms, tuple(s.name for s in samples),
                      tuple(groups))


def slug(text: str) -> str:
    """A file-name part for a folder or model label: its last two path parts, ``_``-joined."""
    parts = [p for p in Path(text).parts if p not in ("/", ".", "..")][-2:]
    return re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts)).strip("_") or "data"


def write_plots(samples: list[Sample], results: EvalResult | Mapping[str, EvalResult],
                out_dir: str | Path, name: str = "model") -> list[Path]:
    """``ced.png``: one CED curve per model (a mapping name -> result) over all images, and
    ``ced_<folder>.png`` per data folder when there are several; the best/median/worst grid
    ``representative.png`` (``representative_<model>.png`` each when several models)."""
    from tracker.evaluation.plots import ced_plot, representative_grid

    if isinstance(results, EvalResult):
        results = {name: results}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "ced.png"]
    ced_plot({k: r.nmes for k, r in results.items()}, written[0])
    first = next(iter(results.values()))
    folders = list(dict.fromkeys(first.groups))
    if len(folders) > 1:
        groups = np.array(first.groups, dtype=object)
        used: set[str] = set()
        for folder in folders:
            base = stem = slug(folder)
            k = 2
            while stem in used:
                stem, k = f"{base}_{k}", k + 1
            used.add(stem)
            path = out / f"ced_{stem}.png"
            ced_plot({k2: r.nmes[groups == folder] for k2, r in results.items()}, path)
            written.append(path)
    for label, result in results.items():
        found = np.isfinite(result.nmes)
        keep = [i for i in range(len(samples)) if found[i]]
        if not keep:
            continue
        grid = out / ("representative.png" if len(results) == 1 else
                      f"representative_{slug(label)}.png")
        representative_grid([samples[i].image for i in keep], result.preds[keep],
                            np.stack([samples[i].points for i in keep]), result.nmes[keep], grid)
        written.append(grid)
    return written


def load_eval_set(data: str | Path, limit: int | None = None) -> list[Sample]:
    """Labelled samples of a folder, failing clearly when there are none."""
    samples = load_folder(data, limit)
    if not samples:
        raise FileNotFoundError(f"no labelled 68-point images (.jpg/.png + .pts) under {data}")
    return samples


def load_eval_sets(folders: Sequence[str | Path],
                   limit: int | None = None) -> tuple[list[Sample], tuple[str, ...]]:
    """Samples of several folders (``limit`` each) and each sample's folder, as given."""
    samples: list[Sample] = []
    groups: list[str] = []
    for folder in folders:
        part = load_eval_set(folder, limit)
        samples += part
        groups += [str(folder)] * len(part)
    return samples, tuple(groups)


def _pct(v: object) -> str:
    return f"{float(v) * 100:.2f}%"


def _signed(v: object) -> str:
    return f"{float(v) * 100:+.2f}%"


def format_report(report: Mapping[str, object]) -> list[str]:
    """The text form of :meth:`EvalResult.report`: the summary, offsets, a per-region table and
    a per-folder table (percentages of the inter-ocular distance)."""
    lines = []
    for key in ("n", "nme_mean", "nme_median", "fr_010", "auc_010", "misses", "ms_per_face"):
        if key in report:
            value = report[key]
            shown = _pct(value) if key.startswith(("nme", "fr")) else (
                f"{value:.3f}" if isinstance(value, float) else value)
            lines.append(f"{key:12s} {shown}")
    if "offset_x" in report:
        lines.append(f"{'offset':12s} x {_signed(report['offset_x'])}  y "
                     f"{_signed(report['offset_y'])}  (mean predicted - true; +x right, +y down)")
        lines.append(f"{'region':12s} {'NME':>7s} {'offset x':>9s} {'offset y':>9s}")
        for name, r in report["regions"].items():  # type: ignore[union-attr]
            lines.append(f"{name:12s} {_pct(r['nme_mean']):>7s} {_signed(r['offset_x']):>9s} "
                         f"{_signed(r['offset_y']):>9s}")
    folders = report.get("folders")
    if folders:
        rows = []
        for folder, f in folders.items():  # type: ignore[union-attr]
            rows.append((folder, f))
            for prefix, sub in f.get("splits", {}).items():
                rows.append((f"{folder} [{prefix}*]", sub))
        width = max(len(r[0]) for r in rows)
        lines.append(f"{'folder':{width}s} {'n':>5s} {'NME':>7s} {'median':>7s} {'FR@0.10':>7s} "
                     f"{'AUC':>6s} {'misses':>6s} {'off x':>7s} {'off y':>7s}")
        for label, f in rows:
            off = (f"{_signed(f['offset_x']):>7s} {_signed(f['offset_y']):>7s}"
                   if "offset_x" in f else "")
            lines.append(f"{label:{width}s} {f['n']:5d} {_pct(f['nme_mean']):>7s} "
                         f"{_pct(f['nme_median']):>7s} {_pct(f['fr_010']):>7s} "
                         f"{f['auc_010']:6.3f} {f['misses']:6d} {off}".rstrip())
    return lines
