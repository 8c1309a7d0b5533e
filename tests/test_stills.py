"""``tracker run DIR|photo|"*.png"``: one record per image (with its file name), several faces
per image, no temporal state, and an unreadable image skipped with a warning that names it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracker.api.stills import is_stills, list_images
from tracker.cli import main

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces68" / "val"
needs_data = pytest.mark.skipif(not FACES.is_dir(), reason="needs ../shared/data/faces68")


def test_what_counts_as_still_images(tmp_path: Path) -> None:
    (tmp_path / "a.PNG").write_bytes(b"")
    (tmp_path / "b.txt").write_bytes(b"")
    assert is_stills(str(tmp_path)) and is_stills("x/*.png") and is_stills("photo.JPG")
    assert not any(is_stills(s) for s in ("clip.mp4", "webcam:0", "rtsp://h/x", "lavfi:testsrc"))
    assert list_images(str(tmp_path)) == [tmp_path / "a.PNG"]


@needs_data
def test_a_folder_of_stills(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = cv2.imread(str(FACES / "Ahmad_Masood_00.jpg"))
    b = cv2.imread(str(FACES / "Barbara_Walters_00.jpg"))
    h = max(a.shape[0], b.shape[0])

    def pad(x: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(x, 0, h - x.shape[0], 0, 0, cv2.BORDER_REPLICATE)

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a_one.jpg"), a)
    cv2.imwrite(str(photos / "b_one.png"), b)
    cv2.imwrite(str(photos / "c_two.jpg"), np.hstack([pad(a), pad(b)]))
    cv2.imwrite(str(photos / "d_none.png"), np.full((120, 160, 3), 90, np.uint8))
    (photos / "e_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    jsonl, table = tmp_path / "faces.jsonl", tmp_path / "faces.csv"
    code = main(["run", str(photos), "--engine", "onnxruntime", "--max-faces", "1",
                 "--jsonl", str(jsonl), "--csv", str(table)])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: cannot read image {photos / 'e_broken.jpg'} (skipped)"]
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    names = [Path(r["file"]).name for r in lines]
    assert names == ["a_one.jpg", "b_one.png", "c_two.jpg", "d_none.png"]
    assert [len(r["faces"]) for r in lines] == [1, 1, 2, 0]  # --max-faces 1 does not cap stills
    two = lines[2]["faces"]
    assert two[0]["box"][0] < a.shape[1] <= two[1]["box"][0] or \
        two[1]["box"][0] < a.shape[1] <= two[0]["box"][0]  # one face on each side
    # no temporal state: the pasted copy of image a gets a's own points (shifted by nothing)
    left = min(two, key=lambda f: f["box"][0])
    # (the detector's box moves a little in the wider image; the jaw follows it most)
    moved = np.linalg.norm(np.array(left["points"]) - np.array(lines[0]["faces"][0]["points"]), axis=1)
    assert moved.mean() < 0.75 and moved.max() < 3.0, moved
    assert all(f["expression"]["blink_left"] is False for r in lines for f in r["faces"])
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["file"]).name for r in rows] == ["a_one.jpg", "b_one.png", "c_two.jpg",
                                                    "c_two.jpg"]


def test_stills_refuse_video_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    code = main(["run", str(tmp_path / "x.png"), "--out", str(tmp_path / "y.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--out needs a video" in err
    code = main(["run", str(tmp_path / "*.jpg"), "--jsonl", "-"])
    assert code == 4 and "matches no images" in capsys.readouterr().err
