"""300-W .pts files, crops and augmentation (the flip permutation itself: test_face68)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tracker.face68 import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from tracker.geometry import box_from_points
from tracker.io.pts import find_samples, read_pts, write_pts
from tracker.models.preprocess import Preprocess
from tracker.training.data import Augment, face_crop


def test_pts_round_trip(tmp_path) -> None:
    pts = np.random.default_rng(0).uniform(0, 200, size=(68, 2)).astype(np.float32)
    write_pts(tmp_path / "a.pts", pts)
    text = (tmp_path / "a.pts").read_text()
    assert text.startswith("version: 1\nn_points: 68\n{")
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), pts, atol=1e-3)


def test_pts_are_one_based(tmp_path) -> None:
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 2\n{\n1 1\n10.5 20\n}\n")
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), [[0, 0], [9.5, 19]])


def test_malformed_pts_raises(tmp_path) -> None:
    (tmp_path / "c.pts").write_text("hello")
    with pytest.raises(ValueError, match="c.pts"):
        read_pts(tmp_path / "c.pts")


def test_find_samples_recurses_like_300w(tmp_path) -> None:
    for sub in ("lfpw/trainset", "helen/testset", "ibug"):
        d = tmp_path / sub
        d.mkdir(parents=True)
        (d / "img.png").write_bytes(b"x")
        write_pts(d / "img.pts", np.zeros((68, 2)))
    (tmp_path / "ibug" / "orphan.pts").write_text("")
    assert len(find_samples(tmp_path)) == 3


def _synthetic_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(200, 180, 3), dtype=np.uint8)
    pts = rng.uniform(50, 150, size=(68, 2)).astype(np.float32)
    pts[RIGHT_EYE_OUTER], pts[LEFT_EYE_OUTER] = (60, 80), (120, 80)  # image left, image right
    return image, pts


def test_crop_without_augmentation_centres_the_box() -> None:
    image, pts = _synthetic_face(0)
    crop, out = face_crop(image, pts, 64, None, None)
    assert crop.shape == (64, 64, 3)
    box = box_from_points(out)
    cx, cy = box.center
    assert abs(cx - 31.5) < 1e-3 and abs(cy - 31.5) < 1e-3
    assert abs(max(box.width, box.height) - 64 / 1.25) < 1e-3


def test_flipped_crop_keeps_the_image_left_eye_on_the_left() -> None:
    image, pts = _synthetic_face(1)
    aug = Augment(scale=0, rotate_deg=0, shift=0, box_jitter=0, flip=True, photometric=False,
                  occlude_p=0)
    seen = set()
    for seed in range(20):
        _, out = face_crop(image, pts, 64, np.random.default_rng(seed), aug)
        # the subject's right eye (image left) stays on the left after a flip
        assert out[RIGHT_EYE_OUTER, 0] < out[LEFT_EYE_OUTER, 0]
        seen.add(round(float(out[RIGHT_EYE_OUTER, 0]), 3))
    assert len(seen) == 2  # both flipped and unflipped crops occurred


@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_flipped_labels_keep_the_label_offset(angle: float) -> None:
    image, pts = _synthetic_face(3)
    plain = Augment(scale=0, rotate_deg=angle, shift=0, box_jitter=0, flip=True,
                    photometric=False, occlude_p=0)
    shifted = replace(plain, flip_shift=0.01)
    full = 2 * 0.01 * 64  # twice the offset, in pixels of the 64-px crop
    mirrored = 0
    for seed in range(12):
        crop_a, a = face_crop(image, pts, 64, np.random.default_rng(seed), plain)
        crop_b, b = face_crop(image, pts, 64, np.random.default_rng(seed), shifted)
        assert np.array_equal(crop_a, crop_b)
        np.testing.assert_allclose(b[:, 1], a[:, 1])
        dx = b[:, 0] - a[:, 0]
        if np.allclose(dx, 0):
            continue
        mirrored += 1  # the shift is along the image x axis: its crop x part is full * cos(angle)
        np.testing.assert_allclose(dx, dx[0], atol=1e-4)
        assert full * np.cos(np.radians(angle)) - 1e-4 <= dx[0] <= full + 1e-4
    assert mirrored >= 2


def test_augmentation_is_deterministic_per_seed() -> None:
    image, pts = _synthetic_face(2)
    a = face_crop(image, pts, 64, np.random.default_rng(5), Augment())
    b = face_crop(image, pts, 64, np.random.default_rng(5), Augment())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("channels,lcn", [(1, False), (3, False), (1, True)])
def test_preprocess_shapes_and_normalisation(channels: int, lcn: bool) -> None:
    crops = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64, 3), dtype=np.uint8)
    x = Preprocess(64, channels, lcn)(crops)
    assert x.shape == (3, channels, 64, 64) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.2
