"""``--csv`` and ``--vmc`` on a real clip: a CSV that csv (and pandas) read, one VMC bundle per
frame decoded by a real OSC server, and bad addresses or paths as one-line errors."""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from pathlib import Path

import pytest

from tracker.cli import main
from tracker.outputs.record import CSV_COLUMNS
from tracker.outputs.vmc import BLENDSHAPES, head_quaternion

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "short_hamilton_clip.mp4"
FRAMES = 12
needs_clip = pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/data/videos")


def test_csv_columns_are_documented_and_complete() -> None:
    assert CSV_COLUMNS[:5] == ("frame", "time", "file", "id", "presence")
    assert len(CSV_COLUMNS) == len(set(CSV_COLUMNS)) == 5 + 10 + 8 + 136 + 68
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("pose_error", "rvec_x", "tvec_z", "eye_open_left", "blink_right", "x67", "c67"):
        assert f"`{name}`" in readme, name


def test_head_quaternion_follows_the_documented_axes() -> None:
    assert head_quaternion(0, 0, 0) == pytest.approx((0, 0, 0, 1))
    x, y, z, w = head_quaternion(90, 0, 0)  # the subject turns to their left: -90 about Unity y
    assert (x, z) == pytest.approx((0, 0)) and y == pytest.approx(-math.sqrt(0.5))
    q = head_quaternion(25, -10, 15)
    assert sum(v * v for v in q) == pytest.approx(1.0)


@needs_clip
def test_csv_and_vmc_on_a_real_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer

    got: list[tuple[str, tuple[object, ...]]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: got.append((address, args)))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    out, jsonl = tmp_path / "faces.csv", tmp_path / "faces.jsonl"
    try:
        code = main(["run", str(CLIP), "--max-frames", str(FRAMES), "--engine", "onnxruntime",
                     "--csv", str(out), "--jsonl", str(jsonl), "--vmc", f"127.0.0.1:{port}"])
        assert code == 0, capsys.readouterr().err
        deadline = time.monotonic() + 5
        while sum(a == "/VMC/Ext/OK" for a, _ in got) < FRAMES and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(r["faces"]) for r in lines) > 0
    first = lines[[len(r["faces"]) > 0 for r in lines].index(True)]
    row = next(r for r in rows if int(r["frame"]) == first["frame"])
    face = first["faces"][0]
    assert float(row["x30"]) == face["points"][30][0] and float(row["c0"]) == face["confidence"][0]
    assert float(row["yaw"]) == face["pose"]["yaw"]
    assert row["blink_left"] in ("0", "1") and 0 <= float(row["eye_open_left"]) <= 1
    # one bundle per frame: each holds one /VMC/Ext/T (the frame's time) and one /VMC/Ext/OK
    times = [args[0] for a, args in got if a == "/VMC/Ext/T"]
    oks = [args for a, args in got if a == "/VMC/Ext/OK"]
    assert len(times) == len(oks) == FRAMES
    assert times == pytest.approx([r["time"] for r in lines], abs=1e-4)
    assert [ok[3] for ok in oks] == [int(bool(r["faces"])) for r in lines]
    heads = [args for a, args in got if a == "/VMC/Ext/Bone/Pos"]
    assert len(heads) == sum(1 for r in lines if r["faces"] and r["faces"][0]["pose"])
    assert all(h[0] == "Head" and len(h) == 8 for h in heads)
    assert sum(v * v for v in heads[0][4:]) == pytest.approx(1.0, abs=1e-5)
    names = {args[0] for a, args in got if a == "/VMC/Ext/Blend/Val"}
    assert names == {name for name, _, _ in BLENDSHAPES}
    assert sum(a == "/VMC/Ext/Blend/Apply" for a, _ in got) == sum(bool(r["faces"]) for r in lines)
    try:
        import pandas as pd
    except ImportError:  # not a dependency
        return
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(CSV_COLUMNS) and len(frame) == len(rows)


@pytest.mark.parametrize("address", ["nohost:", "127.0.0.1:0", "70000", "a:b:c:x"])
def test_a_bad_vmc_address_is_a_one_line_usage_error(
        address: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(CLIP), "--vmc", address])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--vmc" in err and address in err


def test_an_unwritable_csv_fails_before_processing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(CLIP), "--csv", str(tmp_path / "missing" / "x.csv")])
    err = capsys.readouterr().err
    assert code == 6 and err.startswith("error: --csv directory does not exist")
    code = main(["run", str(CLIP), "--csv", "-", "--jsonl", "-"])
    assert code == 2 and "same stdout" in capsys.readouterr().err
