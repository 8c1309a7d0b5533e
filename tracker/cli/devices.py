"""``tracker devices``: the cameras ``--source webcam:N`` can open, and their modes where the
platform tells them.

On Linux the cameras are the V4L2 capture nodes ``/dev/videoN`` (``webcam:N`` opens
``/dev/videoN``), named by ``/sys/class/video4linux/videoN/name``; nodes that only carry
metadata (a second node per camera on many UVC webcams, ``index`` 1 or more in sysfs) are
marked as such. Modes (pixel formats, sizes, frame rates) come from ``v4l2-ctl
--list-formats-ext`` when v4l-utils is installed. On macOS and Windows the command prints how
to list the cameras with FFmpeg (``webcam:N`` opens AVFoundation device N on macOS; Windows
needs ``webcam:NAME``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from tracker.cli.errors import known_errors

SYSFS = Path("/sys/class/video4linux")
DEV = Path("/dev")

OTHER_PLATFORMS = {
    "darwin": "macOS: ffmpeg -f avfoundation -list_devices true -i \"\" lists the cameras; "
              "webcam:N opens AVFoundation device N.",
    "win32": "Windows: ffmpeg -list_devices true -f dshow -i dummy lists the cameras; "
             "give one by name: --source 'webcam:NAME' (DirectShow).",
}


@dataclass(frozen=True, slots=True)
class Camera:
    """One video device node."""

    index: int  # N of /dev/videoN, the N of webcam:N
    path: str
    name: str
    capture: bool  # False for a node that only carries metadata
    modes: tuple[str, ...] = ()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def list_cameras(dev: Path | None = None, sysfs: Path | None = None,
                 modes: bool = True) -> list[Camera]:
    """The ``/dev/videoN`` nodes, by N, with their sysfs names (Linux; default folders
    :data:`DEV` and :data:`SYSFS`)."""
    dev, sysfs = dev or DEV, sysfs or SYSFS
    cameras = []
    for node in sorted(dev.glob("video*"), key=lambda p: _number(p.name)):
        n = _number(node.name)
        if n < 0:
            continue
        info = sysfs / node.name
        name = _read(info / "name") or "unknown camera"
        index = _read(info / "index")
        capture = index is None or index == "0"
        found = _modes(str(node)) if modes and capture else ()
        cameras.append(Camera(n, str(node), name, capture, found))
    return cameras


def _number(name: str) -> int:
    m = re.fullmatch(r"video(\d+)", name)
    return int(m.group(1)) if m else -1


def _modes(path: str) -> tuple[str, ...]:
    """``"YUYV 640x480 @ 30, 15 fps"`` lines from ``v4l2-ctl``, or () without it."""
    exe = shutil.which("v4l2-ctl")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "-d", path, "--list-formats-ext"], capture_output=True,
                             text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    modes: list[str] = []
    fmt, size = "?", None
    for line in out.splitlines():
        if m := re.search(r"'(\w+)'", line):
            fmt = m.group(1)
        elif m := re.search(r"Size: \w+ (\d+x\d+)", line):
            size = m.group(1)
            modes.append(f"{fmt} {size}")
        elif (m := re.search(r"\(([\d.]+) fps\)", line)) and modes and size:
            sep = " @ " if "@" not in modes[-1] else ", "
            modes[-1] += f"{sep}{float(m.group(1)):g}"
    return tuple(f"{m} fps" if "@" in m else m for m in modes)


def devices_command(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """List the cameras (webcam:N) and, where the platform says, their modes."""
    with known_errors(debug):
        if sys.platform in OTHER_PLATFORMS:
            typer.echo(OTHER_PLATFORMS[sys.platform])
            return
        cameras = list_cameras()
        if not cameras:
            typer.echo("no cameras found")
            return
        for cam in cameras:
            kind = "" if cam.capture else " (metadata node, not a camera)"
            typer.echo(f"webcam:{cam.index}  {cam.path}  {cam.name}{kind}")
            for mode in cam.modes:
                typer.echo(f"    {mode}")
            if cam.capture and not cam.modes:
                typer.echo("    modes: install v4l-utils (v4l2-ctl) to list them")
