"""Evaluation figures: PNGs are written with the expected size and content."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tracker.evaluation import plots


def read_rgb(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} not readable"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    ("curves", "size"),
    [
        ({"rcn": np.array([0.02, 0.03, 0.05, 0.2])}, (640, 480)),
        ({"rcn": np.linspace(0, 0.12, 50), "sumnet": np.linspace(0.01, 0.2, 30),
          "lost": np.array([np.inf])}, (800, 600)),
        ({"one": np.array([0.0])}, (320, 240)),
    ],
)
def test_ced_plot_writes_png(tmp_path, curves, size):
    path = tmp_path / "sub" / "ced.png"
    img = plots.ced_plot(curves, path, size=size)
    on_disk = read_rgb(path)
    assert on_disk.shape == (size[1], size[0], 3)
    np.testing.assert_array_equal(on_disk, img)
    for i in range(len(curves)):
        colour = np.array(plots.PALETTE[i])
        assert np.any(np.all(on_disk == colour, axis=2)), f"curve {i} colour missing"


def test_ced_plot_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        plots.ced_plot({}, tmp_path / "x.png")


def _samples(n: int, rng: np.random.Generator):
    images, gts = [], []
    for i in range(n):
        h, w = 120 + 20 * (i % 3), 160 - 10 * (i % 4)
        images.append(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        gts.append(rng.uniform(10, min(h, w) - 10, (68, 2)))
    gts = np.stack(gts)
    preds = gts + rng.normal(0, 2, gts.shape)
    return images, preds, gts


@pytest.mark.parametrize(("n", "tile"), [(1, 128), (5, 256), (8, 200)])
def test_representative_grid_writes_png(tmp_path, n, tile):
    rng = np.random.default_rng(n)
    images, preds, gts = _samples(n, rng)
    nmes = rng.uniform(0, 0.2, n)
    path = tmp_path / "grid.png"
    grid = plots.representative_grid(images, preds, gts, nmes, path, tile=tile)
    on_disk = read_rgb(path)
    assert on_disk.shape == (tile + 28, 3 * tile, 3)
    np.testing.assert_array_equal(on_disk, grid)
    for colour in (plots.GT_COLOR, plots.PRED_COLOR):
        assert np.any(np.all(on_disk == np.array(colour), axis=2))


def test_representative_grid_picks_best_median_worst(tmp_path):
    rng = np.random.default_rng(0)
    images, preds, gts = _samples(5, rng)
    for i, img in enumerate(images):
        img[:] = 50 * i  # a plain grey level identifies each image
    preds = np.full_like(gts, np.nan)  # draw only the ground truth, away from the centre pixel
    gts[:] = 5.0
    nmes = np.array([0.05, 0.01, 0.3, 0.02, 0.04])  # best #1, median #4, worst #2
    grid = plots.representative_grid(images, preds, gts, nmes, tmp_path / "g.png", tile=64)
    centres = [grid[32, 32 + 64 * c] for c in range(3)]
    assert [int(c[0]) for c in centres] == [50, 200, 100]


@pytest.mark.parametrize("n_nmes", [0, 2])
def test_representative_grid_rejects_mismatch(tmp_path, n_nmes):
    rng = np.random.default_rng(0)
    images, preds, gts = _samples(3, rng)
    with pytest.raises(ValueError, match="matching"):
        plots.representative_grid(images, preds, gts, np.zeros(n_nmes), tmp_path / "g.png")
