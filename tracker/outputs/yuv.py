"""RGB frames to I420 (yuv420p) for the H.264 writer, with OpenCV instead of swscale.

BT.601 limited range, as swscale converts RGB without colour tags; each chroma sample is the
mean of its 2x2 pixels (OpenCV's own I420 conversion takes the top-left pixel's chroma, which
aliases thin coloured lines such as the drawn mesh). At 640x360 this costs ~0.2 ms a frame
against ~0.5 ms for an rgb24 frame plus the encoder's swscale pass
(``python benchmarks/encode_bench.py --convert swscale``).
"""

from __future__ import annotations

import cv2
import numpy as np

# full-range (JPEG) chroma, which OpenCV's YCrCb gives, to limited range (16-240)
_LIMITED_CHROMA = np.clip(np.round(128 + (np.arange(256) - 128) * 224 / 255), 0, 255).astype(
    np.uint8)


class I420Converter:
    """Converts uint8 (H, W, 3) RGB images of one even size into one reused I420 buffer.

    The returned array ``(H * 3 // 2, W)`` holds the Y plane, then U, then V; it is
    overwritten by the next call (the encoder copies it into its frame first).
    """

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"I420 needs a positive even size, got {width}x{height}")
        self.width, self.height = width, height
        self._out = np.empty((height * 3 // 2, width), np.uint8)
        self._small = np.empty((height // 2, width // 2, 3), np.uint8)
        flat = self._out.reshape(-1)
        luma, quarter = width * height, width * height // 4
        self._u = flat[luma:luma + quarter].reshape(height // 2, width // 2)
        self._v = flat[luma + quarter:].reshape(height // 2, width // 2)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image`` (RGB, this converter's size) as I420; returns the reused buffer."""
        w, h = self.width, self.height
        cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420, dst=self._out)  # Y (and point chroma)
        cv2.resize(image, (w // 2, h // 2), dst=self._small, interpolation=cv2.INTER_AREA)
        ycc = cv2.LUT(cv2.cvtColor(self._small, cv2.COLOR_RGB2YCrCb), _LIMITED_CHROMA)
        self._u[...] = ycc[..., 2]  # Cb
        self._v[...] = ycc[..., 1]  # Cr
        return self._out
