"""``tracker run`` on broken, odd and extreme inputs: one clear line, a distinct exit code, no
traceback; outputs finalised; what can be processed is processed.

(Missing paths, directories, webcams, unwritable outputs and unknown config keys are covered in
``test_cli.py``.)
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from damaged import TsServer, coded, cut, faststart, from_frames, unknown_codec, zero_frames
from stubs import stub_tracker
from synthetic import make_audio_only, make_clip

from tracker.cli.app import ExitCode, main
from tracker.io.source import mp4_problem
from tracker.tracking.face_tracker import TrackStage

ROOT = Path(__file__).parents[1]
DATA = ROOT.parent / "shared" / "data"
VIDEO = DATA / "videos" / "short_hamilton_clip.mp4"


FACTORY: dict[str, Callable[..., Any] | None] = {"tracker": None}  # set by the stub fixture


def call(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args), tracker_factory=FACTORY["tracker"])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single ``error:`` line of a failed run: the last line, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert sum(ln.startswith("error: ") for ln in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


def frames_in(path: Path) -> int:
    assert mp4_problem(path) is None
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture()
def stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tracker run` through the injection seam: a real Tracker with the stub models."""
    monkeypatch.setitem(FACTORY, "tracker", stub_tracker)


@pytest.fixture(scope="module")
def model_args() -> list[str]:
    """``--weights`` for runs with the real models ($TRACKER_TEST_WEIGHTS, else the default)."""
    weights = os.environ.get("TRACKER_TEST_WEIGHTS")
    if weights:
        return ["--weights", weights]
    from tracker.models.checkpoint import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("default weights not available")
    return []


# --- inputs that cannot be processed: one line, distinct exit code ------------------------


def _silent_server() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never sends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUTS: dict[str, Callable[[Path], list[str]]] = {
    "text_named_mp4": lambda t: [_write(t / "notes.mp4", "this is not a video\n" * 40)],
    "empty_file": lambda t: [_write(t / "empty.mp4", "")],
    "mp4_cut_before_index": lambda t: [
        str(cut(make_clip(t / "a.mp4", n_frames=30), t / "cut.mp4", 0.6))],
    "audio_only": lambda t: [str(make_audio_only(t / "sound.m4a"))],
    "unknown_codec": lambda t: [str(unknown_codec(t))],
    "zero_frames": lambda t: [str(zero_frames(t / "zero.avi"))],
    "zero_frames_mkv": lambda t: [str(zero_frames(t / "zero.mkv"))],
    "refused_url": lambda t: ["--source", f"tcp://127.0.0.1:{_free_port()}"],
    "bad_timeout": lambda t: ["--source", "tcp://127.0.0.1:9", "--timeout", "0"],
    "malformed_config": lambda t: [str(make_clip(t / "c.mp4")), "--config",
                                   _write(t / "bad.toml", "[track\nmax_faces = 2\n")],
    "unknown_config_section": lambda t: [str(make_clip(t / "c.mp4")), "--config",
                                         _write(t / "bad.toml", "[trak]\nmax_faces = 2\n")],
    "config_wrong_type": lambda t: [str(make_clip(t / "c.mp4")), "--config",
                                    _write(t / "bad.toml", '[track]\nmax_faces = "two"\n')],
    "config_not_in_section": lambda t: [str(make_clip(t / "c.mp4")), "--config",
                                        _write(t / "bad.toml", "max_faces = 2\n")],
    "config_bad_backoff": lambda t: [str(make_clip(t / "c.mp4")), "--config", _write(
        t / "bad.toml", "[source]\nreconnect_backoff_s = 5\nreconnect_backoff_max_s = 1\n")],
    "bad_preset": lambda t: [str(make_clip(t / "c.mp4")), "--preset", "warp"],
    "corrupt_weights": lambda t: [str(make_clip(t / "c.mp4")), "--weights",
                                  _write(t / "rcn.pt", "PK\x03\x04 not a checkpoint")],
    "missing_weights": lambda t: [str(make_clip(t / "c.mp4")), "--weights", str(t / "no.pt")],
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "kind, code, fragments",
    [
        ("text_named_mp4", ExitCode.SOURCE, ["not a video", "notes.mp4"]),
        ("empty_file", ExitCode.SOURCE, ["not a video"]),
        ("mp4_cut_before_index", ExitCode.SOURCE, ["incomplete MP4", "moov", "cut.mp4"]),
        ("audio_only", ExitCode.SOURCE, ["no video stream"]),
        ("unknown_codec", ExitCode.SOURCE, ["unsupported video codec", "ffmpeg -i"]),
        ("zero_frames", ExitCode.SOURCE, ["no video frames", "zero.avi"]),
        ("zero_frames_mkv", ExitCode.SOURCE, ["no video frames", "zero.mkv"]),
        ("refused_url", ExitCode.SOURCE, ["cannot open tcp://", "refused"]),
        ("bad_timeout", ExitCode.USAGE, ["--timeout"]),
        ("malformed_config", ExitCode.CONFIG, ["invalid TOML", "bad.toml"]),
        ("unknown_config_section", ExitCode.CONFIG, ["unknown config section 'trak'"]),
        ("config_wrong_type", ExitCode.CONFIG, ["'track.max_faces' must be int"]),
        ("config_not_in_section", ExitCode.CONFIG, ["'max_faces' must be inside", "[track]"]),
        ("config_bad_backoff", ExitCode.CONFIG, ["source.reconnect_backoff_max_s"]),
        ("bad_preset", ExitCode.CONFIG, ["'run.preset' must be one of ultrafast"]),
    ],
)
@pytest.mark.usefixtures("stubs")
def test_bad_inputs_fail_with_one_line_and_a_distinct_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, code: int,
    fragments: list[str],
) -> None:
    args = ["run", *BAD_INPUTS[kind](tmp_path), "--jsonl", str(tmp_path / "out.jsonl")]
    got, _, err = call(args, capsys)
    line = error_line(err)
    assert got == code, line
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("corrupt_weights", ["rcn.pt", "corrupt", "--weights"]),
        ("missing_weights", ["weights file not found", "no.pt"]),
    ],
)
def test_bad_weights_name_the_file_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, fragments: list[str]
) -> None:
    out = tmp_path / "out.mp4"
    got, _, err = call(["run", *BAD_INPUTS[kind](tmp_path), "--out", str(out)], capsys)
    line = error_line(err)
    assert got == ExitCode.MODEL
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize("timeout", [0.3, 1.0])
def test_unreachable_stream_times_out_as_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: float
) -> None:
    server = _silent_server()
    try:
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        cfg = _write(tmp_path / "t.toml", f"[source]\nopen_timeout_s = {timeout}\n")
        for args in (["--timeout", str(timeout)], ["--config", cfg]):
            got, _, err = call(["run", "--source", url, "--jsonl", "-", *args], capsys)
            line = error_line(err)
            assert got == ExitCode.SOURCE
            assert f"timed out after {timeout:g} s" in line and url in line
    finally:
        server.close()


