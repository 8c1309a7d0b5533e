"""Time ``annotate`` (and ``draw_hud``) at 640x360 with one face; prints ms/frame.

Run: python benchmarks/render_bench.py [--frames 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tracker.outputs.render import annotate, draw_hud
from tracker.types import Box, Frame, Landmarks, TrackedFrame


def synthetic_face(rng: np.random.Generator, width: int, height: int) -> Landmarks:
    """68 points scattered in a face-sized box in the middle of the frame."""
    box = Box(width * 0.35, height * 0.2, width * 0.65, height * 0.8, 0.99)
    unit = rng.random((68, 2), dtype=np.float32)
    points = np.stack(
        [box.x0 + unit[:, 0] * box.width, box.y0 + unit[:, 1] * box.height], axis=1
    ).astype(np.float32)
    confidence = rng.random(68, dtype=np.float32)
    return Landmarks(0, 0.0, 1, points, confidence, 0.98, box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    tracked = TrackedFrame(Frame(0, 0.0, image), (synthetic_face(rng, args.width, args.height),))
    for name, kwargs in [
        ("points+box", {"mesh": False}),
        ("points+box+mesh", {"mesh": True}),
        ("points+box+mesh inplace", {"mesh": True, "inplace": True}),
    ]:
        annotate(image, tracked, **kwargs)  # warm-up
        start = time.perf_counter()
        for _ in range(args.frames):
            out = annotate(image, tracked, **kwargs)
        ms = (time.perf_counter() - start) * 1e3 / args.frames
        print(f"annotate {name:<26} {args.width}x{args.height} 1 face: {ms:.3f} ms/frame")
    start = time.perf_counter()
    for _ in range(args.frames):
        draw_hud(out, ["29.9 fps", "latency   41 ms"])
    ms = (time.perf_counter() - start) * 1e3 / args.frames
    print(f"draw_hud (2 lines){'':<17} {args.width}x{args.height}: {ms:.3f} ms/frame")


if __name__ == "__main__":
    main()
