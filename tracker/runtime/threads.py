"""A thread whose end can be waited for safely while Ctrl-C is delivered.

On CPython 3.11, a ``KeyboardInterrupt`` that lands inside ``Thread.join`` can mark a thread
that is still running as stopped (``is_alive()`` False; CPython gh-90882), so a runner
would stop waiting for a sink that has not finalised its file, and the interpreter would
exit under a thread still inside native code. :class:`Worker` records its own end in an
event, which an interrupt cannot corrupt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Worker(threading.Thread):
    """A daemon thread running ``target(*args)``; :meth:`wait` and :attr:`running` rely on
    an event set when the target returns or raises, never on ``Thread.join``. What the target
    raised is kept in :attr:`error` for the caller, not printed."""

    def __init__(self, target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = ()
                 ) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._work_args = target, args
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work(*self._work_args)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self.error = exc
        finally:
            self.finished.set()

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the target has returned (or before start)."""
        return not self.finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the target to end; True when it has."""
        return self.finished.wait(timeout)
