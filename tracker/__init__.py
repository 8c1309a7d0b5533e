"""tracker: real-time face-landmark tracking with Recombinator Networks.

The public API (imported on first use, so ``import tracker`` stays cheap)::

    from tracker import Tracker
    with Tracker.from_config("default", max_faces=2) as t:
        for tracked in t.track("video.mp4"):
            for face in tracked.faces:
                print(tracked.index, face.id, face.points.shape)   # (68, 2) frame pixels
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Tracker": "tracker.api",
    "TrackerOptions": "tracker.api",
    "RunReport": "tracker.api",
    "run_many": "tracker.api",
    "StreamReport": "tracker.api",
    "MultiReport": "tracker.api",
    "Landmarker": "tracker.landmarker",
    "FacePrediction": "tracker.landmarker",
    "list_models": "tracker.models.checkpoint",
    "TrackedFrame": "tracker.types",
    "Face": "tracker.types",
    "Box": "tracker.types",
    "Frame": "tracker.types",
    "TrackerError": "tracker.errors",
    "ConfigError": "tracker.errors",
    "SourceError": "tracker.errors",
    "CameraNotFound": "tracker.errors",
    "DamagedInput": "tracker.errors",
    "WeightsError": "tracker.errors",
    "ModelError": "tracker.errors",
    "EngineError": "tracker.errors",
    "OutputError": "tracker.errors",
    "UsageError": "tracker.errors",
    "PipelineError": "tracker.errors",
}

__all__ = [
    "__version__",
    "Tracker",
    "TrackerOptions",
    "RunReport",
    "run_many",
    "StreamReport",
    "MultiReport",
    "Landmarker",
    "FacePrediction",
    "list_models",
    "TrackedFrame",
    "Face",
    "Box",
    "Frame",
    "TrackerError",
    "ConfigError",
    "SourceError",
    "CameraNotFound",
    "DamagedInput",
    "WeightsError",
    "ModelError",
    "EngineError",
    "OutputError",
    "UsageError",
    "PipelineError",
]

if TYPE_CHECKING:
    from tracker.api import MultiReport, RunReport, StreamReport, Tracker, TrackerOptions, run_many
    from tracker.errors import (
        CameraNotFound,
        ConfigError,
        DamagedInput,
        EngineError,
        ModelError,
        OutputError,
        PipelineError,
        SourceError,
        TrackerError,
        UsageError,
        WeightsError,
    )
    from tracker.landmarker import FacePrediction, Landmarker
    from tracker.models.checkpoint import list_models
    from tracker.types import Box, Face, Frame, TrackedFrame


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
