"""Track stage with injected detector/landmarker: gating, rotated ROI loop-back, ids, cuts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tracker.geometry import (
    box_affine,
    box_from_points,
    eye_angle,
    invert_affine,
    rotated_roi,
    transform_points,
)
from tracker.landmarker import FacePrediction as Pred
from tracker.temporal.denoiser import TemporalConfig, TemporalDenoiser
from tracker.tracking.face_tracker import Roi, TrackConfig, TrackStage, associate, iou
from tracker.types import Box, Frame

# 68 points on a 17 x 4 grid: the eye points (36-47) lie on one row, so the eye line is level
GRID = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(-1, 2)[:68]


def face(cx: float, cy: float, size: float = 40.0, angle_deg: float = 0.0) -> np.ndarray:
    """Grid face of ``size`` px centred on (cx, cy), rotated by ``angle_deg``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ((GRID - 0.5) * size @ rot.T + [cx, cy]).astype(np.float32)


class World:
    """Ground truth of a synthetic clip; its detector and landmarker look only at it.

    The landmarker returns the true points of the face whose centre is nearest the region's
    centre and inside it, else junk with presence 0.05; it records every region and angle.
    """

    def __init__(self) -> None:
        self.faces: list[np.ndarray] = []
        self.detector_calls = 0
        self.calls: list[tuple[list[Box], list[float]]] = []
        self.detectable = True
        self.min_score = 0.9
        self.decoys: list[np.ndarray] = []  # no face, but a region on one gets presence 0.2

    def detect(self, image: np.ndarray) -> list[Box]:
        self.detector_calls += 1
        if not self.detectable:
            return []
        return [Box(*box_from_points(f).as_list()[:4], self.min_score) for f in self.faces]

    def predict(self, image: np.ndarray, boxes: Sequence[Box],
                angles: Sequence[float] | None = None) -> list[Pred]:
        angles = list(angles) if angles is not None else [0.0] * len(boxes)
        self.calls.append((list(boxes), angles))
        out = []
        for b in boxes:
            cx, cy = b.center
            half = 0.5 * 1.25 * max(b.width, b.height)
            near = [f for f in self.faces
                    if np.abs(f.mean(0) - [cx, cy]).max() < half]
            decoys = [f for f in self.decoys if np.abs(f.mean(0) - [cx, cy]).max() < half]
            if near:
                best = min(near, key=lambda f: float(np.linalg.norm(f.mean(0) - [cx, cy])))
                out.append(Pred(best.copy(), np.full(68, 0.9, np.float32), 0.9,
                                box_from_points(best)))
            elif decoys:
                out.append(Pred(decoys[0].copy(), np.full(68, 0.2, np.float32), 0.2,
                                box_from_points(decoys[0])))
            else:
                junk = face(cx, cy, 10.0)
                out.append(Pred(junk, np.full(68, 0.05, np.float32), 0.05, box_from_points(junk)))
        return out


def blank(i: int, level: int = 0) -> Frame:
    return Frame(i, i / 30, np.full((120, 160, 3), level, np.uint8))


def stage(world: World, **kw: Any) -> TrackStage:
    """A track stage on ``world``: ``min_score`` and ``denoiser`` as given, the rest options."""
    extra = {k: kw.pop(k) for k in ("min_score", "denoiser") if k in kw}
    return TrackStage(world, world, TrackConfig(**kw), **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rescan_every, frames, calls",
    [(3, 10, 4), (1, 5, 5), (0, 10, 1), (30, 10, 1), (5, 11, 3)],
)
def test_detector_runs_first_then_every_rescan(rescan_every: int, frames: int, calls: int) -> None:
    w = World()
    w.faces = [face(60, 60)]
    st = stage(w, rescan_every=rescan_every)
    out = [st.process(blank(i)) for i in range(frames)]
    assert w.detector_calls == calls == st.stats.detector_runs
    assert all(len(t.faces) == 1 and t.faces[0].face_id == 0 for t in out)


@pytest.mark.parametrize("max_faces, calls", [(1, 1), (2, 6), (5, 6)])
def test_detector_runs_every_frame_while_faces_are_missing(max_faces: int, calls: int) -> None:
    w = World()
    w.faces = [face(60, 60)]
    st = stage(w, max_faces=max_faces, rescan_every=100, search_every=1)
    for i in range(6):
        st.process(blank(i))
    assert w.detector_calls == calls


