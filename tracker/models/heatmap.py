"""Heatmap decoding: logits of a per-map softmax model -> sub-pixel points and confidence.

Points are ``(x, y)`` in heatmap pixels with pixel centres at integers. :func:`decode` (the
package's decoder) takes the softmax-weighted mean position in the (2r+1)^2 window, clipped to
the map, around each map's argmax, r = ``DECODE_RADIUS``; :func:`decode_parabola` is the older
argmax + separable parabola fit. The confidence of a point is, for every decoder, the softmax
probability mass in the 3x3 window around the argmax.

Kernels are Numba-compiled with ``cache=True`` (compiled once to disk, never at import); call
:func:`warmup` at start-up to load them before the first frame. Each map's argmax is NumPy's
(SIMD; the first maximum, as the kernels' own loop gave). The full-map softmax sum uses a
vectorisable float32 ``exp`` (relative error ~2e-7) summed in float32 because ``math.exp`` does not vectorise
without SVML; the window sums use float64 ``math.exp``.

A map whose values hold NaN, or whose maximum is infinite, decodes to a NaN point with
confidence 0.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = [
    "DECODE_RADIUS",
    "PARALLEL_MIN_MAPS",
    "bf16_to_float32",
    "decode",
    "decode_bf16",
    "decode_parabola",
    "points_to_maps",
    "soft_argmax",
    "softmax_argmax_numpy",
    "warmup",
]

# From this many maps (N*K) up, `decode` uses the prange kernel by default. On 2 shared cores
# the parallel kernel halves p50 only while the second core is idle; when it is busy its p50/p99
# jump to a scheduler slice (~8-16 ms) (benchmarks/heatmap_bench.py). So every real-time size
# stays serial; pass ``parallel=True`` for large offline batches on a free machine.
PARALLEL_MIN_MAPS = 8192

# Window radius of `decode` (also `tracker.engines.gpu.torch_decode`). Val NME after calibration:
# 64x64 lite model, r = 3 and 4 tie at 4.065 % (parabola 4.100); 80x80 lite model, r = 3 4.000 %,
# r = 4 3.992 %, r = 5 3.989 % (parabola 4.039). The calibration offsets stored in a checkpoint
# are only valid for the decoder they were fitted with.
DECODE_RADIUS = 4

_LOG2E = np.float32(1.4426950408889634)
_FAST = {"reassoc", "contract"}  # lets LLVM vectorise reductions; keeps NaN/inf semantics


@nb.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _exp_f32(d: np.float32) -> np.float32:
    """float32 ``exp(d)`` for ``d <= 0`` by a degree-6 polynomial (clamped at 2**-126)."""
    t = d * _LOG2E
    t = t if not (t < np.float32(-126.0)) else np.float32(-126.0)
    n = np.floor(t + np.float32(0.5))
    f = t - n
    p = np.float32(1.5353362e-4)
    p = p * f + np.float32(1.3398874e-3)
    p = p * f + np.float32(9.6180741e-3)
    p = p * f + np.float32(5.5503406e-2)
    p = p * f + np.float32(2.4022652e-1)
    p = p * f + np.float32(6.9314718e-1)
    p = p * f + np.float32(1.0)
    scale = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return scale * p


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def _row_sum_exp(a: np.ndarray, m: np.float32) -> float:
    """``sum(exp(a - m))`` with a polynomial float32 exp (x <= 0 clamped at 2**-126).

    Accumulated in float32 (vectorised lanes): relative error below 1e-6 for 64x64 maps.
    """
    total = np.float32(0.0)
    for i in range(a.size):
        total += _exp_f32(a[i] - m)
    return float(total)


@nb.njit(cache=True, nogil=True, inline="always")
def _bf16(a: np.ndarray, i: int) -> np.float32:
    """``a[i]``, a bfloat16 bit pattern (uint16), as its float32 value."""
    return np.uint32(np.uint32(a[i]) << np.uint32(16)).view(np.float32)


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def _row_sum_exp_bf16(a: np.ndarray, m: np.float32) -> float:
    """:func:`_row_sum_exp` of a map of bfloat16 bit patterns (uint16): the same sum."""
    total = np.float32(0.0)
    for i in range(a.size):
        total += _exp_f32(_bf16(a, i) - m)
    return float(total)


@nb.njit(cache=True, nogil=True)
def _parabola(lo: float, mid: float, hi: float) -> float:
    """Vertex offset of the parabola through (-1, lo), (0, mid), (1, hi), clamped to +-0.5."""
    den = lo - 2.0 * mid + hi
    if not den < 0.0:
        return 0.0
    d = 0.5 * (lo - hi) / den
    return min(0.5, max(-0.5, d))


@nb.njit(cache=True, nogil=True)
def _soft_window(a: np.ndarray, stride: int, ox: int, oy: int, px: int, py: int, h: int, w: int,
                 radius: int, m: float, pt: np.ndarray) -> float:
    """Soft-argmax over the radius window (clipped to the ``h`` x ``w`` map) at the argmax
    ``(px, py)`` into ``pt``; returns the 3x3 mass. Map pixel ``(x, y)`` is
    ``a[(y - oy) * stride + (x - ox)]`` (the whole map, or a copy of the window)."""
    window = 0.0
    sw = 0.0
    sx = 0.0
    sy = 0.0
    for y in range(max(py - radius, 0), min(py + radius + 1, h)):
        for x in range(max(px - radius, 0), min(px + radius + 1, w)):
            e = math.exp(float(a[(y - oy) * stride + (x - ox)]) - m)
            sw += e
            sx += e * (x - px)
            sy += e * (y - py)
            if abs(x - px) <= 1 and abs(y - py) <= 1:
                window += e
    pt[0] = px + sx / sw
    pt[1] = py + sy / sw
    return window


@nb.njit(cache=True, nogil=True)
def _decode_one(a: np.ndarray, idx: int, h: int, w: int, radius: int, pt: np.ndarray) -> float:
    """Decode one flattened map, whose argmax is ``idx``, into ``pt`` (x, y); returns the
    confidence."""
    m = float(a[idx])
    if not math.isfinite(m):
        pt[0] = np.nan
        pt[1] = np.nan
        return 0.0
    total = _row_sum_exp(a, np.float32(m))
    if not math.isfinite(total):
        pt[0] = np.nan
        pt[1] = np.nan
        return 0.0
    py = idx // w
    px = idx - py * w
    window = 0.0
    if radius == 0:
        for y in range(max(py - 1, 0), min(py + 2, h)):
            for x in range(max(px - 1, 0), min(px + 2, w)):
                window += math.exp(float(a[y * w + x]) - m)
        dx = 0.0
        dy = 0.0
        if 0 < px < w - 1:
            dx = _parabola(float(a[idx - 1]), m, float(a[idx + 1]))
        if 0 < py < h - 1:
            dy = _parabola(float(a[idx - w]), m, float(a[idx + w]))
        pt[0] = px + dx
        pt[1] = py + dy
    else:
        window = _soft_window(a, w, 0, 0, px, py, h, w, radius, m, pt)
    return min(1.0, window / total)


@nb.njit(cache=True, nogil=True)
def _decode_serial(flat: np.ndarray, idx: np.ndarray, h: int, w: int, radius: int,
                   pts: np.ndarray, conf: np.ndarray) -> None:
    for r in range(flat.shape[0]):
        conf[r] = _decode_one(flat[r], idx[r], h, w, radius, pts[r])


@nb.njit(cache=True, nogil=True, parallel=True)
def _decode_parallel(flat: np.ndarray, idx: np.ndarray, h: int, w: int, radius: int,
                     pts: np.ndarray, conf: np.ndarray) -> None:
    for r in nb.prange(flat.shape[0]):
        conf[r] = _decode_one(flat[r], idx[r], h, w, radius, pts[r])


@nb.njit(cache=True, nogil=True)
def _decode_bf16(flat: np.ndarray, keys: np.ndarray, h: int, w: int, radius: int,
                 pts: np.ndarray, conf: np.ndarray) -> None:
    """:func:`_decode_serial` of maps of bfloat16 bit patterns (uint16). ``keys`` holds each
    map's argmax of the bits read as int16, which is the float argmax (the first maximum)
    when that maximum is above +0; other maps are scanned as floats here."""
    win = np.empty((2 * radius + 1) * (2 * radius + 1), np.float32)
    for r in range(flat.shape[0]):
        a = flat[r]
        pt = pts[r]
        idx = keys[r]
        if np.int16(a[idx]) <= 0:  # maximum <= +0 (or every value negative): compare floats
            best = float(_bf16(a, 0))
            idx = 0
            for i in range(1, a.size):
                v = float(_bf16(a, i))
                if v > best or (math.isnan(v) and not math.isnan(best)):
                    best, idx = v, i
                if math.isnan(best):
                    break
        m = float(_bf16(a, idx))
        total = _row_sum_exp_bf16(a, np.float32(m)) if math.isfinite(m) else math.nan
        if not math.isfinite(total):
            pt[0] = np.nan
            pt[1] = np.nan
            conf[r] = 0.0
            continue
        py = idx // w
        px = idx - py * w
        x0, y0 = max(px - radius, 0), max(py - radius, 0)
        x1, y1 = min(px + radius + 1, w), min(py + radius + 1, h)
        stride = x1 - x0
        for y in range(y0, y1):
            for x in range(x0, x1):
                win[(y - y0) * stride + (x - x0)] = _bf16(a, y * w + x)
        window = _soft_window(win, stride, x0, y0, px, py, h, w, radius, m, pt)
        conf[r] = min(1.0, window / total)


def decode_bf16(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode` of logits given as bfloat16 bit patterns ``(N, K, H, W)`` (uint16 or
    float16 holding them, as OpenVINO hands out a bf16 output): the same points and
    confidences, to the bit, as :func:`decode` of the same values as float32."""
    raw = np.asarray(bits)
    if raw.ndim != 4 or raw.shape[2] < 1 or raw.shape[3] < 1 or raw.itemsize != 2:
        raise ValueError(f"expected 16-bit logits of shape (N, K, H, W), got {raw.shape} {raw.dtype}")
    n, k, h, w = raw.shape
    flat = np.ascontiguousarray(raw).view(np.uint16).reshape(n * k, h * w)
    pts = np.empty((n * k, 2), np.float32)
    conf = np.empty(n * k, np.float32)
    if n * k:
        _decode_bf16(flat, flat.view(np.int16).argmax(axis=1), h, w, DECODE_RADIUS, pts, conf)
    return pts.reshape(n, k, 2), conf.reshape(n, k)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16, or float16 holding them) as float32 values (exact)."""
    raw = np.ascontiguousarray(bits).view(np.uint16)
    return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _run(logits: np.ndarray, radius: int,
         parallel: bool | None) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    if logits.ndim != 4 or logits.shape[2] < 1 or logits.shape[3] < 1:
        raise ValueError(f"expected logits of shape (N, K, H, W), got {logits.shape}")
    n, k, h, w = logits.shape
    flat = np.ascontiguousarray(logits, dtype=np.float32).reshape(n * k, h * w)
    pts = np.empty((n * k, 2), np.float32)
    conf = np.empty(n * k, np.float32)
    if n * k:
        if parallel is None:
            parallel = n * k >= PARALLEL_MIN_MAPS
        kernel = _decode_parallel if parallel else _decode_serial
        # NumPy's SIMD argmax (first maximum; the first NaN where there is one, which then
        # decodes to NaN) is ~7x faster than a compiled loop over the maps
        kernel(flat, flat.argmax(axis=1), h, w, radius, pts, conf)
    return pts.reshape(n, k, 2), conf.reshape(n, k)


def decode(logits: np.ndarray,
           parallel: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The package's decoder: :func:`soft_argmax` with radius ``DECODE_RADIUS``.

    ``logits`` (N, K, H, W) -> points float32 (N, K, 2) as (x, y) heatmap pixels and
    confidence float32 (N, K), the softmax mass of the 3x3 window at the argmax. A map holding
    NaN, or whose maximum is infinite, gives a NaN point with confidence 0. ``parallel=None``
    picks the prange kernel from ``PARALLEL_MIN_MAPS`` maps up.
    """
    return _run(logits, DECODE_RADIUS, parallel)


