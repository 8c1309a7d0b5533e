"""VideoWriter keeps every frame, the input timestamps and audio; Preview fails cleanly."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tracker.outputs import encode
from tracker.outputs.encode import EncodeError, Preview, PreviewUnavailable, VideoWriter

DATA = Path(__file__).parents[1].parent / "shared" / "data"
REAL_CLIP = DATA / "videos" / "short_hamilton_clip.mp4"

RATE = Fraction(30000, 1001)
VIDEO_TB = Fraction(1, 30000)
TICKS = 1001  # one frame at 29.97 fps in VIDEO_TB
SAMPLE_RATE = 44100
N_FRAMES = 20


def _frame_image(i: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 4 + i * 9) % 256
    image[..., 1] = (y * 4) % 256
    image[..., 2] = (i * 37) % 256
    return image


def make_clip(
    path: Path, *, audio: bool, n_frames: int = N_FRAMES, width: int = 64, height: int = 48,
    start_pts: int = 0,
) -> Path:
    """A 29.97 fps H.264 clip (time base 1/30000), optionally with AAC mono audio."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = video.codec_context.time_base = VIDEO_TB
        video.options = {"preset": "ultrafast"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(_frame_image(i, width, height), format="rgb24")
            frame.pts, frame.time_base, frame.duration = start_pts + i * TICKS, VIDEO_TB, TICKS
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = n_frames / RATE
            n_audio = int(seconds * SAMPLE_RATE) // 1024 + 1
            t = np.arange(1024) / SAMPLE_RATE
            for k in range(n_audio):
                tone = 0.2 * np.sin(2 * np.pi * 440 * (t + k * 1024 / SAMPLE_RATE))
                chunk = av.AudioFrame.from_ndarray(
                    tone.astype(np.float32)[None], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, k * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


@dataclass(frozen=True)
class Probe:
    """What a file holds, in seconds so different time bases compare."""

    frames: int
    video_times: list[Fraction]
    video_end: Fraction
    audio: list[tuple[Fraction, Fraction]]  # (start, duration) per packet
    size: tuple[int, int]


def probe(path: Path) -> Probe:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        tb = Fraction(video.time_base)
        times, end, audio = [], Fraction(0), []
        streams = [video, *container.streams.audio[:1]]
        for packet in container.demux(streams):
            if packet.dts is None:
                continue
            ptb = Fraction(packet.time_base)
            if packet.stream.type == "video":
                times.append(packet.pts * tb)
                end = max(end, (packet.pts + packet.duration) * tb)
            else:
                audio.append((packet.pts * ptb, packet.duration * ptb))
        size = (video.codec_context.width, video.codec_context.height)
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return Probe(frames, sorted(times), end, audio, size)


def decode_rgb(path: Path) -> tuple[list[tuple[np.ndarray, float]], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(stream)]
        return frames, Fraction(stream.time_base)


@pytest.fixture(scope="module", params=[True, False], ids=["with-audio", "no-audio"])
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = "audio.mp4" if request.param else "silent.mp4"
    return make_clip(tmp_path_factory.mktemp("clips") / name, audio=request.param)


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_roundtrip_keeps_frames_timestamps_duration_audio(
    clip: Path, tmp_path: Path, preset: str
) -> None:
    frames, tb = decode_rgb(clip)
    out = tmp_path / "out.mp4"
    audio_so_far = []
    with VideoWriter(str(out), 64, 48, float(RATE), str(clip), tb, preset=preset) as writer:
        for image, t in frames:
            writer.write(image, t)
            audio_so_far.append(writer.audio_packets_written)
    src, dst = probe(clip), probe(out)
    # audio goes out alongside the video, not all at close
    mid = N_FRAMES // 2
    assert audio_so_far[mid] == sum(1 for s, _ in src.audio if s <= src.video_times[mid])
    assert dst.frames == src.frames == N_FRAMES
    assert dst.video_times == src.video_times
    assert dst.video_end == src.video_end
    assert dst.audio == src.audio  # same packets, same starts and durations
    assert (len(dst.audio) > 0) == ("audio" in clip.name)
    assert writer.adjusted == 0


def test_time_base_is_read_from_audio_source(clip: Path, tmp_path: Path) -> None:
    writer = VideoWriter(str(tmp_path / "o.mp4"), 64, 48, float(RATE), str(clip))
    writer.close()
    assert writer.time_base == VIDEO_TB
    assert writer.frame_ticks == TICKS


@pytest.mark.parametrize("start_pts", [7 * TICKS, 12345])
def test_nonzero_start_pts_is_kept_exactly(tmp_path: Path, start_pts: int) -> None:
    out = tmp_path / "late.mp4"
    times = [(start_pts + i * TICKS) * VIDEO_TB for i in range(6)]
    with VideoWriter(str(out), 64, 48, float(RATE), time_base=VIDEO_TB) as writer:
        for i, t in enumerate(times):
            writer.write(_frame_image(i, 64, 48), float(t))
    result = probe(out)
    assert result.video_times == times
    assert result.video_end == times[-1] + TICKS * VIDEO_TB


@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt])
def test_close_after_partial_write_leaves_playable_file(
    clip: Path, tmp_path: Path, interrupt: type[BaseException]
) -> None:
    frames, tb = decode_rgb(clip)
    out = tmp_path / "partial.mp4"
    with pytest.raises(interrupt):
        with VideoWriter(str(out), 64, 48, float(RATE), str(clip), tb) as writer:
            for image, t in frames[:5]:
                writer.write(image, t)
            raise interrupt("stop")
    src, dst = probe(clip), probe(out)
    assert writer.closed
    assert dst.frames == 5
    assert dst.video_times == src.video_times[:5]
    end = 5 * TICKS * VIDEO_TB
    assert dst.audio == [a for a in src.audio if a[0] < end]  # audio up to the video's end


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = VideoWriter(str(tmp_path / "o.mp4"), 64, 48, 30.0)
    writer.write(_frame_image(0, 64, 48), 0.0)
    writer.close()
    writer.close()
    with pytest.raises(EncodeError):
        writer.write(_frame_image(1, 64, 48), 1 / 30)
    assert probe(tmp_path / "o.mp4").frames == 1


