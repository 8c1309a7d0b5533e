"""The weights shipped in the package: cards match the files, names resolve, accuracy holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracker.models.checkpoint import DEFAULT_WEIGHTS, WEIGHTS_DIR, file_sha256, resolve_weights

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces68" / "val"
SHIPPED = ["rcn_lite", "rcn_lite_fast", "rcn_lite_faces68"]


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_the_weights(name: str) -> None:
    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert card["sha256"] == file_sha256(WEIGHTS_DIR / f"{name}.pt")
    metrics = card["val_metrics"]
    # one folder (older cards: faces68/val) or one entry per validation folder
    faces68 = metrics if "tight_box" in metrics else metrics["../shared/data/faces68/val"]
    assert faces68["tight_box"]["n"] == faces68["detector"]["n"] == 420


def test_names_resolve_to_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_weights(None) == resolve_weights("") == DEFAULT_WEIGHTS
    assert resolve_weights("rcn_lite_fast") == WEIGHTS_DIR / "rcn_lite_fast.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rcn_lite_fast").write_bytes(b"")  # a file here wins over the shipped name
    assert resolve_weights("rcn_lite_fast") == Path("rcn_lite_fast")
    assert resolve_weights("runs/x.pt") == Path("runs/x.pt")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reach_5_percent_nme_on_val(name: str) -> None:
    if not VAL.is_dir():
        pytest.skip("needs ../shared/data/faces68/val")
    from tracker.evaluation.stills import evaluate, load_eval_set
    from tracker.landmarker import load_landmarker

    samples = load_eval_set(VAL)[::5]  # 84 images, 35 people
    summary = evaluate(samples, load_landmarker(name)).summary()
    assert summary["n"] == 84
    assert summary["nme_mean"] <= 0.05 and summary["fr_010"] <= 0.02


WILD_VAL = VAL.parents[1] / "wild68" / "val"


def test_default_weights_hold_their_real_photo_accuracy() -> None:
    if not WILD_VAL.is_dir():
        pytest.skip("needs ../shared/data/wild68/val")
    from tracker.evaluation.stills import evaluate, load_eval_set
    from tracker.landmarker import load_landmarker

    samples = load_eval_set(WILD_VAL)[::4]  # 82 photos
    default = evaluate(samples, load_landmarker(None)).summary()
    faces68_only = evaluate(samples, load_landmarker("rcn_lite_faces68")).summary()
    assert default["nme_mean"] <= 0.040 and default["fr_010"] == 0.0  # all 326: 3.55 %, 0 %
    assert faces68_only["nme_mean"] >= default["nme_mean"] + 0.01  # all 326: 5.5 % vs 3.55 %
