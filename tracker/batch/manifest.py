"""The batch manifest ``DIR/manifest.jsonl``: one JSON line per attempt at an input.

Lines are only ever appended (one ``write`` each, flushed), so a crash loses at most the line
being written; a torn last line is ignored on reading. The **latest** line of an input wins.
A line looks like::

    {"input": "/data/sub/clip.mp4", "status": "done", "attempt": 1,
     "fingerprint": {"size": 1234, "mtime_ns": 1700000000000000000},
     "settings": "3f2a...", "outputs": ["sub/clip.jsonl"], "frames": 275, "faces": 2,
     "frames_with_faces": 232, "fps": 61.2, "seconds": 4.49, "video_seconds": 9.18,
     "error": null, "error_type": null, "worker": "host:1234", "at": "2026-01-01T12:00:00Z"}

``status`` is ``done`` or ``failed`` (``error`` holds the one-line reason); ``outputs`` are
relative to ``DIR``. An input is skipped on a rerun when its latest line is ``done`` with the
same fingerprint and settings digest, and every output asked for is listed and exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from tracker.errors import OutputError, UsageError

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".manifest.lock"


def settings_digest(settings: dict[str, Any]) -> str:
    """A short digest of the run settings (a change means every input is processed again)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Latest(NamedTuple):
    status: str
    fingerprint: str
    settings: str
    outputs: tuple[str, ...]


def _fp(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Every complete, well-formed line of a manifest (a torn or garbled line is skipped)."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("input"), str):
                rows.append(row)
    return rows


class Manifest:
    """The manifest of one out-dir, held open (and locked) for appending while a batch runs.

    Only one ``tracker batch`` may write a given out-dir at a time: a second one fails with
    :class:`UsageError` (POSIX file lock; on file systems without locks it is not enforced).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST_NAME
        self.latest: dict[str, _Latest] = {}
        self.attempts: Counter[str] = Counter()
        self._file: IO[str] | None = None
        self._lock: IO[str] | None = None

    def open(self) -> Manifest:
        """Lock the out-dir, read what earlier runs recorded and open for appending."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.out_dir / LOCK_NAME, "a")
        except OSError as exc:
            raise OutputError(f"--out-dir {self.out_dir} cannot be written: "
                              f"{exc.strerror or exc}") from None
        _lock_or_fail(self._lock, self.out_dir)
        for row in read_manifest(self.path):
            source = row["input"]
            self.attempts[source] += 1
            self.latest[source] = _Latest(str(row.get("status")), _fp(row.get("fingerprint") or {}),
                                          str(row.get("settings")),
                                          tuple(row.get("outputs") or ()))
        self._file = open(self.path, "a+", encoding="utf-8")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:
            self._file.seek(self._file.tell() - 1)
            last = self._file.read(1)
            self._file.seek(0, os.SEEK_END)
            if last != "\n":  # a line torn by a crash: start on a fresh line
                self._file.write("\n")
        return self

    def is_complete(self, source: str, fingerprint: dict[str, Any], settings: str,
                    outputs: list[str]) -> bool:
        """True when ``source`` was done with this fingerprint and settings and its outputs
        (``outputs``, relative to the out-dir) are all recorded and present."""
        entry = self.latest.get(source)
        if entry is None or entry.status != "done":
            return False
        if entry.fingerprint != _fp(fingerprint) or entry.settings != settings:
            return False
        if not set(outputs) <= set(entry.outputs):
            return False
        return all((self.out_dir / o).is_file() for o in outputs)

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write one line for ``row["input"]`` (its ``attempt`` is filled in) and return it."""
        if self._file is None:
            raise RuntimeError("the manifest is not open")
        source = row["input"]
        self.attempts[source] += 1
        row = {"input": source, "status": row["status"], "attempt": self.attempts[source],
               **{k: v for k, v in row.items() if k not in ("input", "status", "attempt")}}
        self._file.write(json.dumps(row, separators=(", ", ": ")) + "\n")
        self._file.flush()
        self.latest[source] = _Latest(row["status"], _fp(row.get("fingerprint") or {}),
                                      str(row.get("settings")), tuple(row.get("outputs") or ()))
        return row

    def close(self) -> None:
        """Flush, close and unlock."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def __enter__(self) -> Manifest:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _lock_or_fail(handle: IO[str], out_dir: Path) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: not enforced
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"another tracker batch is writing {out_dir} (wait for it to "
                         "finish, or use another --out-dir)") from None
    except OSError:  # no locks on this file system (some network mounts)
        return
