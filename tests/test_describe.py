"""What apps consume: head pose with configured intrinsics, expression signals, blinks through
the smoothing, mirroring, and the records every output shares."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tracker.face68 import FLIP_PERM
from tracker.outputs.describe import DescribeStage, ExpressionStage
from tracker.outputs.expression import BLINK_CLOSED, EAR_CLOSED_RATIO, expression
from tracker.outputs.headpose import (
    FACE_MODEL_68,
    PoseConfig,
    estimate_pose,
    project,
    rotation_from_angles,
)
from tracker.outputs.record import face_record
from tracker.temporal.smoothing import OneEuroParams, Smoother
from tracker.types import Box, Frame, Landmarks, TrackedFrame

W, H = 640, 480
CAMERA = PoseConfig(fx=900.0, fy=880.0, cx=300.0, cy=250.0)


def projected(yaw: float, pitch: float, roll: float, camera: PoseConfig = CAMERA,
              t: tuple[float, float, float] = (30.0, -20.0, 650.0)) -> np.ndarray:
    rvec = cv2.Rodrigues(rotation_from_angles(yaw, pitch, roll))[0]
    return project(FACE_MODEL_68, rvec, np.array(t), W, H, camera).astype(np.float32)


def face(points: np.ndarray, index: int = 0, fid: int = 1) -> Landmarks:
    return Landmarks(index, index / 30.0, fid, points.astype(np.float32),
                     np.ones(68, np.float32), 0.9, Box(0, 0, 1, 1))


def frame(faces: tuple[Landmarks, ...], index: int = 0) -> TrackedFrame:
    image = np.zeros((H, W, 3), np.uint8)
    image[:, : W // 2] = 200  # the left half bright: a mirror moves it right
    return TrackedFrame(Frame(index, index / 30.0, image), faces)


@pytest.mark.parametrize("angles", [(25.0, -10.0, 8.0), (-35.0, 15.0, -12.0), (0.0, 0.0, 0.0)])
def test_a_known_pose_is_recovered_within_a_degree_with_the_configured_camera(
        angles: tuple[float, float, float]) -> None:
    pose = estimate_pose(projected(*angles), W, H, camera=CAMERA)
    assert pose is not None
    assert np.abs(np.array([pose.yaw, pose.pitch, pose.roll]) - angles).max() < 1.0
    np.testing.assert_allclose(pose.tvec, (30.0, -20.0, 650.0), atol=1.0)
    wrong = estimate_pose(projected(*angles), W, H)  # the default camera: f = 640, centred
    assert wrong is not None and wrong.error > 5 * pose.error + 0.5


def test_camera_intrinsics_from_the_config() -> None:
    assert PoseConfig().camera_matrix(W, H)[0, 0] == W  # f = the longer side
    k = PoseConfig(fov_deg=90.0).camera_matrix(W, H)
    assert k[0, 0] == pytest.approx(W / 2) and k[1, 1] == pytest.approx(W / 2)
    k = PoseConfig(fx=700.0, cy=200.0).camera_matrix(W, H)
    assert (k[0, 0], k[1, 1], k[0, 2], k[1, 2]) == (700.0, 700.0, W / 2, 200.0)


def test_signals_do_not_depend_on_face_size_position_or_roll() -> None:
    pts = projected(0.0, 0.0, 0.0)
    c = pts.mean(axis=0)
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    moved = (pts - c) @ rot.T * 2.5 + c + (40.0, -30.0)
    a, b = expression(pts), expression(moved)
    for name in ("eye_open_left", "mouth_open", "mouth_wide", "brow_raise_right"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-4), name


def test_left_and_right_are_the_subjects() -> None:
    pts = projected(0.0, 0.0, 0.0)
    shut = pts.copy()
    shut[[43, 44]] = pts[[47, 46]]  # the subject's left eye (42-47, the image's right) closes
    open_, closed = expression(pts), expression(shut)
    assert pts[45, 0] > pts[36, 0]  # the subject's left eye is on the image's right
    assert closed.eye_open_left == 0.0 and closed.eye_open_right == open_.eye_open_right
    raised = pts.copy()
    raised[22:27, 1] -= 8.0  # the subject's left brow goes up
    assert expression(raised).brow_raise_left > open_.brow_raise_left + 0.2
    assert expression(raised).brow_raise_right == open_.brow_raise_right
    gaping = pts.copy()
    gaping[[65, 66, 67], 1] += 20.0  # the lower inner lip drops
    assert expression(gaping).mouth_open > open_.mouth_open + 0.3


def blink_points(base: np.ndarray, n_open: int = 20, closing: int = 4) -> list[np.ndarray]:
    """Open, the lids moving as far as the model moves them on a closed eye, open again."""
    rng = np.random.default_rng(0)
    k = (closing + 1) // 2
    depth = 1.0 - EAR_CLOSED_RATIO
    curve = [0.0] * n_open + [min(i + 1, closing - i) / k for i in range(closing)] + [0.0] * n_open
    out = []
    for c in curve:
        p = base.astype(np.float64).copy()
        for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
            p[up] += depth * c * (base[lo] - base[up])
        out.append(p + rng.normal(0.0, 0.1, p.shape))
    return out


def test_a_blink_survives_the_default_smoothing_and_fires_once() -> None:
    base = projected(0.0, 0.0, 0.0)
    smoother, stage = Smoother(OneEuroParams()), ExpressionStage()
    opens, blinks = [], []
    for i, p in enumerate(blink_points(base)):
        tracked = smoother(stage.process(frame((face(p, i),), i)))  # the pipeline's order
        e = tracked.faces[0].expression
        assert e is not None  # the smoother keeps it
        opens.append(e.eye_open_left)
        blinks.append(e.blink_left and e.blink_right)
    assert min(opens) < BLINK_CLOSED and min(opens[:20]) > 0.8
    assert sum(blinks) == 1 and 20 <= blinks.index(True) <= 23
    # the same points smoothed first (a stage after smoothing) lose the blink
    late, smoother = ExpressionStage(None), Smoother(OneEuroParams())
    after = [late.process(smoother(frame((face(p, i),), i))).faces[0].expression
             for i, p in enumerate(blink_points(base))]
    assert min(e.eye_open_left for e in after if e) > BLINK_CLOSED


def test_describe_sets_the_pose_and_mirror_keeps_the_subjects_labels() -> None:
    pts = projected(20.0, 0.0, 5.0, camera=PoseConfig())
    plain = DescribeStage().process(frame((face(pts),)))
    mirrored = DescribeStage(mirror=True).process(frame((face(pts),)))
    a, b = plain.faces[0], mirrored.faces[0]
    assert a.pose is not None and b.pose is not None and a.expression is not None
    assert a.pose.yaw == pytest.approx(20.0, abs=1.0)
    assert (b.pose.yaw, b.pose.roll, b.pose.pitch) == (-a.pose.yaw, -a.pose.roll, a.pose.pitch)
    np.testing.assert_allclose(b.points[:, 0], W - 1 - a.points[:, 0], atol=1e-3)
    assert b.points[45, 0] < b.points[36, 0]  # the subject's left eye, now on the image's left
    assert b.expression == a.expression
    assert mirrored.image[0, -1, 0] == 200 and mirrored.image[0, 0, 0] == 0
    # what the mirrored view shows, labelled as a face seen unmirrored, has the mirrored pose
    again = estimate_pose(b.points[FLIP_PERM], W, H)
    assert again is not None and again.yaw == pytest.approx(b.pose.yaw, abs=1.5)


def test_the_record_carries_pose_and_expression_once_described() -> None:
    f = face(projected(10.0, 5.0, 0.0, camera=PoseConfig()))
    assert set(face_record(f)) == {"id", "box", "points", "confidence", "presence"}
    described = DescribeStage().process(frame((f,))).faces[0]
    rec = face_record(described)
    assert list(rec)[:5] == ["id", "box", "points", "confidence", "presence"]
    assert rec["points"] == face_record(f)["points"]  # the existing keys are untouched
    assert set(rec["pose"]) == {"yaw", "pitch", "roll", "rvec", "tvec", "error"}
    assert rec["expression"]["blink_left"] is False
    assert 0.0 <= rec["expression"]["eye_open_left"] <= 1.0
    nan = described.points.copy()
    nan[:] = np.nan
    rec = face_record(DescribeStage().process(frame((face(nan),))).faces[0])
    assert rec["pose"] is None and rec["expression"]["mouth_open"] is None
    json.dumps(rec, allow_nan=False)


def _stage_names(**outputs: object) -> set[str]:
    """The stages of a run graph built with ``outputs`` (stub stages; nothing runs)."""
    from fractions import Fraction

    from tracker.api import assembly
    from tracker.config.schema import Config
    from tracker.io.specs import SourceInfo
    from tracker.runtime.pipeline import FunctionStage, IterableSource

    overrides = {k: outputs.pop(k) for k in ("run.mirror", "pose.draw") if k in outputs}
    cfg = Config().with_overrides(overrides) if overrides else Config()
    info = SourceInfo("clip.mp4", "file", 64, 48, 30.0, Fraction(1, 30), False, None, 1, False)
    pipe = assembly.build_pipeline(
        cfg, IterableSource("decode", []), info, FunctionStage("track", lambda x: x),
        **outputs, **assembly.describe_stages(cfg))
    return {inner.name for s in pipe.stages for inner in getattr(s, "stages", (s,))}


def test_expression_and_pose_are_computed_only_when_an_output_reads_them() -> None:
    from tracker.api.multi import LatencySink
    from tracker.runtime.pipeline import FunctionStage

    sink = FunctionStage("jsonl", lambda x: None)
    assert {"expression", "describe"} <= _stage_names(writer=object(), jsonl=sink)
    assert {"expression", "describe"} <= _stage_names(extra=FunctionStage("api", lambda x: x))
    drawn = _stage_names(writer=object())
    assert "render" in drawn and not drawn & {"expression", "describe"}
    assert not _stage_names(writer=object(), extra=LatencySink()) & {"expression", "describe"}
    for key in ("run.mirror", "pose.draw"):  # the describe stage mirrors and solves drawn axes
        names = _stage_names(writer=object(), **{key: True})
        assert "describe" in names and "expression" not in names
