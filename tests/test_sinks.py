"""JSONL lines have the documented shape and are always complete; sinks wrap writers/windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracker.outputs.record import face_record, frame_record
from tracker.outputs.sinks import JsonlSink, PreviewSink, RenderStage, VideoSink
from tracker.runtime.pipeline import StopRequested
from tracker.types import Box, Frame, Landmarks, TrackedFrame


def face(face_id: int, shift: float = 0.0, nan: bool = False) -> Landmarks:
    pts = np.stack([np.arange(68, dtype=np.float32) + shift, np.full(68, 5.5, np.float32)], 1)
    conf = np.linspace(0, 1, 68, dtype=np.float32)
    if nan:
        pts[3, 0] = np.nan
        conf[5] = np.inf
    return Landmarks(0, 0.0, face_id, pts, conf, 0.87654321, Box(0.123, 5.5, 67.0, 5.5))


def tracked(index: int, faces: tuple[Landmarks, ...]) -> TrackedFrame:
    return TrackedFrame(Frame(index, index / 25, np.zeros((4, 4, 3), np.uint8)), faces)


@pytest.mark.parametrize("n_faces", [0, 1, 3])
def test_frame_record_shape(n_faces: int) -> None:
    rec = frame_record(tracked(4, tuple(face(i, i) for i in range(n_faces))))
    assert rec["frame"] == 4 and rec["time"] == pytest.approx(0.16)
    assert [f["id"] for f in rec["faces"]] == list(range(n_faces))
    for f in rec["faces"]:
        assert set(f) == {"id", "box", "points", "confidence", "presence"}
        assert len(f["points"]) == 68 and all(len(p) == 2 for p in f["points"])
        assert len(f["confidence"]) == 68 and len(f["box"]) == 4
        assert f["presence"] == pytest.approx(0.8765)


def test_non_finite_values_become_null() -> None:
    rec = frame_record(tracked(0, (face(0, nan=True),)))
    f = rec["faces"][0]
    assert f["points"][3][0] is None and f["confidence"][5] is None
    json.dumps(rec, allow_nan=False)  # valid strict JSON


def test_websocket_faces_are_the_jsonl_record_plus_pose() -> None:
    from tracker.serve import protocol

    f = face(2, shift=-0.004)  # point 0's x rounds to -0.0, which both keep
    rec = face_record(f)
    sent = protocol.face_dict(f, None)  # a face that skipped the describe stage
    assert {k: sent[k] for k in rec} == rec and set(sent) - set(rec) == {"pose", "expression"}
    assert sent["expression"] is None
    assert json.dumps(rec["points"][0]) == "[-0.0, 5.5]"
    assert protocol.dumps(protocol.frame_message(0, 0.0, 0.0, 4, 4, [sent])).count("[-0.0,5.5]") == 1


def test_jsonl_file_has_one_complete_line_per_frame(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(str(path))
    for i in range(5):
        sink.process(tracked(i, (face(1),) if i % 2 else ()))
        assert path.read_text().endswith("\n")  # flushed, whole lines only
    sink.close()
    sink.close()  # idempotent
    lines = path.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(5))
    assert [len(json.loads(line)["faces"]) for line in lines] == [0, 1, 0, 1, 0]


def test_jsonl_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonlSink("-")
    sink.process(tracked(0, ()))
    sink.close()
    assert json.loads(capsys.readouterr().out) == {"frame": 0, "time": 0.0, "faces": []}


def test_render_stage_keeps_frame_timing() -> None:
    stage = RenderStage(lambda image, t: image + 1)
    out = stage.process(tracked(3, ()))
    assert isinstance(out, Frame) and (out.index, out.time) == (3, 0.12) and out.image[0, 0, 0] == 1


def test_render_stage_inplace_draws_on_the_frame_only_when_it_may() -> None:
    from tracker.outputs.render import annotate

    image = np.zeros((40, 80, 3), np.uint8)
    item = TrackedFrame(Frame(0, 0.0, image), (face(1, shift=4.0),))
    copied = RenderStage(annotate).process(item).image
    assert not image.any() and copied.any()
    drawn = RenderStage(annotate, inplace=True).process(item).image
    assert drawn is image and np.array_equal(drawn, copied)
    frozen = np.zeros((40, 80, 3), np.uint8)
    frozen.flags.writeable = False  # e.g. a read-only decoded buffer: drawn on a copy
    out = RenderStage(annotate, inplace=True).process(TrackedFrame(Frame(0, 0.0, frozen),
                                                                    item.faces)).image
    assert out is not frozen and np.array_equal(out, copied)


class FakeWriter:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.closed = 0

    def write(self, image_rgb: np.ndarray, time: float) -> None:
        self.times.append(time)

    def close(self) -> None:
        self.closed += 1


def test_video_sink_writes_at_frame_times_and_closes() -> None:
    writer = FakeWriter()
    sink = VideoSink(writer)
    for i in range(3):
        sink.process(Frame(i, i * 0.5, np.zeros((2, 2, 3), np.uint8)))
    sink.close()
    assert writer.times == [0.0, 0.5, 1.0] and writer.closed == 1


def test_preview_sink_stops_the_pipeline_when_the_window_is_closed() -> None:
    class Window:
        def __init__(self) -> None:
            self.shown = 0
            self.closed = False

        def show(self, image: np.ndarray, latency_ms: float | None = None) -> bool:
            self.shown += 1
            return self.shown < 2

        def close(self) -> None:
            self.closed = True

    window = Window()
    sink = PreviewSink(lambda: window)
    sink.open()
    img = np.zeros((2, 2, 3), np.uint8)
    sink.process(Frame(0, 0.0, img, wall_time=1.0))
    with pytest.raises(StopRequested):
        sink.process(Frame(1, 0.1, img, wall_time=1.0))
    sink.close()
    assert window.closed


def test_a_described_face_is_sent_exactly_as_the_jsonl_writes_it() -> None:
    from tracker.outputs.describe import DescribeStage, ExpressionStage
    from tracker.serve import protocol

    item = tracked(0, (face(1),))
    described = DescribeStage().process(ExpressionStage().process(item))
    (f,) = described.faces
    rec = face_record(f)
    assert "pose" in rec and set(rec["expression"]) >= {"eye_open_left", "blink_right"}
    assert protocol.face_dict(f) == rec
    sent = protocol.frame_message(0, 0.0, 0.0, 4, 4, [protocol.face_dict(f)])
    assert sent["faces"][0]["expression"] == rec["expression"]


def test_hello_announces_the_configured_camera_and_the_mirror() -> None:
    from tracker.config.schema import Config
    from tracker.serve import protocol

    pose = Config().with_overrides({"pose.fov_deg": 90.0}).pose
    k = pose.camera_matrix(640, 360)
    meta = protocol.SourceMeta(640, 360, 30.0, (k[0, 0], k[1, 1], k[0, 2], k[1, 2]), True)
    hello = protocol.hello_message(meta, 1, protocol.Subscription(), None)
    assert hello["camera"]["fx"] == pytest.approx(320.0)  # 640 / (2 tan 45°)
    assert hello["mirrored"] is True
    default = protocol.hello_message(protocol.SourceMeta(640, 360, 30.0), 1,
                                     protocol.Subscription(), None)
    assert default["camera"]["fx"] == 640 and default["mirrored"] is False
