"""Opening a source spec as a PyAV container: files, webcams, network streams, lavfi graphs,
with the error that says what went wrong."""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av

from tracker.errors import CameraNotFound, SourceError
from tracker.io.integrity import mp4_problem
from tracker.io.specs import _US_TIMEOUT_SCHEMES, SourceOptions, webcam_device


def stream_fps(stream: av.video.stream.VideoStream) -> float:
    """The stream's frame rate (average, else guessed, else base); 0.0 when unknown. An
    average far above the guessed rate counts empty padding frames (AVI): the guess wins."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate and stream.guessed_rate and rate > 2 * stream.guessed_rate:
        rate = stream.guessed_rate
    return float(rate) if rate else 0.0


def frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                fps: float) -> int | None:
    """Frames in the stream: the header's count, else estimated from the duration (also when
    the header counts clearly more: AVI pads it with skipped frames, edit lists hide some)."""
    estimate = None
    if stream.duration is not None and stream.time_base is not None and fps:
        estimate = max(1, round(float(stream.duration * stream.time_base) * fps))
    elif container.duration is not None and fps:
        estimate = max(1, round(container.duration / av.time_base * fps))
    if stream.frames and (estimate is None or stream.frames <= estimate + 1):
        return int(stream.frames)
    return estimate


def video_time_base(path: str) -> Fraction | None:
    """Time base of the first video stream of ``path``; None if it has none or cannot be read."""
    try:
        with av.open(path) as container:
            if container.streams.video:
                return Fraction(container.streams.video[0].time_base)
    except (av.FFmpegError, OSError):
        return None
    return None


def open_container(spec: str, kind: str, opts: SourceOptions) -> av.container.InputContainer:
    """``spec`` (of ``kind``, see :func:`~tracker.io.specs.source_kind`) opened for reading;
    raises :class:`SourceError` (:class:`CameraNotFound` for webcams) with the reason."""
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
    started = time.monotonic()
    try:
        return av.open(spec, options=options, timeout=timeout)
    except (av.FFmpegError, OSError, ValueError) as exc:
        # the timeout interrupts the open; some demuxers (RTSP) then report bad data instead
        late = time.monotonic() - started >= opts.open_timeout_s
        if isinstance(exc, av.error.ExitError) or late:
            raise SourceError(f"timed out after {opts.open_timeout_s:g} s opening {spec}") \
                from None
        raise SourceError(f"cannot open {spec}: {exc}") from None
