"""Head pose: angle conventions, and solvePnP on synthetic projections of known rotations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tracker.face68 import EYES, LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from tracker.outputs.headpose import (
    FACE_MODEL_68,
    MODEL_ORIGIN,
    RIGID_POINTS,
    angles_from_rotation,
    camera_matrix,
    estimate_pose,
    project,
    rotation_from_angles,
)

POSES = [
    (0.0, 0.0, 0.0),
    (30.0, 0.0, 0.0),
    (-30.0, 0.0, 0.0),
    (0.0, 20.0, 0.0),
    (0.0, -20.0, 0.0),
    (0.0, 0.0, 25.0),
    (25.0, -15.0, 10.0),
    (-40.0, 10.0, -20.0),
    (45.0, 20.0, -15.0),
]


def view(yaw: float, pitch: float, roll: float, model: np.ndarray = FACE_MODEL_68,
         t: tuple[float, float, float] = (20.0, -10.0, 600.0), size: tuple[int, int] = (640, 480),
         ) -> np.ndarray:
    rvec = cv2.Rodrigues(rotation_from_angles(yaw, pitch, roll))[0]
    return project(model, rvec, np.array(t), *size)


@pytest.mark.parametrize("angles", POSES)
def test_angles_round_trip(angles: tuple[float, float, float]) -> None:
    r = rotation_from_angles(*angles)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(angles_from_rotation(r), angles, atol=1e-9)


@pytest.mark.parametrize("angles, check", [
    ((20.0, 0.0, 0.0), lambda nose, eyes, tilt: nose[0] > eyes[0] + 5),  # yaw: nose right
    ((-20.0, 0.0, 0.0), lambda nose, eyes, tilt: nose[0] < eyes[0] - 5),
    ((0.0, 20.0, 0.0), lambda nose, eyes, tilt: nose[1] - eyes[1] < 30),  # pitch: nose up
    ((0.0, -20.0, 0.0), lambda nose, eyes, tilt: nose[1] - eyes[1] > 45),
    ((0.0, 0.0, 20.0), lambda nose, eyes, tilt: tilt > 10),  # roll: clockwise on screen
    ((0.0, 0.0, -20.0), lambda nose, eyes, tilt: tilt < -10),
])
def test_angle_signs_mean_what_the_docs_say(angles: tuple[float, float, float],
                                            check: object) -> None:
    pts = view(*angles, t=(0.0, 0.0, 600.0))
    right, left = pts[RIGHT_EYE_OUTER], pts[LEFT_EYE_OUTER]  # image left, image right
    tilt = left[1] - right[1]  # image-right eye lower than image-left: clockwise
    assert check(pts[MODEL_ORIGIN], (right + left) / 2, tilt)  # type: ignore[operator]


def test_model_is_symmetric_and_frontal() -> None:
    pts = view(0.0, 0.0, 0.0, t=(0.0, 0.0, 600.0))
    assert not FACE_MODEL_68[MODEL_ORIGIN].any()  # the nose tip is the origin...
    assert abs(pts[MODEL_ORIGIN][0] - 320) < 1e-6  # ...on the optical axis
    right, left = FACE_MODEL_68[RIGHT_EYE_OUTER], FACE_MODEL_68[LEFT_EYE_OUTER]
    assert right[0] < 0 < left[0]  # the subject's right eye is on the image's left
    assert abs(pts[RIGHT_EYE_OUTER][1] - pts[LEFT_EYE_OUTER][1]) < 1e-6
    assert np.linalg.norm(right - left) == pytest.approx(92.0, abs=0.2)


@pytest.mark.parametrize("angles", POSES)
@pytest.mark.parametrize("variant", ["exact", "smaller head, 0.5 px noise",
                                     "larger head, 0.5 px noise", "1 mm shape jitter"])
def test_pose_recovers_known_rotation_within_3_degrees(angles: tuple[float, float, float],
                                                       variant: str) -> None:
    rng = np.random.default_rng([int(a) + 1000 for a in angles] + [len(variant)])
    model, noise = FACE_MODEL_68, 0.0
    if variant.startswith("smaller"):
        model, noise = FACE_MODEL_68 * 0.9, 0.5
    elif variant.startswith("larger"):
        model, noise = FACE_MODEL_68 * 1.1, 0.5
    elif variant.startswith("1 mm"):
        model = FACE_MODEL_68 + rng.normal(0.0, 1.0, FACE_MODEL_68.shape)
    pts = view(*angles, model=model) + rng.normal(0.0, noise, (68, 2))
    pose = estimate_pose(pts, 640, 480)
    assert pose is not None
    assert np.abs(np.subtract((pose.yaw, pose.pitch, pose.roll), angles)).max() < 3.0
    assert pose.tvec[2] > 0 and pose.error < 3.0
    if variant == "exact":
        np.testing.assert_allclose(pose.tvec, (20.0, -10.0, 600.0), atol=0.5)


def test_low_confidence_and_missing_points_are_left_out() -> None:
    pts = view(20.0, 5.0, -5.0)
    conf = np.ones(68, np.float32)
    bad = pts.copy()
    bad[EYES] += 40.0  # eyes way off...
    conf[EYES] = 0.0  # ...but flagged as unreliable
    bad[17] = np.nan
    pose = estimate_pose(bad, 640, 480, conf)
    assert pose is not None
    assert np.abs(np.subtract((pose.yaw, pose.pitch, pose.roll), (20.0, 5.0, -5.0))).max() < 1.0


@pytest.mark.parametrize("points", [
    np.zeros((5, 2)),  # not 68 points
    np.full((68, 2), np.nan),
    np.where(np.isin(np.arange(68), RIGID_POINTS[:5])[:, None], 100.0, np.nan),  # too few
])
def test_unsolvable_input_gives_none(points: np.ndarray) -> None:
    assert estimate_pose(points, 640, 480) is None


@pytest.mark.parametrize("size, expected", [
    ((640, 480), [[640, 0, 320], [0, 640, 240], [0, 0, 1]]),
    ((360, 640), [[640, 0, 180], [0, 640, 320], [0, 0, 1]]),  # portrait: f = longer side
])
def test_camera_matrix(size: tuple[int, int], expected: list[list[float]]) -> None:
    np.testing.assert_allclose(camera_matrix(*size), expected)


@pytest.mark.parametrize("pose", POSES)
def test_the_numba_refinement_finds_opencvs_minimum(pose: tuple[float, float, float]) -> None:
    from tracker.outputs.pnp import refine_pose, rodrigues

    rng = np.random.default_rng(int(sum(pose)) + 100)
    idx = np.asarray(RIGID_POINTS)
    obj = np.ascontiguousarray(FACE_MODEL_68[idx])
    cam = camera_matrix(640, 480)
    img = view(*pose)[idx] + rng.normal(0, 2.0, (idx.size, 2))  # noisy: a real minimum
    start_r = cv2.Rodrigues(rotation_from_angles(*(a + 8.0 for a in pose)))[0]
    start_t = np.array([[0.0], [0.0], [700.0]])  # well off the truth
    ref_r, ref_t = cv2.solvePnPRefineLM(obj.reshape(-1, 1, 3), img.reshape(-1, 1, 2), cam, None,
                                        start_r.copy(), start_t.copy())
    r, t = refine_pose(obj, np.ascontiguousarray(img), cam, start_r.ravel(), start_t.ravel())
    assert np.abs(r - ref_r.ravel()).max() < 1e-5 and np.abs(t - ref_t.ravel()).max() < 1e-2
    assert np.allclose(rodrigues(r), cv2.Rodrigues(r)[0], atol=1e-12)
    assert np.allclose(rodrigues(np.zeros(3)), np.eye(3))
