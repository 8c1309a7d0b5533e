"""How decoded frames are shown: the display matrix (a phone video shot upright is stored
sideways with a rotation; some are mirrored) and the pixel aspect ratio (anamorphic video).

Frames are turned to the displayed orientation and stretched to square pixels at decode, so
tracking, the JSONL coordinates and the annotated video all use the frame as it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

_MAX_SAR = 4  # pixel aspect ratios beyond 1/4..4 are taken as broken metadata


@dataclass(frozen=True, slots=True)
class Orientation:
    """Turns a stored frame into the displayed one: transpose, then mirror."""

    transpose: bool = False  # rows become columns (a quarter turn, with a flip below)
    flip_x: bool = False  # then mirror left-right
    flip_y: bool = False  # then mirror top-bottom

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_x or self.flip_y)

    @property
    def rotation(self) -> int:
        """Counter-clockwise degrees of the turn (0, 90, 180 or 270; a mirror is on top)."""
        if self.transpose:
            return 90 if self.flip_y else 270
        return 180 if self.flip_x and self.flip_y else 0

    @property
    def mirrored(self) -> bool:
        """True when the turn also mirrors the picture."""
        return self.transpose == (self.flip_x == self.flip_y)  # a transpose alone mirrors

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The displayed ``(width, height)`` of a stored ``width`` x ``height`` frame."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` (H, W, C) as displayed; contiguous (a copy unless nothing changes)."""
        if self.identity:
            return image
        if self.transpose:
            image = image.transpose(1, 0, 2)
        if self.flip_x:
            image = image[:, ::-1]
        if self.flip_y:
            image = image[::-1]
        return np.ascontiguousarray(image)


def from_display_matrix(matrix: Sequence[int]) -> Orientation:
    """The orientation a 3x3 16.16 fixed-point display matrix describes, to the nearest quarter
    turn. FFmpeg maps a stored pixel (x, y) to ``x' = a x + c y``, ``y' = b x + d y`` with
    ``a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]``."""
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return Orientation(False, a < 0, d < 0)
    return Orientation(True, c < 0, b < 0)  # x' from y and y' from x: a transpose


def frame_orientation(frame: object) -> Orientation:
    """The orientation in a decoded frame's display-matrix side data (none: as stored)."""
    for data in getattr(frame, "side_data", ()):
        if getattr(data.type, "name", "") == "DISPLAYMATRIX":
            raw = bytes(data)
            if len(raw) >= 36:
                return from_display_matrix(np.frombuffer(raw[:36], "<i4").tolist())
    return Orientation()


def square_size(width: int, height: int, sar: Fraction | None) -> tuple[int, int]:
    """``(width, height)`` stretched to square pixels for a pixel aspect ratio ``sar``; the
    short side grows, so no detail is lost. Missing or implausible ratios change nothing."""
    if not sar or sar == 1 or not 1 / _MAX_SAR <= sar <= _MAX_SAR:
        return width, height
    if sar > 1:
        return round(width * sar), height
    return width, round(height / sar)
