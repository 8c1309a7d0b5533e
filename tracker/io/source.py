"""Video sources decoded with PyAV: files, webcams, network streams and lavfi test patterns.

Source specs understood by :func:`open_source`:

* a file path (``clip.mp4``), decoded with frame threading;
* ``webcam`` / ``webcam:N`` — camera N (v4l2 ``/dev/videoN`` on Linux, avfoundation on macOS);
  ``webcam:NAME`` gives a device by name (needed on Windows, where dshow is used);
* ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://`` URLs, opened with
  an open/read timeout;
* ``lavfi:GRAPH`` — an FFmpeg filter source, e.g. ``lavfi:testsrc2=size=320x240:rate=30``.

Opening happens in the caller's thread, so a bad source fails before any processing; decoding
happens in :meth:`VideoSource.items`, which the pipeline runs on the source stage's thread.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tracker.errors import CameraNotFound, SourceError  # noqa: F401 (re-exported)
from tracker.io.specs import (  # noqa: F401 (re-exported: the names of tracker.io.source)
    _US_TIMEOUT_SCHEMES,
    HTTP_SCHEMES,
    LIVE_SCHEMES,
    SourceConfig,
    SourceInfo,
    SourceOptions,
    source_kind,
    webcam_device,
)
from tracker.runtime.pipeline import Stage
from tracker.types import Frame

DEFAULT_OPTIONS = SourceOptions()
MAX_BAD_PACKETS = 50  # undecodable packets in a row before a source gives up


def _fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 fps: float) -> int | None:
    if stream.frames:
        return int(stream.frames)
    if stream.duration is not None and stream.time_base is not None:
        return max(1, round(float(stream.duration * stream.time_base) * fps)) if fps else None
    if container.duration is not None and fps:
        return max(1, round(container.duration / av.time_base * fps))
    return None


class VideoSource(Stage):
    """A decoding source stage; yields :class:`Frame` s with RGB images and container times.

    Damaged files are decoded as far as possible: undecodable packets are skipped and counted,
    and a file that ends early or had bad packets is described in :attr:`damaged` (the run
    still processes everything that could be decoded). A live source that stalls or
    disconnects either ends the run cleanly (the reason goes to :attr:`warning`) or, with
    ``reconnect``, is reopened with exponential backoff. Frames are always ``info.width`` x
    ``info.height``: a stream that changes size mid-way is resized back.
    """

    name = "decode"

    def __init__(
        self,
        container: av.container.InputContainer,
        info: SourceInfo,
        options: SourceOptions = DEFAULT_OPTIONS,
        *,
        max_frames: int = 0,
        reopen: Callable[[], av.container.InputContainer] | None = None,
    ) -> None:
        """``max_frames``: stop after this many frames (0 = until the source ends)."""
        self.container = container
        self.stream = container.streams.video[0]
        self.info = info
        self.max_frames = max_frames
        self.options = options
        self._reopen = reopen
        self._stop = threading.Event()
        self._closed = False
        self.bad_packets = 0
        self.reconnects = 0
        self.damaged: str | None = None  # input truncated or corrupt (what decoded was used)
        self.warning: str | None = None  # why a live source ended early

    def attach(self, stop: threading.Event) -> None:
        self._stop = stop

    def items(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self) -> Iterator[Frame]:
        """Decode frames in order. ``time`` is ``pts * time_base`` in seconds; for live sources
        it is counted from the first frame. Raises :class:`SourceError` when nothing can be
        read; later problems end the stream (see the class docstring)."""
        return self._live_frames() if self.info.is_live else self._file_frames()

    def _decoded(self, container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        """Frames of the first video stream; single undecodable packets are skipped."""
        stream = container.streams.video[0]
        in_a_row = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.ExitError:
                raise
            except (av.FFmpegError, ValueError) as exc:
                self.bad_packets += 1
                in_a_row += 1
                if in_a_row >= MAX_BAD_PACKETS:
                    raise SourceError(f"{in_a_row} undecodable packets in a row ({exc})") \
                        from None
                continue
            in_a_row = 0
            yield from frames

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        try:
            image = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as exc:
            raise SourceError(
                f"{self.info.spec}: cannot convert pixel format {frame.format.name} to RGB "
                f"({exc}); convert the video, e.g. to H.264 yuv420p"
            ) from None
        w, h = self.info.width, self.info.height
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return image

    def _file_frames(self) -> Iterator[Frame]:
        tb = self.stream.time_base
        fps = self.info.fps or 30.0
        index = 0
        try:
            for frame in self._decoded(self.container):
                if self.max_frames and index >= self.max_frames:
                    return
                t = index / fps if frame.pts is None or tb is None else float(frame.pts * tb)
                yield Frame(index=index, time=t, image=self._image(frame), wall_time=time.time())
                index += 1
        except av.error.ExitError:
            raise SourceError(
                f"{self.info.spec}: no data for {self.options.read_timeout_s:g} s; stream stalled"
            ) from None
        except (av.FFmpegError, OSError, SourceError) as exc:
            if index == 0:
                raise SourceError(f"{self.info.spec}: decoding failed: {exc}") from None
            self._note_damage(index, f"read error: {exc}")
            return
        self._note_damage(index, None)

    def _note_damage(self, decoded: int, reason: str | None) -> None:
        expected = int(self.stream.frames or 0) if self.info.kind == "file" else 0
        short = expected > 0 and decoded < expected and not self.max_frames
        if not (reason or short or self.bad_packets):
            return
        parts = [f"decoded {decoded} of {expected} frames" if expected else
                 f"decoded {decoded} frames"]
        if self.bad_packets:
            parts.append(f"{self.bad_packets} undecodable packets skipped")
        if reason:
            parts.append(reason)
        self.damaged = (f"{self.info.spec} is truncated or damaged ({'; '.join(parts)}); "
                        "the outputs hold every frame that could be decoded")

    def _live_frames(self) -> Iterator[Frame]:
        opts = self.options
        fps = self.info.fps or 30.0
        index, failures = 0, 0
        offset, last_t, last_wall = 0.0, 0.0, 0.0
        container: av.container.InputContainer | None = self.container
        while container is not None:
            tb = container.streams.video[0].time_base
            first_pts: int | None = None
            try:
                for frame in self._decoded(container):
                    if self.max_frames and index >= self.max_frames:
                        return
                    wall = time.time()
                    if frame.pts is None or tb is None:
                        t = offset + index / fps
                    else:
                        first_pts = frame.pts if first_pts is None else first_pts
                        t = offset + float((frame.pts - first_pts) * tb)
                    yield Frame(index=index, time=t, image=self._image(frame), wall_time=wall)
                    index, failures, last_t, last_wall = index + 1, 0, t, wall
                reason = "stream ended"
            except av.error.ExitError:
                reason = f"no data for {self.options.read_timeout_s:g} s (stream stalled)"
            except (av.FFmpegError, OSError, SourceError) as exc:
                reason = f"stream error: {exc}"
            if not opts.reconnect or self._reopen is None:
                if reason != "stream ended":
                    if index == 0:
                        raise SourceError(f"{self.info.spec}: {reason}")
                    self.warning = f"{self.info.spec}: {reason}; the run ended there"
                return
            container, failures = self._reconnect(reason, failures)
            if index:
                offset = last_t + max(1.0 / fps, time.time() - last_wall)

    def _reconnect(
        self, reason: str, failures: int
    ) -> tuple[av.container.InputContainer | None, int]:
        """Reopen with exponential backoff: ``(container or None when giving up or stopping,
        failed attempts in a row so far)``."""
        opts = self.options
        self._close_container()
        delay = opts.reconnect_backoff_s
        while not (opts.reconnect_attempts and failures >= opts.reconnect_attempts):
            if self._stop.wait(delay):
                return None, failures
            failures += 1
            try:
                assert self._reopen is not None
                container = self._reopen()
            except SourceError as exc:
                reason = str(exc)
                delay = min(2.0 * delay, opts.reconnect_backoff_max_s)
                continue
            if not container.streams.video:
                container.close()
                reason = "no video stream after reconnecting"
                continue
            self.container, self.stream = container, container.streams.video[0]
            self.reconnects += 1
            return container, failures
        self.warning = (f"{self.info.spec}: {reason}; gave up after {failures} reconnect "
                        "attempts")
        return None, failures

    def _close_container(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError):
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_container()


def mp4_problem(path: Path) -> str | None:
    """Why an MP4/MOV file cannot be opened (cut off, no index), or None if it is not one.

    Walks the top-level boxes: a box running past the end of the file means the file was cut
    off; no ``moov`` box means its index was never written (recording not finished).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[4:8] != b"ftyp":
                return None
            pos, seen = 0, set()
            while pos + 8 <= size:
                f.seek(pos)
                header = f.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    box_size = size - pos
                if box_size < 8:
                    return "a damaged MP4 (bad box structure)"
                seen.add(kind)
                pos += box_size
    except OSError:
        return None
    if b"moov" in seen and pos <= size:
        return None
    return ("an incomplete MP4: it was cut off or its index (moov atom) was never written, so "
            "no frame can be located; recover it with a tool such as untrunc, or re-export it")


