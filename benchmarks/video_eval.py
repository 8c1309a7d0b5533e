"""Landmarks on video: accuracy, jitter, lag, step response, recovery and detector use.

Synthetic clips with exact ground truth (``benchmarks/video_clips.py``: made from ``--faces
val`` stills, the default, on which figures are reported, or ``--faces train-select``, the
selection slice of the training faces, on which settings are tuned; still, slow and fast
motion with motion blur, a sweeping occluder, an exit from the frame and back, two sudden
jumps; camera noise; H.264 at CRF 26). The track stage runs on the decoded clips with and
without the temporal denoiser, and each run is scored raw (``--smooth none``), with the
per-coordinate One Euro filter (``smooth.rigid = false``, the default before) and with the
face-frame filter (``smooth.rigid = true``, the default); the measures are those of
``benchmarks/video_scoring.py`` (NME on still / moving / jump frames, jitter, lag, frames to
90 % of a jump, recovery). ``--grid`` sweeps the face-frame filter's settings.

Then the real clip (``videos/short_hamilton_clip.mp4``, no labels): per shot, frames with a face
and detector calls with ``max_faces`` 1 and 5, compared with a detector run on every frame.

    python benchmarks/video_eval.py [--faces val|train-select] [--clips 12] [--grid] [--json F]
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

from benchmarks.video_clips import DATA, FACE_SETS, make_clips  # noqa: E402
from benchmarks.video_scoring import score, summarise  # noqa: E402
from tracker.temporal.smoothing import (  # noqa: E402
    OneEuroParams,
    RigidParams,
    SmoothConfig,
    Smoother,
    make_filter,
)
from tracker.tracking.face_tracker import TrackConfig, TrackStage  # noqa: E402
from tracker.training.synthvideo import ClipTruth  # noqa: E402
from tracker.types import Frame, TrackedFrame  # noqa: E402

HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
SHOTS = (("wide stage", 0, 19), ("profiles", 20, 81), ("singer", 82, 210), ("audience", 211, 274))


def decode(path: Path) -> list[Frame]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        return [Frame(i, float(f.pts * tb), f.to_ndarray(format="rgb24"))
                for i, f in enumerate(c.decode(s))]


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


def smooth_run(run: Run, params: OneEuroParams | RigidParams | None) -> np.ndarray:
    if params is None:
        return run.points
    sm = Smoother(params)
    pts = np.full_like(run.points, np.nan)
    for i, t in enumerate(run.tracked):
        s = sm(t)
        if s.faces:
            pts[i] = max(s.faces, key=lambda x: x.presence).points
    return pts


def filters(args: argparse.Namespace) -> dict[str, OneEuroParams | RigidParams | None]:
    """The smoothing variants scored on every run: none (``--smooth none``), the per-coordinate
    One Euro filter (``--no-rigid-smoothing``, the default before) and the face-frame filter."""
    return {
        "raw": None,
        "one euro per point": OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff),
        "rigid + shape": RigidParams(args.min_cutoff, args.beta, args.d_cutoff,
                                     args.rigid_min_cutoff, args.rigid_beta, args.rigid_gate),
    }


GRID_KEYS = ("nme_%", "nme_still_%", "nme_moving_%", "nme_drift_%", "jitter_%iod",
             "jitter_tracked_%iod",
             "jitter_opening_still_%iod", "lag_slow_frames", "lag_fast_frames",
             "step_to_90%_frames", "step_overshoot_%", "nme_occluded_points_%")


def grid(args: argparse.Namespace, base: list[Run], clips: list[tuple[Path, ClipTruth]]
         ) -> dict[str, object]:
    """The face-frame filter's settings swept on ``base`` (the other settings as given)."""
    out: dict[str, object] = {}
    for rbeta in (100.0, 300.0, 1000.0):
        for gate in (0.04, 0.08, 0.12):
            for beta in (10.0, args.beta):
                for weight in (0.3, 1.0):
                    p = RigidParams(args.min_cutoff, beta, args.d_cutoff, args.rigid_min_cutoff,
                                    rbeta, gate, weight)
                    s = summarise([score(smooth_run(r, p), truth, r.detected)
                                   for r, (_, truth) in zip(base, clips, strict=True)])
                    out[f"rigid_beta={rbeta} rigid_gate={gate} beta={beta} "
                        f"fit_weight={weight}"] = {k: s[k] for k in GRID_KEYS}
    return out


def make_stage(weights: str | None, denoiser: object, max_faces: int = 1, **kw: object
               ) -> TrackStage:
    from tracker.detect.detectors import create_detector
    from tracker.landmarker import load_landmarker

    return TrackStage(create_detector("default"), load_landmarker(weights, "auto"),
                      TrackConfig(max_faces=max_faces, **kw),  # type: ignore[arg-type]
                      denoiser=denoiser)  # type: ignore[arg-type]


def track_options(args: argparse.Namespace) -> dict[str, object]:
    """The ``TrackConfig`` fields set on the command line."""
    return {"roi_scale": args.roi_scale, "motion": args.motion, "roi_hold": args.roi_hold,
            "search_every": args.search_every}


