"""Every error ``tracker`` raises for a known cause, as one family.

Library code raises these (never exits); the CLI maps each class to an exit code
(:mod:`tracker.cli.errors`). Messages are one line, written for the user.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every known failure; ``str(exc)`` is one line for the user."""


class ConfigError(TrackerError, ValueError):
    """A configuration file, option or override is invalid; the message names the key."""


class UsageError(TrackerError, ValueError):
    """Options that contradict each other (e.g. one file named as two outputs)."""


class SourceError(TrackerError):
    """A source cannot be opened or read; the message is one line for the user."""


class CameraNotFound(SourceError):
    """The requested webcam does not exist or cannot be opened."""


class DamagedInput(SourceError):
    """The input is truncated or corrupt: what could be decoded was processed and written."""


class WeightsError(TrackerError, ValueError):
    """A missing or unreadable weights file."""


class ModelError(TrackerError):
    """The face detector or the landmark model cannot be loaded."""


class EngineError(ModelError, RuntimeError):
    """An engine that cannot be built or used here, with a one-line reason."""


class OutputError(TrackerError):
    """An output cannot be opened or written (checked before processing where possible)."""


class EncodeError(OutputError, RuntimeError):
    """The annotated video could not be opened or written."""


class PreviewUnavailable(OutputError, RuntimeError):
    """``--show`` cannot open a window here (no display, or a headless OpenCV build)."""


class StreamError(OutputError):
    """The websocket server cannot start (bad address, port in use, demo files missing)."""


class PipelineError(TrackerError):
    """A stage failed while running; ``stage`` names it and ``__cause__`` is the original."""

    def __init__(self, message: str, stage: str = "") -> None:
        super().__init__(message)
        self.stage = stage
