"""Where a tracked frame's time goes: the track stage (and smoothing) with each step timed.

:func:`profile_frames` runs a :class:`~tracker.tracking.face_tracker.TrackStage` and an
optional smoother over frames, with timers wrapped around the steps of one frame (the stage's
own code is unchanged; the wrappers add ~0.3 us a step). Only frames where the detector did
not run and exactly one face came out are counted. Steps:

``cut_check``       scene-cut thumbnail test          ``gating``     ROIs from last frame's points
``crop_warp``       affine + ``cv2.warpAffine`` of the crop (and its inverse)
``preprocess``      grey + standardise (Numba)        ``engine``     the model call alone
``decode``          heatmap decode (Numba)            ``to_frame``   points back to the frame
``temporal``        the temporal denoiser             ``smoothing``  the One Euro filter
``other``           the rest: Python between the steps, ids, records (total minus the steps)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

STEPS = ("cut_check", "gating", "crop_warp", "preprocess", "engine", "decode", "to_frame",
         "temporal", "smoothing", "other")


@dataclass(frozen=True)
class FrameProfile:
    """Median microseconds per step over the counted frames, and the total per frame."""

    steps_us: dict[str, float]
    total_us: float
    frames: int

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "total_us_p50": round(self.total_us, 1),
                "steps_us_p50": {k: round(v, 1) for k, v in self.steps_us.items()}}


class _Clock:
    """Accumulates the time of wrapped calls, per step, for the current frame."""

    def __init__(self) -> None:
        self.now: dict[str, float] = dict.fromkeys((*STEPS, "predict"), 0.0)

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        now = self.now
        perf = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                now[step] += perf() - t0

        return timed

    def reset(self) -> None:
        for k in self.now:
            self.now[k] = 0.0


class _Cv2:
    """``cv2`` as the landmarker sees it, with warpAffine/invertAffineTransform timed."""

    def __init__(self, cv2: Any, clock: _Clock) -> None:
        self._cv2 = cv2
        self.warpAffine = clock.wrap("crop_warp", cv2.warpAffine)
        self.invertAffineTransform = clock.wrap("crop_warp", cv2.invertAffineTransform)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cv2, name)


def _instrument(stage: Any, clock: _Clock) -> Callable[[], None]:
    """Wrap the steps of ``stage`` (and its landmarker, engine, denoiser); returns the undo."""
    import tracker.landmarker as lm_mod
    from tracker.models import heatmap

    undo: list[Callable[[], None]] = []

    def patch(obj: Any, name: str, step: str) -> None:
        own = name in vars(obj)
        old = getattr(obj, name)
        setattr(obj, name, clock.wrap(step, old))
        undo.append(lambda: setattr(obj, name, old) if own else delattr(obj, name))

    def patch_module(mod: Any, name: str, value: Any) -> None:
        old = getattr(mod, name)
        setattr(mod, name, value)
        undo.append(lambda: setattr(mod, name, old))

    patch(stage, "_is_cut", "cut_check")
    patch(stage, "roi_of", "gating")
    if stage.denoiser is not None:
        patch(stage.denoiser, "refine", "temporal")
    lm = stage.landmarker
    if isinstance(lm, lm_mod.Landmarker):
        patch(lm, "predict", "predict")
        patch(lm, "preprocess", "preprocess")
        patch_module(lm_mod, "box_affine", clock.wrap("crop_warp", lm_mod.box_affine))
        patch_module(lm_mod, "cv2", _Cv2(lm_mod.cv2, clock))
        patch_module(heatmap, "decode", clock.wrap("decode", heatmap.decode))
        patch_module(heatmap, "decode_bf16", clock.wrap("decode", heatmap.decode_bf16))
        backend = getattr(lm.engine, "engine", lm.engine)  # a planned engine's backend
        patch(backend, "_run" if hasattr(backend, "_run") else "infer", "engine")
    return lambda: [u() for u in reversed(undo)]


def profile_frames(stage: Any, frames: Iterable[Any], smoother: Any = None) -> FrameProfile:
    """Run ``stage`` (then ``smoother``) over ``frames`` with each step timed (see the module
    docstring); medians over frames tracked without the detector and with one face."""
    clock = _Clock()
    undo = _instrument(stage, clock)
    per: dict[str, list[float]] = {k: [] for k in STEPS}
    totals: list[float] = []
    try:
        for frame in frames:
            runs = stage.stats.detector_runs
            clock.reset()
            t0 = time.perf_counter()
            tracked = stage.process(frame)
            if smoother is not None:
                t1 = time.perf_counter()
                tracked = smoother.process(tracked)
                clock.now["smoothing"] += time.perf_counter() - t1
            total = time.perf_counter() - t0
            if stage.stats.detector_runs != runs or len(tracked.faces) != 1:
                continue
            now = clock.now
            inside = sum(now[k] for k in ("crop_warp", "preprocess", "engine", "decode"))
            now["to_frame"] = max(0.0, now["predict"] - inside)
            now["other"] = max(0.0, total - sum(now[k] for k in STEPS if k != "other"))
            for k in STEPS:
                per[k].append(now[k] * 1e6)
            totals.append(total * 1e6)
    finally:
        undo()
    if not totals:
        return FrameProfile(dict.fromkeys(STEPS, 0.0), 0.0, 0)
    return FrameProfile({k: float(np.median(v)) for k, v in per.items()},
                        float(np.median(totals)), len(totals))
