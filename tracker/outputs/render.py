"""Drawing landmarks, boxes and a heads-up display on RGB frames with OpenCV.

All colours are RGB triples because every image in the pipeline is RGB. Points are drawn with
sub-pixel precision (``shift``) and anti-aliasing, so a point at ``(10.5, 7.25)`` lands there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from tracker.face68 import CLOSED_REGIONS, N_POINTS, NOSE_TIP, REGIONS
from tracker.types import Landmarks, TrackedFrame

# The mesh as open or closed polylines, one per region (the edges are face68.CONNECTIONS).
_POLYLINES: tuple[tuple[list[int], bool], ...] = tuple(
    (list(indices), name in CLOSED_REGIONS) for name, indices in REGIONS.items()
)

_REGION_RGB: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 200, 0),
    "right_brow": (255, 120, 40),
    "left_brow": (255, 120, 40),
    "nose_bridge": (80, 200, 255),
    "nose_lower": (80, 200, 255),
    "right_eye": (60, 255, 120),
    "left_eye": (60, 255, 120),
    "outer_lip": (255, 70, 160),
    "inner_lip": (255, 70, 160),
}

REGION_COLORS: np.ndarray = np.zeros((N_POINTS, 3), np.uint8)
"""One RGB colour per landmark, by face region."""
for _name, _indices in REGIONS.items():
    REGION_COLORS[list(_indices)] = _REGION_RGB[_name]

_FACE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 220, 255),
    (255, 160, 0),
    (180, 90, 255),
    (90, 255, 90),
    (255, 80, 80),
    (255, 255, 90),
)
_MESH_RGB = (235, 235, 235)
_SHIFT = 4  # sub-pixel bits for cv2 drawing calls
_SCALE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX

ColorBy = Literal["confidence", "region"]


def confidence_colors(confidence: np.ndarray) -> np.ndarray:
    """Map confidences in [0, 1] to RGB: red (0) through yellow (0.5) to green (1)."""
    c = np.clip(np.nan_to_num(np.asarray(confidence, np.float32), nan=0.0), 0.0, 1.0)
    red = np.where(c < 0.5, 1.0, 2.0 * (1.0 - c))
    green = np.where(c < 0.5, 2.0 * c, 1.0)
    rgb = np.stack([red, green, np.full_like(c, 0.15)], axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def face_color(face_id: int) -> tuple[int, int, int]:
    """A stable RGB colour for a face id."""
    return _FACE_PALETTE[face_id % len(_FACE_PALETTE)]


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to cv2 fixed-point integers (``shift=_SHIFT``)."""
    return np.round(np.asarray(points, np.float64) * _SCALE).astype(np.int32)


def draw_landmarks(
    image: np.ndarray,
    face: Landmarks,
    *,
    color_by: ColorBy = "confidence",
    radius: int = 2,
    mesh: bool = True,
) -> None:
    """Draw one face's mesh lines and points on ``image`` in place."""
    points = np.asarray(face.points, np.float32)
    finite = np.isfinite(points).all(axis=1)
    fixed = _fixed(np.where(finite[:, None], points, 0.0))
    if mesh and len(points) == N_POINTS:
        for want_closed in (False, True):
            lines = [
                fixed[indices]
                for indices, closed in _POLYLINES
                if closed == want_closed and finite[indices].all()
            ]
            if lines:
                cv2.polylines(image, lines, want_closed, _MESH_RGB, 1, cv2.LINE_AA, _SHIFT)
    if color_by == "region" and len(points) == N_POINTS:
        colors = REGION_COLORS
    else:
        colors = confidence_colors(face.confidence)
    r = max(1, int(radius)) * _SCALE
    # plain lists: iterating the arrays made a NumPy scalar per number (~40 us a face)
    for (x, y), ok, color in zip(fixed.tolist(), finite.tolist(), colors.tolist(), strict=True):
        if ok:
            cv2.circle(image, (x, y), r, color, -1, cv2.LINE_AA, _SHIFT)


