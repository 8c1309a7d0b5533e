"""Landmark metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.evaluation import metrics
from tracker.face68 import OUTER_EYE_CORNERS


def face(iod: float = 100.0) -> np.ndarray:
    """68 ground-truth points whose outer eye corners (36, 45) are ``iod`` apart."""
    pts = np.random.default_rng(0).uniform(0, 200, (68, 2))
    a, b = OUTER_EYE_CORNERS
    pts[a] = [50.0, 80.0]
    pts[b] = [50.0 + iod, 80.0]
    return pts


def test_zero_error():
    gt = np.stack([face(), face(60.0)])
    e = metrics.nme(gt, gt)
    assert e.tolist() == [0.0, 0.0]
    assert metrics.summarize(e) == {"n": 2, "nme_mean": 0.0, "nme_median": 0.0,
                                    "fr_010": 0.0, "auc_010": 1.0}


@pytest.mark.parametrize(
    ("shift", "iod", "expected"),
    [
        ((3.0, 4.0), 100.0, 0.05),  # |shift| = 5
        ((0.0, -2.0), 40.0, 0.05),
        ((6.0, 8.0), 50.0, 0.20),
        ((1.0, 0.0), 1.0, 1.0),
    ],
)
def test_uniform_shift_gives_known_nme(shift, iod, expected):
    gt = face(iod)
    pred = gt + np.asarray(shift)
    assert metrics.nme(pred, gt) == pytest.approx([expected])


def test_nme_mean_over_points_and_per_image():
    gt = face(100.0)
    pred = gt.copy()
    pred[:34] += [10.0, 0.0]  # half the points off by 10 px -> mean error 5 px
    pred2 = gt + [0.0, 1.0]
    e = metrics.nme(np.stack([pred, pred2]), np.stack([gt, gt]))
    assert e == pytest.approx([0.05, 0.01])
    s = metrics.summarize(e)
    assert s["nme_mean"] == pytest.approx(0.03) and s["nme_median"] == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("nmes", "expected_auc"),
    [
        ([0.0], 1.0),
        ([0.05], 0.5),
        ([0.0, 0.05], 0.75),  # 0.5 on [0, .05), 1 on [.05, .1] -> (0.025 + 0.05) / 0.1
        ([0.02, 0.02, 0.02, 0.2], 0.6),  # 0.75 of images, each passing on 0.08 of 0.1
        ([0.1], 0.0),
        ([0.3, np.inf], 0.0),
        ([0.01, 0.03, 0.07, 0.09], 0.5),  # (0.09 + 0.07 + 0.03 + 0.01) / 4 / 0.1
    ],
)
def test_auc_of_known_step_functions(nmes, expected_auc):
    assert metrics.auc(nmes) == pytest.approx(expected_auc)


def test_auc_equals_integral_of_ced_curve():
    e = np.random.default_rng(1).gamma(2.0, 0.025, 500)
    xs, ys = metrics.ced_curve(e)
    assert xs[0] == 0 and xs[-1] == 0.10
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    integral = np.sum(np.diff(xs) * ys[:-1]) / 0.10
    assert metrics.auc(e) == pytest.approx(integral)
    assert ys[-1] == pytest.approx(np.mean(e <= 0.10))


def test_ced_curve_small_case():
    xs, ys = metrics.ced_curve([0.0, 0.04, 0.04, 0.5])
    assert xs.tolist() == [0.0, 0.04, 0.10]
    assert ys.tolist() == [0.25, 0.75, 0.75]


@pytest.mark.parametrize(
    ("nmes", "expected"),
    [
        ([0.10], 0.0),  # exactly at the threshold: not a failure (NME > 0.10 fails)
        ([np.nextafter(0.10, 1.0)], 1.0),
        ([0.05, 0.10, 0.11, np.inf], 0.5),
        ([0.0, 0.0, 0.0], 0.0),
    ],
)
def test_failure_rate_threshold_is_exclusive(nmes, expected):
    assert metrics.failure_rate(nmes) == expected


def test_summarize_keys_and_types():
    s = metrics.summarize(np.array([0.02, 0.04, 0.2]))
    assert set(s) == {"n", "nme_mean", "nme_median", "fr_010", "auc_010"}
    assert isinstance(s["n"], int) and all(isinstance(s[k], float) for k in s if k != "n")
    assert s["n"] == 3 and s["nme_median"] == pytest.approx(0.04)
    assert s["fr_010"] == pytest.approx(1 / 3) and s["auc_010"] == pytest.approx(0.14 / 0.3)


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (np.zeros((68, 2)), np.zeros((68, 2)), "inter-ocular"),
        (np.zeros((2, 68, 2)), np.zeros((3, 68, 2)), "differ"),
        (np.zeros((10, 2)), np.zeros((10, 2)), "68"),
    ],
)
def test_nme_bad_input_raises(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        metrics.nme(pred, gt)


@pytest.mark.parametrize("nmes", [[], [np.nan], [-0.1]])
def test_bad_nmes_raise(nmes):
    with pytest.raises(ValueError):
        metrics.summarize(nmes)
