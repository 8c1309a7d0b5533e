"""The One Euro filter over a face's points, compiled with Numba.

The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass filter whose
cutoff rises with speed: ``cutoff = min_cutoff + beta * |speed|``, the speed itself being a
low-passed derivative (cutoff ``d_cutoff``). Still faces are smoothed hard (jitter goes), moving
ones lightly (little lag).

Every coordinate of a face's 68 x 2 points is filtered independently, all in one kernel call.
Speeds are measured in face sizes per second (pixels per second over the larger side of the
face's landmark box), so one setting suits a face at any distance; the filter itself works on
pixels, so a face growing or shrinking does not disturb it.

Time steps come from the frames' timestamps (``1 / fallback_fps`` when those are missing or
not increasing). :mod:`tracker.temporal.smoothing` holds one filter per face id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np


@dataclass(frozen=True, slots=True)
class OneEuroParams:
    """Filter settings: cutoffs in Hz, ``beta`` in Hz per (face size / s)."""

    min_cutoff: float = 0.5  # Hz: cutoff of a still face (lower = smoother, more lag)
    beta: float = 15.0  # cutoff rise per face size/s of speed (higher = less lag when moving)
    d_cutoff: float = 3.0  # Hz: cutoff of the speed estimate
    fallback_fps: float = 30.0  # steps of 1/fps where frame times are missing or not increasing

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.fallback_fps > 0):
            raise ValueError("min_cutoff, d_cutoff and fallback_fps must be > 0")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def time_step(last: float | None, t: float, fallback_fps: float) -> tuple[float, float]:
    """``(dt, clock)`` for an observation at ``t`` after one at ``last``: ``1 / fallback_fps``
    when ``t`` does not move forward (repeated, backwards or non-finite times), and the clock
    advanced by that step when ``t`` is not finite."""
    dt = t - last if last is not None else 0.0
    if not (math.isfinite(dt) and dt > 0):
        dt = 1.0 / fallback_fps
    return dt, t if math.isfinite(t) else (last or 0.0) + dt


@nb.njit(cache=True, nogil=True)
def lowpass_alpha(cutoff: float, dt: float) -> float:
    """Smoothing factor of a first-order low-pass filter at ``cutoff`` Hz for a step ``dt``."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


@nb.njit(cache=True, nogil=True)
def one_euro_step(x: np.ndarray, dt: float, scale: float, x_hat: np.ndarray, dx_hat: np.ndarray,
                  min_cutoff: float, beta: float, d_cutoff: float, out: np.ndarray) -> None:
    """Filter one sample ``x`` (any shape, float64) in place of the state ``x_hat``/``dx_hat``.

    ``out`` receives the filtered values. ``scale`` divides the speeds (face size in pixels).
    A non-finite input passes through and leaves its coordinate's state untouched.
    """
    xs, xh, dxh, o = x.ravel(), x_hat.ravel(), dx_hat.ravel(), out.ravel()
    a_d = lowpass_alpha(d_cutoff, dt)
    inv_scale = 1.0 / scale
    for i in range(xs.size):
        xi = xs[i]
        if not math.isfinite(xi):
            o[i] = xi
            continue
        dx = (xi - xh[i]) / dt
        edx = dxh[i] + a_d * (dx - dxh[i])
        cutoff = min_cutoff + beta * abs(edx) * inv_scale
        a = lowpass_alpha(cutoff, dt)
        xh[i] += a * (xi - xh[i])
        dxh[i] = edx
        o[i] = xh[i]


@nb.njit(cache=True, nogil=True)
def _step_face(x: np.ndarray, dt: float, x_hat: np.ndarray, dx_hat: np.ndarray,
               min_cutoff: float, beta: float, d_cutoff: float, out: np.ndarray) -> None:
    """:func:`one_euro_step` of one face's points ``x`` (K, 2) with the speed scale
    :func:`face_scale` computed in the same call (the same float64 arithmetic)."""
    lo0 = lo1 = np.inf
    hi0 = hi1 = -np.inf
    for i in range(x.shape[0]):
        a, b = x[i, 0], x[i, 1]
        if math.isfinite(a) and math.isfinite(b):
            lo0, hi0 = min(lo0, a), max(hi0, a)
            lo1, hi1 = min(lo1, b), max(hi1, b)
    scale = 1.0 if lo0 > hi0 else max(hi0 - lo0, hi1 - lo1, 1.0)
    one_euro_step(x, dt, scale, x_hat, dx_hat, min_cutoff, beta, d_cutoff, out)


def face_scale(points: np.ndarray) -> float:
    """Face size in pixels: the larger side of the landmarks' tight box (at least 1)."""
    finite = points[np.isfinite(points).all(axis=1)]
    if finite.size == 0:
        return 1.0
    span = finite.max(axis=0) - finite.min(axis=0)
    return max(float(span.max()), 1.0)


class OneEuroFilter:
    """One Euro filter over a fixed-size array of coordinates (one face)."""

    def __init__(self, params: OneEuroParams) -> None:
        self.params = params
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, points: np.ndarray, t: float, scale: float | None = None) -> np.ndarray:
        """Filtered copy of ``points`` (K, 2) (float32) observed at time ``t`` seconds."""
        x = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
        if self._x is None or self._x.shape != x.shape:
            self._x = np.where(np.isfinite(x), x, 0.0)
            self._dx = np.zeros_like(x)
            self._t = t
            return np.asarray(points, dtype=np.float32).copy()
        p = self.params
        dt, self._t = time_step(self._t, t, p.fallback_fps)
        out = np.empty_like(x)
        if scale is None:  # face_scale(x), inside the kernel
            _step_face(x, dt, self._x, self._dx, p.min_cutoff, p.beta, p.d_cutoff, out)
        else:
            one_euro_step(x, dt, max(scale, 1.0), self._x, self._dx, p.min_cutoff, p.beta,
                          p.d_cutoff, out)
        return out.reshape(np.shape(points)).astype(np.float32)


def warmup() -> None:
    """Load (or compile once, to the disk cache) the kernel."""
    x = np.zeros((2, 2))
    one_euro_step(x, 1.0 / 30, 1.0, x.copy(), x.copy(), 1.0, 0.0, 1.0, np.empty((2, 2)))
    _step_face(x, 1.0 / 30, x.copy(), x.copy(), 1.0, 0.0, 1.0, np.empty((2, 2)))
