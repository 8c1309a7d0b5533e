"""tracker: real-time face-landmark tracking with Recombinator Networks."""

__version__ = "0.1.0"
