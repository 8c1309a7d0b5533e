"""Heatmap decoding: Numba kernels against the NumPy reference and known sub-pixel peaks.

``decode`` is the windowed soft-argmax of radius ``DECODE_RADIUS``; ``decode_parabola`` the
argmax + parabola fit (radius 0 in ``softmax_argmax_numpy``)."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.models import heatmap


def log_gaussian(h: int, w: int, cx: float, cy: float, sigma: float,
                 offset: float = 0.0) -> np.ndarray:
    """Noise-free Gaussian log-probability map (up to a constant) centred at (cx, cy)."""
    x = np.arange(w, dtype=np.float64)[None, :]
    y = np.arange(h, dtype=np.float64)[:, None]
    return (-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2) + offset).astype(np.float32)


def window_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """Softmax-weighted mean (x, y) of one map over the radius window at its first argmax,
    clipped to the map: a direct loop, independent of the padded NumPy reference."""
    a = a.astype(np.float64)
    h, w = a.shape
    py, px = np.unravel_index(np.argmax(a), a.shape)
    sw = sx = sy = 0.0
    for y in range(max(py - radius, 0), min(py + radius + 1, h)):
        for x in range(max(px - radius, 0), min(px + radius + 1, w)):
            e = np.exp(a[y, x] - a[py, px])
            sw, sx, sy = sw + e, sx + e * x, sy + e * y
    return np.array([sx / sw, sy / sw])


R = heatmap.DECODE_RADIUS
# (decoder, radius of the NumPy reference that matches it)
DECODERS = [
    pytest.param(heatmap.decode, R, id="decode"),
    pytest.param(heatmap.decode_parabola, 0, id="parabola"),
    pytest.param(lambda x, parallel=None: heatmap.soft_argmax(x, 1, parallel), 1, id="soft1"),
    pytest.param(lambda x, parallel=None: heatmap.soft_argmax(x, 5, parallel), 5, id="soft5"),
]


@pytest.mark.parametrize(
    ("shape", "scale", "seed"),
    [
        ((1, 68, 64, 64), 3.0, 0),
        ((3, 5, 32, 48), 0.5, 1),
        ((2, 4, 17, 9), 10.0, 2),
        ((1, 1, 1, 1), 1.0, 3),
        ((2, 3, 1, 8), 1.0, 4),
    ],
)
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("fn", "radius"), DECODERS)
def test_numba_matches_numpy_reference(shape, scale, seed, parallel, fn, radius):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(np.float32)
    pts, conf = fn(logits, parallel=parallel)
    ref_pts, ref_conf = heatmap.softmax_argmax_numpy(logits, radius)
    np.testing.assert_allclose(pts, ref_pts, rtol=0, atol=2e-6)
    np.testing.assert_allclose(conf, ref_conf, rtol=2e-6, atol=1e-8)


# Sub-pixel error bound on noise-free log-Gaussian peaks at least R px inside the map: 0.05 px.
# Truncating the Gaussian to the radius-3 window biases the mean towards the argmax; over a grid
# of sub-pixel offsets the worst error is ~0.004 px at sigma 1.0 (the training sigma) and ~0.03 px
# at 1.25, but ~0.09 px at 1.5, so the bound is stated for sigma <= 1.25. The parabola fit is
# exact for log-Gaussians of any sigma.
@pytest.mark.parametrize(("fn", "radius", "sigma"), [
    *[pytest.param(heatmap.decode, R, s, id=f"decode-{s}") for s in (0.8, 1.0, 1.25)],
    *[pytest.param(heatmap.decode_parabola, 0, s, id=f"parabola-{s}") for s in (1.0, 1.5, 2.0)],
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_peaks_recovered_subpixel(fn, radius, sigma, seed):
    rng = np.random.default_rng(seed)
    h, w, k = 40, 48, 12
    centres = np.stack([rng.uniform(R, w - 1 - R, k), rng.uniform(R, h - 1 - R, k)], axis=1)
    offsets = rng.uniform(-50, 50, k)
    logits = np.stack([log_gaussian(h, w, cx, cy, sigma, off)
                       for (cx, cy), off in zip(centres, offsets, strict=True)])[None]
    pts, conf = fn(logits)
    err = np.linalg.norm(pts[0] - centres, axis=1)
    assert err.max() <= 0.05
    ref_pts, _ = heatmap.softmax_argmax_numpy(logits, radius)
    assert np.linalg.norm(ref_pts[0] - centres, axis=1).max() <= 0.05
    assert np.all((conf > 0) & (conf <= 1))


@pytest.mark.parametrize("sigma", [1.0, 1.25])
def test_decode_subpixel_bound_over_offset_grid(sigma):
    """Worst case of the 0.05 px bound over a 21 x 21 grid of sub-pixel offsets of the centre."""
    f = np.linspace(-0.5, 0.5, 21)
    centres = np.array([[12 + fx, 11 + fy] for fx in f for fy in f])
    logits = np.stack([log_gaussian(24, 26, cx, cy, sigma) for cx, cy in centres])[None]
    pts, _ = heatmap.decode(logits)
    assert np.linalg.norm(pts[0] - centres, axis=1).max() <= 0.05


@pytest.mark.parametrize(
    ("peak", "expect_x_exact", "expect_y_exact"),
    [
        ((0, 0), True, True),
        ((15, 11), True, True),
        ((0, 5.3), True, False),
        ((15, 5.3), True, False),
        ((7.3, 0), False, True),
        ((7.3, 11), False, True),
    ],
)
def test_parabola_border_peaks_fall_back_to_integer(peak, expect_x_exact, expect_y_exact):
    h, w = 12, 16
    logits = log_gaussian(h, w, peak[0], peak[1], 1.0)[None, None]
    pts, conf = heatmap.decode_parabola(logits)
    ref_pts, ref_conf = heatmap.softmax_argmax_numpy(logits, 0)
    x, y = pts[0, 0]
    if expect_x_exact:
        assert x == peak[0]
    else:
        assert abs(x - peak[0]) <= 0.05
    if expect_y_exact:
        assert y == peak[1]
    else:
        assert abs(y - peak[1]) <= 0.05
    np.testing.assert_allclose(pts, ref_pts, atol=1e-6)
    np.testing.assert_allclose(conf, ref_conf, rtol=2e-6)


@pytest.mark.parametrize(
    ("h", "w"),
    [
        (4, 5),  # window clipped on every side
        (12, 12),
        (1, 10),  # single row
        (1, 1),
        (30, 2),
    ],
)
@pytest.mark.parametrize("peak", ["corner0", "corner1", "edge_x", "edge_y", "inside"])
def test_decode_border_peaks_use_clipped_window(h, w, peak):
    """Peaks on or near the border: the window is clipped to the map, so the point is the
    weighted mean of the pixels inside it (pulled towards the inside of the map)."""
    cx, cy = {"corner0": (0, 0), "corner1": (w - 1, h - 1), "edge_x": (w - 1, (h - 1) * 0.4),
              "edge_y": ((w - 1) * 0.55, 0), "inside": (min(1.3, w - 1), min(1.7, h - 1))}[peak]
    logits = np.stack([log_gaussian(h, w, cx, cy, s) for s in (0.7, 1.0, 2.0)])[None]
    pts, conf = heatmap.decode(logits)
    ref_pts, ref_conf = heatmap.softmax_argmax_numpy(logits, R)
    np.testing.assert_allclose(pts, ref_pts, atol=2e-6)
    np.testing.assert_allclose(conf, ref_conf, rtol=2e-6)
    for k in range(3):
        np.testing.assert_allclose(pts[0, k], window_mean(logits[0, k], R), atol=2e-6)
    assert np.all((pts[..., 0] >= 0) & (pts[..., 0] <= w - 1))
    assert np.all((pts[..., 1] >= 0) & (pts[..., 1] <= h - 1))
    if peak == "corner0" and w > 1 and h > 1:  # clipped window: pulled inside, off the corner
        assert np.all(pts[0, :, 0] > 0) and np.all(pts[0, :, 1] > 0)


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (8, 8, 4 / 64),  # uniform: argmax is the first pixel (corner), 2x2 window inside the map
        (1, 10, 2 / 10),  # single row: the window is 1x2 at the left end
        (1, 1, 1.0),
    ],
)
def test_uniform_map_confidence_and_first_index(h, w, expected):
    logits = np.full((1, 1, h, w), 3.0, np.float32)
    pts, conf = heatmap.decode_parabola(logits)
    assert pts[0, 0].tolist() == [0.0, 0.0]
    assert conf[0, 0] == pytest.approx(expected, rel=1e-6)
    pts, soft_conf = heatmap.decode(logits)
    # uniform weights over the window clipped at the first pixel: the mean of its index range
    assert pts[0, 0].tolist() == [min(R, w - 1) / 2, min(R, h - 1) / 2]
    assert soft_conf[0, 0] == conf[0, 0]


def test_ties_pick_first_index_like_numpy():
    logits = np.zeros((1, 1, 8, 8), np.float32)
    logits[0, 0, 5, 1] = 5.0
    logits[0, 0, 2, 3] = 5.0
    pts, _ = heatmap.decode_parabola(logits)
    assert pts[0, 0].tolist() == [3.0, 2.0]
    pts, _ = heatmap.decode(logits)
    np.testing.assert_allclose(pts[0, 0], window_mean(logits[0, 0], R), atol=1e-6)
    other = logits[0, 0].copy()
    other[2, 3] = 0.0  # the window at the second peak gives another point
    assert np.abs(pts[0, 0] - window_mean(other, R)).max() > 0.1


def test_decode_is_soft_argmax_at_decode_radius():
    logits = (np.random.default_rng(7).standard_normal((2, 6, 20, 17)) * 3).astype(np.float32)
    np.testing.assert_array_equal(heatmap.decode(logits)[0], heatmap.soft_argmax(logits, R)[0])
    np.testing.assert_array_equal(heatmap.decode(logits)[0], heatmap.soft_argmax(logits)[0])


def test_sharp_peak_confidence_near_one():
    logits = log_gaussian(32, 32, 10.0, 20.0, 0.3)[None, None]
    _, conf = heatmap.decode(logits)
    assert conf[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf])
@pytest.mark.parametrize(("fn", "radius"), DECODERS)
def test_non_finite_maps_give_nan_point_and_zero_confidence(bad, fn, radius):
    logits = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    logits[0, 1, 2, 5] = bad
    logits[0, 2, 3, 3] = -np.inf  # -inf pixels weigh 0, also inside the window
    logits[0, 3] = -np.inf  # an all -inf map has no finite maximum
    pts, conf = fn(logits)
    ref_pts, ref_conf = heatmap.softmax_argmax_numpy(logits, radius)
    for p, c in ((pts, conf), (ref_pts, ref_conf)):
        assert np.isnan(p[0, [1, 3]]).all() and (c[0, [1, 3]] == 0).all()
        assert np.isfinite(p[0, [0, 2]]).all() and (c[0, [0, 2]] > 0).all()
    np.testing.assert_allclose(pts, ref_pts, atol=2e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("fn", [heatmap.decode, heatmap.decode_parabola, heatmap.soft_argmax])
def test_shapes_and_dtypes(dtype, fn):
    logits = np.random.default_rng(0).standard_normal((2, 5, 16, 12)).astype(dtype)
    pts, conf = fn(logits)
    assert pts.shape == (2, 5, 2) and pts.dtype == np.float32
    assert conf.shape == (2, 5) and conf.dtype == np.float32
    assert np.all((pts[..., 0] >= 0) & (pts[..., 0] <= 11))
    assert np.all((pts[..., 1] >= 0) & (pts[..., 1] <= 15))


def test_non_contiguous_and_empty_inputs():
    logits = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    view = logits.transpose(1, 0, 3, 2)
    pts, conf = heatmap.decode(view)
    ref_pts, ref_conf = heatmap.softmax_argmax_numpy(np.ascontiguousarray(view))
    np.testing.assert_allclose(pts, ref_pts, atol=1e-6)
    np.testing.assert_allclose(conf, ref_conf, rtol=2e-6)
    pts, conf = heatmap.decode(np.zeros((0, 68, 8, 8), np.float32))
    assert pts.shape == (0, 68, 2) and conf.shape == (0, 68)


@pytest.mark.parametrize("shape", [(68, 64, 64), (1, 68, 64, 64, 1), (1, 2, 0, 4)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match="N, K, H, W"):
        heatmap.decode(np.zeros(shape, np.float32))


@pytest.mark.parametrize(("radius", "sigma", "tol"), [(1, 0.7, 0.1), (2, 1.0, 0.05),
                                                      (3, 1.0, 0.01)])
def test_soft_argmax_recovers_interior_peaks(radius, sigma, tol):
    centres = np.array([[10.0, 12.0], [20.3, 7.8], [5.6, 15.4]])
    logits = np.stack([log_gaussian(24, 28, cx, cy, sigma) for cx, cy in centres])[None]
    pts, conf = heatmap.soft_argmax(logits, radius)
    assert np.abs(pts[0] - centres).max() <= tol
    assert pts[0, 0].tolist() == [10.0, 12.0]  # symmetric window: exact
    _, dec_conf = heatmap.decode(logits)
    np.testing.assert_array_equal(conf, dec_conf)


@pytest.mark.parametrize("radius", [2, R])
def test_soft_argmax_matches_direct_window_mean(radius):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((1, 6, 10, 10)).astype(np.float32) * 2
    pts, _ = heatmap.soft_argmax(logits, radius)
    for k in range(6):
        np.testing.assert_allclose(pts[0, k], window_mean(logits[0, k], radius), atol=1e-5)


def test_soft_argmax_rejects_zero_radius():
    with pytest.raises(ValueError, match="radius"):
        heatmap.soft_argmax(np.zeros((1, 1, 4, 4), np.float32), 0)


@pytest.mark.parametrize(("fn", "sigma"), [(heatmap.decode, 1.0), (heatmap.decode_parabola, 1.0),
                                         (heatmap.decode_parabola, 1.5),
                                         (heatmap.decode_parabola, 2.0)])
def test_points_to_maps_round_trip_through_decode(fn, sigma):
    pts = np.array([[[3.0, 4.0], [10.4, 3.7], [7.75, 12.2]]], np.float32)  # >= R px inside
    maps = heatmap.points_to_maps(pts, 16, 14, sigma)
    assert maps.shape == (1, 3, 16, 14) and maps.dtype == np.float32
    assert maps[0, 0, 4, 3] == pytest.approx(1.0)
    assert maps.max() <= 1.0
    decoded, _ = fn(np.log(np.maximum(maps, 1e-30)))
    np.testing.assert_allclose(decoded, pts, atol=0.05)


def test_points_to_maps_zeroes_hidden_and_nan_points():
    pts = np.array([[[3.0, 4.0], [5.0, 5.0], [np.nan, 2.0]]], np.float32)
    visible = np.array([[True, False, True]])
    maps = heatmap.points_to_maps(pts, 8, 8, 1.0, visible=visible)
    assert maps[0, 0].max() == pytest.approx(1.0)
    assert not maps[0, 1].any() and not maps[0, 2].any()


@pytest.mark.parametrize(("points", "sigma"), [(np.zeros((3, 2)), 1.0), (np.zeros((1, 3, 2)), 0)])
def test_points_to_maps_bad_input_raises(points, sigma):
    with pytest.raises(ValueError):
        heatmap.points_to_maps(points, 8, 8, sigma)


def test_warmup_runs():
    heatmap.warmup()
    pts, _ = heatmap.decode(log_gaussian(5, 5, 2.2, 1.9, 1.0)[None, None])
    np.testing.assert_allclose(pts[0, 0], [2.2, 1.9], atol=0.05)


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 values cut to bfloat16 bit patterns (uint16): values bf16 holds exactly."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_bf16_decode_matches_the_float32_decode_to_the_bit() -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3, 68, 20, 24)) * 4).astype(np.float32)
    x[0, 0] = -5.0
    x[0, 0, 3, 4] = -1.0  # every value negative: the int16-key argmax cannot be used
    x[0, 1] = 0.0  # a flat map at +0
    x[0, 2, 5, 5] = np.nan
    x[0, 3, 1, 1] = np.inf
    x[0, 4] = -np.inf
    x[0, 4, 2, 2] = 3.0
    x[0, 5, 0, 0] = 30.0  # a peak in the corner: the window is clipped
    x[0, 6] = -0.0
    x[0, 6, 4, 4] = 0.0  # -0 and +0 tie: the first one wins
    x[0, 7, 9, 9] = x[0, 7, 9, 10] = 25.0  # a tie: the first maximum wins
    x[1, 0, 19, 23] = 40.0  # the last pixel
    bits = _bf16_bits(x)
    values = heatmap.bf16_to_float32(bits).reshape(x.shape)
    want_pts, want_conf = heatmap.decode(values)
    for given in (bits, bits.view(np.float16)):  # OpenVINO hands bf16 out as float16 bits
        pts, conf = heatmap.decode_bf16(given)
        assert np.array_equal(pts.view(np.uint32), want_pts.view(np.uint32))
        assert np.array_equal(conf.view(np.uint32), want_conf.view(np.uint32))
    assert np.isnan(pts[0, 2]).all() and conf[0, 2] == 0.0
    assert np.isnan(pts[0, 3]).all() and conf[0, 3] == 0.0
    assert np.isfinite(pts[0, [0, 1, 4, 5, 6, 7]]).all()


def test_bf16_decode_rejects_other_shapes_and_types() -> None:
    with pytest.raises(ValueError, match="16-bit logits"):
        heatmap.decode_bf16(np.zeros((1, 68, 8, 8), np.float32))
    with pytest.raises(ValueError, match="16-bit logits"):
        heatmap.decode_bf16(np.zeros((68, 8, 8), np.uint16))
