"""``tracker run`` on a corpus of odd but valid media (built with PyAV in ``media.py``): PCM
and other audio codecs, rotated and anamorphic video, stream-copy cuts, AVI remuxes, joined
MPEG-TS segments and network sources that go away. Every frame reaches both outputs, in the
displayed orientation, with increasing times, and the audio survives."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import (
    HangUpServer,
    cut_copy,
    decoded_audio,
    locate,
    match,
    picture,
    remux,
    ts_segments,
    waveform,
    write,
)
from stubs import stub_tracker

from tracker.cli.app import ExitCode, main
from tracker.io.integrity import mp4_problem
from tracker.io.source import open_source
from tracker.outputs.audio import MP4_COPY_CODECS
from tracker.outputs.encode import VideoWriter

FPS = 25


def run(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``tracker run ARGS`` with the stub models: ``(exit code, stderr)``."""
    code = main(["run", *args], tracker_factory=stub_tracker)
    return code, capsys.readouterr().err


def outputs(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    return out, jsonl, ["--out", str(out), "--jsonl", str(jsonl)]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_times(path: Path) -> list[float]:
    assert mp4_problem(path) is None
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def increasing(times: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(times, times[1:], strict=False))


def warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning: ")]


# --- audio: copied when MP4 can carry it, else AAC with the same waveform ------------------


@pytest.mark.parametrize(
    "codec, suffix",
    [("pcm_s16le", "avi"), ("pcm_s24le", "mov"), ("pcm_f32le", "mkv"), ("aac", "mp4")],
)
def test_audio_reaches_the_mp4_as_the_same_waveform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], codec: str, suffix: str
) -> None:
    clip = write(tmp_path / f"in.{suffix}", seconds=3, audio=codec)
    out, jsonl, args = outputs(tmp_path)
    code, err = run([str(clip), *args], capsys)
    assert code == 0, err
    assert len(records(jsonl)) == 75 and len(video_times(out)) == 75  # every frame kept
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    got, rate = decoded_audio(out)
    assert rate == 48000 and got.shape[0] == 2
    if codec == "aac":  # a stream copy: the very samples the input decodes to
        corr, rms = match(decoded_audio(clip)[0], got)
        assert corr > 0.999 and rms == pytest.approx(1.0, abs=0.005)
    else:  # re-encoded: same waveform and level, whatever the sample format was
        corr, rms = match(waveform(3).astype(np.float64), got)
        assert corr > 0.98 and rms == pytest.approx(1.0, abs=0.03)
    assert got.shape[1] == pytest.approx(3 * 48000, abs=2048)


@pytest.mark.parametrize("codec", sorted(MP4_COPY_CODECS - {"aac"}))
def test_each_codec_mp4_takes_as_a_copy_decodes_unchanged(tmp_path: Path, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"no {codec} encoder in this FFmpeg build")
    clip = write(tmp_path / "in.mkv", seconds=1, audio=codec)
    out = tmp_path / "out.mp4"
    with av.open(str(clip)) as c:
        tb = c.streams.video[0].time_base
        with VideoWriter(str(out), 160, 120, FPS, str(clip), tb) as writer:
            for f in c.decode(video=0):
                writer.write(f.to_ndarray(format="rgb24"), float(f.pts * f.time_base))
    assert mp4_problem(out) is None
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name.startswith(codec[:3])
    corr, rms = match(decoded_audio(clip)[0], decoded_audio(out)[0])
    assert corr > 0.999 and rms == pytest.approx(1.0, abs=0.005)


# --- rotation and pixel aspect ratio: frames as displayed -----------------------------------


@pytest.mark.parametrize("rotation, hflip", [(-90, False), (90, False), (180, False),
                                             (0, True), (90, True)])
def test_frames_are_turned_as_the_display_matrix_says(
    tmp_path: Path, rotation: int, hflip: bool
) -> None:
    clip = write(tmp_path / "phone.mp4", seconds=0.2, rotation=rotation, hflip=hflip)
    src = open_source(str(clip))
    frames = list(src.frames())
    src.close()
    turns = rotation // 90 % 4  # counter-clockwise quarter turns, then the mirror
    expected = [np.rot90(picture(i), turns) for i in range(len(frames))]
    if hflip:
        expected = [e[:, ::-1] for e in expected]
    h, w = expected[0].shape[:2]
    assert (src.info.width, src.info.height, src.info.stored_size) == (w, h, (160, 120))
    assert (src.info.rotation, src.info.mirrored) == (turns * 90 % 360, hflip)
    for got, want in zip(frames, expected, strict=True):
        assert got.image.shape == want.shape
        assert np.abs(got.image.astype(int) - want).mean() < 4


