"""The public Python API: :class:`Tracker` and its options, results and report."""

from tracker.api.tracker import RunReport, Tracker, TrackerOptions

__all__ = ["RunReport", "Tracker", "TrackerOptions"]
