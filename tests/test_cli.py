"""`tracker` CLI: help, one-line errors with distinct exit codes, outputs checked and finalised."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import pytest
from stubs import stub_tracker
from synthetic import make_clip

from tracker.api import assembly
from tracker.cli import run as runner
from tracker.cli.app import ExitCode, main
from tracker.errors import SourceError

ROOT = Path(__file__).parents[1]
DATA = ROOT.parent / "shared" / "data"
N = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", n_frames=N, width=96,
                     height=64, audio=True)


FACTORY: dict[str, Callable[..., Any] | None] = {"tracker": None}  # set by the stub fixture


def call(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args), tracker_factory=FACTORY["tracker"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


# --- help ------------------------------------------------------------------------------------

RUN_OPTIONS = ["SOURCE", "--source", "--out", "--jsonl", "--show", "--config", "--max-faces",
               "--rescan-every", "--engine", "--weights", "--max-frames", "--policy", "--debug"]


def test_top_level_help_lists_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(["--help"], capsys)
    assert code == 0 and "run" in out and "Usage" in out


def test_run_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(["run", "--help"], capsys)
    assert code == 0
    missing = [o for o in RUN_OPTIONS if o not in out]
    assert not missing


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(["--version"], capsys)
    assert code == 0 and out.startswith("tracker ")


# --- errors ----------------------------------------------------------------------------------


def _args(kind: str, tmp: Path, clip: Path) -> list[str]:
    table: dict[str, list[str]] = {
        "missing": ["run", str(tmp / "missing.mp4")],
        "directory": ["run", str(tmp)],
        "not_video": ["run", str(tmp / "notes.txt")],
        "no_source": ["run"],
        "two_sources": ["run", str(clip), "--source", "webcam"],
        "no_webcam": ["run", "--source", "webcam:97"],
        "bad_lavfi": ["run", "--source", "lavfi:nosuchfilter"],
        "bad_int": ["run", str(clip), "--max-faces", "many"],
        "zero_faces": ["run", str(clip), "--max-faces", "0"],
        "bad_option": ["run", str(clip), "--frobnicate"],
        "bad_command": ["runn"],
        "bad_policy": ["run", str(clip), "--policy", "newest"],
        "bad_config_key": ["run", str(clip), "--config", str(tmp / "bad.toml")],
        "missing_config": ["run", str(clip), "--config", str(tmp / "none.toml")],
        "out_dir_missing": ["run", str(clip), "--out", str(tmp / "no" / "such" / "dir.mp4")],
        "out_is_dir": ["run", str(clip), "--out", str(tmp)],
        "out_over_input": ["run", str(clip), "--out", str(clip)],
        "jsonl_parent_is_file": ["run", str(clip), "--jsonl", str(clip / "x.jsonl")],
    }
    return table[kind]


@pytest.mark.parametrize(
    "kind, code, fragment",
    [
        ("missing", ExitCode.SOURCE, "no such file"),
        ("directory", ExitCode.SOURCE, "is a directory"),
        ("not_video", ExitCode.SOURCE, "not a video"),
        ("no_source", ExitCode.USAGE, "no source"),
        ("two_sources", ExitCode.USAGE, "give the source once"),
        ("no_webcam", ExitCode.NO_CAMERA, "webcam"),
        ("bad_lavfi", ExitCode.SOURCE, "lavfi"),
        ("bad_int", ExitCode.USAGE, "--max-faces"),
        ("zero_faces", ExitCode.USAGE, "--max-faces"),
        ("bad_option", ExitCode.USAGE, "--frobnicate"),
        ("bad_command", ExitCode.USAGE, "runn"),
        ("bad_policy", ExitCode.CONFIG, "pipeline.policy"),
        ("bad_config_key", ExitCode.CONFIG, "unknown config key 'track.max_face'"),
        ("missing_config", ExitCode.CONFIG, "config file not found"),
        ("out_dir_missing", ExitCode.OUTPUT, "does not exist"),
        ("out_is_dir", ExitCode.OUTPUT, "is a directory"),
        ("out_over_input", ExitCode.USAGE, "overwrite the input"),
        ("jsonl_parent_is_file", ExitCode.OUTPUT, "not a directory"),
    ],
)
def test_errors_are_one_line_with_distinct_codes(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str], kind: str, code: int,
    fragment: str,
) -> None:
    (tmp_path / "notes.txt").write_text("not a video\n" * 20)
    (tmp_path / "bad.toml").write_text("[track]\nmax_face = 2\n")
    got, _, err = call(_args(kind, tmp_path, clip), capsys)
    assert got == code
    assert_one_line_error(err)
    assert fragment in err


def test_exit_codes_are_distinct() -> None:
    values = [int(c) for c in ExitCode]
    assert len(values) == len(set(values))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        main(["run", str(tmp_path / "missing.mp4"), "--debug"])


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracker", "run", str(tmp_path / "missing.mp4")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == ExitCode.SOURCE
    assert_one_line_error(proc.stderr)


def _unwritable_dir(tmp_path: Path, kind: str) -> Path:
    if kind == "virtual_fs":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs /proc")
        return Path("/proc")
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


@pytest.mark.parametrize("kind", ["virtual_fs", "read_only_dir"])
@pytest.mark.parametrize("option", ["--out", "--jsonl"])
def test_unwritable_output_fails_before_processing(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, kind: str, option: str,
) -> None:
    def no_source(*args: object, **kwargs: object) -> None:
        raise AssertionError("the source was opened before the output was checked")

    monkeypatch.setattr(assembly, "open_source", no_source)
    target = _unwritable_dir(tmp_path, kind) / "result.out"
    code, _, err = call(["run", str(clip), option, str(target)], capsys)
    assert code == ExitCode.OUTPUT
    assert_one_line_error(err)
    assert "not writable" in err


# --- runs, with stub models standing in for the detector and the landmarker ----------------


@pytest.fixture()
def stub_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tracker run` through the injection seam: a real Tracker with the stub models."""
    monkeypatch.setitem(FACTORY, "tracker", stub_tracker)


