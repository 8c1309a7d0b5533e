"""What a source spec names (file, webcam, URL, lavfi graph), how sources are opened (the ``[source]``
options) and what an opened source is (:class:`SourceInfo`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from fractions import Fraction

from tracker.errors import CameraNotFound, SourceError  # noqa: F401 (re-exported)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")
HTTP_SCHEMES = ("http", "https")
# protocols whose ``timeout`` option is a socket I/O timeout in microseconds
_US_TIMEOUT_SCHEMES = ("rtsp", "rtsps", "http", "https", "tcp", "udp")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How sources are opened and read (the ``[source]`` config section)."""

    open_timeout_s: float = 10.0  # network streams and cameras: give up opening after this
    read_timeout_s: float = 10.0  # a live source silent this long has stalled
    webcam_size: str = ""  # e.g. "1280x720"; "" = camera default
    webcam_fps: float = 0.0  # 0 = camera default
    rtsp_transport: str = "tcp"  # tcp | udp
    reconnect: bool = False  # live sources: reopen after a stall/disconnect (False: end the run)
    reconnect_attempts: int = 10  # failed attempts in a row before giving up (0 = keep trying)
    reconnect_backoff_s: float = 0.5  # first wait; doubles after each failed attempt
    reconnect_backoff_max_s: float = 8.0  # longest wait between attempts


SourceConfig = SourceOptions  # its name in tracker.config


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What is known about an opened source. ``width`` x ``height`` is the frame as displayed
    (the size of the frames it yields): turned by its display matrix and stretched to square
    pixels from ``stored_size``, the frames' size in the stream."""

    spec: str
    kind: str  # "file" | "webcam" | "url" | "lavfi"
    width: int
    height: int
    fps: float
    time_base: Fraction
    is_live: bool
    path: str | None  # the file to read audio from for pass-through (None: live/lavfi)
    frame_count: int | None  # the header's count, else (none, or padded) from the duration
    has_audio: bool
    stored_size: tuple[int, int] | None = None  # (width, height) as coded; None: as displayed
    rotation: int = 0  # counter-clockwise degrees the stored frames are turned to display
    mirrored: bool = False  # the display matrix also mirrors them

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


def source_kind(spec: str) -> str:
    """``webcam``, ``lavfi``, ``url`` or ``file``: what kind of source ``spec`` names."""
    if spec == "webcam" or spec.startswith("webcam:"):
        return "webcam"
    if spec.startswith("lavfi:"):
        return "lavfi"
    if _URL.match(spec):
        return "url"
    return "file"
