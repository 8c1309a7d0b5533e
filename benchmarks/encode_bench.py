"""Time ``VideoWriter.write`` (RGB -> yuv420p -> libx264) at 640x360; prints ms/frame, and the
RGB -> yuv420p conversion alone: the writer's (OpenCV, tracker.outputs.yuv) against swscale's.

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
from av.video.reformatter import VideoReformatter

from tracker.outputs.encode import VideoWriter
from tracker.outputs.yuv import I420Converter

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


def conversion_ms(frames: list[tuple[np.ndarray, float]]) -> tuple[float, float]:
    """ms a frame to a yuv420p VideoFrame: (OpenCV I420 as the writer, rgb24 frame + swscale),
    best of three passes taken in turns."""
    h, w = frames[0][0].shape[:2]
    to_i420, sws = I420Converter(w, h), VideoReformatter()
    ways = (lambda a: av.VideoFrame.from_ndarray(to_i420(a), "yuv420p"),
            lambda a: sws.reformat(av.VideoFrame.from_ndarray(a, "rgb24"), format="yuv420p"))
    best = [float("inf")] * 2
    for _ in range(3):
        for k, way in enumerate(ways):
            start = time.perf_counter()
            for image, _ in frames:
                way(image)
            best[k] = min(best[k], (time.perf_counter() - start) * 1e3 / len(frames))
    return best[0], best[1]


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
    cv, sw = conversion_ms(frames)
    print(f"rgb -> yuv420p frame: OpenCV (the writer's) {cv:.3f} ms, swscale {sw:.3f} ms")


if __name__ == "__main__":
    main()
