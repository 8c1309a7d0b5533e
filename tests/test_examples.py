"""The example configurations in configs/ load, and the API demo in demos/ runs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.config.schema import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))


def test_there_are_examples_and_a_readme_lists_each() -> None:
    readme = (ROOT / "configs" / "README.md").read_text()
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        assert f"`{path.name}`" in readme


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads_and_changes_something(path: Path) -> None:
    cfg = load_config(path)
    assert cfg != Config()


@pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/data/videos")
def test_csv_demo_writes_one_row_per_face(tmp_path: Path) -> None:
    out = tmp_path / "faces.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "demos" / "landmarks_to_csv.py"), str(CLIP),
                           str(out), "--max-frames", "12", "--engine", "onnxruntime"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.reader(out.open()))
    assert rows[0][:4] == ["frame", "time", "face", "presence"] and len(rows[0]) == 4 + 136
    body = rows[1:]
    assert 1 <= len(body) <= 12 and [int(r[0]) for r in body] == sorted(int(r[0]) for r in body)
    assert all(0 <= float(r[4]) < 640 and 0 <= float(r[5]) < 360 for r in body)


def test_csv_demo_reports_a_bad_input_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "demos" / "landmarks_to_csv.py"),
                           str(tmp_path / "missing.mp4"), str(tmp_path / "o.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
