"""Sources decode every frame with exact container times; bad sources fail with one clear line."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from damaged import TsServer, cut, faststart, size_change, unknown_codec
from synthetic import make_audio_only, make_clip

from tracker.io.orient import Orientation, from_display_matrix, square_size
from tracker.io.source import (
    CameraNotFound,
    SourceError,
    SourceOptions,
    mp4_problem,
    open_source,
    webcam_device,
)
from tracker.io.timeline import Timeline, best_effort
from tracker.runtime.pipeline import Pipeline, Stage


@pytest.mark.parametrize(
    "suffix, rate, codec, fmt, n",
    [
        (".mp4", 25, "libx264", None, 12),
        (".mp4", Fraction(30000, 1001), "libx264", None, 10),
        (".mkv", 24, "libx264", None, 9),
        (".ts", 30, "libx264", "mpegts", 8),
        (".avi", 20, "mpeg4", None, 7),
    ],
)
def test_file_frames_and_timestamps_are_exact(
    tmp_path: Path, suffix: str, rate: Fraction | int, codec: str, fmt: str | None, n: int
) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", n_frames=n, rate=rate, codec=codec, fmt=fmt)
    src = open_source(str(clip))
    try:
        info = src.info
        frames = list(src.frames())
    finally:
        src.close()
    assert (info.kind, info.width, info.height, info.is_live, info.policy) == (
        "file", 64, 48, False, "block")
    assert info.path == str(clip) and not info.has_audio
    assert info.fps == pytest.approx(float(rate), rel=1e-3)
    assert info.frame_count == n
    assert [f.index for f in frames] == list(range(n))
    # times are pts * time_base: i / rate quantised to the container's time base
    tb, start = info.time_base, frames[0].time
    expected = [float(round(Fraction(i) / Fraction(rate) / tb) * tb) for i in range(n)]
    assert [f.time - start for f in frames] == pytest.approx(expected, abs=1e-9)
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3) and f.image.dtype.name == "uint8"
        assert abs(float(f.image.mean()) - (20 * i + 10)) < 6  # the frame that was written


def test_times_are_pts_times_time_base(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", n_frames=5, rate=Fraction(30000, 1001))
    src = open_source(str(clip))
    frames = list(src.frames())
    src.close()
    assert src.info.time_base == Fraction(1, 30000)
    assert [f.time for f in frames] == [float(Fraction(1001 * i, 30000)) for i in range(5)]


def test_timeline_shifts_segments_on_and_keeps_gaps() -> None:
    line = Timeline(resets=True, max_gap=1000)
    ticks = [0, 10, 20, 30, 0, 10, 20, 500, 510, 9000, 9010, 9010, 9020]
    placed = [line.place(t, 10) for t in ticks]
    # back to 0: continues at 40; a gap of 470 is kept (VFR); 9000 is too far ahead;
    # the repeated 9010 goes one tick on
    assert placed == [0, 10, 20, 30, 40, 50, 60, 540, 550, 560, 570, 571, 581]
    assert line.jumps == 2 and line.first == (40, -40)
    assert Timeline(resets=False, max_gap=1000).place(0, 10) == 0
    files = Timeline(resets=False, max_gap=1000)  # no forward resets outside MPEG-TS
    assert [files.place(t, 10) for t in (0, 10, 5000)] == [0, 10, 5000]


def test_best_effort_uses_dts_when_pts_are_scrambled() -> None:
    class F:
        def __init__(self, pts: int | None, dts: int | None) -> None:
            self.pts, self.dts = pts, dts

    avi = [F(1, 2), F(4, 3), F(3, 4), F(5, 5), F(2, 6), F(8, 7), F(7, 8), F(6, None)]
    assert [t for _, t in best_effort(avi, 3)] == [2, 3, 4, 5, 6, 7, 8, 9]
    mp4 = [F(0, -2), F(1, -1), F(2, 0), F(3, 1)]  # B-frames, pts in order: keep them
    assert [t for _, t in best_effort(mp4, 3)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "matrix, expected",
    [
        ((65536, 0, 0, 0, 65536), Orientation()),
        ((0, -65536, 0, 65536, 0), Orientation(True, False, True)),  # 90 counter-clockwise
        ((0, 65536, 0, -65536, 0), Orientation(True, True, False)),  # 90 clockwise
        ((-65536, 0, 0, 0, -65536), Orientation(False, True, True)),  # 180
        ((-65536, 0, 0, 0, 65536), Orientation(False, True, False)),  # mirrored
    ],
)
def test_display_matrix_to_orientation(matrix: tuple[int, ...],
                                       expected: Orientation) -> None:
    got = from_display_matrix([*matrix, 0, 0, 0, 1 << 30])
    assert got == expected
    image = np.arange(6).reshape(2, 3, 1)
    turns = {(True, False, True): 1, (True, True, False): 3, (False, True, True): 2}
    key = (got.transpose, got.flip_x, got.flip_y)
    if key in turns:
        assert np.array_equal(got.apply(image), np.rot90(image, turns[key]))
        assert got.rotation == 90 * turns[key] and not got.mirrored
    assert got.size(640, 360) == ((360, 640) if got.transpose else (640, 360))


def test_square_pixels() -> None:
    assert square_size(720, 576, Fraction(16, 15)) == (768, 576)
    assert square_size(720, 480, Fraction(8, 9)) == (720, 540)
    assert square_size(640, 360, None) == square_size(640, 360, Fraction(0)) == (640, 360)
    assert square_size(640, 360, Fraction(100)) == (640, 360)  # implausible: ignored


def test_audio_is_reported_for_pass_through(tmp_path: Path) -> None:
    src = open_source(str(make_clip(tmp_path / "a.mp4", n_frames=3, audio=True)))
    src.close()
    assert src.info.has_audio and src.info.path == str(tmp_path / "a.mp4")


@pytest.mark.parametrize(
    "graph, max_frames, n, size",
    [
        ("testsrc2=size=96x64:rate=10:duration=1", 0, 10, (64, 96)),
        ("testsrc2=size=32x32:rate=30", 5, 5, (32, 32)),  # endless source, capped
        ("color=c=red:size=16x8:rate=5:duration=0.6", 0, 3, (8, 16)),
    ],
)
def test_lavfi_sources(graph: str, max_frames: int, n: int, size: tuple[int, int]) -> None:
    src = open_source(f"lavfi:{graph}", max_frames=max_frames)
    frames = list(src.frames())
    src.close()
    assert src.info.kind == "lavfi" and not src.info.is_live and src.info.path is None
    assert len(frames) == n and frames[0].image.shape == (*size, 3)
    fps = src.info.fps
    assert [f.time for f in frames] == pytest.approx([i / fps for i in range(n)])


def test_source_runs_as_a_pipeline_stage(tmp_path: Path) -> None:
    class Sink(Stage):
        name = "sink"

        def __init__(self) -> None:
            self.indices: list[int] = []

        def process(self, item: object) -> None:
            self.indices.append(item.index)  # type: ignore[attr-defined]

    src = open_source(str(make_clip(tmp_path / "p.mp4", n_frames=20)))
    sink = Sink()
    pipe = Pipeline()
    ch = pipe.channel("frames", 2, src.info.policy)
    pipe.add(src, outputs=[ch])
    pipe.add(sink, input=ch)
    metrics = pipe.run()
    assert sink.indices == list(range(20)) and metrics.frames == 20 and metrics.dropped == 0


def _problem(tmp_path: Path, kind: str) -> str:
    if kind == "missing":
        return str(tmp_path / "nope.mp4")
    if kind == "directory":
        return str(tmp_path)
    if kind == "not_video":
        (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
        return str(tmp_path / "notes.mp4")
    if kind == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        return str(tmp_path / "empty.mp4")
    if kind == "audio_only":
        return str(make_audio_only(tmp_path / "sound.m4a"))
    if kind == "bad_lavfi":
        return "lavfi:nosuchfilter=size=3x3"
    if kind == "refused":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"tcp://127.0.0.1:{port}"
    return "   "


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("not_video", "not a video"),
        ("empty", "not a video"),
        ("audio_only", "no video stream"),
        ("bad_lavfi", "bad lavfi source"),
        ("refused", "cannot open tcp://"),
        ("blank", "empty source"),
    ],
)
def test_bad_sources_raise_one_line_source_errors(tmp_path: Path, kind: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        open_source(_problem(tmp_path, kind))
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not Path("/dev").is_dir(), reason="needs a /dev tree")
def test_missing_webcam_is_camera_not_found() -> None:
    with pytest.raises(CameraNotFound, match="no webcam|cannot open webcam"):
        open_source("webcam:97")


@pytest.mark.parametrize(
    "which, platform, expected",
    [
        ("0", "linux", ("/dev/video0", "v4l2")),
        ("2", "linux", ("/dev/video2", "v4l2")),
        ("/dev/v4l/by-id/cam", "linux", ("/dev/v4l/by-id/cam", "v4l2")),
        ("1", "darwin", ("1", "avfoundation")),
        ("Integrated Camera", "win32", ("video=Integrated Camera", "dshow")),
    ],
)
def test_webcam_devices_per_platform(which: str, platform: str, expected: tuple[str, str]) -> None:
    assert webcam_device(which, platform) == expected


@pytest.mark.parametrize("which, platform", [("0", "win32"), ("0", "sunos5")])
def test_unsupported_webcam_requests(which: str, platform: str) -> None:
    with pytest.raises(CameraNotFound):
        webcam_device(which, platform)


# --- live sources over loopback -------------------------------------------------------------


@pytest.fixture()
def ts_clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "live.ts", n_frames=15, rate=30, fmt="mpegts")


@pytest.fixture()
def tcp_server(ts_clip: Path) -> Iterator[int]:
    """Serves the MPEG-TS clip once to the first client on a loopback TCP port."""
    data = ts_clip.read_bytes()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()


def test_tcp_stream_is_live_with_times_from_its_first_frame(tcp_server: int) -> None:
    src = open_source(f"tcp://127.0.0.1:{tcp_server}",
                      SourceOptions(open_timeout_s=5, read_timeout_s=5))
    frames = list(src.frames())
    src.close()
    info = src.info
    assert info.kind == "url" and info.is_live and info.policy == "drop_oldest"
    assert info.path is None and info.frame_count is None
    assert len(frames) == 15
    assert [f.time for f in frames] == pytest.approx([i / 30 for i in range(15)], abs=1e-6)


def test_http_stream_decodes(ts_clip: Path) -> None:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    def handler(*args: object, **kwargs: object) -> Quiet:
        return Quiet(*args, directory=str(ts_clip.parent), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{ts_clip.name}"
        src = open_source(url, SourceOptions(open_timeout_s=5, read_timeout_s=5))
        frames = list(src.frames())
        src.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert src.info.kind == "url" and len(frames) == 15


def test_silent_server_hits_the_open_timeout() -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never sends
    try:
        with pytest.raises(SourceError, match="timed out|cannot open"):
            open_source(f"tcp://127.0.0.1:{server.getsockname()[1]}",
                        SourceOptions(open_timeout_s=0.3, read_timeout_s=0.3))
    finally:
        server.close()


# --- damaged files and live sources that stall or disconnect --------------------------------


def test_truncated_file_yields_what_decodes_and_says_so(tmp_path: Path) -> None:
    whole = faststart(make_clip(tmp_path / "a.mp4", n_frames=40), tmp_path / "fs.mp4")
    src = open_source(str(cut(whole, tmp_path / "half.mp4", 0.5)))
    frames = list(src.frames())
    src.close()
    assert 0 < len(frames) < 40
    assert [f.index for f in frames] == list(range(len(frames)))
    assert src.damaged is not None and f"decoded {len(frames)} of 40 frames" in src.damaged


def test_complete_file_is_not_reported_damaged(tmp_path: Path) -> None:
    src = open_source(str(faststart(make_clip(tmp_path / "a.mp4", n_frames=10),
                                    tmp_path / "fs.mp4")))
    assert len(list(src.frames())) == 10 and src.damaged is None


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_mp4_cut_before_its_index_is_explained(tmp_path: Path, fraction: float) -> None:
    clip = cut(make_clip(tmp_path / "a.mp4", n_frames=40), tmp_path / "cut.mp4", fraction)
    assert mp4_problem(clip) is not None
    with pytest.raises(SourceError, match="incomplete MP4.*moov"):
        open_source(str(clip))


def test_unknown_codec_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported video codec"):
        open_source(str(unknown_codec(tmp_path)))


def test_frames_keep_the_first_size_when_the_stream_changes_size(tmp_path: Path) -> None:
    src = open_source(str(size_change(tmp_path / "two_sizes.ts")))  # 64x48, then 96x64
    shapes = [f.image.shape for f in src.frames()]
    assert len(shapes) == 12 and set(shapes) == {(src.info.height, src.info.width, 3)}


@pytest.fixture(scope="module")
def ts_data(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("live") / "live.ts"
    return make_clip(path, n_frames=10, rate=30, fmt="mpegts").read_bytes()


def live(url: str, **kw: float | bool) -> SourceOptions:
    base: dict[str, float | bool] = dict(open_timeout_s=1, read_timeout_s=0.5,
                                          reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.2)
    return SourceOptions(**{**base, **kw})  # type: ignore[arg-type]


def test_stalled_live_source_ends_cleanly_when_not_reconnecting(ts_data: bytes) -> None:
    server = TsServer(ts_data, ["stall"])
    try:
        src = open_source(server.url, live(server.url))
        frames = list(src.frames())  # no exception: the stream just ends
    finally:
        server.close()
    assert 0 < len(frames) <= 10
    assert src.warning is not None and "stalled" in src.warning and src.reconnects == 0


@pytest.mark.parametrize("sessions", [["close", "close"], ["stall", "close"]])
def test_live_source_reconnects_with_backoff_then_gives_up(
    ts_data: bytes, sessions: list[str]
) -> None:
    server = TsServer(ts_data, sessions)
    try:
        src = open_source(server.url, live(server.url, reconnect=True, reconnect_attempts=2))
        frames = list(src.frames())
    finally:
        server.close()
    assert src.reconnects == 1
    assert 10 < len(frames) <= 20  # frames of both connections
    assert [f.index for f in frames] == list(range(len(frames)))
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))  # continuous clock
    assert src.warning is not None and "gave up after 2 reconnect attempts" in src.warning


def test_stop_interrupts_the_reconnect_backoff(ts_data: bytes) -> None:
    server = TsServer(ts_data, ["close"])
    src = open_source(server.url, live(server.url, reconnect=True, reconnect_backoff_s=600,
                                       reconnect_backoff_max_s=600))
    stop = threading.Event()
    src.attach(stop)
    got: list[int] = []
    worker = threading.Thread(target=lambda: got.extend(f.index for f in src.frames()))
    try:
        worker.start()
        while len(got) < 10 and worker.is_alive():  # first connection played out
            time.sleep(0.01)
        stop.set()  # the source now waits 600 s before reconnecting
        worker.join(30)
    finally:
        server.close()
    assert not worker.is_alive() and got == list(range(10))


def test_live_source_that_never_sends_a_frame_is_an_error(ts_data: bytes) -> None:
    server = TsServer(b"", ["close"])  # accepts, sends nothing, hangs up
    try:
        with pytest.raises(SourceError):
            src = open_source(server.url, live(server.url))
            list(src.frames())
    finally:
        server.close()


@pytest.mark.parametrize("size_changes", [False, True])
def test_images_are_the_pixels_pyav_converts(tmp_path: Path, size_changes: bool) -> None:
    """One swscale context kept for the stream gives frame.to_ndarray's pixels exactly."""
    import av

    path = size_change(tmp_path / "two.ts") if size_changes else make_clip(tmp_path / "c.mp4")
    src = open_source(str(path))
    w, h = src.info.width, src.info.height
    with av.open(str(path)) as c:
        want = [f.to_ndarray(format="rgb24", **({} if (f.width, f.height) == (w, h) else
                dict(width=w, height=h, interpolation="BICUBIC"))) for f in c.decode(video=0)]
    got = [f.image for f in src.frames()]
    src.close()
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
