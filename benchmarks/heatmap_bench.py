"""Latency of heatmap decoding: p50/p99 microseconds for N faces x 68 maps of 64x64 logits.

Run: python benchmarks/heatmap_bench.py [--repeats 300] [--size 64] [--batches 1,4,8,32]
Prints the auto-dispatched `decode` (soft-argmax, radius `DECODE_RADIUS`), its serial and
parallel kernels forced, the older argmax + parabola decoder and the NumPy reference, so the
`PARALLEL_MIN_MAPS` threshold can be checked on the machine at hand.
"""

from __future__ import annotations

import argparse
import time

import numba as nb
import numpy as np

from tracker.models import heatmap


def _gaussian_logits(n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Peaked log-Gaussian logits plus noise, like a trained model's output."""
    grid = np.arange(size, dtype=np.float32)
    c = rng.uniform(4, size - 5, (n, k, 2)).astype(np.float32)
    d2 = (grid[None, None, None, :] - c[..., 0, None, None]) ** 2 \
        + (grid[None, None, :, None] - c[..., 1, None, None]) ** 2
    noise = rng.standard_normal((n, k, size, size)).astype(np.float32)
    return (-d2 / 3.0 + noise).astype(np.float32)


def _time(fn, repeats: int) -> tuple[float, float, float]:
    fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(samples, [50, 99]) / 1e3
    return float(samples.min()) / 1e3, float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", default="1,4,8,32", help="comma-separated N (faces)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    heatmap.warmup()
    k, s = 68, args.size
    print(f"numba {nb.__version__}, threads {nb.get_num_threads()}, "
          f"PARALLEL_MIN_MAPS {heatmap.PARALLEL_MIN_MAPS}, DECODE_RADIUS {heatmap.DECODE_RADIUS}, "
          f"maps {k}x{s}x{s}")
    print(f"{'N':>4} {'variant':>9} {'min us':>9} {'p50 us':>10} {'p99 us':>10} {'p50/map':>8}")
    for n in (int(b) for b in args.batches.split(",")):
        logits = _gaussian_logits(n, k, s, rng)
        variants = {
            "decode": lambda x=logits: heatmap.decode(x),
            "serial": lambda x=logits: heatmap.decode(x, parallel=False),
            "parallel": lambda x=logits: heatmap.decode(x, parallel=True),
            "parabola": lambda x=logits: heatmap.decode_parabola(x),
            "numpy ref": lambda x=logits: heatmap.softmax_argmax_numpy(x),
        }
        for name, fn in variants.items():
            best, p50, p99 = _time(fn, args.repeats)
            print(f"{n:>4} {name:>9} {best:>9.1f} {p50:>10.1f} {p99:>10.1f} {p50 / (n * k):>8.2f}")


if __name__ == "__main__":
    main()
