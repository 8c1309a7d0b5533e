"""The video benchmark's scores (benchmarks/video_scoring.py): NME by segment, the step response
of a jump, and jitter with and without failed frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.video_scoring import score, step_response, summarise  # noqa: E402
from tracker.training.synthvideo import SEGMENTS, ClipTruth  # noqa: E402

FACE = np.stack(np.meshgrid(np.linspace(0, 60, 17), np.linspace(0, 60, 4)), -1).reshape(-1, 2)[:68]
FACE = FACE + 100.0  # outer eye corners (36, 45) 52.5 px apart


def clip(plan: list[tuple[str, int, tuple[float, float]]]) -> ClipTruth:
    """Ground truth of segments (name, frames, face offset)."""
    pts, seg, start = [], [], []
    for name, n, (dx, dy) in plan:
        begin = len(pts)
        pts += [FACE + np.array([dx, dy])] * n
        seg += [SEGMENTS.index(name)] * n
        start += [begin] * n
    f = len(pts)
    return ClipTruth(np.stack(pts).astype(np.float32), np.array(seg), np.array(start),
                     np.ones(f), np.zeros((f, 68), bool), 30.0)


@pytest.mark.parametrize("delay, frames", [(0, 0.0), (1, 1.0), (3, 3.0)])
def test_step_response_counts_the_frames_to_90_percent(delay: int, frames: float) -> None:
    truth = clip([("still", 10, (0, 0)), ("jump", 10, (20, 0))])
    pred = truth.points.astype(np.float64).copy()
    pred[10:10 + delay] = truth.points[9]  # stays behind for `delay` frames
    centres = pred.mean(1)
    got = step_response(centres, truth.points.mean(1), 10, 10)
    assert got == (frames, 0.0)
    overshoot = centres.copy()
    overshoot[15] += np.array([2.0, 0.0])  # 10 % beyond the jump
    assert step_response(overshoot, truth.points.mean(1), 10, 10)[1] == pytest.approx(10.0)


def test_nme_is_split_by_segment_and_failed_frames_leave_the_tracked_jitter() -> None:
    truth = clip([("still", 20, (0, 0)), ("slow", 10, (0, 0)), ("still", 20, (0, 0))])
    rng = np.random.default_rng(0)
    pred = truth.points + rng.normal(0, 0.5, truth.points.shape)
    pred[20:30] += 2.0  # worse while "moving"
    pred[40] += 30.0  # one failed frame (NME ~ 80 %)
    s = summarise([score(pred, truth, np.zeros(50, bool))])
    assert s["nme_moving_%"] > s["nme_still_%"] + 3.0
    assert s["jitter_%iod"] > 5 * s["jitter_tracked_%iod"]
    clean = pred.copy()
    clean[40] = truth.points[40] + rng.normal(0, 0.5, (68, 2))
    t = summarise([score(clean, truth, np.zeros(50, bool))])
    assert t["jitter_tracked_%iod"] == pytest.approx(t["jitter_%iod"])