def test_no_frames_still_finalises(tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    VideoWriter(str(out), 64, 48, 30.0).close()
    with av.open(str(out)) as container:
        assert container.format.name.startswith("mov")


def test_an_mp4_left_without_its_index_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg's MP4 muxer takes 16-bit PCM, then writes no moov: close says so, not exit 0."""
    from media import write

    from tracker.outputs import audio

    clip = write(tmp_path / "pcm.avi", seconds=0.5, audio="pcm_s16le")
    monkeypatch.setattr(audio, "MP4_COPY_CODECS", audio.MP4_COPY_CODECS | {"pcm_s16le"})
    writer = VideoWriter(str(tmp_path / "out.mp4"), 160, 120, 25.0, str(clip))
    for i in range(12):
        writer.write(np.zeros((120, 160, 3), np.uint8), i / 25)
    with pytest.raises(EncodeError, match="wrote no index"):
        writer.close()


@pytest.mark.parametrize(
    ("width", "height", "encoded"),
    [(65, 49, (66, 50)), (64, 49, (64, 50)), (65, 48, (66, 48)), (64, 48, (64, 48))],
)
def test_odd_sizes_are_padded_to_even(
    tmp_path: Path, width: int, height: int, encoded: tuple[int, int]
) -> None:
    out = tmp_path / "odd.mp4"
    images = [_frame_image(i, width, height) for i in range(4)]
    with VideoWriter(str(out), width, height, 30.0) as writer:
        for i, image in enumerate(images):
            writer.write(image, i / 30)
    assert (writer.width, writer.height) == encoded
    result = probe(out)
    assert result.frames == 4 and result.size == encoded
    frames, _ = decode_rgb(out)
    error = np.abs(frames[0][0][:height, :width].astype(int) - images[0].astype(int)).mean()
    assert error < 12  # same picture, only lossy-coded, not shifted or scaled


@pytest.mark.parametrize("times", [[0.0, 0.0, 0.1], [0.2, 0.1, 0.3]])
def test_non_increasing_times_are_nudged_not_dropped(tmp_path: Path, times: list[float]) -> None:
    out = tmp_path / "o.mp4"
    with VideoWriter(str(out), 64, 48, 30.0, time_base=Fraction(1, 90000)) as writer:
        for i, t in enumerate(times):
            writer.write(_frame_image(i, 64, 48), t)
    assert writer.adjusted == 1
    assert probe(out).frames == len(times)


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((48, 64), np.uint8), ValueError),
        (np.zeros((48, 64, 3), np.float32), ValueError),
        (np.zeros((50, 64, 3), np.uint8), ValueError),
    ],
)
def test_bad_images_raise(tmp_path: Path, image: np.ndarray, error: type[Exception]) -> None:
    with VideoWriter(str(tmp_path / "o.mp4"), 64, 48, 30.0) as writer:
        with pytest.raises(error):
            writer.write(image, 0.0)


