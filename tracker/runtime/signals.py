"""Ctrl-C and SIGTERM while running: finish cleanly the first time, exit at once the second.

The first SIGINT or SIGTERM raises ``KeyboardInterrupt`` in the main thread, which
:meth:`tracker.runtime.pipeline.Pipeline.run` turns into a stop: every stage ends and every output file is
finalised. A second signal means the user does not want to wait: one line on stderr and the
process exits immediately (outputs may then be incomplete).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
_active: Interrupts | None = None


@dataclass
class Interrupts:
    """What arrived while :func:`graceful_signals` was active."""

    received: list[signal.Signals]

    @property
    def first(self) -> signal.Signals | None:
        return self.received[0] if self.received else None


def exit_code(sig: signal.Signals | None) -> int:
    """Shell convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(sig if sig is not None else signal.SIGINT)


@contextmanager
def graceful_signals() -> Iterator[Interrupts]:
    """Install the two-step SIGINT/SIGTERM handling for the duration of the block.

    Outside the main thread (where handlers cannot be installed) this does nothing; nested
    uses share the outer one's state.
    """
    global _active
    if _active is not None:
        yield _active
        return
    state = Interrupts([])
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        state.received.append(sig)
        if len(state.received) == 1:
            raise KeyboardInterrupt
        sys.stderr.write(f"error: {sig.name} again; exiting now without finalising outputs\n")
        sys.stderr.flush()
        os._exit(exit_code(state.first))

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    _active = state
    try:
        yield state
    finally:
        _active = None
        for s, h in previous.items():
            signal.signal(s, h)
