"""The JSONL of a real clip is pinned: tests/data/hamilton90_onnxruntime.jsonl was written by the
code before the package was reorganised (same command); the points must stay within 1e-3 px
and the ids, boxes' frames and face counts identical.

The pinned points are smoothed by the per-coordinate One Euro filter, the default of that code;
the default is now the face-frame filter (``smooth.rigid``, docs/tracking.md), so the run asks
for the old filter with ``--no-rigid-smoothing`` and the rest of the pipeline stays pinned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracker.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
PINNED = ROOT / "tests" / "data" / "hamilton90_onnxruntime.jsonl"


@pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/data/videos")
def test_jsonl_of_a_real_clip_matches_the_pinned_run(tmp_path: Path) -> None:
    out = tmp_path / "now.jsonl"
    temporal = ROOT / "tracker" / "weights" / "temporal_dkm_faces68.npz"
    config = tmp_path / "then.toml"
    config.write_text(f"[track]\ntemporal_weights = {json.dumps(str(temporal))}\n")
    code = main(["run", str(CLIP), "--max-frames", "90", "--engine", "onnxruntime",
                 "--weights", "rcn_lite_faces68", "--config", str(config),
                 "--no-rigid-smoothing", "--jsonl", str(out)])
    assert code == 0
    now = [json.loads(x) for x in out.read_text().splitlines()]
    then = [json.loads(x) for x in PINNED.read_text().splitlines()]
    assert [r["frame"] for r in now] == [r["frame"] for r in then] == list(range(90))
    assert sum(len(r["faces"]) for r in then) >= 40  # the pin is about faces, not empty frames
    for a, b in zip(now, then, strict=True):
        assert a["time"] == b["time"]
        assert [f["id"] for f in a["faces"]] == [f["id"] for f in b["faces"]], a["frame"]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert set(fa) == set(fb) | {"pose", "expression"}  # issue 15 added these two
            err = np.abs(np.array(fa["points"], float) - np.array(fb["points"], float)).max()
            assert err <= 1e-3, (a["frame"], err)
            assert np.allclose(fa["confidence"], fb["confidence"], atol=1e-3)