def _open(spec: str, kind: str, opts: SourceOptions) -> av.container.InputContainer:
    timeout = (max(opts.open_timeout_s, 0.01), max(opts.read_timeout_s, 0.01))
    if kind == "file":
        path = Path(spec)
        if not path.exists():
            raise SourceError(f"no such file: {spec}")
        if path.is_dir():
            raise SourceError(f"is a directory, not a video: {spec}")
        if not os.access(path, os.R_OK):
            raise SourceError(f"cannot read {spec}: permission denied")
        try:
            return av.open(str(path))
        except (av.error.InvalidDataError, av.error.DecoderNotFoundError):
            problem = mp4_problem(path)
            if problem is not None:
                raise SourceError(f"cannot decode {spec}: {problem}") from None
            raise SourceError(f"not a video file (unrecognised format): {spec}") from None
        except av.error.EOFError:
            raise SourceError(f"no video frames in {spec}: the file ends before its first "
                              "frame") from None
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {spec}: {exc}") from None
    if kind == "lavfi":
        graph = spec[len("lavfi:"):]
        try:
            return av.open(graph, format="lavfi")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"bad lavfi source {graph!r}: {exc}") from None
    if kind == "webcam":
        which = spec.partition(":")[2] or "0"
        device, fmt = webcam_device(which)
        if fmt == "v4l2" and not Path(device).exists():
            raise CameraNotFound(f"no webcam found at {device} ({spec})")
        options: dict[str, str] = {}
        if opts.webcam_size:
            options["video_size"] = opts.webcam_size
        if opts.webcam_fps:
            options["framerate"] = f"{opts.webcam_fps:g}"
        try:
            return av.open(device, format=fmt, options=options, timeout=timeout)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise CameraNotFound(f"cannot open webcam {which!r} ({fmt} {device}): {exc}") \
                from None
    scheme = spec.split("://", 1)[0].lower()
    options = {}
    if scheme in _US_TIMEOUT_SCHEMES:
        options["timeout"] = str(int(opts.open_timeout_s * 1e6))
    if scheme in ("rtsp", "rtsps") and opts.rtsp_transport:
        options["rtsp_transport"] = opts.rtsp_transport
    try:
        return av.open(spec, options=options, timeout=timeout)
    except av.error.ExitError:
        raise SourceError(f"timed out after {opts.open_timeout_s:g} s opening {spec}") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot open {spec}: {exc}") from None