@pytest.mark.usefixtures("stubs")
@pytest.mark.parametrize("reconnect", [False, True])
def test_live_stream_that_stalls_ends_cleanly_or_reconnects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reconnect: bool
) -> None:
    data = make_clip(tmp_path / "live.ts", n_frames=10, rate=30, fmt="mpegts").read_bytes()
    server = TsServer(data, ["stall", "close"])
    cfg = _write(tmp_path / "r.toml", "[source]\nreconnect_attempts = 2\n"
                 "reconnect_backoff_s = 0.05\nreconnect_backoff_max_s = 0.1\n")
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    flag = "--reconnect" if reconnect else "--no-reconnect"
    try:
        got, _, err = call(["run", "--source", server.url, "--timeout", "1", flag, "--config", cfg,
                            "--policy", "block", "--out", str(out), "--jsonl", str(jsonl)],
                           capsys)
    finally:
        server.close()
    assert got == 0, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("warning: ") and "Traceback" not in err
    n = len(records(jsonl))
    if reconnect:
        assert "gave up after 2 reconnect attempts" in last and 10 < n <= 20
    else:
        assert "stalled" in last and 0 < n <= 10
    assert frames_in(out) == n


@pytest.mark.usefixtures("stubs")
def test_zero_frame_input_still_finalises_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.mp4"
    got, _, err = call(["run", str(zero_frames(tmp_path / "zero.avi")), "--out", str(out)], capsys)
    assert got == ExitCode.SOURCE and "no video frames" in error_line(err)
    assert mp4_problem(out) is None  # a valid (empty) MP4, not a broken one


# --- damaged input: process what decodes, then report --------------------------------------


@pytest.mark.usefixtures("stubs")
def test_truncated_mp4_is_processed_up_to_the_cut_then_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = faststart(make_clip(tmp_path / "a.mp4", n_frames=40, width=96, height=64,
                                audio=True), tmp_path / "fs.mp4")
    clip = cut(whole, tmp_path / "cut.mp4", 0.5)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    got, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl)], capsys)
    line = error_line(err)
    assert got == ExitCode.DAMAGED_INPUT
    n = len(records(jsonl))
    assert 0 < n < 40
    assert f"decoded {n} of 40 frames" in line and "cut.mp4" in line
    assert frames_in(out) == n  # every decodable frame is in the finalised output
    assert "frames" in err  # the summary came first


# --- odd but valid inputs: they just work ---------------------------------------------------


