"""The append-only file behind fragmented MP4 output: only whole top-level boxes reach the
disk, so a killed process or a full disk leaves a playable file (see
:mod:`tracker.outputs.encode`)."""

from __future__ import annotations

import os
import time as _time

SYNC_S = 1.0  # at most one fdatasync of the video file per this many seconds


class FragmentFile:
    """Append-only output file that writes only whole top-level MP4 boxes.

    Bytes from the muxer are held until the box they belong to is complete; a ``moof`` is
    held until its ``mdat`` is complete too, so the file on disk always ends after a whole
    fragment. On a write error the file is truncated back to that point, and every later
    write fails with the same error. Not seekable, so the muxer never rewrites what it wrote.
    """

    def __init__(self, path: str, *, sync: bool = True) -> None:
        self.name = path  # the muxer guesses the format from it
        self._fd = -1
        self._pending = bytearray()
        self._sync = sync
        self._synced_at = _time.monotonic()
        self.size = 0  # bytes on disk, all in whole boxes
        self.error: OSError | None = None
        self.closed = False

    def open(self) -> None:
        """Create (or truncate) the file; before the first write."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        self._fd = os.open(self.name, flags, 0o666)

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self._pending += data
        end = self._complete_end()
        if end:
            self._write_out(end)
        return len(data)

    def _complete_end(self) -> int:
        """Bytes of ``_pending`` that end a whole box which is not a ``moof``."""
        buf, pos, end = self._pending, 0, 0
        while pos + 8 <= len(buf):
            size = int.from_bytes(buf[pos:pos + 4], "big")
            if size == 1:  # 64-bit size follows the type
                if pos + 16 > len(buf):
                    break
                size = int.from_bytes(buf[pos + 8:pos + 16], "big")
            if size < 8 or pos + size > len(buf):  # incomplete (or "to end of file": size 0)
                break
            pos += size
            if buf[pos - size + 4:pos - size + 8] != b"moof":
                end = pos
        return end

    def _write_out(self, end: int) -> None:
        chunk = memoryview(self._pending[:end])  # a copy: _pending stays resizable
        del self._pending[:end]
        try:
            done = 0
            while done < end:  # a short write (the disk filling up) then raises
                done += os.write(self._fd, chunk[done:])
            self.size += end
            if self._sync and _time.monotonic() - self._synced_at >= SYNC_S:
                self._synced_at = _time.monotonic()
                getattr(os, "fdatasync", os.fsync)(self._fd)
        except OSError as exc:
            self.error = exc
            self._pending.clear()
            try:
                os.ftruncate(self._fd, self.size)  # back to the last whole fragment
            except OSError:
                pass
            raise

    def close(self) -> None:
        """Sync and close; bytes of an unfinished box (a fragment cut short) are dropped."""
        if self.closed:
            return
        self.closed = True
        if self._fd < 0:
            return
        try:
            if self._sync and self.error is None and self.size:
                getattr(os, "fdatasync", os.fsync)(self._fd)
        finally:
            os.close(self._fd)
