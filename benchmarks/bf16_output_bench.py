"""OpenVINO bf16: logits out of the graph as bf16 (decoded from their bits) against float32.

Both engines run the shipped model on the same face crops (faces68/val, or noise without the
data) in interleaved rounds; prints ms per ``predict`` (engine call + heatmap decode) at batch 1
for each, their ratio, whether the points and confidences are identical, and the CPU model.

Run: python benchmarks/bf16_output_bench.py [--rounds 9] [--calls 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tracker.engines.export import model_files
from tracker.engines.openvino import OpenVinoEngine, bf16_supported
from tracker.engines.tuning import cpu_signature

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces68" / "val"


def inputs(size: int, n: int) -> np.ndarray:
    if DATA.is_dir():
        from tracker.io.pts import load_folder
        from tracker.models.preprocess import preprocess_crops
        from tracker.training.data import face_crop

        crops = [face_crop(s.image, s.points, size, None, None)[0] for s in load_folder(DATA, limit=n)]
        return preprocess_crops(np.stack(crops), 1, False)
    return np.random.default_rng(0).standard_normal((n, 1, size, size)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=200)
    a = ap.parse_args()
    if not bf16_supported():
        raise SystemExit("error: this CPU has no native bfloat16")
    files = model_files(None)
    size = files.info.net.size
    engines = {out: OpenVinoEngine(files.onnx, threads=1, precision="bf16", cache=False,
                                   bf16_output=out == "bf16") for out in ("bf16", "fp32")}
    x = inputs(size, 64)
    got = {k: [e.predict(x[i:i + 1]) for i in range(len(x))] for k, e in engines.items()}
    same = all(np.array_equal(p1, p2) and np.array_equal(c1, c2)
               for (p1, c1), (p2, c2) in zip(got["bf16"], got["fp32"], strict=True))
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(a.rounds):
        for k, e in engines.items():
            t0 = time.perf_counter()
            for i in range(a.calls):
                e.predict(x[i % len(x):i % len(x) + 1])
            times[k].append((time.perf_counter() - t0) / a.calls * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"CPU: {cpu_signature()['cpu']}")
    for k, v in times.items():
        print(f"logits out as {k}: predict {med[k]:.3f} ms a face (median of {a.rounds} rounds, "
              f"range {min(v):.3f}-{max(v):.3f})")
    print(f"ratio bf16/fp32 out: {med['bf16'] / med['fp32']:.3f}; identical points and "
          f"confidences on {len(x)} crops: {same}")


if __name__ == "__main__":
    main()