def open_source(spec: str, options: SourceOptions = DEFAULT_OPTIONS, *,
                max_frames: int = 0) -> VideoSource:
    """Open ``spec`` (see module docstring) and return a source stage that stops after
    ``max_frames`` frames (0 = at the end); raises SourceError."""
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source")
    kind = source_kind(spec)
    container = _open(spec, kind, options)
    try:
        if not container.streams.video:
            raise SourceError(f"no video stream in {spec}")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise SourceError(
                f"unsupported video codec in {spec} (no decoder for it in this FFmpeg build); "
                "convert it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"
            )
        stream.thread_type = "AUTO"
        fps = _fps(stream)
        scheme = spec.split("://", 1)[0].lower() if kind == "url" else ""
        is_live = kind == "webcam" or scheme in LIVE_SCHEMES or (
            scheme in HTTP_SCHEMES and container.duration is None
        )
        count = None if is_live else _frame_count(container, stream, fps)
        if max_frames:
            count = max_frames if count is None else min(count, max_frames)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise SourceError(f"video stream of {spec} has no frame size")
        info = SourceInfo(
            spec=spec,
            kind=kind,
            width=int(width),
            height=int(height),
            fps=fps if math.isfinite(fps) else 0.0,
            time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000),
            is_live=is_live,
            path=spec if kind == "file" else None,
            frame_count=count,
            has_audio=bool(container.streams.audio),
        )
    except BaseException:
        container.close()
        raise

    def reopen() -> av.container.InputContainer:
        again = _open(spec, kind, options)
        if again.streams.video and again.streams.video[0].codec_context is not None:
            again.streams.video[0].thread_type = "AUTO"
        return again

    return VideoSource(container, info, options, max_frames=max_frames, reopen=reopen)
