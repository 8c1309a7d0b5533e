"""Head pose from 68 landmarks: solvePnP against a generic 3D face, angles in degrees.

The model (:data:`FACE_MODEL_68`) is our own: x/y are the symmetrised Procrustes mean of the
faces68 training shapes, scaled so the outer eye corners are 92 mm apart; z is a hand-made depth
profile (nose tip forward, eyes ~35-50 mm and the ear end of the jaw ~90 mm behind it). Units are
roughly millimetres. The model frame matches the camera's for a face looking straight into it:
x to the image's right, y down, z away from the camera; the origin is the nose tip (point 30).

Angles decompose the model-to-camera rotation as ``R = Ry(-yaw) @ Rx(-pitch) @ Rz(roll)``:

* ``yaw > 0``: the face turns toward the image's right edge (the nose moves right);
* ``pitch > 0``: the face tilts up (the nose moves up);
* ``roll > 0``: the head tilts clockwise in the image.

The camera is a pinhole (:func:`camera_matrix`; lens distortion is ignored) whose intrinsics
come from the ``[pose]`` config section (:class:`PoseConfig`): ``fx fy cx cy`` in pixels, or a
field of view; unknown (0), the focal length is ``max(width, height)`` pixels and the principal
point the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tracker.face68 import (
    BROWS,
    EYES,
    LEFT_MOUTH_CORNER,
    N_POINTS,
    NOSE,
    NOSE_TIP,
    RIGHT_MOUTH_CORNER,
    UPPER_LIP_TOP,
)
from tracker.outputs.pnp import refine_pose
from tracker.types import HeadPose

# fmt: off
FACE_MODEL_68: np.ndarray = np.array([
    # jaw 0-16 (right ear end -> chin -> left ear end, as seen in the image)
    [-79.7, -38.0, 92.0], [-78.7, -17.0, 88.0], [-75.3, 2.0, 82.0], [-71.4, 20.4, 76.0],
    [-64.8, 40.9, 66.0], [-53.4, 57.9, 54.0], [-41.0, 69.2, 42.0], [-24.7, 79.3, 32.0],
    [0.0, 85.7, 28.0],
    [24.7, 79.3, 32.0], [41.0, 69.2, 42.0], [53.4, 57.9, 54.0], [64.8, 40.9, 66.0],
    [71.4, 20.4, 76.0], [75.3, 2.0, 82.0], [78.7, -17.0, 88.0], [79.7, -38.0, 92.0],
    # brows 17-26
    [-60.6, -57.3, 52.0], [-51.3, -63.5, 42.0], [-39.6, -65.4, 35.0], [-29.0, -64.3, 30.0],
    [-19.4, -61.6, 27.0],
    [19.4, -61.6, 27.0], [29.0, -64.3, 30.0], [39.6, -65.4, 35.0], [51.3, -63.5, 42.0],
    [60.6, -57.3, 52.0],
    # nose bridge 27-30 (30 = tip, the origin), lower nose 31-35
    [0.0, -38.8, 22.0], [0.0, -24.7, 15.0], [0.0, -11.3, 8.0], [0.0, 0.0, 0.0],
    [-12.9, 8.2, 18.0], [-7.4, 9.8, 13.0], [0.0, 11.5, 11.0], [7.4, 9.8, 13.0],
    [12.9, 8.2, 18.0],
    # eyes 36-41 and 42-47
    [-46.0, -40.4, 48.0], [-38.6, -43.2, 38.0], [-29.1, -43.1, 36.0], [-20.4, -39.3, 34.0],
    [-28.5, -36.5, 37.0], [-38.4, -36.5, 40.0],
    [20.4, -39.3, 34.0], [29.1, -43.1, 36.0], [38.6, -43.2, 38.0], [46.0, -40.4, 48.0],
    [38.4, -36.5, 40.0], [28.5, -36.5, 37.0],
    # outer lip 48-59
    [-27.2, 34.3, 34.0], [-18.0, 28.5, 24.0], [-6.2, 24.9, 19.0], [0.0, 26.2, 17.0],
    [6.2, 24.9, 19.0], [18.0, 28.5, 24.0], [27.2, 34.3, 34.0], [17.5, 42.6, 25.0],
    [9.2, 47.3, 20.0], [0.0, 48.1, 19.0], [-9.2, 47.3, 20.0], [-17.5, 42.6, 25.0],
    # inner lip 60-67
    [-25.2, 34.0, 31.0], [-8.0, 32.0, 21.0], [0.0, 31.7, 20.0], [8.0, 32.0, 21.0],
    [25.2, 34.0, 31.0], [7.9, 37.7, 22.0], [0.0, 38.4, 21.0], [-7.9, 37.7, 22.0],
], dtype=np.float64)
# fmt: on
"""Generic 3D face, 68 iBUG points, millimetres; see the module docstring for the frame."""

MODEL_ORIGIN: int = NOSE_TIP
"""The point at the origin of :data:`FACE_MODEL_68` (the nose tip)."""

RIGID_POINTS: tuple[int, ...] = (
    *BROWS, *NOSE, *EYES, RIGHT_MOUTH_CORNER, UPPER_LIP_TOP, LEFT_MOUTH_CORNER
)
"""Points used for the pose: brows, nose, eyes and the upper mouth. The jaw line is a
silhouette that slides over the face as it turns, and the lower lip moves with the jaw."""

MIN_POINTS = 6


@dataclass(frozen=True, slots=True)
class PoseConfig:
    """The camera the head poses are solved for (the ``[pose]`` config section); 0 = unknown.

    ``fx``/``fy`` (pixels of the displayed frame) win over ``fov_deg``; one of them alone
    serves for both. ``fov_deg`` is the field of view across the frame's longer side. With
    neither, f = the longer side (a 53 degree field of view). ``cx``/``cy`` default to the
    image centre. ``draw`` draws each face's pose axes in ``--out`` / ``--show``.
    """

    fx: float = 0.0
    fy: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    fov_deg: float = 0.0  # across the longer side; 0 = unknown
    draw: bool = False  # pose axes in the annotated video / preview

    def camera_matrix(self, width: int, height: int) -> np.ndarray:
        """3x3 intrinsics for a ``width`` x ``height`` frame."""
        side = float(max(width, height))
        fx, fy = self.fx or self.fy, self.fy or self.fx
        if not fx:
            fx = fy = (side / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))
                       if self.fov_deg > 0 else side)
        cx, cy = self.cx or width / 2.0, self.cy or height / 2.0
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


_DEFAULT_CAMERA = PoseConfig()


def camera_matrix(width: int, height: int, camera: PoseConfig | None = None) -> np.ndarray:
    """3x3 intrinsics of a ``width`` x ``height`` frame (default camera: f = the longer side)."""
    return (camera or _DEFAULT_CAMERA).camera_matrix(width, height)


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Model-to-camera rotation for angles in degrees (inverse of :func:`angles_from_rotation`)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    return _ry(-y) @ _rx(-p) @ _rz(r)


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a model-to-camera rotation matrix."""
    r = np.asarray(rotation, np.float64)
    theta_x = math.asin(max(-1.0, min(1.0, -r[1, 2])))
    theta_y = math.atan2(r[0, 2], r[2, 2])
    theta_z = math.atan2(r[1, 0], r[1, 1])
    return -math.degrees(theta_y), -math.degrees(theta_x), math.degrees(theta_z)