def video_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.usefixtures("stub_models")
def test_run_writes_jsonl_and_video_and_prints_a_summary(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, jsonl = tmp_path / "annotated.mp4", tmp_path / "marks.jsonl"
    code, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl)], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(N))
    assert all(len(r["faces"]) == 1 and len(r["faces"][0]["points"]) == 68 for r in records)
    assert video_frames(out) == N
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1  # source audio passed through
    for word in ("frames", "fps", "faces", "dropped", "track", "median"):
        assert word in err


@pytest.mark.usefixtures("stub_models")
def test_jsonl_to_stdout_keeps_stdout_clean(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = call(["run", "--source", "lavfi:testsrc2=size=64x48:rate=10:duration=0.5",
                         "--jsonl", "-"], capsys)
    assert code == 0
    assert [json.loads(line)["frame"] for line in out.splitlines()] == list(range(5))


@pytest.mark.usefixtures("stub_models")
def test_ctrl_c_finalises_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def interrupting(console: object, total: int | None) -> Iterator[Callable[..., None]]:
        def update(metrics: object) -> None:
            if metrics.stage("track").count >= 5:  # type: ignore[attr-defined]
                raise KeyboardInterrupt

        yield update

    monkeypatch.setattr(runner, "_progress", interrupting)
    out, jsonl = tmp_path / "a.mp4", tmp_path / "a.jsonl"
    code, _, err = call(["run", "--source", "lavfi:testsrc2=size=64x48:rate=30", "--out", str(out),
                         "--jsonl", str(jsonl)], capsys)  # an endless source
    assert code == ExitCode.INTERRUPTED and "interrupted" in err
    text = jsonl.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    assert video_frames(out) >= 5  # a finalised, readable file


@pytest.mark.usefixtures("stub_models")
def test_live_tcp_source_uses_drop_oldest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_clip(tmp_path / "live.ts", n_frames=10, rate=30, fmt="mpegts").read_bytes()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    jsonl = tmp_path / "live.jsonl"
    try:
        code, _, err = call(["run", "--source", f"tcp://127.0.0.1:{server.getsockname()[1]}",
                             "--jsonl", str(jsonl)], capsys)
    finally:
        server.close()
    assert code == 0, err
    assert "drop_oldest" in err  # the queue table of the summary
    frames = [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()]
    assert frames == sorted(frames) and 0 < len(frames) <= 10


# --- end to end with the real models ---------------------------------------------------------


@pytest.mark.slow
def test_real_models_on_the_shared_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    video = DATA / "videos" / "short_hamilton_clip.mp4"
    if not video.exists():
        pytest.skip("shared data not present")
    from tracker.landmarker import load_landmarker
    from tracker.models.checkpoint import WeightsError

    try:
        load_landmarker()
    except WeightsError as exc:
        pytest.skip(f"default weights not available: {exc}")
    jsonl, out = tmp_path / "marks.jsonl", tmp_path / "annotated.mp4"
    code, _, err = call(["run", str(video), "--jsonl", str(jsonl), "--out", str(out)], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(275))
    assert all(b["time"] > a["time"] for a, b in zip(records, records[1:], strict=False))
    # frames 100-199 are a close-up of the singer: the face is tracked throughout
    assert sum(1 for r in records[100:200] if r["faces"]) >= 90
    assert all(len(f["points"]) == 68 for r in records for f in r["faces"])
    assert video_frames(out) == 275