def test_rotated_video_is_tracked_and_written_upright(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write(tmp_path / "phone.mp4", seconds=0.4, rotation=-90)  # stored 160x120
    out, jsonl, args = outputs(tmp_path)
    code, err = run([str(clip), *args], capsys)
    assert code == 0, err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (120, 160)
        first = next(c.decode(v))
        assert "DISPLAYMATRIX" not in [d.type.name for d in first.side_data]  # upright pixels
        assert first.to_ndarray(format="rgb24")[:30, 90:].mean() > 200  # white corner, turned
    pts = np.array([r["faces"][0]["points"] for r in records(jsonl)])
    # the stub face spans the middle half of the displayed 120x160 frame (x 30-90, y 40-120;
    # it would be x 40-120, y 30-90 in the stored one)
    assert (pts[..., 0].min(), pts[..., 0].max()) == pytest.approx((30, 90), abs=1)
    assert (pts[..., 1].min(), pts[..., 1].max()) == pytest.approx((40, 120), abs=1)


def test_anamorphic_pixels_are_made_square(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write(tmp_path / "dv.mp4", seconds=0.2, sar=Fraction(4, 3))
    src = open_source(str(clip))
    image = next(iter(src.frames())).image
    src.close()
    assert (src.info.width, src.info.height) == (213, 120) and image.shape == (120, 213, 3)
    assert image[:25, :48].mean() > 200 and image[:25, 58:].mean() < 150  # block now 53 wide
    out, _, args = outputs(tmp_path)
    assert run([str(clip), *args], capsys)[0] == 0
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (214, 120)  # padded even
        assert not v.sample_aspect_ratio or v.sample_aspect_ratio == 1


# --- valid files are not damaged; cut ones are ---------------------------------------------


@pytest.fixture(scope="module")
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s with B-frames, a keyframe a second, and AAC audio."""
    return write(tmp_path_factory.mktemp("corpus") / "src.mp4", seconds=3, gop=25, bframes=2,
                 audio="aac")


@pytest.mark.parametrize("kind", ["avi", "avi_padded", "edit_list"])
def test_valid_files_whose_header_counts_differ_are_not_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bframes: Path, kind: str
) -> None:
    if kind == "edit_list":  # -ss 1.3 -t 1 -c copy: starts on the keyframe at 1.0
        clip, n = cut_copy(bframes, tmp_path / "cut.mp4", 1.3, 1.0), 25
    else:  # padded: as ffmpeg writes variable-frame-rate video to AVI
        clip, n = remux(bframes, tmp_path / "re.avi", avi_rate=600 if "padded" in kind else 0), 75
    with av.open(str(clip)) as c:
        assert c.streams.video[0].frames > n or kind == "avi"  # what the header says
    out, jsonl, args = outputs(tmp_path)
    code, err = run([str(clip), *args], capsys)
    assert code == 0, err
    assert "damaged" not in err and not warnings(err)
    times = [r["time"] for r in records(jsonl)]
    assert len(times) == n and increasing(times)
    assert video_times(out) == pytest.approx(times, abs=1e-3)
    assert np.diff(times) == pytest.approx(0.04, abs=1e-3)
    if kind != "edit_list":
        assert f"{FPS}.00 fps" in err  # the frame rate, not the AVI tick rate


@pytest.mark.parametrize("suffix, fmt", [("mkv", None), ("avi", None), ("ts", "mpegts")])
def test_files_cut_short_are_still_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, fmt: str | None
) -> None:
    whole = write(tmp_path / f"whole.{suffix}", seconds=2, fmt=fmt, audio="aac")
    data = whole.read_bytes()
    clip = tmp_path / f"cut.{suffix}"
    clip.write_bytes(data[: int(len(data) * 0.6) + 7])  # not on a packet boundary
    out, jsonl, args = outputs(tmp_path)
    code, err = run([str(clip), *args], capsys)
    assert code == ExitCode.DAMAGED_INPUT
    n = len(records(jsonl))
    assert 0 < n < 50 and len(video_times(out)) == n
    assert f"decoded {n} " in err and "the file ends inside" in err


# --- timestamp discontinuities: joined MPEG-TS segments --------------------------------------


@pytest.mark.parametrize("audio, jump_s", [(True, 0.0), (False, 0.0), (True, 100.0)],
                         ids=["audio", "no-audio", "forward-jump"])
def test_joined_ts_segments_keep_every_frame_and_time_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], audio: bool, jump_s: float
) -> None:
    clip = ts_segments(tmp_path / "joined.ts", seconds=2, audio=audio, jump_s=jump_s)
    out, jsonl, args = outputs(tmp_path)
    code, err = run([str(clip), *args], capsys)
    assert code == 0, err
    times = [r["time"] for r in records(jsonl)]
    assert len(times) == 100 and increasing(times)
    assert np.diff(times) == pytest.approx(0.04, abs=1e-3)  # the joint too
    assert video_times(out) == pytest.approx(times, abs=1e-3)
    (line,) = warnings(err)
    assert "timestamps jump" in line and ("back" if not jump_s else "ahead") in line
    if audio:  # both segments, each as far from its video as in the input
        got, _ = decoded_audio(out)
        assert got.shape[1] / 48000 == pytest.approx(4.0, abs=0.1)
        window = decoded_audio(tmp_path / "joined.0.ts")[0][:, 4096:4096 + 48000]
        first, second = locate(got, window, 4096), locate(got, window, 4096 + 96000)
        assert (second - first) / 48000 == pytest.approx(2.0, abs=0.01)


# --- network sources that never answer or go away ------------------------------------------


def test_rtsp_server_that_never_answers_times_out(
    capsys: pytest.CaptureFixture[str]
) -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never replies
    url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/x"
    try:
        code, err = run(["--source", url, "--jsonl", "-", "--timeout", "2"], capsys)
    finally:
        server.close()
    assert code == ExitCode.SOURCE
    assert f"error: timed out after 2 s opening {url}" in err


def test_stream_whose_server_hangs_up_ends_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write(tmp_path / "live.ts", seconds=2, fmt="mpegts").read_bytes()
    server = HangUpServer(data, 0.5)
    out, jsonl, args = outputs(tmp_path)
    try:
        code, err = run(["--source", server.url, "--timeout", "2", "--policy", "block", *args],
                        capsys)
    finally:
        server.close()
    assert code == 0, err
    n = len(records(jsonl))
    assert 0 < n < 50 and len(video_times(out)) == n
    (line,) = warnings(err)
    assert "the stream ended early" in line and server.url in line
