"""Evaluation reports: per-region NME, signed offsets, per-folder results, model comparison."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from synthetic import make_labelled_folder

from tracker.evaluation import metrics, plots
from tracker.evaluation.stills import EvalResult, evaluate, format_report, load_eval_sets
from tracker.face68 import NOSE, OUTER_EYE_CORNERS
from tracker.io.pts import Sample


def face(iod: float = 100.0, seed: int = 0) -> np.ndarray:
    """68 points whose outer eye corners (36, 45) are ``iod`` apart horizontally."""
    pts = np.random.default_rng(seed).uniform(0, 200, (68, 2))
    a, b = OUTER_EYE_CORNERS
    pts[a], pts[b] = [50.0, 80.0], [50.0 + iod, 80.0]
    return pts


def test_a_shift_of_every_point_is_the_offset_in_every_region() -> None:
    gt = np.stack([face(100.0), face(50.0, seed=1)])
    report = metrics.bias_report(gt + [2.0, 0.0], gt)
    # image 1: 2/100, image 2: 2/50 -> mean 0.03; y untouched
    assert report["offset_x"] == pytest.approx(0.03) and report["offset_y"] == pytest.approx(0.0)
    assert set(report["regions"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
    for region in report["regions"].values():
        assert region["nme_mean"] == pytest.approx(0.03)
        assert region["offset_x"] == pytest.approx(0.03) and region["offset_y"] == pytest.approx(0.0)


def test_a_low_nose_shows_only_in_the_nose_region() -> None:
    gt = face(100.0)
    pred = gt.copy()
    pred[NOSE] += [0.0, 4.0]  # 4 px down on 9 of 68 points
    report = metrics.bias_report(pred, gt)
    assert report["regions"]["nose"]["offset_y"] == pytest.approx(0.04)
    assert report["regions"]["nose"]["nme_mean"] == pytest.approx(0.04)
    assert report["offset_y"] == pytest.approx(0.04 * 9 / 68)
    for name in ("jaw", "brows", "eyes", "mouth"):
        assert report["regions"][name]["nme_mean"] == 0.0
    assert metrics.region_nme(pred, gt, NOSE) == pytest.approx([0.04])
    assert metrics.signed_offset(pred, gt)[0] == pytest.approx([0.0, 0.04 * 9 / 68])


def _result(shifts: list[float], groups: tuple[str, ...], names: tuple[str, ...],
            miss: int | None = None) -> EvalResult:
    gts = np.stack([face(100.0, seed=i) for i in range(len(shifts))])
    preds = gts + np.array([[s, 0.0] for s in shifts])[:, None, :]
    nmes = metrics.nme(preds, gts)
    ms = np.arange(1.0, len(shifts) + 1)
    if miss is not None:
        nmes[miss], ms[miss], preds[miss] = np.inf, np.nan, 0.0
    return EvalResult(nmes, preds, float(np.nanmedian(ms)), gts, ms, names, groups)


def test_report_per_folder_and_infant_split_excluding_misses() -> None:
    groups = ("a", "a", "b", "b", "b")
    names = ("p_1", "p_2", "train_x", "test_y", "test_z")
    report = _result([1.0, 3.0, 5.0, 7.0, 100.0], groups, names, miss=4).report()
    assert report["n"] == 5 and report["misses"] == 1
    assert report["offset_x"] == pytest.approx(0.04)  # (1 + 3 + 5 + 7) / 4 found, / 100
    a, b = report["folders"]["a"], report["folders"]["b"]
    assert list(report["folders"]) == ["a", "b"]
    assert a["n"] == 2 and a["nme_mean"] == pytest.approx(0.02) and a["offset_x"] == pytest.approx(0.02)
    assert a["ms_per_face"] == pytest.approx(1.5) and "splits" not in a
    assert b["misses"] == 1 and b["nme_mean"] == pytest.approx(0.06)
    assert b["fr_010"] == pytest.approx(1 / 3)  # the miss fails
    assert b["splits"]["train_"]["nme_mean"] == pytest.approx(0.05)
    assert b["splits"]["test_"]["n"] == 2 and b["splits"]["test_"]["misses"] == 1
    assert b["splits"]["test_"]["regions"]["mouth"]["offset_x"] == pytest.approx(0.07)
    text = "\n".join(format_report(report))
    assert "offset       x +4.00%  y +0.00%" in text
    assert "b [test_*]" in text and "nose" in text
    json.dumps(report)  # plain numbers only


def test_evaluate_reports_the_offset_of_a_shifted_landmarker() -> None:
    rng = np.random.default_rng(0)
    samples = [Sample(f"s{i}", rng.integers(0, 255, (120, 120, 3), dtype=np.uint8),
                      (face(40.0 + 10 * i, seed=i) * 0.5).astype(np.float32)) for i in range(3)]
    truth = {id(s.image): s.points for s in samples}

    class Shifted:  # predicts the truth moved 2 px right
        def predict(self, image, boxes):  # noqa: ANN001, ANN202
            return [SimpleNamespace(points=truth[id(image)] + [2.0, 0.0])]

    result = evaluate(samples, Shifted(), groups=("x", "x", "y"))
    iod = metrics.inter_ocular(np.stack([s.points for s in samples]))
    report = result.report()
    assert report["offset_x"] == pytest.approx(np.mean(2.0 / iod), rel=1e-5)
    assert report["offset_y"] == pytest.approx(0.0, abs=1e-7)
    assert report["folders"]["y"]["offset_x"] == pytest.approx(2.0 / iod[2], rel=1e-5)
    with pytest.raises(ValueError, match="group labels"):
        evaluate(samples, Shifted(), groups=("x",))


def test_ced_overlay_has_one_legend_entry_per_model(tmp_path: Path) -> None:
    curves = {"first": np.linspace(0.01, 0.08, 20), "second": np.linspace(0.03, 0.15, 20),
              "third": np.linspace(0.0, 0.05, 5)}
    img = plots.ced_plot(curves, tmp_path / "ced.png")
    top, left = 34, 64  # plots.ced_plot's margins: legend swatches at x 74..98, y 48 + 18 i
    for i in range(4):
        y = top + 14 + 18 * i
        swatch = img[y - 1:y + 2, left + 14:left + 30]
        hits = (swatch == plots.PALETTE[i]).all(axis=2).sum()
        assert (hits >= 16) == (i < 3), f"legend entry {i}: {hits} pixels"


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("eval")
    folders = []
    for name, n, seed in (("a", 3, 1), ("b", 2, 2)):
        (root / name).mkdir()
        folders.append(make_labelled_folder(root / name, n, (96, 96), 30, 66, seed=seed))
    return folders


def test_load_eval_sets_labels_each_sample_with_its_folder(two_folders: list[Path]) -> None:
    samples, groups = load_eval_sets([str(f) for f in two_folders])
    assert len(samples) == 5 and groups == (str(two_folders[0]),) * 3 + (str(two_folders[1]),) * 2
    samples, groups = load_eval_sets([str(f) for f in two_folders], limit=1)
    assert len(samples) == 2 and len(set(groups)) == 2


def test_eval_cli_compares_models_per_folder(two_folders: list[Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.cli.app import main

    a, b = (str(f) for f in two_folders)
    common = ["eval", "--data", a, "--data", b, "--engine", "onnxruntime"]
    assert main([*common, "--compare", "rcn_lite_fast", "--json", "--plots", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in out["models"]] == ["default", "rcn_lite_fast"]
    for m in out["models"]:
        assert list(m["folders"]) == [a, b]
        assert m["folders"][a]["n"] == 3 and m["folders"][b]["n"] == 2 and m["n"] == 5
        assert set(m["regions"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
        assert "offset_x" in m and "offset_y" in m["folders"][b]
    assert out["models"][0]["nme_mean"] != out["models"][1]["nme_mean"]
    ced = cv2.cvtColor(cv2.imread(str(tmp_path / "ced.png")), cv2.COLOR_BGR2RGB)
    for i in range(2):
        assert (ced == plots.PALETTE[i]).all(axis=2).sum() > 20, f"curve {i} missing"
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len([n for n in names if n.startswith("ced_")]) == 2
    assert "representative_default.png" in names and "representative_rcn_lite_fast.png" in names

    assert main([*common, "--model", "rcn_lite_fast"]) == 0
    text = capsys.readouterr().out
    assert "offset " in text and "region " in text and "mouth" in text
    assert f"{a} " in text and f"{b} " in text  # one row per folder


def test_eval_cli_single_model_json_keeps_the_flat_summary(two_folders: list[Path],
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from tracker.cli.app import main

    copy = two_folders[0].parent / "copy.pt"
    shutil.copyfile(Path(__file__).parents[1] / "tracker/weights/rcn_lite_fast.pt", copy)
    assert main(["eval", "--data", str(two_folders[1]), "--engine", "onnxruntime",
                 "--model", str(copy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "copy" and out["n"] == 2 and "nme_mean" in out and "models" not in out
