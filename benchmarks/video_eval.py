"""Landmarks on video: accuracy, jitter, lag, recovery and detector use, with exact ground truth.

Synthetic clips are made from ``faces68/val`` stills (``tracker.training.synthvideo``: still, slow and
fast motion with motion blur, a sweeping occluder, an exit from the frame and back; camera noise;
H.264 at CRF 26). The track stage runs on the decoded clips with and without the temporal
denoiser, and each run is scored raw and One-Euro smoothed:

* NME: mean point error over the inter-ocular (outer eye corner) distance, on frames where the
  whole face is in the frame and not occluded; ``occl`` on frames where the occluder covers
  points (all points, and the covered points alone);
* tracked: share of frames with the face fully in the frame that have a face;
* jitter: RMS frame-to-frame change of the error on still segments (from their 6th frame),
  % of inter-ocular distance; a smoother still settling after the motion before counts too, so
  ``jitter_opening_still`` also gives it on the clip's first segment alone (pure noise);
* lag: delay (frames) of the face centre behind the truth on moving segments, the shift that
  best aligns the two trajectories (searched in 0.05-frame steps);
* recovery: frames after the occluder has left / the face is fully back until the error is
  again below max(5 %, 1.5x the clip's median);
* detector calls per 100 frames.

Then the real clip (``videos/short_hamilton_clip.mp4``, no labels): per shot, frames with a face
and detector calls with ``max_faces`` 1 and 5, compared with a detector run on every frame.

    python benchmarks/video_eval.py [--weights W] [--clips 12] [--grid] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracker.face68 import OUTER_EYE_CORNERS  # noqa: E402
from tracker.temporal.smoothing import OneEuroParams, Smoother  # noqa: E402
from tracker.tracking.face_tracker import TrackConfig, TrackStage  # noqa: E402
from tracker.training.synthvideo import SEGMENTS, ClipMaker, ClipTruth, load_truth, save_truth, write_clip  # noqa: E402
from tracker.types import Frame, TrackedFrame  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
SHOTS = (("wide stage", 0, 19), ("profiles", 20, 81), ("singer", 82, 210), ("audience", 211, 274))
STILL, SLOW, FAST, OCCL, EXIT = (SEGMENTS.index(s) for s in SEGMENTS)


def decode(path: Path) -> list[Frame]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        return [Frame(i, float(f.pts * tb), f.to_ndarray(format="rgb24"))
                for i, f in enumerate(c.decode(s))]


def make_clips(n: int, cache: Path, seed: int) -> list[tuple[Path, ClipTruth]]:
    """``n`` synthetic clips from val stills (cached as .mp4 + .npz)."""
    from tracker.io.pts import load_folder

    cache.mkdir(parents=True, exist_ok=True)
    paths = [(cache / f"clip{i:02d}-s{seed}.mp4", cache / f"clip{i:02d}-s{seed}.npz")
             for i in range(n)]
    if not all(v.exists() and t.exists() for v, t in paths):
        samples = load_folder(DATA / "faces68" / "val")
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(samples), n, replace=False)
        for (video, truth), k in zip(paths, picks, strict=True):
            maker = ClipMaker(samples[int(k)], np.random.default_rng([seed, int(k)]))
            save_truth(write_clip(maker, video), truth)
    return [(v, load_truth(t)) for v, t in paths]


@dataclass
class Run:
    """One track-stage pass over a clip: points per frame (NaN = no face) and detector use."""

    points: np.ndarray  # (F, 68, 2)
    detected: np.ndarray  # (F,) bool
    tracked: list[TrackedFrame]


def track_clip(stage: TrackStage, frames: list[Frame]) -> Run:
    pts = np.full((len(frames), 68, 2), np.nan, np.float32)
    det = np.zeros(len(frames), bool)
    out = []
    for i, f in enumerate(frames):
        t = stage.process(f)
        det[i] = stage.detected
        if t.faces:
            pts[i] = max(t.faces, key=lambda x: x.presence).points
        out.append(t)
    return Run(pts, det, out)


def smooth_run(run: Run, params: OneEuroParams | None) -> np.ndarray:
    if params is None:
        return run.points
    sm = Smoother(params)
    pts = np.full_like(run.points, np.nan)
    for i, t in enumerate(run.tracked):
        s = sm(t)
        if s.faces:
            pts[i] = max(s.faces, key=lambda x: x.presence).points
    return pts


def _lag(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """Shift (frames) of ``pred`` behind ``gt`` minimising the mean squared distance."""
    if len(gt) < 8 or np.isnan(pred).any():
        return None
    t = np.arange(len(gt), dtype=np.float64)
    best, best_err = 0.0, np.inf
    for k in np.arange(-3.0, 3.0001, 0.05):
        lo, hi = max(0, int(np.ceil(k))), min(len(gt), int(np.floor(len(gt) - 1 + k)) + 1)
        if hi - lo < 5:
            continue
        tt = t[lo:hi] - k
        g = np.stack([np.interp(tt, t, gt[:, d]) for d in range(2)], 1)
        err = float(np.mean(np.sum((pred[lo:hi] - g) ** 2, 1)))
        if err < best_err:
            best, best_err = float(k), err
    return best


def score(pred: np.ndarray, truth: ClipTruth, detected: np.ndarray) -> dict[str, list[float]]:
    """Per-clip measurements (lists, pooled over clips by the caller)."""
    gt = truth.points.astype(np.float64)
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(gt[:, a] - gt[:, b], axis=1)
    err = np.linalg.norm(pred - gt, axis=2) / iod[:, None]  # (F, 68), NaN when untracked
    tracked = np.isfinite(err).all(1)
    full = truth.visible >= 1.0
    occl = truth.occluded.any(1)
    clean = full & ~occl
    m: dict[str, list[float]] = {k: [] for k in (
        "nme", "nme_occl", "nme_occl_points", "tracked", "jitter_sq", "jitter_open_sq",
        "lag_slow", "lag_fast",
        "recovery_occl", "recovery_exit", "det", "frames")}
    m["nme"] += list(err[clean & tracked].mean(1))
    m["nme_occl"] += list(err[occl & tracked].mean(1))
    m["nme_occl_points"] += list(err[occl & tracked][truth.occluded[occl & tracked]])
    m["tracked"] += list(tracked[full].astype(float))
    seg, start = truth.segment, truth.segment_start
    idx = np.arange(len(seg))
    still = (seg == STILL) & (idx >= start + 5) & clean
    e = (pred - gt) / iod[:, None, None]
    for i in np.flatnonzero(still[1:] & still[:-1]) + 1:
        if tracked[i] and tracked[i - 1]:
            d2 = list(np.sum((e[i] - e[i - 1]) ** 2, 1))
            m["jitter_sq"] += d2
            if start[i] == 0:  # the opening still segment: no motion before it to settle from
                m["jitter_open_sq"] += d2
    for s in np.unique(start[(seg == SLOW) | (seg == FAST)]):
        sel = (start == s) & full
        lag = _lag(pred[sel].mean(1), gt[sel].mean(1))
        if lag is not None:
            m["lag_slow" if seg[s] == SLOW else "lag_fast"].append(lag)
    med = float(np.median(err[clean & tracked].mean(1))) if (clean & tracked).any() else 0.05
    ok = tracked & (np.nan_to_num(err.mean(1), nan=1.0) < max(0.05, 1.5 * med))
    if occl.any():
        event = int(np.flatnonzero(occl)[-1]) + 1
        m["recovery_occl"].append(_frames_until(ok, event))
    for s in np.unique(start[seg == EXIT]):
        sel = np.flatnonzero((start == s) & ~full)
        if len(sel):
            event = int(sel[-1]) + 1
            m["recovery_exit"].append(_frames_until(ok, event))
    m["det"].append(float(detected.sum()))
    m["frames"].append(float(len(seg)))
    return m


def _frames_until(ok: np.ndarray, event: int) -> float:
    after = np.flatnonzero(ok[event:])
    return float(after[0]) if len(after) else float(len(ok) - event)


def summarise(ms: list[dict[str, list[float]]]) -> dict[str, float]:
    pool = {k: sum((m[k] for m in ms), []) for k in ms[0]}

    def mean(k: str, scale: float = 1.0) -> float:
        return float(np.mean(pool[k]) * scale) if pool[k] else float("nan")

    return {
        "nme_%": mean("nme", 100),
        "nme_occluded_frames_%": mean("nme_occl", 100),
        "nme_occluded_points_%": mean("nme_occl_points", 100),
        "tracked_%": mean("tracked", 100),
        "jitter_%iod": float(np.sqrt(np.mean(pool["jitter_sq"])) * 100),
        "jitter_opening_still_%iod": float(np.sqrt(np.mean(pool["jitter_open_sq"])) * 100),
        "lag_slow_frames": mean("lag_slow"),
        "lag_fast_frames": mean("lag_fast"),
        "recovery_occlusion_frames": mean("recovery_occl"),
        "recovery_exit_frames": mean("recovery_exit"),
        "detector_per_100_frames": 100 * sum(pool["det"]) / sum(pool["frames"]),
    }


def make_stage(weights: str | None, denoiser: object, max_faces: int = 1, **kw: object
               ) -> TrackStage:
    from tracker.detect.detectors import create_detector
    from tracker.landmarker import load_landmarker

    return TrackStage(create_detector("default"), load_landmarker(weights, "auto"),
                      TrackConfig(max_faces=max_faces, **kw),  # type: ignore[arg-type]
                      denoiser=denoiser)  # type: ignore[arg-type]


def synthetic(args: argparse.Namespace, denoiser: object) -> dict[str, object]:
    clips = make_clips(args.clips, Path(args.cache), args.seed)
    frames = [decode(v) for v, _ in clips]
    smooth = OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff)
    results: dict[str, object] = {}
    runs: dict[str, list[Run]] = {}
    for name, den in (("rcn", None), ("rcn+temporal", denoiser)):
        if name == "rcn+temporal" and den is None:
            continue
        t0 = time.perf_counter()
        runs[name] = [track_clip(make_stage(args.weights, den, roi_scale=args.roi_scale,
                                            motion=args.motion, roi_hold=args.roi_hold), f)
                      for f in frames]
        print(f"tracked {name}: {sum(len(f) for f in frames)} frames in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
        if args.save_runs:
            import pickle

            with open(Path(args.save_runs).with_suffix(f".{name}.pkl"), "wb") as fh:
                pickle.dump([(r.points, r.detected, [tf.faces for tf in r.tracked])
                             for r in runs[name]], fh)
        for label, params in (("raw", None), ("smoothed", smooth)):
            ms = [score(smooth_run(r, params), truth, r.detected)
                  for r, (_, truth) in zip(runs[name], clips, strict=True)]
            results[f"{name}, {label}"] = summarise(ms)
    if args.grid:
        grid = {}
        base = runs.get("rcn+temporal") or runs["rcn"]
        for mc in (0.3, 1.0, 2.0):
            for beta in (3.0, 10.0, 30.0):
                for dc in (1.0, 3.0):
                    p = OneEuroParams(mc, beta, dc)
                    ms = [score(smooth_run(r, p), truth, r.detected)
                          for r, (_, truth) in zip(base, clips, strict=True)]
                    s = summarise(ms)
                    grid[f"min_cutoff={mc} beta={beta} d_cutoff={dc}"] = {
                        k: s[k] for k in ("nme_%", "jitter_%iod", "jitter_opening_still_%iod",
                                          "lag_slow_frames", "lag_fast_frames")}
        results["grid"] = grid
    return results


def hamilton(args: argparse.Namespace, denoiser: object) -> dict[str, object]:
    from tracker.detect.detectors import create_detector

    frames = decode(HAMILTON)
    det = create_detector("default")
    every = np.array([len(det.detect(f.image)) > 0 for f in frames])
    out: dict[str, object] = {"detector_every_frame_frames_with_face": int(every.sum()),
                              "frames": len(frames)}
    for max_faces in (1, 5):
        stage = make_stage(args.weights, denoiser, max_faces, roi_scale=args.roi_scale,
                           motion=args.motion, roi_hold=args.roi_hold)
        run = track_clip(stage, frames)
        has = np.array([len(t.faces) > 0 for t in run.tracked])
        shots = {}
        for name, a, b in SHOTS:
            sl = slice(a, b + 1)
            ids: dict[int, int] = {}
            for t in run.tracked[sl]:
                for f in t.faces:
                    ids[f.face_id] = ids.get(f.face_id, 0) + 1
            stale = [i for i in ids if any(f.face_id == i for f in run.tracked[a - 1].faces)] \
                if a > 0 else []
            shots[name] = {
                "frames": b - a + 1,
                "frames_with_face": int(has[sl].sum()),
                "detector_every_frame_finds_face": int(every[sl].sum()),
                "detector_calls": int(run.detected[sl].sum()),
                "ids": {str(k): v for k, v in sorted(ids.items())},
                "ids_from_previous_shot": stale,
                "first_face_frame": (int(np.flatnonzero(has[sl])[0]) + a) if has[sl].any() else None,
                "first_detection_frame": (int(np.flatnonzero(every[sl])[0]) + a)
                if every[sl].any() else None,
            }
        out[f"max_faces={max_faces}"] = {
            "frames_with_face": int(has.sum()),
            "detector_calls": int(run.detected.sum()),
            "distinct_ids": stage.stats.faces_found,
            "cuts_seen": stage.stats.cuts,
            "shots": shots,
        }
    return out


def cost(denoiser: object) -> dict[str, float]:
    """Microseconds per face of the temporal model and of the One Euro filter."""
    from tracker.temporal.smoothing import OneEuroFilter

    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 200, (68, 2)).astype(np.float32)
    conf = rng.uniform(0, 1, 68).astype(np.float32)
    res: dict[str, float] = {}
    if denoiser is not None:
        hist = [pts + 1, pts + 2]
        for _ in range(50):
            denoiser.refine(pts, conf, hist, (150.0, 150.0), 150.0, 0.1)  # type: ignore[attr-defined]
        ts = []
        for _ in range(2000):
            t0 = time.perf_counter()
            denoiser.refine(pts, conf, hist, (150.0, 150.0), 150.0, 0.1)  # type: ignore[attr-defined]
            ts.append(time.perf_counter() - t0)
        res["temporal_us_per_face_p50"] = float(np.median(ts) * 1e6)
        res["temporal_us_per_face_p99"] = float(np.percentile(ts, 99) * 1e6)
    f = OneEuroFilter(OneEuroParams())
    f(pts, 0.0)
    ts = []
    for i in range(2000):
        t0 = time.perf_counter()
        f(pts, (i + 1) / 30)
        ts.append(time.perf_counter() - t0)
    res["one_euro_us_per_face_p50"] = float(np.median(ts) * 1e6)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="RCN weights (default: shipped)")
    ap.add_argument("--temporal-weights", default=None,
                    help="temporal model (default: shipped); 'none' to skip it")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/tracker_video_eval")
    ap.add_argument("--min-cutoff", type=float, default=OneEuroParams().min_cutoff)
    ap.add_argument("--beta", type=float, default=OneEuroParams().beta)
    ap.add_argument("--d-cutoff", type=float, default=OneEuroParams().d_cutoff)
    ap.add_argument("--roi-scale", type=float, default=TrackConfig().roi_scale)
    ap.add_argument("--motion", type=float, default=TrackConfig().motion)
    ap.add_argument("--roi-hold", type=float, default=TrackConfig().roi_hold)
    ap.add_argument("--grid", action="store_true", help="also sweep the One Euro settings")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--no-hamilton", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--save-runs", default=None, help="pickle the synthetic runs (FILE.NAME.pkl)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    denoiser = None
    if args.temporal_weights != "none":
        from tracker.temporal.denoiser import load_temporal

        try:
            denoiser = load_temporal(args.temporal_weights)
        except FileNotFoundError as exc:
            print(f"note: {exc}; running without the temporal model", file=sys.stderr)
    if not DATA.exists():
        sys.exit(f"error: shared data not found at {DATA}")
    results: dict[str, object] = {"settings": {k: v for k, v in vars(args).items()}}
    results["cost"] = cost(denoiser)
    if not args.no_synthetic:
        results["synthetic"] = synthetic(args, denoiser)
    if not args.no_hamilton:
        results["hamilton"] = hamilton(args, denoiser)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
