"""Exit codes of ``tracker``, the one table from library errors to them, and the one-line
error messages (:func:`known_errors`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer

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


def error_line(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr, always on one line."""
    text = " ".join(str(message).split())  # always one line
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


@contextmanager
def known_errors(debug: bool) -> Iterator[None]:
    """Turn exceptions into one-line errors and exit codes (tracebacks only with --debug)."""
    try:
        yield
    except (CliError, errors.TrackerError) as exc:
        if debug:
            raise
        error_line(str(exc))
        raise typer.Exit(int(exit_code(exc))) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        error_line("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except Exception as exc:  # a bug, not a known error
        if debug:
            raise
        error_line(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        raise typer.Exit(int(ExitCode.FAILED)) from None