@pytest.mark.parametrize("max_faces, search_every, calls", [
    (1, 3, 1), (2, 3, 3), (2, 2, 4), (5, 4, 2), (2, 1, 7)])
def test_a_search_that_leaves_a_slot_free_repeats_every_search_every_frames(
        max_faces: int, search_every: int, calls: int) -> None:
    w = World()
    w.faces = [face(60, 60)]
    st = stage(w, max_faces=max_faces, rescan_every=100, search_every=search_every)
    out = [st.process(blank(i)) for i in range(7)]
    assert w.detector_calls == calls == st.stats.detector_runs
    assert all(len(t.faces) == 1 for t in out)


def test_a_face_appearing_mid_shot_is_found_within_search_every_frames() -> None:
    w = World()
    st = stage(w, rescan_every=100, search_every=3)
    seen = [len(st.process(blank(i)).faces) for i in range(4)]  # nobody: runs on 0 and 3
    assert seen == [0, 0, 0, 0] and w.detector_calls == 2
    w.faces = [face(60, 60)]
    seen = [len(st.process(blank(i)).faces) for i in range(4, 8)]
    assert seen == [0, 0, 1, 1]  # found on frame 6, the next run
    assert w.detector_calls == 3


def test_a_lost_face_is_searched_for_on_the_next_frame_and_a_cut_at_once() -> None:
    w = World()
    w.faces = [face(60, 60)]
    st = stage(w, rescan_every=100, search_every=5)
    st.process(blank(0))
    w.faces = []  # the face leaves: lost on frame 1 (no detection that frame)
    assert st.process(blank(1)).faces == ()
    calls = w.detector_calls
    st.process(blank(2))  # searched at once, finds nothing
    assert w.detector_calls == calls + 1
    st.process(blank(3))  # then waits
    assert w.detector_calls == calls + 1
    w.faces = [face(60, 60)]
    assert len(st.process(blank(4, level=200)).faces) == 1  # a cut: searched at once
    assert w.detector_calls == calls + 2


@pytest.mark.parametrize("angle_deg", [0.0, 25.0, -40.0])
@pytest.mark.parametrize("roi_scale", [1.25, 1.5])
def test_next_region_is_the_rotated_enlarged_roi_of_the_last_points(angle_deg: float,
                                                                    roi_scale: float) -> None:
    w = World()
    w.faces = [face(70, 60, 40, angle_deg)]
    st = stage(w, roi_scale=roi_scale, motion=0.0)
    st.process(blank(0))
    st.process(blank(1))
    boxes, angles = w.calls[-1]
    assert angles[0] == pytest.approx(math.radians(angle_deg), abs=1e-5)
    # the crop the landmarker takes is roi_scale x the upright face, centred on it
    m = box_affine(boxes[0], 100, angle=angles[0])
    upright = transform_points(m, w.faces[0])
    span = upright.max(0) - upright.min(0)
    assert span.max() == pytest.approx(100 / roi_scale, rel=1e-3)
    assert upright.mean(0) == pytest.approx([49.5, 49.5], abs=1e-3)
    assert np.ptp(upright[36:48, 1]) < 1e-3  # the eye line is level


@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 170.0])
def test_roi_affine_round_trip(angle_deg: float) -> None:
    pts = face(200, 120, 80, angle_deg) + np.random.default_rng(0).normal(0, 2, (68, 2))
    center, side, angle = rotated_roi(pts, 1.5)
    roi = Roi(center, side, angle)
    m = box_affine(roi.box, 64, angle=roi.angle)
    crop_pts = transform_points(m, pts)
    assert abs(eye_angle(crop_pts)) < 1e-4  # upright in the crop
    back = transform_points(invert_affine(m), crop_pts)
    np.testing.assert_allclose(back, pts, atol=1e-3)


def test_motion_prediction_moves_the_region_with_the_face() -> None:
    w = World()
    st = stage(w, motion=1.0, roi_scale=1.5)
    for i in range(4):
        w.faces = [face(40 + 6 * i, 60)]
        st.process(blank(i))
    boxes, _ = w.calls[-1]
    # frame 3's region: frame 2's face (40 + 12) moved by its last step (6)
    assert boxes[0].center[0] == pytest.approx(40 + 6 * 3, abs=1e-3)


