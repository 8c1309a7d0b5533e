"""`tracker bench`: one JSON object with the documented keys; bad input is a one-line error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from synthetic import make_clip

from tracker.cli.app import ExitCode, main
from tracker.models.checkpoint import save_checkpoint
from tracker.models.networks import VARIANTS, build_model

N = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", n_frames=N, width=96,
                     height=64)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = replace(VARIANTS["rcn_lite"], size=32, widths=(8, 12, 16))
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, build_model(net).eval(), net, None, {})
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_CACHE", str(tmp_path / "cache"))


def test_bench_json_is_one_object_with_the_documented_keys(
    clip: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", str(clip), "--weights", str(weights), "--engine", "onnxruntime",
                 "--frames", "0", "--batches", "1,2", "--repeats", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)  # the whole of stdout is one JSON object
    assert report["frames"] == N and report["fps"] > 0
    assert report["engine"] == "onnxruntime"
    assert {"decode", "track"} <= set(report["stages"])
    for stage in report["stages"].values():
        assert stage["p99_ms"] >= stage["p50_ms"] >= 0
    assert set(report["model_ms_per_face"]) == {"1", "2"}
    assert all(v > 0 for v in report["model_ms_per_face"].values())
    assert set(report["model_cpu_ms_per_face"]) == {"1", "2"}
    assert report["queues"]["frames"]["max_depth"] <= report["queues"]["frames"]["capacity"]
    assert report["dropped"] == 0 and report["detector_calls"] >= 1
    assert {"p50", "p99", "frames", "smoothing"} <= set(report["tracking_ms_per_frame"])


def test_bench_text_report_names_every_measurement(
    clip: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", str(clip), "--weights", str(weights), "--engine", "onnxruntime",
                 "--frames", "4", "--batches", "1", "--repeats", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for word in ("fps", "p50", "p99", "queue", "dropped", "detector ran", "ms/face", "tracking"):
        assert word in out


@pytest.mark.parametrize("args,code", [
    (["/no/such/clip.mp4"], ExitCode.SOURCE),
    (["CLIP", "--engine", "tpu"], ExitCode.MODEL),
    (["CLIP", "--batches", "0,4"], ExitCode.USAGE),
    (["CLIP", "--weights", "/no/such/weights.pt"], ExitCode.MODEL),
])
def test_bench_bad_input_is_one_line_error(
    clip: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: ExitCode
) -> None:
    argv = ["bench", *[str(clip) if a == "CLIP" else a for a in args]]
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_breakdown_times_every_step_of_the_real_stage(engine: str) -> None:
    """The shipped models on the real clip: every step the frame runs is timed (the bf16
    decode of OpenVINO's 16-bit logits as well as the float32 one)."""
    video = DATA / "videos" / "short_hamilton_clip.mp4"
    if not video.exists():
        pytest.skip("shared data not present")
    from tracker.cli.bench import tracking_profile
    from tracker.config.schema import load_config
    from tracker.landmarker import load_landmarker

    cfg = load_config(None).with_overrides({"run.source": str(video), "run.max_frames": 130,
                                            "track.max_faces": 1, "track.rescan_every": 0})
    report = tracking_profile(cfg, load_landmarker(None, engine))
    steps = report["steps_us_p50"]
    assert report["frames"] > 0
    for step in ("cut_check", "crop_warp", "preprocess", "engine", "decode", "to_frame",
                 "temporal", "smoothing"):
        assert steps[step] > 0, step
    assert steps["decode"] < steps["engine"]
    assert sum(steps.values()) == pytest.approx(report["total_us_p50"], rel=0.3)
