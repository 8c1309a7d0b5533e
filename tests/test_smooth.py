"""One Euro smoothing: Numba kernel vs a pure-Python reference, step response, per-face state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracker.api.assembly import smooth_stage
from tracker.config.schema import Config
from tracker.temporal.smoothing import (
    OneEuroFilter,
    OneEuroParams,
    Smoother,
    SmoothStage,
    face_scale,
)
from tracker.types import Box, Frame, Landmarks, TrackedFrame

GRID = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(-1, 2)[:68]
FACE = (GRID * 100 + 50).astype(np.float32)  # a 100 px face


def reference(xs: np.ndarray, ts: np.ndarray, scales: np.ndarray, p: OneEuroParams) -> np.ndarray:
    """Textbook One Euro, one scalar coordinate at a time, plain Python floats."""

    def alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out = np.empty_like(xs, dtype=np.float64)
    n_coords = xs.shape[1]
    for j in range(n_coords):
        x_hat, dx_hat = float(xs[0, j]), 0.0
        out[0, j] = x_hat
        for i in range(1, len(xs)):
            dt = float(ts[i] - ts[i - 1])
            dx = (float(xs[i, j]) - x_hat) / dt
            dx_hat = dx_hat + alpha(p.d_cutoff, dt) * (dx - dx_hat)
            cutoff = p.min_cutoff + p.beta * abs(dx_hat) / float(scales[i])
            x_hat = x_hat + alpha(cutoff, dt) * (float(xs[i, j]) - x_hat)
            out[i, j] = x_hat
    return out


@pytest.mark.parametrize(
    "params, fps, seed",
    [
        (OneEuroParams(), 30.0, 0),
        (OneEuroParams(min_cutoff=0.3, beta=0.0, d_cutoff=1.0), 25.0, 1),
        (OneEuroParams(min_cutoff=2.0, beta=50.0, d_cutoff=3.0), 60.0, 2),
        (OneEuroParams(min_cutoff=1.0, beta=5.0, d_cutoff=0.5), 29.97, 3),
    ],
)
def test_numba_kernel_matches_python_reference(params: OneEuroParams, fps: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    drift = np.cumsum(rng.normal(0, 2.0, (n, 1, 2)), axis=0)
    seq = FACE[None] + drift + rng.normal(0, 0.7, (n, 68, 2))
    ts = np.arange(n) / fps + rng.uniform(0, 0.2 / fps, n)  # uneven frame times
    filt = OneEuroFilter(params)
    got = np.stack([filt(seq[i], float(ts[i])) for i in range(n)])
    scales = np.array([face_scale(s) for s in seq])
    want = reference(seq.reshape(n, -1), ts, scales, params).reshape(n, 68, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


@pytest.mark.parametrize("params", [OneEuroParams(), OneEuroParams(0.1, 100.0, 5.0)])
def test_constant_input_stays_constant(params: OneEuroParams) -> None:
    filt = OneEuroFilter(params)
    outs = [filt(FACE, i / 30) for i in range(20)]
    for out in outs:
        np.testing.assert_array_equal(out, FACE)


@pytest.mark.parametrize("min_cutoff, frames_to_settle", [(1.0, 40), (3.0, 15)])
def test_step_response_moves_monotonically_and_converges(min_cutoff: float,
                                                         frames_to_settle: int) -> None:
    filt = OneEuroFilter(OneEuroParams(min_cutoff=min_cutoff, beta=0.0))
    for i in range(5):
        filt(FACE, i / 30)
    step = FACE + 10.0
    xs = [float(filt(step, (5 + i) / 30)[0, 0] - FACE[0, 0]) for i in range(frames_to_settle)]
    assert 0 < xs[0] < 10
    assert all(b >= a for a, b in zip(xs, xs[1:], strict=False))
    assert xs[-1] == pytest.approx(10.0, abs=0.1)


def test_speed_raises_the_cutoff_so_moving_faces_lag_less() -> None:
    lags = []
    for beta in (0.0, 20.0):
        filt = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=beta))
        errs = []
        for i in range(30):
            moving = FACE + 5.0 * i  # 5 px/frame = 1.5 face sizes/s
            errs.append(float(np.abs(filt(moving, i / 30) - moving).mean()))
        lags.append(errs[-1])
    assert lags[1] < lags[0] / 3


@pytest.mark.parametrize("zoom", [0.25, 4.0])
def test_one_setting_works_at_any_face_size(zoom: float) -> None:
    rng = np.random.default_rng(5)
    seq = FACE[None] + np.cumsum(rng.normal(0, 3.0, (25, 68, 2)), axis=0)
    a, b = OneEuroFilter(OneEuroParams()), OneEuroFilter(OneEuroParams())
    for i, pts in enumerate(seq):
        out_a = a(pts, i / 30)
        out_b = b(pts * zoom, i / 30)
        np.testing.assert_allclose(out_b, out_a * zoom, rtol=1e-4, atol=1e-3 * zoom)


def test_non_finite_points_pass_through_without_touching_state() -> None:
    filt = OneEuroFilter(OneEuroParams(beta=0.0))
    filt(FACE, 0.0)
    bad = FACE.copy()
    bad[3] = np.nan
    out = filt(bad, 1 / 30)
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, axis=0)).all()
    np.testing.assert_array_equal(filt(FACE, 2 / 30)[3], FACE[3])


@pytest.mark.parametrize("times", [[0.0, 0.0, 0.0], [1.0, 0.5, 0.2], [float("nan")] * 3])
def test_missing_or_backward_timestamps_use_the_fallback_rate(times: list[float]) -> None:
    p = OneEuroParams(fallback_fps=30.0)
    ref, filt = OneEuroFilter(p), OneEuroFilter(p)
    for i, t in enumerate(times):
        x = FACE + 3.0 * i
        np.testing.assert_allclose(filt(x, t), ref(x, i / 30), atol=1e-4)


def _tracked(index: int, faces: dict[int, np.ndarray]) -> TrackedFrame:
    frame = Frame(index, index / 30, np.zeros((4, 4, 3), np.uint8))
    marks = tuple(
        Landmarks(index, index / 30, fid, pts.astype(np.float32), np.ones(68, np.float32), 0.9,
                  Box(0, 0, 1, 1, 0.7))
        for fid, pts in faces.items()
    )
    return TrackedFrame(frame, marks)


def test_state_is_per_face_and_reset_when_the_face_is_lost() -> None:
    sm = Smoother(OneEuroParams(beta=0.0))
    sm(_tracked(0, {0: FACE, 1: FACE + 200}))
    out = sm(_tracked(1, {0: FACE + 10, 1: FACE + 210}))
    assert sm.face_ids == (0, 1)
    assert all(0 < float(f.points[0, 0] - p[0, 0]) < 10
               for f, p in zip(out.faces, (FACE, FACE + 200), strict=True))
    sm(_tracked(2, {1: FACE + 210}))  # face 0 lost
    assert sm.face_ids == (1,)
    back = sm(_tracked(3, {0: FACE + 50, 1: FACE + 210}))
    np.testing.assert_array_equal(back.faces[0].points, FACE + 50)  # fresh state: no smoothing
    assert back.faces[1].points[0, 0] != FACE[0, 0] + 210  # face 1 still filtered


def test_smoothed_faces_keep_their_records_and_get_boxes_of_the_smoothed_points() -> None:
    sm = Smoother(OneEuroParams())
    sm(_tracked(0, {4: FACE}))
    out = sm(_tracked(1, {4: FACE + 8}))
    face = out.faces[0]
    assert (face.face_id, face.frame_index, face.presence, face.box.score) == (4, 1, 0.9, 0.7)
    assert face.points.dtype == np.float32
    assert face.box.x0 == pytest.approx(float(face.points[:, 0].min()))


@pytest.mark.parametrize("name, stage", [("one_euro", SmoothStage), ("none", type(None))])
def test_config_selects_the_stage(name: str, stage: type) -> None:
    cfg = Config().with_overrides({"smooth.filter": name, "smooth.beta": 3.0})
    made = smooth_stage(cfg)
    assert isinstance(made, stage)
    if made is not None:
        assert made.smoother.params.beta == 3.0


@pytest.mark.parametrize(
    "kwargs", [{"min_cutoff": 0.0}, {"beta": -1.0}, {"d_cutoff": 0.0}, {"fallback_fps": 0.0}]
)
def test_bad_params_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OneEuroParams(**kwargs)
