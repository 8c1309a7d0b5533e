"""Output paths: checked writable before any processing starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tracker.errors import OutputError


def check_writable(path: str, what: str) -> None:
    """Fail before any processing when ``path`` cannot be created or overwritten.

    Probes by creating (and removing) a temporary file beside ``path``: permission bits alone
    say nothing for root or for read-only and virtual file systems.
    """
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{what} {path} is a directory")
    parent = p.parent
    if not parent.exists():
        raise OutputError(f"{what} directory does not exist: {parent}")
    if not parent.is_dir():
        raise OutputError(f"{what} directory is not a directory: {parent}")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{what} is not writable: {p}")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".tracker-write-test-")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{what} directory is not writable: {parent} ({reason})") from None
    os.close(fd)
    os.unlink(probe)
