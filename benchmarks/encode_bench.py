"""Time ``VideoWriter.write`` (RGB -> yuv420p -> libx264) at 640x360; prints ms/frame.

Uses the real clip's frames and audio when ../shared/data is present, else synthetic frames.
Run: python benchmarks/encode_bench.py [--frames 275] [--preset superfast] [--threads 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tracker.outputs.encode import VideoWriter

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/videos/short_hamilton_clip.mp4"


def load_frames(limit: int) -> tuple[list[tuple[np.ndarray, float]], Fraction, str | None]:
    if CLIP.exists():
        with av.open(str(CLIP)) as container:
            stream = container.streams.video[0]
            frames = [
                (f.to_ndarray(format="rgb24"), float(f.time))
                for _, f in zip(range(limit), container.decode(stream), strict=False)
            ]
            return frames, Fraction(stream.time_base), str(CLIP)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    frames = [(np.roll(base, 4 * i, axis=1), i / 30.0) for i in range(limit)]
    return frames, Fraction(1, 30), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=275)
    parser.add_argument("--preset", default="superfast")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    frames, time_base, audio = load_frames(args.frames)
    height, width = frames[0][0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "bench.mp4")
        start = time.perf_counter()
        with VideoWriter(
            out, width, height, 29.97, audio, time_base, preset=args.preset, threads=args.threads
        ) as writer:
            for image, t in frames:
                writer.write(image, t)
        total = time.perf_counter() - start
        size = Path(out).stat().st_size
    print(
        f"encode {width}x{height} preset={args.preset} threads={args.threads} "
        f"audio={'yes' if audio else 'no'}: {total * 1e3 / len(frames):.2f} ms/frame "
        f"({len(frames)} frames incl. flush+close, {size / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