@pytest.mark.parametrize("step_px, held", [(0.5, True), (3.0, False)])
def test_a_still_face_keeps_its_crop(step_px: float, held: bool) -> None:
    w = World()
    st = stage(w, roi_scale=1.5, roi_hold=0.03)  # 3 % of a 60 px crop: 1.8 px
    for i in range(3):
        w.faces = [face(60 + step_px * i, 60, 40)]
        st.process(blank(i))
    (first,), _ = w.calls[2]  # frame 1 (frame 0 took two calls)
    (second,), _ = w.calls[3]
    assert (first == second) is held


def test_new_faces_are_located_twice_second_time_upright() -> None:
    w = World()
    w.faces = [face(70, 60, 40, 30.0)]
    st = stage(w)
    st.process(blank(0))
    assert len(w.calls) == 2
    assert w.calls[0][1] == [0.0] and w.calls[1][1][0] == pytest.approx(math.radians(30), abs=1e-5)


def test_two_faces_crossing_paths_keep_their_ids() -> None:
    w = World()
    st = stage(w, max_faces=2, rescan_every=1, motion=0.5)
    ids_at: list[dict[int, float]] = []
    for i in range(30):
        a = face(20 + 4 * i, 50, 30)  # moving right
        b = face(140 - 4 * i, 72, 30)  # moving left, a little lower: boxes overlap mid-way
        w.faces = [a, b]
        t = st.process(blank(i))
        ids_at.append({f.face_id: float(f.points[:, 0].mean()) for f in t.faces})
    first, last = ids_at[0], ids_at[-1]
    assert set(first) == set(last) == {0, 1}
    mover = min(first, key=first.get)  # the face that started on the left
    assert last[mover] == max(last.values())  # ... ends on the right with the same id
    assert all(len(x) == 2 for x in ids_at)


@pytest.mark.parametrize(
    "gap, discard_after, same_id",
    [(3, 10, True), (10, 10, True), (12, 10, False), (3, 0, False)],
)
def test_a_face_back_within_discard_after_frames_gets_its_id_back(
    gap: int, discard_after: int, same_id: bool
) -> None:
    w = World()
    st = stage(w, discard_after=discard_after, rescan_every=0, search_every=1)
    w.faces = [face(60, 60)]
    first = st.process(blank(0)).faces[0].face_id
    w.faces = []
    for i in range(gap):
        assert st.process(blank(1 + i)).faces == ()
    w.faces = [face(66, 58)]  # back, close to where it left
    again = st.process(blank(1 + gap)).faces[0].face_id
    assert (again == first) is same_id
    assert st.stats.faces_found == (1 if same_id else 2)


def test_a_face_back_far_from_where_it_was_lost_gets_a_new_id() -> None:
    w = World()
    st = stage(w, discard_after=30)
    w.faces = [face(30, 60)]
    st.process(blank(0))
    w.faces = []
    st.process(blank(1))
    w.faces = [face(130, 60)]
    assert st.process(blank(2)).faces[0].face_id == 1


@pytest.mark.parametrize("new_shot_faces, ids", [([], []), ([(130, 60)], [1]), ([(62, 60)], [1])])
def test_a_scene_cut_drops_stale_faces_at_once(new_shot_faces: list[tuple[int, int]],
                                               ids: list[int]) -> None:
    w = World()
    st = stage(w, rescan_every=100)
    w.faces = [face(60, 60)]
    for i in range(3):
        st.process(blank(i, 10))
    # new shot: the old region still "sees" a face (say the back of a head the detector
    # does not report); without the cut check it would be tracked on for 100 frames
    w.detectable = False
    w.faces = [face(60, 60)]
    detections = [face(*c) for c in new_shot_faces]
    w.detect = lambda image: [box_from_points(f) for f in detections]  # type: ignore[method-assign]
    w.faces += detections
    t = st.process(blank(3, 200))
    assert st.stats.cuts == 1 and st.detected
    assert [f.face_id for f in t.faces] == ids  # no id survives a cut


def test_low_presence_faces_are_dropped_and_redetected() -> None:
    w = World()
    w.faces = [face(60, 60)]
    st = stage(w, presence_threshold=0.95, rescan_every=50, search_every=1)
    out = [st.process(blank(i)) for i in range(4)]
    assert all(t.faces == () for t in out)
    assert w.detector_calls == 4 and st.stats.frames_with_faces == 0 and st.stats.faces_found == 0


