"""A corpus of odd but valid media, written with PyAV only (no ffmpeg binary): PCM and other
audio codecs in AVI/MOV/MKV, rotated and anamorphic video, stream-copy cuts with edit lists,
AVI remuxes, concatenated MPEG-TS segments, and a TCP server that hangs up mid-stream.

Clips are small (160x120 by default) so the tests that use them stay fast."""

from __future__ import annotations

import socket
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H = 160, 120
SAMPLE_RATE = 48000


def picture(i: int, width: int = W, height: int = H) -> np.ndarray:
    """Frame ``i``: a grey level that encodes ``i`` and a white block in the top-left corner
    (so a test can tell which way up a frame is)."""
    image = np.full((height, width, 3), (20 * i + 10) % 200, np.uint8)
    image[: height // 4, : width // 4] = 255
    return image


def waveform(seconds: float, channels: int = 2, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A float32 ``(channels, n)`` test signal in [-0.5, 0.5]: tones that differ per channel
    under a slow envelope, so an offset or a wrong sample format shows in a correlation."""
    t = np.arange(round(seconds * rate)) / rate
    env = 0.5 + 0.4 * np.sin(2 * np.pi * 1.3 * t)
    rows = [env * (0.25 * np.sin(2 * np.pi * (330 + 110 * c) * t)
                   + 0.15 * np.sin(2 * np.pi * (1210 + 70 * c) * t + c)) for c in range(channels)]
    return np.asarray(rows, np.float32)


def write(
    path: Path,
    *,
    seconds: float = 1.0,
    fps: int = 25,
    size: tuple[int, int] = (W, H),
    fmt: str | None = None,
    audio: str | None = None,
    channels: int = 2,
    rotation: float | None = None,
    hflip: bool = False,
    sar: Fraction | None = None,
    gop: int = 0,
    bframes: int = 0,
    start_s: float = 0.0,
) -> Path:
    """An H.264 clip of ``picture`` frames with optional ``audio`` in that codec (the
    :func:`waveform`). ``rotation`` (degrees counter-clockwise, as PyAV's
    ``set_display_rotation``) and ``hflip`` store a display matrix; ``sar`` a pixel aspect
    ratio; ``gop`` a keyframe interval; ``start_s`` shifts every timestamp."""
    width, height = size
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        options = {"preset": "ultrafast" if not bframes else "veryfast",
                   "bframes": str(bframes)}
        if gop:
            options["g"] = str(gop)
        video.options = options
        if rotation is not None or hflip:
            video.set_display_rotation(rotation or 0.0, hflip, False)
        if sar is not None:
            video.codec_context.sample_aspect_ratio = sar
        sound = (out.add_stream(audio, rate=SAMPLE_RATE, layout="stereo" if channels == 2
                                else "mono") if audio else None)
        n = round(seconds * fps)
        start_v = round(start_s * fps)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(picture(i, width, height), format="rgb24")
            frame.pts, frame.time_base = start_v + i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            wave, step = waveform(seconds, channels), 1024
            layout = "stereo" if channels == 2 else "mono"
            start_a = round(start_s * SAMPLE_RATE)
            for k in range(0, wave.shape[1], step):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k:k + step]),
                                                   format="fltp", layout=layout)
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start_a + k
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def _copy(src: Path, dst: Path, fmt: str | None = None, *, start_s: float | None = None,
          seconds: float | None = None, avi_rate: int = 0) -> Path:
    """Stream-copy ``src`` to ``dst`` (H.264 to Annex B for AVI and TS, as ffmpeg does); with
    ``start_s`` a cut like ``ffmpeg -ss START -t SECONDS -c copy``: it starts at the keyframe
    before ``start_s`` and shifts times so ``start_s`` is 0 (the pre-roll gets negative times,
    which MP4 stores as an edit list). An AVI gets ``avi_rate`` ticks a second (default: one
    a frame, as ffmpeg writes it); more make the muxer pad with empty frames, as for
    variable-frame-rate input."""
    annexb = (fmt or dst.suffix[1:]) in ("avi", "mpegts", "ts")
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        pairs = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        if annexb:
            rate = avi_rate or inp.streams.video[0].average_rate
            pairs[inp.streams.video[0].index].time_base = 1 / Fraction(rate)
        bsf = (av.bitstream.BitStreamFilterContext("h264_mp4toannexb", inp.streams.video[0])
               if annexb else None)
        if start_s is not None:
            video = inp.streams.video[0]
            inp.seek(round(start_s / video.time_base), stream=video, backward=True)
        for raw in inp.demux():
            if raw.dts is None:
                continue
            index = raw.stream.index
            packets = bsf.filter(raw) if bsf is not None and raw.stream.type == "video" \
                else [raw]
            for packet in packets:
                tb = raw.stream.time_base
                if start_s is not None:
                    t = float(packet.pts * tb)
                    if seconds is not None and t >= start_s + seconds:
                        continue
                    if raw.stream.type == "audio" and t < start_s:
                        continue
                    shift = round(start_s / tb)
                    packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = pairs[index]
                out.mux(packet)
    return dst


def remux(src: Path, dst: Path, fmt: str | None = None, avi_rate: int = 0) -> Path:
    """``src`` stream-copied into another container (``ffmpeg -i SRC -c copy DST``)."""
    return _copy(src, dst, fmt, avi_rate=avi_rate)


def cut_copy(src: Path, dst: Path, start_s: float, seconds: float) -> Path:
    """A stream-copy cut (``ffmpeg -ss START -t SECONDS -i SRC -c copy DST``)."""
    return _copy(src, dst, start_s=start_s, seconds=seconds)


def ts_segments(path: Path, n: int = 2, seconds: float = 1.0, audio: bool = False,
                jump_s: float = 0.0) -> Path:
    """``n`` MPEG-TS segments concatenated as bytes (``cat a.ts b.ts``). Each starts at the
    same time (a backward jump) or, with ``jump_s``, ``jump_s`` after the one before."""
    data = b""
    for k in range(n):
        part = path.with_name(f"{path.stem}.{k}.ts")
        write(part, seconds=seconds, fmt="mpegts", audio="aac" if audio else None,
              start_s=k * jump_s)
        data += part.read_bytes()
    path.write_bytes(data)
    return path


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of ``path`` decoded to float64 ``(channels, n)`` in [-1, 1],
    and its sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        chunks = [out.to_ndarray() for frame in container.decode(stream)
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    return np.concatenate(chunks, axis=1).astype(np.float64), rate


def match(reference: np.ndarray, got: np.ndarray, max_lag: int = 4096) -> tuple[float, float]:
    """``(correlation, RMS ratio)`` of ``got`` against ``reference`` (channels x samples), the
    worst channel, at the lag (up to ``max_lag`` samples: encoder priming) where they line up
    best."""
    a, b = reference[0], got[0]
    size = 1 << (len(a) + len(b)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.r_[0:max_lag + 1, -max_lag:0]  # xc[d] = sum a[i] b[i + d]; d < 0 wraps
    lag = int(lags[np.argmax(xc[lags])])
    ref, out = (reference, got[:, lag:]) if lag >= 0 else (reference[:, -lag:], got)
    n = min(ref.shape[1], out.shape[1])
    ref, out = ref[:, :n], out[:, :n]
    corr = min(float(np.corrcoef(r, o)[0, 1]) for r, o in zip(ref, out, strict=True))
    rms = float(np.sqrt((out ** 2).mean()) / np.sqrt((ref ** 2).mean()))
    return corr, rms


def locate(signal: np.ndarray, window: np.ndarray, near: int, radius: int = 4800) -> int:
    """Where ``window`` (channels x samples) best matches ``signal``, within ``radius`` samples
    of ``near`` (first channel, by cross-correlation)."""
    lo = max(0, near - radius)
    part, w = signal[0, lo: near + radius + window.shape[1]], window[0]
    size = 1 << (len(part) + len(w)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(part, size) * np.conj(np.fft.rfft(w, size)), size)
    return lo + int(np.argmax(xc[: len(part) - len(w) + 1]))


class HangUpServer:
    """A loopback TCP server that sends the first ``fraction`` of ``data`` to one client and
    then closes the connection (a server that goes away mid-stream)."""

    def __init__(self, data: bytes, fraction: float) -> None:
        self.data = data[: int(len(data) * fraction)]
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                conn.sendall(self.data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
