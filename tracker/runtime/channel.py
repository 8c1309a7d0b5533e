"""Bounded channels between stages: ``block`` or ``drop_oldest`` overflow, counted drops,
the end-of-stream marker."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

Policy = Literal["block", "drop_oldest"]
POLICIES: tuple[str, ...] = ("block", "drop_oldest")
POLL_S = 0.05  # how often blocked channel operations look at the stop event


class _EndOfStream:
    """Type of :data:`END`."""

    _instance: _EndOfStream | None = None

    def __new__(cls) -> _EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END = _EndOfStream()
"""Returned by :meth:`Channel.get` once a closed channel is empty."""


class Stopped(Exception):
    """Raised by a blocked channel operation when the pipeline is stopping."""


@dataclass(frozen=True, slots=True)
class ChannelMetrics:
    """Counters of one channel."""

    name: str
    capacity: int
    policy: str
    depth: int
    max_depth: int
    items: int
    dropped: int


class Channel:
    """Bounded FIFO between two stages with an explicit overflow policy.

    ``block``: :meth:`put` waits for room (nothing is ever lost) but gives up with
    :class:`Stopped` when the stop event is set. ``drop_oldest``: :meth:`put` never waits; when
    full, the oldest queued item is discarded and counted in ``dropped``.
    End of stream is a flag, not a queued item, so it can never be dropped: after :meth:`close`,
    :meth:`get` returns the remaining items and then :data:`END`.
    """

    def __init__(self, name: str, capacity: int, policy: str = "block") -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be >= 1, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"channel {name!r}: policy must be one of {POLICIES}, got {policy!r}")
        self.name = name
        self.capacity = int(capacity)
        self.policy = policy
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._detached = False  # the consumer is gone: puts are discarded, never block
        self.max_depth = 0
        self.puts = 0
        self.dropped = 0

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Any, stop: threading.Event | None = None) -> None:
        """Queue ``item`` according to the policy; raises :class:`Stopped` if ``stop`` gets set."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"put on closed channel {self.name!r}")
            if self._detached:
                return
            if self.policy == "drop_oldest":
                while len(self._items) >= self.capacity:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    if stop is not None and stop.is_set():
                        raise Stopped(self.name)
                    self._cond.wait(POLL_S)
                    if self._closed:
                        raise RuntimeError(f"put on closed channel {self.name!r}")
                    if self._detached:
                        return
            self._items.append(item)
            self.puts += 1
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()

    def get(self, stop: threading.Event | None = None, timeout: float | None = None) -> Any:
        """Next item, or :data:`END` once closed and drained.

        Raises :class:`Stopped` when ``stop`` is set (queued items are then abandoned) and
        ``TimeoutError`` after ``timeout`` seconds without an item.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    raise Stopped(self.name)
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                if self._closed:
                    return END
                wait = POLL_S
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(f"no item on channel {self.name!r} in {timeout} s")
                self._cond.wait(wait)

    def close(self) -> None:
        """Mark end of stream (idempotent, never blocks)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def detach(self) -> None:
        """The consumer has ended: drop what is queued, and let later puts pass unqueued."""
        with self._cond:
            self._detached = True
            self._items.clear()
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so it re-checks the stop event."""
        with self._cond:
            self._cond.notify_all()

    def metrics(self) -> ChannelMetrics:
        return ChannelMetrics(
            self.name, self.capacity, self.policy, self.depth, self.max_depth, self.puts,
            self.dropped,
        )
