"""Copy a trained checkpoint into the package as the default model and write its JSON card.

    python scripts/package_weights.py RUN/best.pt --history runs_history.json [--calibrate]

The card records the model config, preprocessing, how it was trained (commands, data, seeds,
epochs), validation metrics measured here with `tracker eval`'s code, and the weights checksum.
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
    parser.add_argument("--val", default="../shared/data/faces68/val")
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
    samples = load_eval_set(args.val)
    lm = load_landmarker(str(out))
    metrics = {"tight_box": evaluate(samples, lm).summary(),
               "detector": evaluate(samples, lm, create_detector()).summary()}
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
        "data": {"train": "faces68/train (3,402 images, 277 persons)",
                 "val": "faces68/val (420 images, 35 other persons), used for model selection"},
        "val_metrics": metrics,
        "val_metrics_command": "tracker eval --json  |  tracker eval --json --detector",
        "packaged": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
