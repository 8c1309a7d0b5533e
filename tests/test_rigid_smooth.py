"""Face-frame smoothing (rigid motion and shape apart): Numba kernel vs a plain-Python reference,
noise, lag, steps, drifts and expressions, and its selection by the config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracker.api.assembly import smooth_stage
from tracker.config.schema import Config, ConfigError
from tracker.temporal.rigid import STABLE_POINTS, fit_weights
from tracker.temporal.smoothing import (
    OneEuroFilter,
    OneEuroParams,
    RigidOneEuroFilter,
    RigidParams,
    Smoother,
    make_filter,
)
from tracker.types import Box, Frame, Landmarks, TrackedFrame

RNG = np.random.default_rng(0)
ANGLES = np.linspace(0, 2 * np.pi, 68, endpoint=False)
# a 100 px "face": points on an ellipse plus a fixed wobble (so the shape is not symmetric)
FACE = np.stack([150 + 45 * np.cos(ANGLES), 150 + 50 * np.sin(ANGLES)], 1) + RNG.uniform(-5, 5, (68, 2))
MOUTH = [j for j in range(68) if j not in STABLE_POINTS and 48 <= j < 68]
FPS = 30.0


def similarity(points: np.ndarray, dx: float, dy: float, angle: float = 0.0,
               scale: float = 1.0) -> np.ndarray:
    """``points`` turned and scaled about their centre, then moved."""
    c = points.mean(0)
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - c) @ rot.T + c + np.array([dx, dy])


def reference(xs: list[np.ndarray], ts: list[float], p: RigidParams) -> list[np.ndarray]:
    """The filter written out with complex numbers and plain Python floats, point by point."""

    def alpha(cutoff: float, dt: float) -> float:
        return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff) / dt)

    w = fit_weights(len(xs[0]), p.fit_weight)
    z0 = [complex(a, b) for a, b in xs[0]]
    size = max(np.ptp(xs[0][:, 0]), np.ptp(xs[0][:, 1]), 1.0)
    c0 = sum(z0) / len(z0)
    u = [(z - c0) / size for z in z0]
    du = [0j] * len(u)
    pose, dpose = [c0, complex(size)], [0j, 0j]
    outs = [xs[0].copy()]
    for x, t0, t1 in zip(xs[1:], ts, ts[1:], strict=False):
        dt = t1 - t0
        z = [complex(a, b) for a, b in x]
        sw = sum(w)
        ub = sum(wi * ui for wi, ui in zip(w, u, strict=True)) / sw
        zb = sum(wi * zi for wi, zi in zip(w, z, strict=True)) / sw
        num = sum(wi * (ui - ub).conjugate() * (zi - zb) for wi, ui, zi in zip(w, u, z, strict=True))
        den = sum(wi * abs(ui - ub) ** 2 for wi, ui in zip(w, u, strict=True))
        m = num / den
        c = zb - m * ub
        size = max(np.ptp(x[:, 0]), np.ptp(x[:, 1]), 1.0)
        a_d = alpha(p.d_cutoff, dt)
        raw = [c, m]
        dpose = [d + a_d * ((r - q) / dt - d) for d, r, q in zip(dpose, raw, pose, strict=True)]
        speed = math.sqrt(abs(dpose[0]) ** 2 + (den / sw) * abs(dpose[1]) ** 2) / size
        a_r = alpha(p.rigid_min_cutoff + p.rigid_beta * max(0.0, speed - p.rigid_gate), dt)
        pose = [q + a_r * (r - q) for q, r in zip(pose, raw, strict=True)]
        out = np.empty_like(x)
        for j, zj in enumerate(z):
            v = (zj - c) / m
            new = []
            for part in ("real", "imag"):
                vj, uj, dj = getattr(v, part), getattr(u[j], part), getattr(du[j], part)
                edx = dj + a_d * ((vj - uj) / dt - dj)
                uj += alpha(p.min_cutoff + p.beta * abs(edx) * abs(m) / size, dt) * (vj - uj)
                new.append((uj, edx))
            u[j] = complex(new[0][0], new[1][0])
            du[j] = complex(new[0][1], new[1][1])
            y = pose[0] + pose[1] * u[j]
            out[j] = y.real, y.imag
        outs.append(out)
    return outs


def run(filt: object, seq: list[np.ndarray]) -> np.ndarray:
    return np.stack([filt(x, i / FPS) for i, x in enumerate(seq)])  # type: ignore[operator]


@pytest.mark.parametrize("params, seed", [
    (RigidParams(), 0),
    (RigidParams(rigid_gate=0.0, rigid_beta=50.0, fit_weight=1.0), 1),
    (RigidParams(min_cutoff=2.0, beta=0.0, rigid_min_cutoff=1.0, fit_weight=0.0), 2),
])
def test_numba_kernel_matches_python_reference(params: RigidParams, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    seq = [similarity(FACE, 2.0 * i, -1.0 * i, 0.01 * i, 1 + 0.005 * i) + rng.normal(0, 0.7, (68, 2))
           for i in range(n)]
    ts = list(np.arange(n) / FPS + rng.uniform(0, 0.2 / FPS, n))
    filt = RigidOneEuroFilter(params)
    got = np.stack([filt(x, t) for x, t in zip(seq, ts, strict=True)])
    want = np.stack(reference(seq, ts, params))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def jitter(seq: np.ndarray) -> float:
    """RMS frame-to-frame change of the points (px)."""
    return float(np.sqrt(np.mean(np.sum(np.diff(seq, axis=0) ** 2, axis=2))))


@pytest.mark.parametrize("point_noise, face_noise, most", [(0.1, 0.05, 0.15), (0.05, 0.1, 0.1)])
def test_a_still_noisy_face_is_held_still(point_noise: float, face_noise: float,
                                          most: float) -> None:
    """Noise of each point and of the whole face (px, a 100 px face; about the RCN's on still
    faces): the filter keeps at most ``most`` of the jitter, no more than the per-point filter,
    and far less than it would without smoothing the face's motion."""
    rng = np.random.default_rng(3)
    seq = list(FACE[None] + rng.normal(0, point_noise, (150, 68, 2))
               + rng.normal(0, face_noise, (150, 1, 2)))
    raw = jitter(np.stack(seq)[30:])
    new = jitter(run(RigidOneEuroFilter(RigidParams()), seq)[30:])
    old = jitter(run(OneEuroFilter(OneEuroParams()), seq)[30:])
    motion_unsmoothed = jitter(run(RigidOneEuroFilter(RigidParams(rigid_min_cutoff=30.0)), seq)[30:])
    assert new <= most * raw
    assert new <= old
    assert motion_unsmoothed >= 1.5 * new


