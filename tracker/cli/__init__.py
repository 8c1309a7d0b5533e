"""The ``tracker`` command line (``tracker.cli:main`` is the console script)."""

from tracker.cli.app import main

__all__ = ["main"]
