"""Exit codes of ``tracker``, and the one table from library errors to them."""

from __future__ import annotations

from enum import IntEnum

from tracker import errors


class ExitCode(IntEnum):
    """Process exit codes of ``tracker``."""

    OK = 0
    FAILED = 1  # a stage failed while running
    USAGE = 2  # bad command-line arguments
    CONFIG = 3  # bad config file or value
    SOURCE = 4  # missing/unreadable input, not a video, no video stream, stream error
    NO_CAMERA = 5  # webcam not found
    OUTPUT = 6  # output cannot be written (checked before processing)
    MODEL = 7  # detector or landmark engine cannot be loaded
    DAMAGED_INPUT = 8  # input truncated/corrupt: what could be decoded was processed and written
    INTERRUPTED = 130  # Ctrl-C (outputs are still finalised)
    TERMINATED = 143  # SIGTERM (outputs are still finalised)


class CliError(Exception):
    """A known failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# most specific first: the first class an error is an instance of decides its code
EXIT_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (errors.UsageError, ExitCode.USAGE),
    (errors.ConfigError, ExitCode.CONFIG),
    (errors.CameraNotFound, ExitCode.NO_CAMERA),
    (errors.DamagedInput, ExitCode.DAMAGED_INPUT),
    (errors.SourceError, ExitCode.SOURCE),
    (errors.OutputError, ExitCode.OUTPUT),
    (errors.WeightsError, ExitCode.MODEL),
    (errors.ModelError, ExitCode.MODEL),
    (errors.PipelineError, ExitCode.FAILED),
)


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code of a known error (``FAILED`` for any other :class:`TrackerError`)."""
    if isinstance(exc, CliError):
        return exc.code
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.FAILED
