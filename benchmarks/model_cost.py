"""CPU cost of landmark models side by side: ms per face of ``Landmarker.predict`` (crop warp,
preprocessing, engine call, heatmap decode, points to the frame) at batch 1, in interleaved
rounds on the same face crops, with each model's ratio to the first.

Run: python benchmarks/model_cost.py [--weights A B ...] [--engine auto] [--rounds 9]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tracker.engines.tuning import cpu_signature
from tracker.geometry import box_from_points
from tracker.landmarker import load_landmarker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wild68" / "train"


def faces(n: int) -> list[tuple[np.ndarray, object]]:
    """``n`` real faces (image, box from the labels), or noise images without the data."""
    if DATA.is_dir():
        from tracker.io.pts import load_folder

        return [(s.image, box_from_points(s.points)) for s in load_folder(DATA, limit=n)]
    from tracker.types import Box

    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (240, 240, 3), dtype=np.uint8), Box(60, 60, 180, 180))] * n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["default"])
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--faces", type=int, default=64)
    a = ap.parse_args()
    models = {w: load_landmarker(None if w == "default" else w, a.engine) for w in a.weights}
    data = faces(a.faces)
    for lm in models.values():
        for image, box in data[:8]:
            lm.predict(image, [box])
    times: dict[str, list[float]] = {w: [] for w in models}
    for _ in range(a.rounds):
        for w, lm in models.items():
            t0 = time.perf_counter()
            for image, box in data:
                lm.predict(image, [box])
            times[w].append((time.perf_counter() - t0) / len(data) * 1e3)
    first = float(np.median(times[a.weights[0]]))
    print(f"CPU: {cpu_signature()['cpu']}")
    for w, v in times.items():
        med = float(np.median(v))
        print(f"{w}: {med:.3f} ms a face (range {min(v):.3f}-{max(v):.3f}), {med / first:.3f}x")


if __name__ == "__main__":
    main()
