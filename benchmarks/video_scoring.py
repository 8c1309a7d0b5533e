"""Scores of one tracked synthetic clip against its exact ground truth (``video_eval.py``).

* NME: mean point error over the inter-ocular (outer eye corner) distance on frames where the
  whole face is in the frame and not occluded; also split by segment: ``still`` segments,
  ``moving`` (slow, fast and drift ones), ``drift`` alone and ``jump`` segments; ``occl`` on
  frames where the occluder covers points (all points, and the covered points alone);
* tracked: share of frames with the face fully in the frame that have a face;
* jitter: RMS frame-to-frame change of the error on still segments (from their 6th frame),
  % of inter-ocular distance; a smoother still settling after the motion before counts too, so
  ``jitter_opening_still`` also gives it on the clip's first segment alone (pure noise), and
  ``jitter_tracked`` leaves out failed frames (NME above :data:`FAILED`, the usual failure
  threshold: the tracker is not on the face, where a few frames' jumps of 20-30 % IOD would
  otherwise decide the pooled figure);
* lag: delay (frames) of the face centre behind the truth on slow and fast segments, the shift that
  best aligns the two trajectories (searched in 0.05-frame steps);
* step response, on each ``jump`` segment: the face centre's progress along the jump (from
  the estimate of the frame before it, in units of the true jump); frames from the jump until
  it first reaches 90 % (0 = on the jump's own frame), and the overshoot (largest progress
  beyond 100 %, % of the jump);
* recovery: frames after the occluder has left / the face is fully back until the error is
  again below max(5 %, 1.5x the clip's median);
* detector calls per 100 frames.
"""

from __future__ import annotations

import numpy as np

from tracker.face68 import OUTER_EYE_CORNERS
from tracker.training.synthvideo import SEGMENTS, ClipTruth

STILL, SLOW, FAST, OCCL, EXIT, JUMP, DRIFT = (SEGMENTS.index(s) for s in SEGMENTS)
MOVING = (SLOW, FAST, DRIFT)
FAILED = 0.10  # a frame whose NME is above this is a failure (the usual FR@0.10)
KEYS = ("nme", "nme_still", "nme_moving", "nme_drift", "nme_jump", "nme_occl", "nme_occl_points", "tracked",
        "jitter_sq", "jitter_open_sq", "jitter_ok_sq", "lag_slow", "lag_fast", "step90", "overshoot",
        "recovery_occl", "recovery_exit", "det", "frames")


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


def step_response(pred_c: np.ndarray, gt_c: np.ndarray, start: int, n: int
                  ) -> tuple[float, float] | None:
    """(frames to 90 %, overshoot %) of the jump at frame ``start`` (segment of ``n`` frames)
    from the face centres ``pred_c``/``gt_c`` (F, 2); None without an estimate before it."""
    if start < 1 or not np.isfinite(pred_c[start - 1]).all():
        return None
    jump = gt_c[start] - gt_c[start - 1]
    norm2 = float(jump @ jump)
    if norm2 <= 0:
        return None
    progress = (pred_c[start:start + n] - pred_c[start - 1]) @ jump / norm2
    progress = np.nan_to_num(progress, nan=0.0)
    reached = np.flatnonzero(progress >= 0.9)
    frames = float(reached[0]) if len(reached) else float(n)
    return frames, float(max(0.0, progress.max() - 1.0) * 100)