@pytest.mark.parametrize("speed", [0.5, 1.5, 4.0])  # face sizes per second
def test_a_rigid_translation_passes_without_lag(speed: float) -> None:
    step = speed * 100 / FPS
    seq = [FACE + step * i * np.array([1.0, 0.3]) for i in range(45)]
    new = run(RigidOneEuroFilter(RigidParams()), seq)
    old = run(OneEuroFilter(OneEuroParams()), seq)
    err_new = float(np.abs(new[-10:] - np.stack(seq[-10:])).max())
    err_old = float(np.abs(old[-10:] - np.stack(seq[-10:])).mean())
    assert err_new <= 0.1  # px: under a twentieth of a frame's motion at 0.5 face sizes/s
    assert err_old >= 0.5  # the per-point filter trails by a third of a frame or more


def test_turning_and_zooming_pass_without_lag() -> None:
    seq = [similarity(FACE, 0.0, 0.0, 0.02 * i, 1.0 + 0.01 * i) for i in range(40)]
    new = run(RigidOneEuroFilter(RigidParams()), seq)
    old = run(OneEuroFilter(OneEuroParams()), seq)
    assert float(np.abs(new[-10:] - np.stack(seq[-10:])).max()) < 0.2
    assert float(np.abs(old[-10:] - np.stack(seq[-10:])).max()) > 0.5


def test_a_sudden_jump_is_followed_within_two_frames_without_overshoot() -> None:
    rng = np.random.default_rng(4)
    seq = [FACE + rng.normal(0, 0.3, (68, 2)) for _ in range(20)]
    seq += [FACE + np.array([25.0, 0.0]) + rng.normal(0, 0.3, (68, 2)) for _ in range(15)]
    out = run(RigidOneEuroFilter(RigidParams()), seq)
    progress = (out[:, :, 0].mean(1) - FACE[:, 0].mean()) / 25.0
    assert progress[21] >= 0.9  # 90 % by the frame after the jump
    assert progress[20:].max() <= 1.05


def test_a_drift_slower_than_the_gate_stays_within_its_lag_bound() -> None:
    p = RigidParams()
    speed = 0.5 * p.rigid_gate  # face sizes/s: never opens the filter by its own speed
    seq = [FACE + np.array([speed * 100 / FPS * i, 0.0]) for i in range(150)]
    out = run(RigidOneEuroFilter(p), seq)
    lag_px = float(np.abs(out[60:, :, 0] - np.stack(seq[60:])[:, :, 0]).max())
    assert lag_px <= 2.0 * p.rigid_gate / FPS * 100  # about gate / fps face sizes