def decode_parabola(logits: np.ndarray,
                    parallel: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Argmax + separable parabola fit through the peak and its two neighbours on each axis.

    Same outputs as :func:`decode`. Exact for log-Gaussian peaks; the offset is clamped to
    +-0.5 px and is 0 along an axis where the argmax lies on the border.
    """
    return _run(logits, 0, parallel)


def soft_argmax(logits: np.ndarray, radius: int = DECODE_RADIUS,
                parallel: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-weighted mean position in a (2r+1)^2 window (clipped to the map) at the argmax.

    Same outputs as :func:`decode` (3x3 confidence). Clipping at the map border pulls points
    towards the inside.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    return _run(logits, int(radius), parallel)


def softmax_argmax_numpy(logits: np.ndarray,
                         radius: int = DECODE_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """NumPy (float64) reference, for tests: :func:`soft_argmax` with ``radius`` >= 1, or
    :func:`decode_parabola` with ``radius=0``."""
    x = np.asarray(logits, dtype=np.float32)
    n, k, h, w = x.shape
    a = x.reshape(n * k, h * w).astype(np.float64)
    rows = np.arange(n * k)
    idx = np.argmax(a, axis=1)
    m = a[rows, idx]
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.exp(a - m[:, None]).sum(axis=1)
    py, px = np.divmod(idx, w)
    pad = max(radius, 1)
    maps = a.reshape(n * k, h, w)
    padded = np.pad(maps, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)

    def weights(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of exp(logit - max), and of it times dx and dy, over the radius-r window."""
        s = np.zeros((3, n * k))
        for oy in range(-r, r + 1):
            for ox in range(-r, r + 1):
                with np.errstate(invalid="ignore"):
                    e = np.exp(padded[rows, py + pad + oy, px + pad + ox] - m)
                s += [e, e * ox, e * oy]
        return s[0], s[1], s[2]

    window = weights(1)[0]
    if radius >= 1:
        sw, sx, sy = weights(radius)
        with np.errstate(invalid="ignore", divide="ignore"):
            pts = np.stack([px + sx / sw, py + sy / sw], axis=1)
    else:
        def offset(lo: np.ndarray, hi: np.ndarray, inside: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                den = lo - 2.0 * m + hi
                ok = inside & (den < 0)
            d = np.zeros_like(m)
            d[ok] = 0.5 * (lo[ok] - hi[ok]) / den[ok]
            return np.clip(d, -0.5, 0.5)

        in_x = (px > 0) & (px < w - 1)
        in_y = (py > 0) & (py < h - 1)
        dx = offset(padded[rows, py + 1, px], padded[rows, py + 1, px + 2], in_x)
        dy = offset(padded[rows, py, px + 1], padded[rows, py + 2, px + 1], in_y)
        pts = np.stack([px + dx, py + dy], axis=1)
    conf = np.minimum(1.0, window / total)
    bad = ~np.isfinite(total) | ~np.isfinite(m)
    pts[bad] = np.nan
    conf[bad] = 0.0
    return pts.astype(np.float32).reshape(n, k, 2), conf.astype(np.float32).reshape(n, k)


def points_to_maps(points: np.ndarray, height: int, width: int, sigma: float,
                   visible: np.ndarray | None = None) -> np.ndarray:
    """Unnormalised Gaussian keypoint maps (N, K, H, W) float32, peak 1, for points (N, K, 2).

    ``visible`` (N, K) bool zeroes the maps of hidden points; NaN points give zero maps.
    Matches ``tracker.models.networks.keypoint_maps`` (the torch version used inside the model).
    """
    p = np.asarray(points, dtype=np.float32)
    if p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"expected points of shape (N, K, 2), got {p.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    inv = np.float32(-0.5 / (sigma * sigma))
    gx = np.exp(inv * np.square(np.arange(width, dtype=np.float32) - p[..., 0, None]))
    gy = np.exp(inv * np.square(np.arange(height, dtype=np.float32) - p[..., 1, None]))
    keep = np.isfinite(p).all(axis=2)
    if visible is not None:
        keep &= np.asarray(visible, dtype=bool)
    gy = np.where(keep[..., None], gy, np.float32(0))
    gx = np.where(keep[..., None], gx, np.float32(0))
    return np.ascontiguousarray(gy[..., :, None] * gx[..., None, :], dtype=np.float32)


def warmup() -> None:
    """Load (or compile once, to the disk cache) every kernel on tiny inputs."""
    x = np.zeros((1, 1, 3, 3), np.float32)
    pts = np.empty((1, 2), np.float32)
    conf = np.empty(1, np.float32)
    idx = np.zeros(1, np.intp)
    for kernel in (_decode_serial, _decode_parallel):
        for radius in (0, DECODE_RADIUS):
            kernel(x.reshape(1, 9), idx, 3, 3, radius, pts, conf)
    _decode_bf16(np.zeros((1, 9), np.uint16), idx, 3, 3, DECODE_RADIUS, pts, conf)
