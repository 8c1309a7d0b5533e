"""Smoothing in the face's own frame: the rigid motion and the shape filtered apart (Numba).

Each frame, the face's points ``x`` are fitted with a similarity transform of the filter's
current shape ``u`` (weighted least squares, complex form ``x ≈ c + m·u``: ``c`` the position,
``m`` the size and roll; the points expressions move, :func:`fit_weights`, count
``fit_weight`` as much as the nose, eye corners and upper contour, so a blink or an opening
mouth barely moves the fit). Then

* the **shape** ``u_raw = (x - c) / m`` (the points in the face's own frame: what is left once
  the face's motion is taken out) goes through a One Euro filter per coordinate with the usual
  settings (``min_cutoff``, ``beta``, ``d_cutoff``; speeds in face sizes per second): a mouth
  that opens or an eye that closes opens its points' filters as before, but the face's motion
  no longer does, so the points stay smoothed while the head moves;
* the **motion** ``(c, m)`` goes through one low-pass filter whose cutoff is driven by the
  speed of the whole face (the RMS speed its motion gives the points, in face sizes per second;
  far less noisy than any one point's): ``cutoff = rigid_min_cutoff + rigid_beta *
  max(0, speed - rigid_gate)``. Below the gate (landmark noise, a face that holds still) the
  motion is smoothed hard; above it the filter opens within a frame or two (``rigid_beta`` is
  large), so a moving face or a sudden jump passes with almost no lag. A drift slower than the
  gate is followed too: the speed is measured against the filtered state, so a lag of more than
  about ``rigid_gate / fps`` face sizes opens the filter by itself.

The output is ``c_hat + m_hat·u_hat``. Points that are not finite pass through and leave their
state as it was; a point seen for the first time starts from its raw position. The defaults
were chosen on clips made from training faces (``benchmarks/video_eval.py --faces
train-select --grid``; docs/tracking.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from tracker.temporal.one_euro import OneEuroParams, lowpass_alpha, time_step


@dataclass(frozen=True, slots=True)
class RigidParams:
    """Settings of :class:`RigidOneEuroFilter`: the shape's One Euro (``min_cutoff``, ``beta``,
    ``d_cutoff``, as :class:`OneEuroParams`) and the gated filter of the face's motion."""

    min_cutoff: float = 0.5  # Hz: cutoff of a point of a still shape
    beta: float = 15.0  # shape cutoff rise per face size/s of a point's own (non-rigid) speed
    d_cutoff: float = 3.0  # Hz: cutoff of the speed estimates
    rigid_min_cutoff: float = 0.3  # Hz: cutoff of the face's motion while it holds still
    rigid_beta: float = 300.0  # motion cutoff rise per face size/s above the gate
    rigid_gate: float = 0.08  # face sizes/s: slower motion counts as noise (cutoff stays low)
    fit_weight: float = 0.3  # weight in the rigid fit of the points expressions move
    fallback_fps: float = 30.0  # steps of 1/fps where frame times are missing or not increasing

    def __post_init__(self) -> None:
        OneEuroParams(self.min_cutoff, self.beta, self.d_cutoff, self.fallback_fps)  # checks
        if not self.rigid_min_cutoff > 0:
            raise ValueError(f"rigid_min_cutoff must be > 0, got {self.rigid_min_cutoff}")
        if not (self.rigid_beta >= 0 and self.rigid_gate >= 0 and 0 <= self.fit_weight <= 1):
            raise ValueError("rigid_beta and rigid_gate must be >= 0, fit_weight in [0, 1]")


# iBUG 68 points that expressions hardly move: the upper face contour, the nose, the eye corners
STABLE_POINTS = (*range(0, 4), *range(13, 17), *range(27, 36), 36, 39, 42, 45)


def fit_weights(k: int, other: float) -> np.ndarray:
    """Weights of the rigid fit: 1 for :data:`STABLE_POINTS` and ``other`` for the rest
    (mouth, lids, brows, chin) of a 68-point face; all 1 for other point counts."""
    w = np.ones(k)
    if k == 68:
        w[:] = other
        w[list(STABLE_POINTS)] = 1.0
    return w


