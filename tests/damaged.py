"""Broken, odd and live test inputs (built with PyAV) for the reliability tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from synthetic import frame_image, make_clip


def faststart(src: Path, dst: Path) -> Path:
    """Remux ``src`` with the MP4 index (moov) first, as streaming sites deliver files."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) \
            as out:
        pairs = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = pairs[packet.stream.index]
            out.mux(packet)
    return dst


def cut(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of the bytes of ``src`` (a download or copy cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def unknown_codec(tmp: Path) -> Path:
    """A Matroska file whose video codec no FFmpeg decoder knows."""
    mkv = make_clip(tmp / "known.mkv", n_frames=5, fmt="matroska")
    data = mkv.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    out = tmp / "unknown_codec.mkv"
    out.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/ZZZ"))
    return out


def zero_frames(path: Path, width: int = 64, height: int = 48) -> Path:
    """A file with a video stream header but no frames (.avi keeps the stream; MP4 drops empty
    tracks and Matroska ends before the first cluster)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        out.start_encoding()
    return path


def coded(path: Path, codec: str, pix_fmt: str, n_frames: int = 6, width: int = 64,
          height: int = 48, times_ms: Sequence[int] | None = None) -> Path:
    """A clip in ``codec``/``pix_fmt``; ``times_ms`` gives variable frame times (ms)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if times_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "bframes": "0"}
        for i in range(n_frames):
            rgb = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame = rgb.reformat(format=pix_fmt)
            if times_ms is None:
                frame.pts, frame.time_base = i, Fraction(1, 25)
            else:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def size_change(path: Path) -> Path:
    """An MPEG-TS file whose picture size changes half-way (two clips concatenated)."""
    tmp = path.with_suffix(".part")
    a = make_clip(tmp.with_name("a.ts"), n_frames=6, width=64, height=48, fmt="mpegts")
    b = make_clip(tmp.with_name("b.ts"), n_frames=6, width=96, height=64, fmt="mpegts")
    path.write_bytes(a.read_bytes() + b.read_bytes())
    return path


def from_frames(path: Path, images: Sequence[np.ndarray], rate: int = 25) -> Path:
    """A clip of the given RGB images."""
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class TsServer:
    """A loopback TCP server playing an MPEG-TS clip once per connection.

    Each entry of ``sessions`` says how connection k ends: ``"close"`` (disconnect after the
    clip) or ``"stall"`` (keep the connection open, silent, for ``stall_s``). Once the sessions
    are used up the port is closed, so reconnecting is refused.
    """

    def __init__(self, data: bytes, sessions: Sequence[str], stall_s: float = 30.0) -> None:
        self.data = data
        self.sessions = list(sessions)
        self.stall_s = stall_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            for how in self.sessions:
                conn, _ = self.server.accept()
                threading.Thread(target=self._play, args=(conn, how), daemon=True).start()
        except OSError:
            pass
        finally:
            self.server.close()

    def _play(self, conn: socket.socket, how: str) -> None:
        with conn:
            try:
                conn.sendall(self.data)
            except OSError:
                return
            if how == "stall":
                self._done.wait(self.stall_s)

    def close(self) -> None:
        self._done.set()
        self.server.close()
        time.sleep(0.01)
