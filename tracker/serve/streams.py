"""The streams of a websocket server that serves several (one run, several sources).

:class:`StreamTable` knows their names (fixed when the server starts), what each stream's
source is once it opened (:meth:`StreamTable.describe`) and which ended. A client's ``hello``
lists every stream, so it waits until each one either opened or ended
(:attr:`StreamTable.ready`); a stream that ended is then told with ``stream_end`` after the
hello, and to the clients already connected as it happens.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tracker.serve.encoder import StreamEnded
from tracker.serve.protocol import SourceMeta


class StreamTable:
    """Names, source descriptions and ends of a server's streams (thread-safe)."""

    def __init__(self, names: Sequence[str]) -> None:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stream names must be distinct and at least one: {names!r}")
        self.names: tuple[str, ...] = tuple(names)
        self._lock = threading.Lock()
        self._metas: dict[str, SourceMeta] = {}
        self._ending: set[str] = set()
        self.ended: dict[str, StreamEnded] = {}  # filled on the server's loop, in order

    def _known(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown stream {name!r} (streams: {', '.join(self.names)})")

    def describe(self, name: str, meta: SourceMeta) -> None:
        """Stream ``name`` opened its source: what the hello tells about it."""
        self._known(name)
        with self._lock:
            self._metas[name] = meta

    def ending(self, name: str) -> None:
        """Stream ``name`` ended (its ``stream_end`` follows its last frame)."""
        self._known(name)
        with self._lock:
            self._ending.add(name)

    @property
    def ready(self) -> bool:
        """Whether every stream opened its source or ended: a hello can list them all."""
        with self._lock:
            return all(n in self._metas or n in self._ending for n in self.names)

    def listing(self) -> list[tuple[str, SourceMeta | None]]:
        """``(name, meta)`` per stream in order; meta None when its source never opened."""
        with self._lock:
            return [(n, self._metas.get(n)) for n in self.names]

    def first(self) -> SourceMeta | None:
        """The first stream's source that opened (the hello's ``source``), or None."""
        return next((m for _, m in self.listing() if m is not None), None)
