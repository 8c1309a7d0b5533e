"""Landmark smoothing: one filter per face id over the stream of tracked frames.

Two filters (both Numba-compiled, a few microseconds a face):

* ``rigid = true`` (the default), :class:`~tracker.temporal.rigid.RigidOneEuroFilter`: the
  face's rigid motion (position, size, roll) and its shape are filtered apart, the shape with
  the One Euro settings in the face's own frame, the motion by a filter that opens at once when
  the whole face moves. Still faces are as steady as with the plain filter; moving faces keep
  the accuracy of unsmoothed points (``benchmarks/video_eval.py``, docs/tracking.md).
* ``rigid = false``, :class:`~tracker.temporal.one_euro.OneEuroFilter`: the textbook One Euro
  filter on every coordinate in frame pixels (the default until this option came): it lags
  behind a moving face.

State lives per face id: created when an id first appears, discarded as soon as a frame arrives
without it (a lost face that comes back starts afresh).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from tracker.geometry import box_from_points
from tracker.runtime.pipeline import Stage
from tracker.temporal import one_euro, rigid
from tracker.temporal.one_euro import OneEuroFilter, OneEuroParams, face_scale, one_euro_step
from tracker.temporal.rigid import RigidOneEuroFilter, RigidParams
from tracker.types import Landmarks, TrackedFrame

__all__ = ["FILTERS", "OneEuroFilter", "OneEuroParams", "PointFilter", "RigidOneEuroFilter",
           "RigidParams", "SmoothConfig", "SmoothStage", "Smoother", "face_scale", "make_filter",
           "one_euro_step", "warmup"]

FILTERS = ("one_euro", "none")
_RIGID = RigidParams()


@dataclass(frozen=True, slots=True)
class SmoothConfig:
    """The smoothing of a run (the ``[smooth]`` config section): which filter, the One Euro
    settings of the points (:class:`OneEuroParams`; with ``rigid`` they apply to the face's
    shape in its own frame) and the filter of the face's motion (:class:`RigidParams`)."""

    filter: str = "one_euro"  # one of FILTERS: one_euro | none
    min_cutoff: float = _RIGID.min_cutoff  # Hz, still face (its points, or its shape)
    beta: float = _RIGID.beta  # Hz per face size/s of a point's speed
    d_cutoff: float = _RIGID.d_cutoff  # Hz, speed estimates
    rigid: bool = True  # filter the face's motion apart from its shape; false = every coordinate
    rigid_min_cutoff: float = _RIGID.rigid_min_cutoff  # Hz, the motion of a still face
    rigid_beta: float = _RIGID.rigid_beta  # Hz per face size/s above the gate
    rigid_gate: float = _RIGID.rigid_gate  # face sizes/s: slower motion is smoothed as noise

    def params(self) -> OneEuroParams | RigidParams:
        """The filter settings (ValueError when out of range; see ``Config.validate``)."""
        if self.rigid:
            return RigidParams(self.min_cutoff, self.beta, self.d_cutoff, self.rigid_min_cutoff,
                               self.rigid_beta, self.rigid_gate)
        return OneEuroParams(self.min_cutoff, self.beta, self.d_cutoff)


class PointFilter(Protocol):
    """One face's filter: filtered float32 copy of ``points`` (K, 2) seen at ``t`` seconds."""

    def __call__(self, points: np.ndarray, t: float) -> np.ndarray: ...


def make_filter(params: OneEuroParams | RigidParams) -> PointFilter:
    """A fresh filter of one face for ``params``."""
    if isinstance(params, RigidParams):
        return RigidOneEuroFilter(params)
    return OneEuroFilter(params)


class Smoother:
    """Per-face-id filters (:func:`make_filter`) over a stream of :class:`TrackedFrame`."""

    def __init__(self, params: OneEuroParams | RigidParams = _RIGID) -> None:
        self.params = params
        self._filters: dict[int, PointFilter] = {}

    @property
    def face_ids(self) -> tuple[int, ...]:
        """Ids that currently hold filter state."""
        return tuple(sorted(self._filters))

    def __call__(self, tracked: TrackedFrame) -> TrackedFrame:
        present = {f.face_id for f in tracked.faces}
        for fid in [i for i in self._filters if i not in present]:
            del self._filters[fid]  # lost: its next appearance starts afresh
        faces = tuple(self._smooth(f) for f in tracked.faces)
        return replace(tracked, faces=faces)

    def _smooth(self, face: Landmarks) -> Landmarks:
        filt = self._filters.get(face.face_id)
        if filt is None:
            filt = self._filters[face.face_id] = make_filter(self.params)
        points = filt(face.points, face.time)
        box = box_from_points(points) if np.isfinite(points).all() else face.box
        return replace(face, points=points, box=replace(box, score=face.box.score))


class SmoothStage(Stage):
    """TrackedFrame -> TrackedFrame with each face's points filtered."""

    name = "smooth"

    def __init__(self, params: OneEuroParams | RigidParams = _RIGID) -> None:
        warmup()  # the kernels load here, not on the stage's thread beside other Numba code
        self.smoother = Smoother(params)

    def process(self, item: TrackedFrame) -> TrackedFrame:
        return self.smoother(item)


def warmup() -> None:
    """Load (or compile once, to the disk cache) the filters' kernels."""
    one_euro.warmup()
    rigid.warmup()
