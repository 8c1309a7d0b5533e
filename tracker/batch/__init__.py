"""Many videos at once: ``tracker batch`` on a local process pool or a Ray cluster.

:func:`run_batch` expands the inputs, skips what the manifest (``DIR/manifest.jsonl``) says is
done, and runs every other video through :meth:`tracker.api.Tracker.run` in worker processes
that each load the models once. See docs/batch.md.

The names are imported on first use: worker processes import :mod:`tracker.batch.worker`
and must not load numpy or torch before their thread pools are pinned.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.batch.runner import BatchOptions, BatchResult, run_batch

__all__ = ["BatchOptions", "BatchResult", "run_batch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tracker.batch.runner"), name)
    raise AttributeError(f"module 'tracker.batch' has no attribute {name!r}")
