"""RCN vs RCN+DKM on faces68/val, clean and with a noise patch over the eyes or the mouth.

    python benchmarks/dkm_occlusion.py RCN.pt DKM.pt [--weights 0,0.5,1] [--limit N] [--engine E]

DKM.pt is a checkpoint from `tracker train --dkm`; its DKM is fused with RCN.pt at each logits
weight (0 = RCN alone). Prints mean NME (%) per condition and ms per face (clean run), one JSON
line per weight. RCN.pt's calibration offset (``tracker.training.calibrate``) applies to the fused model too.
"""

from __future__ import annotations

import argparse
import json

from tracker.engines.registry import create_engine
from tracker.evaluation.stills import evaluate, load_eval_set
from tracker.landmarker import Landmarker
from tracker.models.checkpoint import fuse, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rcn")
    parser.add_argument("dkm")
    parser.add_argument("--weights", default="0,0.5,1")
    parser.add_argument("--data", default="../shared/data/faces68/val")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    rcn, dkm = load_checkpoint(args.rcn), load_checkpoint(args.dkm)
    samples = load_eval_set(args.data, args.limit or None)
    for w in (float(v) for v in args.weights.split(",")):
        ck = fuse(rcn, dkm, w) if w else rcn
        lm = Landmarker(ck, create_engine(ck.model, ck.net.size, ck.net.in_channels, args.engine))
        row = {"dkm_weight": w, "engine": lm.engine.name}
        for occ in (None, "eyes", "mouth"):
            res = evaluate(samples, lm, None, occ)
            row[occ or "clean"] = round(res.summary()["nme_mean"] * 100, 2)
            if occ is None:
                row["ms_per_face"] = round(res.ms_per_face, 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
