"""Copy a trained checkpoint into the package as the default model and write its JSON card.

    python scripts/package_weights.py RUN/best.pt --history runs_history.json \
        [--data data.json] [--val DIR ...] [--calibrate --train DIR]

The card records the model config, preprocessing, how it was trained (commands, data, seeds,
epochs), the training data and its licences (``--data``: a JSON object written into the card),
validation metrics per ``--val`` folder measured here with `tracker eval`'s code (box from the
landmarks and box from the package's detector), and the weights checksum.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from tracker.detect.detectors import create_detector
from tracker.evaluation.stills import evaluate, load_eval_set
from tracker.landmarker import load_landmarker
from tracker.models.checkpoint import DEFAULT_WEIGHTS, count_params, file_sha256, load_checkpoint
from tracker.training.calibrate import calibrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--history", required=True, help="JSON list of the training stages")
    parser.add_argument("--val", nargs="+", default=["../shared/data/faces68/val"],
                        help="validation folders, each reported on its own")
    parser.add_argument("--data", default="",
                        help="JSON file describing the training data and licences for the card")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the per-landmark offset on --train (tracker.training.calibrate)")
    parser.add_argument("--train", default="../shared/data/faces68/train")
    args = parser.parse_args()

    out = Path(args.out)
    if Path(args.checkpoint).resolve() != out.resolve():
        shutil.copyfile(args.checkpoint, out)
    if args.calibrate:
        calibrate(out, args.train)
    ckpt = load_checkpoint(out)
    lm = load_landmarker(str(out))
    detector = create_detector()
    metrics = {}
    for folder in args.val:
        samples = load_eval_set(folder)
        metrics[folder] = {"tight_box": evaluate(samples, lm).summary(),
                           "detector": evaluate(samples, lm, detector).summary()}
    data = json.loads(Path(args.data).read_text()) if args.data else {
        "train": "faces68/train (3,402 images, 277 persons)",
        "val": "faces68/val (420 images, 35 other persons), used for model selection"}
    card = {
        "file": out.name,
        "sha256": file_sha256(out),
        "model": ckpt.net.__dict__ | {"widths": list(ckpt.net.widths)},
        "dkm": None if ckpt.dkm is None else ckpt.dkm.__dict__ | {"dilations": list(ckpt.dkm.dilations)},
        "params": count_params(ckpt.model),
        "input": {"size": ckpt.net.size, "channels": ckpt.net.in_channels,
                  "preprocess": ckpt.meta.get("preprocess"),
                  "crop": "square of 1.25 x max(w, h) of the tight 68-point box, centred"},
        "training": json.loads(Path(args.history).read_text()),
        "calibration": None if "point_offset" not in ckpt.meta else {
            "what": "per-landmark offset (heatmap px) added to the decoded points",
            "data": ckpt.meta.get("point_offset_data"),
            "command": ("python -m tracker.training.calibrate CKPT --train "
                        + str(ckpt.meta.get("point_offset_data"))),
        },
        "data": data,
        "val_metrics": metrics,
        "val_metrics_command": "tracker eval --data DIR --json  |  tracker eval --data DIR --json "
                               "--detector",
        "packaged": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
