"""Per-landmark offset calibration: fitted on training labels, stored, applied by the landmarker."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_labelled_folder
from torch import nn

from tracker.engines.registry import create_engine
from tracker.geometry import MARGIN, box_from_points
from tracker.io.pts import load_folder
from tracker.landmarker import Landmarker
from tracker.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tracker.models.networks import VARIANTS, build_model
from tracker.training.calibrate import calibrate, fit_point_offset
from tracker.training.data import face_crop

NET = replace(VARIANTS["rcn_lite"], size=32, widths=(8, 8))
PEAKS = np.stack([np.linspace(4, 27, 68), np.linspace(27, 4, 68)], 1).round()  # integer pixels


class FixedPeaks(nn.Module):
    """Logits peaked at PEAKS whatever the input (a model with a known, constant prediction)."""

    def __init__(self) -> None:
        super().__init__()
        maps = torch.full((68, 32, 32), -20.0)
        for k, (x, y) in enumerate(PEAKS.astype(int)):
            maps[k, y, x] = 20.0
        self.register_buffer("maps", maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(x.shape[0], -1, -1, -1) + 0.0 * x.mean()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled_folder(tmp_path_factory.mktemp("faces"), 5, (80, 90), 20, 60, seed=1)


def _labels_in_crop(folder: Path) -> np.ndarray:
    return np.stack([face_crop(s.image, s.points, NET.size, None, None)[1] for s in load_folder(folder)])


def test_offset_is_the_mean_label_minus_prediction(folder: Path) -> None:
    offset = fit_point_offset(Checkpoint(FixedPeaks(), NET, None, {}), folder)
    expected = (_labels_in_crop(folder) - PEAKS).mean(0)
    np.testing.assert_allclose(offset, expected, atol=1e-3)


def test_calibrated_landmarker_shifts_points_by_the_offset(folder: Path) -> None:
    offset = fit_point_offset(Checkpoint(FixedPeaks(), NET, None, {}), folder)
    meta = {"point_offset": offset.tolist()}
    raw = Landmarker(Checkpoint(FixedPeaks(), NET, None, {}), create_engine(FixedPeaks(), 32, 1, "torch"))
    cal = Landmarker(Checkpoint(FixedPeaks(), NET, None, meta), create_engine(FixedPeaks(), 32, 1, "torch"))
    sample = load_folder(folder)[0]
    box = box_from_points(sample.points)
    shift = cal.predict(sample.image, [box])[0].points - raw.predict(sample.image, [box])[0].points
    side = MARGIN * max(box.width, box.height)  # crop pixels -> frame pixels
    np.testing.assert_allclose(shift, offset * side / NET.size, atol=1e-3)


def test_calibrate_stores_the_offset_in_the_checkpoint(folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path, out = tmp_path / "m.pt", tmp_path / "m_cal.pt"
    save_checkpoint(path, build_model(NET), NET, None, {"epoch": 3})
    offset = calibrate(path, folder, out)
    ckpt = load_checkpoint(out)
    np.testing.assert_allclose(ckpt.meta["point_offset"], offset, atol=1e-4)
    assert ckpt.meta["epoch"] == 3  # the rest of the metadata is kept
    np.testing.assert_allclose(offset, fit_point_offset(load_checkpoint(path), folder), atol=1e-5)
    assert "point_offset" not in load_checkpoint(path).meta  # the input file is untouched