@pytest.mark.parametrize("max_faces, found", [(1, 1), (2, 2), (3, 2)])
def test_max_faces_caps_faces_by_detector_score(max_faces: int, found: int) -> None:
    class Scored(World):
        def detect(self, image: np.ndarray) -> list[Box]:
            self.detector_calls += 1
            boxes = [box_from_points(f) for f in self.faces]
            return [Box(*b.as_list(), s) for b, s in zip(boxes, (0.5, 0.9), strict=True)]

    w = Scored()
    w.faces = [face(30, 60), face(120, 60)]
    st = stage(w, max_faces=max_faces)
    t = st.process(blank(0))
    assert len(t.faces) == found
    assert t.faces[0].face_id == 0 and float(t.faces[0].points[:, 0].mean()) == pytest.approx(120)


def test_min_score_filters_detections() -> None:
    w = World()
    w.faces, w.min_score = [face(60, 60)], 0.1
    assert stage(w, min_score=0.5).process(blank(0)).faces == ()


def test_landmarks_carry_frame_index_time_and_the_points_box() -> None:
    w = World()
    w.faces = [face(60, 60)]
    f = stage(w).process(blank(7)).faces[0]
    assert (f.frame_index, f.time) == (7, 7 / 30)
    assert f.points.shape == (68, 2) and f.confidence.shape == (68,)
    assert f.box == box_from_points(f.points)


def _shift_denoiser(dx: float) -> TemporalDenoiser:
    """A temporal model that moves every point by ``dx`` (normalised crop units)."""
    cfg = TemporalConfig(hidden=4, layers=1)
    w0 = np.zeros((cfg.n_inputs, 4), np.float32)
    bias = np.zeros(136, np.float32)
    bias[0::2] = dx
    return TemporalDenoiser(cfg, [w0, np.zeros(4, np.float32), np.zeros((4, 136), np.float32),
                                  bias])


@pytest.mark.parametrize("dx", [0.0, 0.01])
def test_denoiser_output_is_the_final_points_and_feeds_the_next_region(dx: float) -> None:
    w = World()
    w.faces = [face(60, 60, 40)]
    st = stage(w, denoiser=_shift_denoiser(dx), roi_scale=1.5, motion=0.0, roi_hold=0.0)
    out = [st.process(blank(i)) for i in range(3)]
    side = 1.5 * 40
    for t in out:
        shift = t.faces[0].points - w.faces[0]
        np.testing.assert_allclose(shift[:, 0], dx * side, atol=1e-3)  # upright face: x only
        np.testing.assert_allclose(shift[:, 1], 0.0, atol=1e-3)
    boxes, _ = w.calls[-1]
    assert boxes[0].center[0] == pytest.approx(60 + dx * side, abs=1e-3)


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


@pytest.mark.parametrize("kwargs", [{"max_faces": 0}, {"roi_scale": 0.0}])
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        stage(World(), **kwargs)


def test_landmarkers_without_angles_get_upright_crops() -> None:
    class Upright:
        def __init__(self, world: World) -> None:
            self.world = world

        def predict(self, image: np.ndarray, boxes: Sequence[Box]) -> list[Pred]:
            return self.world.predict(image, boxes)

    w = World()
    w.faces = [face(60, 60, 40, 20.0)]
    st = TrackStage(w, Upright(w))  # type: ignore[arg-type]
    st.process(blank(0))
    st.process(blank(1))
    assert len(w.calls) == 3 and all(a == [0.0] * len(a) for _, a in w.calls)


@pytest.mark.parametrize("weak_presence, moved_by", [(0.3, 6), (0.0, None)])
def test_a_weak_face_moves_to_a_detection_no_face_covers(weak_presence: float,
                                                         moved_by: int | None) -> None:
    w = World()
    w.faces = [face(40, 60)]
    st = stage(w, rescan_every=100, weak_presence=weak_presence, weak_rescan_every=5)
    assert st.process(blank(0)).faces[0].face_id == 0
    w.faces, w.decoys = [face(120, 60)], [face(40, 60)]  # the crop now holds on no face
    calls = w.detector_calls
    out = [st.process(blank(i)) for i in range(1, 13)]
    on_face = [i for i, t in enumerate(out, 1)
               if np.abs(t.faces[0].points.mean(0) - [120, 60]).max() < 1]
    assert all(len(t.faces) == 1 and t.faces[0].face_id == 0 for t in out)  # the same id
    if moved_by is None:
        assert not on_face and w.detector_calls == calls  # held on the decoy
    else:
        assert on_face and on_face[0] <= moved_by and on_face == list(range(on_face[0], 13))
        assert w.detector_calls - calls == 1  # every 5 frames while weak, then not at all
