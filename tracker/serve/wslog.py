"""The websockets library's log, kept to one line a record and without tokens (its debug log
shows request paths and headers): the server hands :data:`ws_log` to the library."""

from __future__ import annotations

import logging
import re

_SECRETS = re.compile(r"(token=)[^&\s]*|((?:authorization|x-tracker-token): ).*", re.I)


class _OneLine(logging.Filter):
    """Keeps the websockets library's log records to one line (no tracebacks), without tokens
    (its debug log shows request paths and headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: let logging report it
            return True
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {record.exc_info[1]}"
        record.msg = _SECRETS.sub(lambda m: f"{m[1] or m[2]}[redacted]", text)
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


ws_log = logging.getLogger("tracker.serve.server.websockets")
ws_log.addFilter(_OneLine())