def synthetic(args: argparse.Namespace, denoiser: object) -> dict[str, object]:
    clips = make_clips(args.clips, Path(args.cache), args.seed, args.faces)
    frames = [decode(v) for v, _ in clips]
    results: dict[str, object] = {"clips": len(clips), "frames": sum(len(f) for f in frames)}
    runs: dict[str, list[Run]] = {}
    for name, den in (("rcn", None), ("rcn+temporal", denoiser)):
        if name == "rcn+temporal" and den is None:
            continue
        t0 = time.perf_counter()
        runs[name] = [track_clip(make_stage(args.weights, den, **track_options(args)), f)
                      for f in frames]
        print(f"tracked {name}: {sum(len(f) for f in frames)} frames in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
        if args.save_runs:
            import pickle

            with open(Path(args.save_runs).with_suffix(f".{name}.pkl"), "wb") as fh:
                pickle.dump([(r.points, r.detected, [tf.faces for tf in r.tracked])
                             for r in runs[name]], fh)
        for label, params in filters(args).items():
            ms = [score(smooth_run(r, params), truth, r.detected)
                  for r, (_, truth) in zip(runs[name], clips, strict=True)]
            results[f"{name}, {label}"] = summarise(ms)
    if args.grid:
        results["grid"] = grid(args, runs.get("rcn+temporal") or runs["rcn"], clips)
    return results


TABLE = (("NME %", "nme_%", 2), ("NME still %", "nme_still_%", 2),
         ("NME moving %", "nme_moving_%", 2), ("NME drift %", "nme_drift_%", 2),
         ("NME occluded points %", "nme_occluded_points_%", 2),
         ("jitter % IOD (all / tracked)", "jitter", 3), ("lag slow / fast (frames)", "lag", 2),
         ("jump: frames to 90 % / overshoot %", "step", 2),
         ("recovery occluder / exit (frames)", "recovery", 1))


def table(results: dict[str, object]) -> str:
    """The synthetic results as a Markdown table."""
    rows = ["| pipeline | " + " | ".join(h for h, _, _ in TABLE) + " |",
            "|---" * (len(TABLE) + 1) + "|"]
    for name, r in results.items():
        if not isinstance(r, dict) or "nme_%" not in r:
            continue
        pairs = {"jitter": ("jitter_%iod", "jitter_tracked_%iod"),
                 "lag": ("lag_slow_frames", "lag_fast_frames"),
                 "step": ("step_to_90%_frames", "step_overshoot_%"),
                 "recovery": ("recovery_occlusion_frames", "recovery_exit_frames")}
        cells = [" / ".join(f"{r[k]:.{d}f}" for k in pairs[key]) if key in pairs
                 else f"{r[key]:.{d}f}" for _, key, d in TABLE]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def hamilton(args: argparse.Namespace, denoiser: object) -> dict[str, object]:
    from tracker.detect.detectors import create_detector

    frames = decode(HAMILTON)
    det = create_detector("default")
    every = np.array([len(det.detect(f.image)) > 0 for f in frames])
    out: dict[str, object] = {"detector_every_frame_frames_with_face": int(every.sum()),
                              "frames": len(frames)}
    for max_faces in (1, 5):
        stage = make_stage(args.weights, denoiser, max_faces, **track_options(args))
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
    """Microseconds per face of the temporal model and of the two smoothing filters."""
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
    for name, params in (("one_euro", OneEuroParams()), ("rigid", RigidParams())):
        f = make_filter(params)
        f(pts, 0.0)
        ts = []
        for i in range(2000):
            moved = pts + rng.normal(0, 0.5, pts.shape).astype(np.float32) + 0.1 * i
            t0 = time.perf_counter()
            f(moved, (i + 1) / 30)
            ts.append(time.perf_counter() - t0)
        res[f"{name}_us_per_face_p50"] = float(np.median(ts) * 1e6)
        res[f"{name}_us_per_face_p99"] = float(np.percentile(ts, 99) * 1e6)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="RCN weights (default: shipped)")
    ap.add_argument("--temporal-weights", default=None,
                    help="temporal model (default: shipped); 'none' to skip it")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faces", choices=FACE_SETS, default="val",
                    help="stills the clips are made from: val (report) or train-select (tune)")
    ap.add_argument("--cache", default="/tmp/tracker_video_eval")
    ap.add_argument("--min-cutoff", type=float, default=SmoothConfig().min_cutoff)
    ap.add_argument("--beta", type=float, default=SmoothConfig().beta)
    ap.add_argument("--d-cutoff", type=float, default=SmoothConfig().d_cutoff)
    ap.add_argument("--rigid-min-cutoff", type=float, default=SmoothConfig().rigid_min_cutoff)
    ap.add_argument("--rigid-beta", type=float, default=SmoothConfig().rigid_beta)
    ap.add_argument("--rigid-gate", type=float, default=SmoothConfig().rigid_gate)
    ap.add_argument("--roi-scale", type=float, default=TrackConfig().roi_scale)
    ap.add_argument("--motion", type=float, default=TrackConfig().motion)
    ap.add_argument("--roi-hold", type=float, default=TrackConfig().roi_hold)
    ap.add_argument("--search-every", type=int, default=TrackConfig().search_every)
    ap.add_argument("--grid", action="store_true", help="also sweep the face-frame filter")
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
    if "synthetic" in results:
        print(table(results["synthetic"]), file=sys.stderr)  # type: ignore[arg-type]
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
