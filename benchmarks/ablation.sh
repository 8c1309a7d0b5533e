#!/usr/bin/env bash
# Equal-budget SumNet vs RCN ablation (README "Default model and ablation"):
# 1,000 training images, 10 epochs, 1 thread, seed 0; val NME is printed per epoch in each log.
set -euo pipefail
for m in rcn_lite sumnet_lite; do
  tracker train --model "$m" --epochs 10 --limit 1000 --threads 1 --out "runs/abl_$m" --seed 0
done
