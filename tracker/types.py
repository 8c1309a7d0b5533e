"""Records that flow between pipeline stages.

Points are always ``(x, y)`` in full-frame pixels (0-based pixel centres), float32.
Images are ``uint8`` RGB arrays of shape ``(H, W, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in frame pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    def as_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame; ``time`` is seconds from the container's timestamps."""

    index: int
    time: float
    image: np.ndarray
    wall_time: float = 0.0


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """A model-ready crop; ``to_frame`` is the 2x3 affine mapping crop pixels to frame pixels."""

    frame_index: int
    face_id: int
    image: np.ndarray
    to_frame: np.ndarray


@dataclass(frozen=True, slots=True)
class HeadPose:
    """A face's pose: angles in degrees, and the solvePnP rotation/translation.

    ``rvec`` is a Rodrigues vector and ``tvec`` the model origin (the nose tip) in camera
    coordinates (mm), so ``camera_point = R(rvec) @ model_point + tvec``. ``error`` is the RMS
    reprojection error in pixels of the points used. Conventions: :mod:`tracker.outputs.headpose`.
    """

    yaw: float
    pitch: float
    roll: float
    rvec: np.ndarray
    tvec: np.ndarray
    error: float


@dataclass(frozen=True, slots=True)
class Expression:
    """Expression signals of one face in one frame (:mod:`tracker.outputs.expression`):
    openness and raises in 0-1 (NaN when the points do not tell), blinks as events (true on
    the frame the blink is detected). ``left``/``right`` are the subject's."""

    eye_open_left: float
    eye_open_right: float
    blink_left: bool
    blink_right: bool
    mouth_open: float
    mouth_wide: float
    brow_raise_left: float
    brow_raise_right: float


@dataclass(frozen=True, slots=True)
class Landmarks:
    """Landmarks of one face in one frame: ``points`` ``(68, 2)`` float32 ``(x, y)`` in frame
    pixels (iBUG order, see :mod:`tracker.face68`), ``confidence`` ``(68,)`` in 0-1,
    ``presence`` (their mean), the track ``face_id`` (also ``id``) and the landmarks' ``box``.

    ``pose`` and ``expression`` are filled once per frame by the describe stage
    (:mod:`tracker.outputs.describe`), after smoothing; None before it (and ``pose`` when it
    could not be solved)."""

    frame_index: int
    time: float
    face_id: int
    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box
    pose: HeadPose | None = None
    expression: Expression | None = None

    @property
    def id(self) -> int:
        """The face's track id (the same as ``face_id``)."""
        return self.face_id


Face = Landmarks  # the public name: one face's landmarks in one frame


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """A frame with every face found in it (empty tuple when none)."""

    frame: Frame
    faces: tuple[Landmarks, ...] = ()

    @property
    def index(self) -> int:
        """0-based index of the frame in its source."""
        return self.frame.index

    @property
    def time(self) -> float:
        """The frame's timestamp in seconds."""
        return self.frame.time

    @property
    def image(self) -> np.ndarray:
        """The frame's RGB image."""
        return self.frame.image