def project(
    model: np.ndarray, rvec: np.ndarray, tvec: np.ndarray, width: int, height: int,
    camera: PoseConfig | None = None,
) -> np.ndarray:
    """Pixel positions ``(N, 2)`` of 3D model points seen with pose ``rvec``/``tvec``."""
    pts, _ = cv2.projectPoints(
        np.asarray(model, np.float64).reshape(-1, 1, 3),
        np.asarray(rvec, np.float64).reshape(3, 1),
        np.asarray(tvec, np.float64).reshape(3, 1),
        camera_matrix(width, height, camera),
        None,
    )
    return pts.reshape(-1, 2)


def estimate_pose(
    points: np.ndarray,
    width: int,
    height: int,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.1,
    camera: PoseConfig | None = None,
) -> HeadPose | None:
    """Head pose of one face from its 68 points in frame pixels; None when it cannot be solved.

    Uses the :data:`RIGID_POINTS` that are finite (and at least ``min_confidence`` when
    ``confidence`` is given); at least :data:`MIN_POINTS` are needed. SQPnP gives a global
    solution, refined with Levenberg-Marquardt (:func:`tracker.outputs.pnp.refine_pose`: the
    same minimum as ``cv2.solvePnPRefineLM`` at ~1/20 of its cost).
    """
    pts = np.asarray(points, np.float64)
    if pts.shape != (N_POINTS, 2):
        return None
    idx = np.asarray(RIGID_POINTS)
    ok = np.isfinite(pts[idx]).all(axis=1)
    if confidence is not None:
        conf = np.asarray(confidence, np.float64)
        if conf.shape == (N_POINTS,):
            ok &= np.nan_to_num(conf[idx], nan=0.0) >= min_confidence
    idx = idx[ok]
    if idx.size < MIN_POINTS:
        return None
    obj = FACE_MODEL_68[idx].reshape(-1, 1, 3)
    img = pts[idx].reshape(-1, 1, 2)
    cam = camera_matrix(width, height, camera)
    try:
        found, rvec, tvec = cv2.solvePnP(obj, img, cam, None, flags=cv2.SOLVEPNP_SQPNP)
        if not found:
            return None
    except cv2.error:
        return None
    rvec, tvec = refine_pose(np.ascontiguousarray(obj.reshape(-1, 3)),
                             np.ascontiguousarray(img.reshape(-1, 2)), cam,
                             rvec.reshape(3).astype(np.float64), tvec.reshape(3).astype(np.float64))
    if not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2] <= 0:
        return None
    reproj = project(FACE_MODEL_68[idx], rvec, tvec, width, height, camera)
    error = float(np.sqrt(np.mean(np.sum((reproj - pts[idx]) ** 2, axis=1))))
    yaw, pitch, roll = angles_from_rotation(cv2.Rodrigues(rvec)[0])
    return HeadPose(yaw, pitch, roll, rvec, tvec, error)
