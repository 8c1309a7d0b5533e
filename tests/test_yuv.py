"""RGB -> I420 for the H.264 writer: BT.601 limited range, chroma the mean of each 2x2 block."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tracker.outputs.yuv import I420Converter


def reference(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float BT.601 limited-range Y, and U, V averaged over 2x2 blocks."""
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def box(p: np.ndarray) -> np.ndarray:
        return p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    return y, box(u), box(v)


def planes(i420: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = i420.reshape(-1).astype(np.float64)
    q = w * h // 4
    return (flat[:w * h].reshape(h, w), flat[w * h:w * h + q].reshape(h // 2, w // 2),
            flat[w * h + q:].reshape(h // 2, w // 2))


@pytest.mark.parametrize("size", [(64, 48), (642, 362), (2, 2)])
def test_matches_bt601_with_averaged_chroma(size: tuple[int, int]) -> None:
    w, h = size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    got = planes(I420Converter(w, h)(image), w, h)
    for plane, want in zip(got, reference(image), strict=True):
        assert np.abs(plane - want).max() <= 2.0
        assert abs((plane - want).mean()) < 0.5


def test_a_thin_coloured_line_keeps_its_colour_in_the_chroma() -> None:
    """Point-sampled chroma would drop a one-pixel red line on an odd row entirely."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[3] = (255, 0, 0)
    _, _, v = planes(I420Converter(8, 8)(image), 8, 8)
    assert np.all(v[1] > v[0] + 40) and np.all(v[0] == 128)


def test_close_to_swscale_and_reused() -> None:
    w, h = 320, 180
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    convert = I420Converter(w, h)
    out = convert(image)
    sws = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    y_sws = sws.to_ndarray()[:h].astype(int)
    assert np.abs(out[:h].astype(int) - y_sws).max() <= 1  # the same luma matrix and range
    assert convert(image[::-1].copy()) is out  # one buffer, overwritten


@pytest.mark.parametrize("size", [(0, 4), (5, 4), (4, 3)])
def test_odd_or_empty_sizes_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        I420Converter(*size)