def score(pred: np.ndarray, truth: ClipTruth, detected: np.ndarray) -> dict[str, list[float]]:
    """Per-clip measurements (lists, pooled over clips by :func:`summarise`)."""
    gt = truth.points.astype(np.float64)
    a, b = OUTER_EYE_CORNERS
    iod = np.linalg.norm(gt[:, a] - gt[:, b], axis=1)
    err = np.linalg.norm(pred - gt, axis=2) / iod[:, None]  # (F, 68), NaN when untracked
    tracked = np.isfinite(err).all(1)
    full = truth.visible >= 1.0
    occl = truth.occluded.any(1)
    clean = full & ~occl
    seg, start = truth.segment, truth.segment_start
    m: dict[str, list[float]] = {k: [] for k in KEYS}
    ok_frames = clean & tracked
    m["nme"] += list(err[ok_frames].mean(1))
    m["nme_still"] += list(err[ok_frames & (seg == STILL)].mean(1))
    m["nme_moving"] += list(err[ok_frames & np.isin(seg, MOVING)].mean(1))
    m["nme_drift"] += list(err[ok_frames & (seg == DRIFT)].mean(1))
    m["nme_jump"] += list(err[ok_frames & (seg == JUMP)].mean(1))
    m["nme_occl"] += list(err[occl & tracked].mean(1))
    m["nme_occl_points"] += list(err[occl & tracked][truth.occluded[occl & tracked]])
    m["tracked"] += list(tracked[full].astype(float))
    idx = np.arange(len(seg))
    still = (seg == STILL) & (idx >= start + 5) & clean
    e = (pred - gt) / iod[:, None, None]
    frame_nme = np.nan_to_num(err.mean(1), nan=np.inf)
    for i in np.flatnonzero(still[1:] & still[:-1]) + 1:
        if tracked[i] and tracked[i - 1]:
            d2 = list(np.sum((e[i] - e[i - 1]) ** 2, 1))
            m["jitter_sq"] += d2
            if max(frame_nme[i], frame_nme[i - 1]) <= FAILED:
                m["jitter_ok_sq"] += d2
            if start[i] == 0:  # the opening still segment: no motion before it to settle from
                m["jitter_open_sq"] += d2
    for s in np.unique(start[(seg == SLOW) | (seg == FAST)]):
        sel = (start == s) & full
        lag = _lag(pred[sel].mean(1), gt[sel].mean(1))
        if lag is not None:
            m["lag_slow" if seg[s] == SLOW else "lag_fast"].append(lag)
    centres = pred.mean(1)
    for s in np.unique(start[seg == JUMP]):
        step = step_response(centres, gt.mean(1), int(s), int((start == s).sum()))
        if step is not None:
            m["step90"].append(step[0])
            m["overshoot"].append(step[1])
    med = float(np.median(err[ok_frames].mean(1))) if ok_frames.any() else 0.05
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
    """Pooled figures of several clips' :func:`score` lists."""
    pool = {k: sum((m[k] for m in ms), []) for k in ms[0]}

    def mean(k: str, scale: float = 1.0) -> float:
        return float(np.mean(pool[k]) * scale) if pool[k] else float("nan")

    def rms(k: str) -> float:
        return float(np.sqrt(np.mean(pool[k])) * 100) if pool[k] else float("nan")

    return {
        "nme_%": mean("nme", 100),
        "nme_still_%": mean("nme_still", 100),
        "nme_moving_%": mean("nme_moving", 100),
        "nme_drift_%": mean("nme_drift", 100),
        "nme_jump_%": mean("nme_jump", 100),
        "nme_occluded_frames_%": mean("nme_occl", 100),
        "nme_occluded_points_%": mean("nme_occl_points", 100),
        "tracked_%": mean("tracked", 100),
        "jitter_%iod": rms("jitter_sq"),
        "jitter_opening_still_%iod": rms("jitter_open_sq"),
        "jitter_tracked_%iod": rms("jitter_ok_sq"),
        "lag_slow_frames": mean("lag_slow"),
        "lag_fast_frames": mean("lag_fast"),
        "step_to_90%_frames": mean("step90"),
        "step_overshoot_%": mean("overshoot"),
        "recovery_occlusion_frames": mean("recovery_occl"),
        "recovery_exit_frames": mean("recovery_exit"),
        "detector_per_100_frames": 100 * sum(pool["det"]) / sum(pool["frames"]),
    }
