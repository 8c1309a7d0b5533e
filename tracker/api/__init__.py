"""The public Python API: :class:`Tracker` and its options, results and report; :func:`run_many`
for several streams at once."""

from tracker.api.multi import MultiReport, StreamReport, run_many
from tracker.api.tracker import RunReport, Tracker, TrackerOptions

__all__ = ["MultiReport", "RunReport", "StreamReport", "Tracker", "TrackerOptions", "run_many"]