@nb.njit(cache=True, nogil=True)
def rigid_step(x: np.ndarray, w: np.ndarray, dt: float, pose: np.ndarray, dpose: np.ndarray,
               u: np.ndarray, du: np.ndarray, min_cutoff: float, beta: float, d_cutoff: float,
               rigid_min_cutoff: float, rigid_beta: float, rigid_gate: float,
               out: np.ndarray) -> bool:
    """Filter one face's points ``x`` (K, 2) into ``out``, updating the state in place.

    ``pose``/``dpose`` (4,): ``(c.re, c.im, m.re, m.im)`` and its speed; ``u``/``du`` (K, 2):
    the shape (NaN where a point was never seen) and its speed. Returns False (``out`` = ``x``,
    state untouched) when fewer than two points can be fitted.
    """
    k = x.shape[0]
    n = 0
    sw = ux = uy = zx = zy = 0.0
    lo0 = lo1 = np.inf
    hi0 = hi1 = -np.inf
    for j in range(k):
        a, b = x[j, 0], x[j, 1]
        if math.isfinite(a) and math.isfinite(b):
            lo0, hi0 = min(lo0, a), max(hi0, a)
            lo1, hi1 = min(lo1, b), max(hi1, b)
            if math.isfinite(u[j, 0]) and w[j] > 0:
                n += 1
                sw += w[j]
                ux += w[j] * u[j, 0]
                uy += w[j] * u[j, 1]
                zx += w[j] * a
                zy += w[j] * b
    if n < 2:
        out[:] = x
        return False
    ux, uy, zx, zy = ux / sw, uy / sw, zx / sw, zy / sw
    num_re = num_im = den = 0.0
    for j in range(k):
        if math.isfinite(x[j, 0]) and math.isfinite(x[j, 1]) and math.isfinite(u[j, 0]):
            px, py = u[j, 0] - ux, u[j, 1] - uy
            qx, qy = x[j, 0] - zx, x[j, 1] - zy
            num_re += w[j] * (px * qx + py * qy)
            num_im += w[j] * (px * qy - py * qx)
            den += w[j] * (px * px + py * py)
    if not den > 0.0:
        out[:] = x
        return False
    m_re, m_im = num_re / den, num_im / den
    m2 = m_re * m_re + m_im * m_im
    if not m2 > 0.0:
        out[:] = x
        return False
    c_re = zx - (m_re * ux - m_im * uy)
    c_im = zy - (m_re * uy + m_im * ux)
    size = max(hi0 - lo0, hi1 - lo1, 1.0)
    # the motion: one filter, its cutoff from the speed of the whole face
    a_d = lowpass_alpha(d_cutoff, dt)
    raw = (c_re, c_im, m_re, m_im)
    for i in range(4):
        dpose[i] += a_d * ((raw[i] - pose[i]) / dt - dpose[i])
    rms = math.sqrt(den / sw)  # RMS radius of the shape (its units)
    speed = math.sqrt(dpose[0] ** 2 + dpose[1] ** 2
                      + rms * rms * (dpose[2] ** 2 + dpose[3] ** 2)) / size
    a_r = lowpass_alpha(rigid_min_cutoff + rigid_beta * max(0.0, speed - rigid_gate), dt)
    for i in range(4):
        pose[i] += a_r * (raw[i] - pose[i])
    # the shape, in the face's frame: One Euro per coordinate (speeds in face sizes/s)
    to_face = math.sqrt(m2) / size
    for j in range(k):
        a, b = x[j, 0], x[j, 1]
        if not (math.isfinite(a) and math.isfinite(b)):
            out[j, 0], out[j, 1] = a, b
            continue
        qx, qy = a - c_re, b - c_im  # (x - c) / m
        v = ((qx * m_re + qy * m_im) / m2, (qy * m_re - qx * m_im) / m2)
        for d in range(2):
            if not math.isfinite(u[j, d]):  # first sight of this point
                u[j, d] = v[d]
                du[j, d] = 0.0
                continue
            edx = du[j, d] + a_d * ((v[d] - u[j, d]) / dt - du[j, d])
            u[j, d] += lowpass_alpha(min_cutoff + beta * abs(edx) * to_face, dt) * (v[d] - u[j, d])
            du[j, d] = edx
        out[j, 0] = pose[0] + pose[2] * u[j, 0] - pose[3] * u[j, 1]
        out[j, 1] = pose[1] + pose[2] * u[j, 1] + pose[3] * u[j, 0]
    return True


class RigidOneEuroFilter:
    """The face-frame filter of one face (same calls as :class:`OneEuroFilter`)."""

    def __init__(self, params: RigidParams) -> None:
        self.params = params
        self._pose = np.zeros(4)
        self._dpose = np.zeros(4)
        self._u: np.ndarray | None = None
        self._du: np.ndarray | None = None
        self._t: float | None = None
        self._w: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the face (the next call starts afresh)."""
        self._u = self._du = self._t = None

    def __call__(self, points: np.ndarray, t: float) -> np.ndarray:
        """Filtered copy of ``points`` (K, 2) (float32) observed at time ``t`` seconds."""
        x = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
        if self._u is None or self._u.shape != x.shape:
            self._start(x, t)
            return np.asarray(points, dtype=np.float32).copy()
        p = self.params
        dt, self._t = time_step(self._t, t, p.fallback_fps)
        assert self._du is not None
        out = np.empty_like(x)
        rigid_step(x, self._weights(len(x)), dt, self._pose, self._dpose, self._u, self._du,
                   p.min_cutoff, p.beta, p.d_cutoff, p.rigid_min_cutoff, p.rigid_beta,
                   p.rigid_gate, out)
        return out.reshape(np.shape(points)).astype(np.float32)

    def _weights(self, k: int) -> np.ndarray:
        """The fit weights of a ``k``-point face (made once)."""
        if self._w is None or len(self._w) != k:
            self._w = fit_weights(k, self.params.fit_weight)
        return self._w

    def _start(self, x: np.ndarray, t: float) -> None:
        """State of a first frame: the face's own frame is its box (``m`` = box side)."""
        ok = np.isfinite(x).all(axis=1)
        size = 1.0
        centre = np.zeros(2)
        if ok.any():
            span = x[ok].max(axis=0) - x[ok].min(axis=0)
            size, centre = max(float(span.max()), 1.0), x[ok].mean(axis=0)
        self._u = np.where(ok[:, None], (x - centre) / size, np.nan)
        self._du = np.zeros_like(x)
        self._pose = np.array([centre[0], centre[1], size, 0.0])
        self._dpose = np.zeros(4)
        self._t = t


def warmup() -> None:
    """Load (or compile once, to the disk cache) the kernel."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rigid_step(x, np.ones(3), 1.0 / 30, np.array([0.3, 0.3, 1.0, 0.0]), np.zeros(4), x - 0.3,
               np.zeros((3, 2)), 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, np.empty((3, 2)))
