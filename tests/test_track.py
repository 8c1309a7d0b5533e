"""Track-stage logic with the detector and landmarker injected (gating, ROI loop-back, ids)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from tracker.roi import box_from_points
from tracker.track import TrackStage, associate, iou
from tracker.types import Box, Frame

GRID = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(-1, 2)[:68]


@dataclass(frozen=True)
class Pred:
    points: np.ndarray
    confidence: np.ndarray
    presence: float
    box: Box


class ScriptedDetector:
    """Returns ``boxes_at(frame_no)`` and records on which calls it ran."""

    def __init__(self, boxes: list[Box] | None = None) -> None:
        self.boxes = boxes or []
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Box]:
        self.calls += 1
        return list(self.boxes)


class BoxLandmarker:
    """68 points spread over each box (so the tight box of the points is the box itself)."""

    def __init__(self, presence: float = 0.9) -> None:
        self.presence = presence
        self.seen: list[list[Box]] = []

    def predict(self, image: np.ndarray, boxes: Sequence[Box]) -> list[Pred]:
        self.seen.append(list(boxes))
        out = []
        for b in boxes:
            pts = (GRID * [b.width, b.height] + [b.x0, b.y0]).astype(np.float32)
            out.append(Pred(pts, np.full(68, 0.8, np.float32), self.presence, box_from_points(pts)))
        return out


def frame(i: int) -> Frame:
    return Frame(i, i / 30, np.zeros((120, 160, 3), np.uint8))


def run(stage: TrackStage, n: int) -> list:
    return [stage.process(frame(i)) for i in range(n)]


FACE = Box(40, 30, 80, 90, 0.9)
OTHER = Box(100, 20, 140, 70, 0.8)


@pytest.mark.parametrize(
    "rescan_every, frames, calls",
    [(3, 10, 4), (1, 5, 5), (0, 10, 1), (30, 10, 1), (5, 11, 3)],
)
def test_detector_runs_first_then_every_rescan(rescan_every: int, frames: int, calls: int) -> None:
    det = ScriptedDetector([FACE])
    stage = TrackStage(det, BoxLandmarker(), rescan_every=rescan_every)
    out = run(stage, frames)
    assert det.calls == calls == stage.stats.detector_runs
    assert all(len(t.faces) == 1 and t.faces[0].face_id == 0 for t in out)


def test_detector_runs_every_frame_while_faces_are_missing() -> None:
    det = ScriptedDetector([FACE])
    stage = TrackStage(det, BoxLandmarker(), max_faces=2, rescan_every=100)
    run(stage, 6)
    assert det.calls == 6  # only one face ever found, two wanted


def test_between_detections_the_box_comes_from_the_last_landmarks() -> None:
    det, lm = ScriptedDetector([FACE]), BoxLandmarker()
    stage = TrackStage(det, lm, rescan_every=10)
    out = run(stage, 3)
    assert lm.seen[0] == [FACE]
    for prev, boxes in zip(out, lm.seen[1:], strict=False):
        assert boxes == [box_from_points(prev.faces[0].points)]


def test_low_presence_faces_are_dropped_and_redetected() -> None:
    det = ScriptedDetector([FACE])
    stage = TrackStage(det, BoxLandmarker(presence=0.2), presence_threshold=0.5, rescan_every=50)
    out = run(stage, 4)
    assert all(t.faces == () for t in out)
    assert det.calls == 4 and stage.stats.frames_with_faces == 0


def test_ids_are_spent_only_on_faces_that_pass_presence() -> None:
    lm = BoxLandmarker(presence=0.1)
    stage = TrackStage(ScriptedDetector([FACE]), lm, presence_threshold=0.5)
    run(stage, 3)  # rejected three times
    lm.presence = 0.9
    assert [f.face_id for f in stage.process(frame(3)).faces] == [0]
    assert stage.stats.faces_found == 1


@pytest.mark.parametrize("max_faces, found", [(1, 1), (2, 2), (3, 2)])
def test_max_faces_caps_faces_by_detector_score(max_faces: int, found: int) -> None:
    det = ScriptedDetector([OTHER, FACE])  # FACE scores higher
    stage = TrackStage(det, BoxLandmarker(), max_faces=max_faces)
    t = stage.process(frame(0))
    assert len(t.faces) == found
    assert t.faces[0].face_id == 0 and abs(t.faces[0].box.x0 - FACE.x0) < 1e-3


def test_ids_stay_with_moving_faces_and_new_faces_get_new_ids() -> None:
    det = ScriptedDetector([FACE])
    stage = TrackStage(det, BoxLandmarker(), max_faces=2, rescan_every=1)
    first = stage.process(frame(0))
    det.boxes = [Box(44, 32, 84, 92, 0.9), OTHER]  # FACE moved a little; OTHER appears
    second = stage.process(frame(1))
    assert [f.face_id for f in first.faces] == [0]
    by_id = {f.face_id: f.box for f in second.faces}
    assert set(by_id) == {0, 1} and by_id[0].x0 == pytest.approx(44, abs=1e-3)
    assert by_id[1].x0 == pytest.approx(OTHER.x0, abs=1e-3)
    assert stage.stats.faces_found == 2


def test_tracks_that_collapse_onto_one_face_keep_the_older_id() -> None:
    det = ScriptedDetector([FACE, Box(41, 31, 81, 91, 0.5)])  # two boxes on one face
    stage = TrackStage(det, BoxLandmarker(), max_faces=2, iou_threshold=0.99)
    t = stage.process(frame(0))
    assert [f.face_id for f in t.faces] == [0]


def test_min_score_filters_detections() -> None:
    det = ScriptedDetector([Box(40, 30, 80, 90, 0.1)])
    stage = TrackStage(det, BoxLandmarker(), min_score=0.5)
    assert stage.process(frame(0)).faces == ()


def test_landmarks_carry_frame_index_and_time() -> None:
    stage = TrackStage(ScriptedDetector([FACE]), BoxLandmarker())
    t = stage.process(frame(7))
    face = t.faces[0]
    assert (face.frame_index, face.time) == (7, 7 / 30) and t.frame.index == 7
    assert face.points.shape == (68, 2) and face.confidence.shape == (68,)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (Box(0, 0, 10, 10), Box(0, 0, 10, 10), 1.0),
        (Box(0, 0, 10, 10), Box(5, 0, 15, 10), 50 / 150),
        (Box(0, 0, 10, 10), Box(10, 10, 20, 20), 0.0),
        (Box(0, 0, 0, 0), Box(0, 0, 0, 0), 0.0),
    ],
)
def test_iou(a: Box, b: Box, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


def test_associate_is_greedy_by_overlap() -> None:
    tracked = [(3, Box(0, 0, 10, 10)), (5, Box(20, 0, 30, 10))]
    dets = [Box(21, 0, 31, 10), Box(100, 100, 110, 110), Box(1, 0, 11, 10)]
    matched, new = associate(tracked, dets, threshold=0.3)
    assert matched == {3: dets[2], 5: dets[0]} and new == [dets[1]]


def test_max_faces_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TrackStage(ScriptedDetector(), BoxLandmarker(), max_faces=0)