def draw_box(image: np.ndarray, face: Landmarks) -> None:
    """Draw a face's box and an ``id N`` label above it, in place."""
    box = face.box
    color = face_color(face.face_id)
    x0, y0, x1, y1 = (int(round(v)) for v in (box.x0, box.y0, box.x1, box.y1))
    cv2.rectangle(image, (x0, y0), (x1, y1), color, 1, cv2.LINE_AA)
    label = f"id {face.face_id}"
    (tw, th), base = cv2.getTextSize(label, _FONT, 0.45, 1)
    ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4
    cv2.rectangle(image, (x0, ty - th - 2), (x0 + tw + 4, ty + base), color, -1)
    cv2.putText(image, label, (x0 + 2, ty), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


_AXIS_RGB = ((255, 60, 60), (60, 230, 60), (70, 140, 255))  # x, up, forward


def draw_pose(image: np.ndarray, face: Landmarks) -> None:
    """Draw a face's head-pose axes from the nose tip (red: the model's x, to the image's right
    for a frontal face; green: up; blue: forward, out of the face; an orthographic sketch, a
    third of the face box long) and ``id N  yaw/pitch/roll`` below the box, in place."""
    pose = face.pose
    if pose is None or not np.isfinite(face.points[NOSE_TIP]).all():
        return
    rot = cv2.Rodrigues(np.asarray(pose.rvec, np.float64).reshape(3, 1))[0]
    length = max(face.box.width, face.box.height) / 3.0
    origin = np.asarray(face.points[NOSE_TIP], np.float64)
    for axis, sign, color in zip((0, 1, 2), (1.0, -1.0, -1.0), _AXIS_RGB, strict=True):
        end = origin + sign * length * rot[:2, axis]
        a, b = _fixed(np.stack([origin, end]))
        cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, 2, cv2.LINE_AA,
                 _SHIFT)
    label = f"id {face.face_id}  y{pose.yaw:+.0f} p{pose.pitch:+.0f} r{pose.roll:+.0f}"
    x0, y1 = int(round(face.box.x0)), int(round(face.box.y1))
    cv2.putText(image, label, (x0, min(image.shape[0] - 4, y1 + 16)), _FONT, 0.45,
                face_color(face.face_id), 1, cv2.LINE_AA)


def annotate(
    image: np.ndarray,
    tracked: TrackedFrame,
    *,
    color_by: ColorBy = "confidence",
    mesh: bool = True,
    boxes: bool = True,
    radius: int = 2,
    inplace: bool = False,
    pose: bool = False,
) -> np.ndarray:
    """Draw every face of ``tracked`` (with ``pose``, its head-pose axes, :func:`draw_pose`)
    and return the annotated image.

    By default draws on a copy and never touches ``image`` (frames may be shared with other
    sinks). With ``inplace=True`` draws on ``image`` itself, which must then be a C-contiguous,
    writable ``uint8`` RGB array, and returns it.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"annotate needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if inplace:
        if not (image.flags.c_contiguous and image.flags.writeable):
            raise ValueError("annotate(inplace=True) needs a C-contiguous writable image")
        out = image
    else:
        out = np.array(image, order="C", copy=True)
    for face in tracked.faces:
        if boxes:
            draw_box(out, face)
        draw_landmarks(out, face, color_by=color_by, radius=radius, mesh=mesh)
        if pose:
            draw_pose(out, face)
    return out


def draw_hud(
    image: np.ndarray,
    text_lines: Sequence[str],
    *,
    corner: Literal["top-left", "top-right"] = "top-left",
    scale: float = 0.5,
) -> np.ndarray:
    """Write ``text_lines`` on a darkened panel in a corner of ``image``, in place; returns it."""
    if not text_lines:
        return image
    pad, gap = 6, 4
    sizes = [cv2.getTextSize(line, _FONT, scale, 1) for line in text_lines]
    line_h = max(h + b for (_, h), b in sizes)
    width = max(w for (w, _), _ in sizes) + 2 * pad
    height = len(text_lines) * (line_h + gap) - gap + 2 * pad
    h_img, w_img = image.shape[:2]
    x0 = 0 if corner == "top-left" else max(0, w_img - width)
    panel = image[0 : min(height, h_img), x0 : min(x0 + width, w_img)]
    np.right_shift(panel, 1, out=panel)  # darken to half for legibility
    for i, (line, ((_, h), _)) in enumerate(zip(text_lines, sizes, strict=True)):
        y = pad + i * (line_h + gap) + h
        cv2.putText(image, line, (x0 + pad, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
