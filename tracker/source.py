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
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from tracker.pipeline import Stage
from tracker.types import Frame

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")
HTTP_SCHEMES = ("http", "https")
# protocols whose ``timeout`` option is a socket I/O timeout in microseconds
_US_TIMEOUT_SCHEMES = ("rtsp", "rtsps", "http", "https", "tcp", "udp")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class SourceError(Exception):
    """A source cannot be opened or read; the message is one line for the user."""


class CameraNotFound(SourceError):
    """The requested webcam does not exist or cannot be opened."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to open sources (see :class:`tracker.config.SourceConfig`)."""

    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    webcam_size: str = ""
    webcam_fps: float = 0.0
    rtsp_transport: str = "tcp"
    max_frames: int = 0


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What is known about an opened source."""

    spec: str
    kind: str  # "file" | "webcam" | "url" | "lavfi"
    width: int
    height: int
    fps: float
    time_base: Fraction
    is_live: bool
    path: str | None  # the file to read audio from for pass-through (None: live/lavfi)
    frame_count: int | None  # exact when the container says so, else estimated from duration
    has_audio: bool

    @property
    def policy(self) -> str:
        """Channel overflow policy suited to the source: live drops, files never lose."""
        return "drop_oldest" if self.is_live else "block"


def webcam_device(index_or_name: str, platform: str = sys.platform) -> tuple[str, str]:
    """``(device, format)`` for ``av.open`` of a webcam on ``platform``."""
    if platform.startswith("linux"):
        dev = f"/dev/video{index_or_name}" if index_or_name.isdigit() else index_or_name
        return dev, "v4l2"
    if platform == "darwin":
        return index_or_name, "avfoundation"
    if platform.startswith("win"):
        if index_or_name.isdigit():
            raise CameraNotFound(
                "on Windows give the camera by name, e.g. --source 'webcam:Integrated Camera'"
            )
        return f"video={index_or_name}", "dshow"
    raise CameraNotFound(f"webcams are not supported on {platform}")


def _classify(spec: str) -> str:
    if spec == "webcam" or spec.startswith("webcam:"):
        return "webcam"
    if spec.startswith("lavfi:"):
        return "lavfi"
    if _URL.match(spec):
        return "url"
    return "file"


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
    """A decoding source stage; yields :class:`Frame` s with RGB images and container times."""

    name = "decode"

    def __init__(
        self,
        container: av.container.InputContainer,
        info: SourceInfo,
        max_frames: int = 0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.container = container
        self.stream = container.streams.video[0]
        self.info = info
        self.max_frames = max_frames
        self.read_timeout_s = read_timeout_s
        self._closed = False

    def items(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self) -> Iterator[Frame]:
        """Decode frames in order. ``time`` is ``pts * time_base`` in seconds; for live sources
        it is counted from the first frame. Raises :class:`SourceError` on read failures."""
        tb = self.stream.time_base
        fps = self.info.fps or 30.0
        first_pts: int | None = None
        index = 0
        decoded = self.container.decode(self.stream)
        while not (self.max_frames and index >= self.max_frames):
            try:
                frame = next(decoded, None)
            except av.error.ExitError:
                raise SourceError(
                    f"{self.info.spec}: no data for {self.read_timeout_s:g} s; stream stalled"
                ) from None
            except (av.FFmpegError, OSError) as exc:
                raise SourceError(f"{self.info.spec}: decoding failed at frame {index}: {exc}") \
                    from None
            if frame is None:
                return
            wall = time.time()
            pts = frame.pts
            if pts is None or tb is None:
                t = index / fps
            else:
                if self.info.is_live:
                    first_pts = pts if first_pts is None else first_pts
                    pts -= first_pts
                t = float(pts * tb)
            image = frame.to_ndarray(format="rgb24")
            yield Frame(index=index, time=t, image=image, wall_time=wall)
            index += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.container.close()


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
            raise SourceError(f"not a video file (unrecognised format): {spec}") from None
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


def open_source(spec: str, options: SourceOptions | None = None) -> VideoSource:
    """Open ``spec`` (see module docstring) and return a source stage; raises SourceError."""
    opts = options or SourceOptions()
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source")
    kind = _classify(spec)
    container = _open(spec, kind, opts)
    try:
        if not container.streams.video:
            raise SourceError(f"no video stream in {spec}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _fps(stream)
        scheme = spec.split("://", 1)[0].lower() if kind == "url" else ""
        is_live = kind == "webcam" or scheme in LIVE_SCHEMES or (
            scheme in HTTP_SCHEMES and container.duration is None
        )
        count = None if is_live else _frame_count(container, stream, fps)
        if opts.max_frames:
            count = opts.max_frames if count is None else min(count, opts.max_frames)
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
    return VideoSource(container, info, max_frames=opts.max_frames,
                       read_timeout_s=opts.read_timeout_s)
