"""Synthetic test clips written with PyAV (shared by source, CLI and pipeline tests).

PyAV is imported where a clip is written, so tests that only need labelled folders also run
where PyAV is missing (the GPU machine's image)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    """A flat grey frame whose level encodes ``i`` (survives lossy coding)."""
    return np.full((height, width, 3), (20 * i + 10) % 256, np.uint8)


def make_clip(
    path: Path,
    n_frames: int = 12,
    rate: Fraction | int = 25,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    fmt: str | None = None,
    audio: bool = False,
) -> Path:
    """Write ``n_frames`` frames at ``rate`` fps (optionally with 1 s of silent AAC audio)."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "bframes": "0"}
        astream = out.add_stream("aac", rate=44100, layout="mono") if audio else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / Fraction(rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            samples = 1024
            for k in range(44100 // samples):
                a = av.AudioFrame.from_ndarray(
                    np.zeros((1, samples), np.float32), format="fltp", layout="mono"
                )
                a.sample_rate, a.pts = 44100, k * samples
                for packet in astream.encode(a):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path


def make_audio_only(path: Path) -> Path:
    """An audio-only file (no video stream)."""
    import av

    with av.open(str(path), "w") as out:
        astream = out.add_stream("aac", rate=44100, layout="mono")
        a = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                       layout="mono")
        a.sample_rate, a.pts = 44100, 0
        for packet in [*astream.encode(a), *astream.encode()]:
            out.mux(packet)
    return path


def make_labelled_folder(root: Path, n: int, shape: tuple[int, int], low: float, high: float,
                         seed: int) -> Path:
    """``n`` noise images with random 68-point ``.pts`` labels (coordinates in [low, high))."""
    import cv2

    from tracker.io.pts import write_pts

    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(root / f"f{i}.jpg"), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        write_pts(root / f"f{i}.pts", rng.uniform(low, high, (68, 2)))
    return root
