"""Synthetic clips for the video benchmark: ground truth follows the rendered face exactly."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tracker.io.pts import Sample
from tracker.training.synthvideo import SEGMENTS, ClipMaker, load_truth, save_truth, write_clip

GRID = np.stack(np.meshgrid(np.linspace(60, 140, 17), np.linspace(60, 140, 4)), -1)
GRID = GRID.reshape(-1, 2)[:68].astype(np.float32)
MARK = 30  # the landmark carrying a bright dot


def marked_sample() -> Sample:
    image = np.full((200, 200, 3), 90, np.uint8)
    x, y = np.round(GRID[MARK]).astype(int)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    return Sample("marked", image, GRID)


@pytest.mark.parametrize("segment", ["still", "slow", "fast"])
def test_ground_truth_follows_the_rendered_face(segment: str) -> None:
    plan = (("still", 2), (segment, 6))
    maker = ClipMaker(marked_sample(), np.random.default_rng(1), plan=plan, noise=0.0)
    for i in (1, 4, 7):
        img, pts, _ = maker.frame(i)
        gray = img.astype(np.float32).mean(2)
        x, y = pts[MARK]
        xi, yi = int(round(x)), int(round(y))
        win = gray[yi - 6 : yi + 7, xi - 6 : xi + 7]
        dy, dx = np.unravel_index(np.argmax(win), win.shape)
        # the dot is 3 px in the still and scaled with the face: its peak is within 1.5 px
        assert abs(xi - 6 + dx - x) <= 1.5 and abs(yi - 6 + dy - y) <= 1.5


def test_segments_occlusions_and_exits_are_labelled() -> None:
    plan = (("still", 4), ("occluded", 12), ("exit", 15))
    maker = ClipMaker(marked_sample(), np.random.default_rng(2), plan=plan)
    pts, occ = [], []
    for _, p, o in maker.frames():
        pts.append(p)
        occ.append(o)
    truth = maker.truth(pts, occ)
    assert truth.points.shape == (31, 68, 2) and truth.segment.shape == (31,)
    assert [SEGMENTS[s] for s in truth.segment[[0, 4, 16]]] == ["still", "occluded", "exit"]
    assert list(truth.segment_start[[0, 5, 20]]) == [0, 4, 16]
    assert truth.occluded[4:16].any() and not truth.occluded[:4].any()
    assert truth.visible[:16].min() == 1.0 and truth.visible[16:].min() == 0.0
    assert truth.visible[-1] == 1.0  # back in the frame at the end


def test_written_clip_decodes_and_truth_round_trips(tmp_path: Path) -> None:
    plan = (("still", 3), ("fast", 4))
    maker = ClipMaker(marked_sample(), np.random.default_rng(3), width=160, height=96,
                      plan=plan)
    truth = write_clip(maker, tmp_path / "c.mp4")
    save_truth(truth, tmp_path / "c.npz")
    back = load_truth(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.points, truth.points)
    assert back.fps == truth.fps == 30.0
    with av.open(str(tmp_path / "c.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (96, 160, 3)


def test_a_jump_moves_the_face_at_once_and_a_drift_moves_it_steadily() -> None:
    from tracker.training.synthvideo import DRIFT, JUMP

    plan = (("still", 3), ("jump", 5), ("drift", 20))
    maker = ClipMaker(marked_sample(), np.random.default_rng(4), plan=plan, noise=0.0)
    centres = np.array([maker.frame(i)[1].mean(0) for i in range(28)])
    size = maker.poses[0].size
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / size
    assert steps[2] == pytest.approx(JUMP, rel=1e-3)  # frame 2 -> 3: the jump
    assert np.allclose(steps[3:7], 0.0) and np.allclose(steps[:2], 0.0)  # still around it
    fps = maker.fps
    assert DRIFT[0] <= steps[8] * fps <= DRIFT[1]  # face sizes per second
    assert np.allclose(steps[7:], steps[8], rtol=1e-3)  # steady
    assert [SEGMENTS[maker.segments[i]] for i in (0, 3, 8, 27)] == ["still", "jump", "drift", "drift"]
