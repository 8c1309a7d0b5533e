"""What apps consume, computed once per frame and carried on each face (``Landmarks.pose``,
``Landmarks.expression``), so every output reads the same values.

Two stages, around the smoothing filter::

    track -> expression -> [smooth] -> describe -> sinks

* :class:`ExpressionStage` measures the expression signals on the points *before* the landmark
  smoothing and filters the signals themselves (a One Euro filter per face and signal with
  :data:`SIGNAL_FILTER`, fast enough for a blink): the landmark filter, tuned for steady points,
  flattens the small lid movement the model makes on a blink (README "Expression signals").
  It learns each face's usual open eye (:class:`~tracker.outputs.expression.EyeLevels`) and
  fires the blink events (:class:`~tracker.outputs.expression.BlinkDetector`).
* :class:`DescribeStage` solves the head pose on the smoothed points with the configured camera
  (:class:`~tracker.outputs.headpose.PoseConfig`) and, with ``mirror``, flips the frame and the
  faces left-right (:func:`mirror_face`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tracker.outputs.expression import BlinkDetector, EyeLevels, expression, raw_measures
from tracker.outputs.expression import signals as expression_signals
from tracker.outputs.headpose import PoseConfig, estimate_pose
from tracker.runtime.pipeline import Stage
from tracker.temporal.smoothing import OneEuroFilter, OneEuroParams
from tracker.types import Box, Expression, HeadPose, Landmarks, TrackedFrame

SIGNAL_FILTER = OneEuroParams(min_cutoff=1.0, beta=2.0, d_cutoff=3.0)
"""One Euro settings of the expression signals (speeds in signal units per second)."""

_SIGNALS = ("eye_open_left", "eye_open_right", "mouth_open", "mouth_wide",
            "brow_raise_left", "brow_raise_right")


def _as_array(e: Expression) -> np.ndarray:
    return np.array([getattr(e, k) for k in _SIGNALS], np.float64).reshape(3, 2)


def _from_array(a: np.ndarray, e: Expression) -> Expression:
    values = {k: (min(1.0, max(0.0, float(v))) if math.isfinite(v) else math.nan)
              for k, v in zip(_SIGNALS, a.ravel(), strict=True)}
    return replace(e, **values)


class ExpressionStage(Stage):
    """TrackedFrame -> TrackedFrame with each face's :class:`Expression` set (filtered, with
    blink events). State lives per face id and goes when a frame comes without that id."""

    name = "expression"

    def __init__(self, params: OneEuroParams | None = SIGNAL_FILTER) -> None:
        self.params = params
        self._filters: dict[int, OneEuroFilter] = {}
        self._levels = EyeLevels()
        self._blinks = BlinkDetector()

    def process(self, item: TrackedFrame) -> TrackedFrame:
        present = {f.face_id for f in item.faces}
        for fid in [i for i in self._filters if i not in present]:
            del self._filters[fid]
        measures = {f.face_id: raw_measures(f.points) for f in item.faces}
        levels = self._levels.update(measures)
        signals: dict[int, Expression] = {}
        for face in item.faces:
            e = expression_signals(measures[face.face_id], *levels[face.face_id])
            if self.params is not None:
                filt = self._filters.setdefault(face.face_id, OneEuroFilter(self.params))
                e = _from_array(filt(_as_array(e), face.time, scale=1.0), e)
            signals[face.face_id] = e
        signals = self._blinks.update(signals)
        faces = tuple(replace(f, expression=signals[f.face_id]) for f in item.faces)
        return replace(item, faces=faces)


def mirror_pose(pose: HeadPose) -> HeadPose:
    """The pose of a face seen in a left-right mirrored frame: ``S R S`` with
    ``S = diag(-1, 1, 1)`` (yaw and roll change sign, pitch stays; tvec's x changes sign)."""
    rvec = np.asarray(pose.rvec, np.float64) * np.array([1.0, -1.0, -1.0])
    tvec = np.asarray(pose.tvec, np.float64) * np.array([-1.0, 1.0, 1.0])
    return replace(pose, yaw=-pose.yaw, roll=-pose.roll, rvec=rvec, tvec=tvec)


def mirror_face(face: Landmarks, width: int) -> Landmarks:
    """``face`` in a frame flipped left-right (``x -> width - 1 - x``). Indices keep their
    meaning: point 36 is still the subject's right outer eye corner (now on the image's right),
    ``*_left`` signals are still the subject's left eye or brow."""
    points = face.points.copy()
    points[:, 0] = (width - 1) - points[:, 0]
    b = face.box
    box = Box(width - 1 - b.x1, b.y0, width - 1 - b.x0, b.y1, b.score)
    pose = mirror_pose(face.pose) if face.pose is not None else None
    return replace(face, points=points, box=box, pose=pose)


class DescribeStage(Stage):
    """TrackedFrame -> TrackedFrame with each face's head pose set (and the expression, when
    no :class:`ExpressionStage` ran before); ``mirror`` flips frame and faces left-right."""

    name = "describe"

    def __init__(self, camera: PoseConfig | None = None, mirror: bool = False) -> None:
        self.camera = camera or PoseConfig()
        self.mirror = mirror

    def process(self, item: TrackedFrame) -> TrackedFrame:
        h, w = item.frame.image.shape[:2]
        faces = []
        for face in item.faces:
            pose = estimate_pose(face.points, w, h, face.confidence, camera=self.camera)
            e = face.expression if face.expression is not None else expression(face.points)
            face = replace(face, pose=pose, expression=e)
            faces.append(mirror_face(face, w) if self.mirror else face)
        frame = item.frame
        if self.mirror:
            image = np.ascontiguousarray(frame.image[:, ::-1])
            frame = replace(frame, image=image)
        return TrackedFrame(frame, tuple(faces))