@pytest.mark.usefixtures("stubs")
@pytest.mark.parametrize(
    "codec, pix_fmt, suffix",
    [
        ("libx264", "yuv444p", "mp4"),
        ("libx264", "yuv420p10le", "mp4"),  # 10-bit
        ("ffv1", "gray", "mkv"),  # grayscale
        ("ffv1", "gray16le", "mkv"),
        ("png", "rgba", "mov"),  # alpha channel
        ("ffv1", "yuva420p", "mkv"),
        ("mpeg4", "yuv420p", "avi"),
    ],
)
def test_unusual_pixel_formats_are_converted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], codec: str, pix_fmt: str, suffix: str
) -> None:
    clip = coded(tmp_path / f"clip.{suffix}", codec, pix_fmt, n_frames=6)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    got, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl)], capsys)
    assert got == 0, err
    assert len(records(jsonl)) == 6 and frames_in(out) == 6


@pytest.mark.usefixtures("stubs")
def test_variable_frame_rate_keeps_every_timestamp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    times_ms = [0, 33, 50, 120, 130, 400, 433, 1000]
    clip = coded(tmp_path / "vfr.mp4", "libx264", "yuv420p", n_frames=8, times_ms=times_ms)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    got, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl)], capsys)
    assert got == 0, err
    assert [r["time"] for r in records(jsonl)] == pytest.approx([t / 1000 for t in times_ms])
    with av.open(str(out)) as c:
        got_times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert got_times == pytest.approx([t / 1000 for t in times_ms], abs=1e-3)


@pytest.mark.usefixtures("stubs")
def test_4k_frames_are_tracked_on_a_smaller_copy_and_written_in_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []
    real_process = TrackStage.process

    def spy(self: TrackStage, item: object) -> object:
        seen.append(item.image.shape)  # type: ignore[attr-defined]
        return real_process(self, item)  # type: ignore[arg-type]

    monkeypatch.setattr(TrackStage, "process", spy)
    clip = make_clip(tmp_path / "uhd.mp4", n_frames=3, width=3840, height=2160)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    got, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl)], capsys)
    assert got == 0, err
    assert set(seen) == {(1080, 1920, 3)}  # the track stage saw a 1920-wide copy
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (3840, 2160)
    pts = np.array([r["faces"][0]["points"] for r in records(jsonl)])
    # the stub face spans the middle half of the frame: full-resolution coordinates
    assert pts[..., 0].min() == pytest.approx(959.5, abs=1.0)
    assert pts[..., 0].max() == pytest.approx(2879.5, abs=1.0)
    assert "/10" in err  # queues of 4K frames capped by memory (10 frames)


def _face_frames(n: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    with av.open(str(VIDEO)) as c:
        frames = []
        for i, f in enumerate(c.decode(video=0)):
            if i >= 100:  # a close-up
                frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA if size[0] < 640
                             else cv2.INTER_CUBIC) for f in frames]
    return frames


@pytest.mark.parametrize(
    "kind, size",
    [("4k", (3840, 2160)), ("tiny", (16, 16)), ("no_face", None)],
)
def test_real_models_on_extreme_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_args: list[str], kind: str,
    size: tuple[int, int] | None,
) -> None:
    if not VIDEO.exists():
        pytest.skip("shared data not present")
    n = 4
    if kind == "no_face":
        clip = make_clip(tmp_path / "grey.mp4", n_frames=n, width=320, height=240, audio=True)
    else:
        clip = from_frames(tmp_path / f"{kind}.mp4", _face_frames(n, size))
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    got, _, err = call(["run", str(clip), "--out", str(out), "--jsonl", str(jsonl),
                        *model_args], capsys)
    assert got == 0, err
    recs = records(jsonl)
    assert [r["frame"] for r in recs] == list(range(n)) and frames_in(out) == n
    if kind == "no_face":
        assert all(r["faces"] == [] for r in recs)
    if kind == "4k":
        assert all(len(r["faces"]) == 1 for r in recs)
        pts = np.array(recs[0]["faces"][0]["points"])
        assert pts.shape == (68, 2) and np.ptp(pts[:, 0]) > 300  # a big face, full-res pixels


def test_corrupt_engine_file_is_named_and_rebuilt_on_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKER_CACHE", str(tmp_path / "cache"))
    clip = make_clip(tmp_path / "c.mp4", n_frames=2)
    args = ["run", str(clip), "--jsonl", str(tmp_path / "o.jsonl"), "--engine", "onnx",
            *model_args]
    assert call(args, capsys)[0] == 0  # builds and caches the engine
    engines = list((tmp_path / "cache").rglob("*.onnx"))
    assert engines
    for e in engines:
        e.write_bytes(b"\x00garbage" * 10)
    got, _, err = call(args, capsys)
    line = error_line(err)
    assert got == ExitCode.MODEL
    assert any(str(e) in line for e in engines) and "rerun" in line
    assert call(args, capsys)[0] == 0  # the fix it suggests works
