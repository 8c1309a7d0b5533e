"""Crops -> model input: grey conversion and per-crop standardisation (stored with the weights)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np


@dataclass(frozen=True, slots=True)
class Preprocess:
    """How a crop becomes model input (stored with the weights)."""

    size: int = 64
    channels: int = 1
    lcn: bool = False

    def __call__(self, crops: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 crops ``(N, S, S, 3)`` RGB -> float32 ``(N, C, S, S)`` normalised input."""
        return preprocess_crops(crops, self.channels, self.lcn, out)


GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
MIN_STD = 4.0  # floor of the per-crop standard deviation (flat crops are not blown up)


@nb.njit(cache=True, nogil=True)
def _gray_standardise(crops: np.ndarray, out: np.ndarray, min_std: float) -> None:
    """Grey conversion + per-crop standardisation of uint8 RGB crops into ``out`` (N, 1, H, W).

    The grey value is the same float32 weighted sum as the NumPy path; mean and variance are
    accumulated in float64 (the NumPy path uses float32 pairwise sums: differences ~1e-6).
    """
    n, h, w, _ = crops.shape
    wr, wg, wb = GRAY_WEIGHTS[0], GRAY_WEIGHTS[1], GRAY_WEIGHTS[2]
    inv = 1.0 / (h * w)
    for i in range(n):
        total = 0.0
        for y in range(h):
            for x in range(w):
                g = (np.float32(crops[i, y, x, 0]) * wr + np.float32(crops[i, y, x, 1]) * wg
                     + np.float32(crops[i, y, x, 2]) * wb)
                out[i, 0, y, x] = g
                total += g
        mean = total * inv
        var = 0.0
        for y in range(h):
            for x in range(w):
                d = out[i, 0, y, x] - mean
                var += d * d
        scale = np.float32(1.0 / max(np.sqrt(var * inv), min_std))
        m32 = np.float32(mean)
        for y in range(h):
            for x in range(w):
                out[i, 0, y, x] = (out[i, 0, y, x] - m32) * scale


def preprocess_crops(crops: np.ndarray, channels: int, lcn: bool,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Grayscale/colour conversion and per-crop (or local) contrast normalisation.

    ``out`` (float32 ``(N, C, S, S)``, C-contiguous) receives the result when given (no
    allocation on the grey, non-LCN path used at run time).
    """
    n, h, w = crops.shape[:3]
    if out is None:
        out = np.empty((n, channels, h, w), np.float32)
    if channels == 1 and not lcn and crops.dtype == np.uint8 and out.flags.c_contiguous:
        _gray_standardise(np.ascontiguousarray(crops), out, MIN_STD)
        return out
    x = crops.astype(np.float32)
    if channels == 1:
        x = x @ GRAY_WEIGHTS
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
    if lcn:
        for i in range(x.shape[0]):
            for c in range(x.shape[1]):
                plane = np.ascontiguousarray(x[i, c])
                mean = cv2.GaussianBlur(plane, (0, 0), 4.0)
                centred = plane - mean
                std = np.sqrt(cv2.GaussianBlur(centred * centred, (0, 0), 4.0))
                out[i, c] = centred / np.maximum(std, 8.0)
        return out
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    np.divide(x - mean, np.maximum(std, MIN_STD), out=out)
    return out