@pytest.mark.parametrize(
    ("size", "fps", "preset"),
    [((0, 48), 30.0, "veryfast"), ((64, 48), 0.0, "veryfast"), ((64, 48), 30.0, "warp9")],
)
def test_bad_settings_raise(
    tmp_path: Path, size: tuple[int, int], fps: float, preset: str
) -> None:
    with pytest.raises(ValueError):
        VideoWriter(str(tmp_path / "o.mp4"), *size, fps, preset=preset)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    ("path", "audio"),
    [
        ("missing_dir/o.mp4", None),
        ("o.unknown_ext", None),
        ("o.mp4", "does_not_exist.mp4"),
    ],
)
def test_bad_paths_raise_encode_error(tmp_path: Path, path: str, audio: str | None) -> None:
    audio_source = str(tmp_path / audio) if audio else None
    with pytest.raises(EncodeError):
        VideoWriter(str(tmp_path / path), 64, 48, 30.0, audio_source)


@pytest.mark.skipif(not REAL_CLIP.exists(), reason="shared data not present")
def test_real_clip_roundtrip(tmp_path: Path) -> None:
    frames, tb = decode_rgb(REAL_CLIP)
    height, width = frames[0][0].shape[:2]
    out = tmp_path / "hamilton.mp4"
    with VideoWriter(str(out), width, height, 29.97, str(REAL_CLIP), tb) as writer:
        for image, t in frames:
            writer.write(image, t)
    src, dst = probe(REAL_CLIP), probe(out)
    assert len(frames) == dst.frames == 275
    assert dst.video_times == src.video_times
    assert dst.video_end == src.video_end
    assert len(dst.audio) == len(src.audio) > 0
    assert dst.audio == src.audio


@pytest.mark.parametrize(
    ("gui", "display", "problem"),
    [("NONE", ":0", "GUI build of OpenCV"), ("GTK3", None, "display"), ("QT5", ":0", None)],
)
def test_preview_problem(
    monkeypatch: pytest.MonkeyPatch, gui: str, display: str | None, problem: str | None
) -> None:
    monkeypatch.setattr(encode.cv2, "getBuildInformation", lambda: f"  GUI:   {gui}\n")
    monkeypatch.setattr(encode.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    found = encode.preview_problem()
    assert found is None if problem is None else problem in found


def test_preview_without_display_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(encode.sys, "platform", "linux")
    with pytest.raises(PreviewUnavailable, match="--show needs"):
        Preview()


@pytest.mark.parametrize(("key", "stops"), [(ord("q"), True), (27, True), (ord("x"), False)])
def test_preview_stops_on_q_or_esc(
    monkeypatch: pytest.MonkeyPatch, key: int, stops: bool
) -> None:
    shown: list[np.ndarray] = []
    monkeypatch.setattr(encode, "preview_problem", lambda: None)
    monkeypatch.setattr(encode.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(encode.cv2, "imshow", lambda title, img: shown.append(img))
    monkeypatch.setattr(encode.cv2, "waitKey", lambda delay: key)
    monkeypatch.setattr(encode.cv2, "getWindowProperty", lambda *a: 1.0)
    preview = Preview()
    image = np.zeros((48, 64, 3), np.uint8)
    result = preview.show(image, latency_ms=12.0)
    assert result is not stops
    assert preview.stopped is stops
    assert shown[0][:24].any() and not image.any()  # HUD drawn on a copy, input untouched