def test_a_mouth_that_opens_opens_its_points_and_leaves_the_rest_still() -> None:
    seq = []
    for i in range(40):
        pts = FACE.copy()
        pts[MOUTH, 1] += 12.0 * min(max(i - 10, 0) / 3, 1.0)  # opens over 3 frames at frame 10
        seq.append(pts)
    new = run(RigidOneEuroFilter(RigidParams()), seq)
    old = run(OneEuroFilter(OneEuroParams()), seq)
    opened = (new[:, MOUTH, 1] - FACE[MOUTH, 1]).mean(1) / 12.0
    opened_old = (old[:, MOUTH, 1] - FACE[MOUTH, 1]).mean(1) / 12.0
    assert opened[15] >= 0.9 and opened[15] >= opened_old[15] - 0.05  # as fast as before
    nose = list(range(27, 36))
    assert float(np.abs(new[:, nose] - FACE[nose]).max()) < 0.6  # the fit hardly moves


def test_constant_input_stays_constant_and_size_does_not_matter() -> None:
    filt = RigidOneEuroFilter(RigidParams())
    for i in range(10):
        np.testing.assert_allclose(filt(FACE, i / FPS), FACE, atol=1e-3)
    rng = np.random.default_rng(5)
    seq = [FACE + np.cumsum(rng.normal(0, 2.0, (25, 1, 2)), axis=0)[i] + rng.normal(0, 0.5, (68, 2))
           for i in range(25)]
    a, b = RigidOneEuroFilter(RigidParams()), RigidOneEuroFilter(RigidParams())
    for i, pts in enumerate(seq):
        np.testing.assert_allclose(b(pts * 3.0, i / FPS), a(pts, i / FPS) * 3.0, rtol=1e-4, atol=3e-3)


def test_non_finite_points_pass_through_and_a_new_point_starts_raw() -> None:
    filt = RigidOneEuroFilter(RigidParams())
    first = FACE.copy()
    first[7] = np.nan
    filt(first, 0.0)
    bad = FACE + 1.0
    bad[3] = np.nan
    out = filt(bad, 1 / FPS)
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, axis=0)).all()
    assert np.abs(out[7] - bad[7]).max() < 1.0  # first seen now: close to its raw position
    all_nan = np.full((68, 2), np.nan)
    assert np.isnan(filt(all_nan, 2 / FPS)).all()  # nothing to fit: passes through
    assert np.isfinite(filt(FACE, 3 / FPS)).all()


def _tracked(index: int, pts: np.ndarray) -> TrackedFrame:
    face = Landmarks(index, index / FPS, 1, pts.astype(np.float32), np.ones(68, np.float32), 0.9,
                     Box(0, 0, 1, 1, 0.7))
    return TrackedFrame(Frame(index, index / FPS, np.zeros((4, 4, 3), np.uint8)), (face,))


def test_the_smoother_makes_the_filter_the_params_ask_for() -> None:
    assert isinstance(make_filter(RigidParams()), RigidOneEuroFilter)
    assert isinstance(make_filter(OneEuroParams()), OneEuroFilter)
    sm = Smoother()
    assert isinstance(sm.params, RigidParams)
    out = sm(_tracked(0, FACE))
    assert out.faces[0].points.dtype == np.float32


@pytest.mark.parametrize("rigid, kind", [(True, RigidParams), (False, OneEuroParams)])
def test_config_chooses_the_filter(rigid: bool, kind: type) -> None:
    cfg = Config().with_overrides({"smooth.rigid": rigid, "smooth.rigid_gate": 0.1,
                                   "smooth.beta": 3.0})
    stage = smooth_stage(cfg)
    assert stage is not None and isinstance(stage.smoother.params, kind)
    assert stage.smoother.params.beta == 3.0
    if rigid:
        assert stage.smoother.params.rigid_gate == 0.1


@pytest.mark.parametrize("key, value", [("smooth.rigid_min_cutoff", 0.0),
                                        ("smooth.rigid_beta", -1.0), ("smooth.rigid_gate", -0.1)])
def test_bad_rigid_settings_are_rejected(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config().with_overrides({key: value})
    with pytest.raises(ValueError):
        RigidParams(**{key.split(".")[1]: value})
