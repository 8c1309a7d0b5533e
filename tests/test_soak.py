"""A short live soak (the full one is ``python benchmarks/soak.py``): bounded queues, every frame
accounted for, outputs finalised, memory sampled."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import soak  # noqa: E402


def test_short_live_soak(monkeypatch: pytest.MonkeyPatch) -> None:
    report = soak.soak(seconds=6, interval=1.0, pattern=True, stub=True)
    assert report.exit_code == 0 and report.problems == []
    assert len(report.samples) >= 3 and all(s.rss_mb > 0 for s in report.samples)
    for name, depth in report.max_depths.items():
        assert depth <= report.capacities[name]
    # live source: 30 fps for 6 s; what the tracker did not get was dropped, and counted
    assert report.decoded == 180
    assert report.tracked + report.drops["frames"] == report.decoded
    assert report.mp4_frames and report.jsonl_lines and report.mp4_frames <= report.tracked
