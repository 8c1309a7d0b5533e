#!/usr/bin/env bash
# Equal-budget SumNet vs RCN ablation (README "Default model and ablation"), from scratch with the
# default model's recipe: all 3,402 training images, 10 epochs, 1 thread, seed 0, weight EMA,
# no flip; val NME is printed per epoch in each log (runs/abl10_*/log.txt).
set -euo pipefail
for m in rcn_lite sumnet_lite; do
  tracker train --model "$m" --epochs 10 --threads 1 --seed 0 --ema 0.998 --rotate-sigma 12 \
    --occlude-p 0.15 --no-flip --out "runs/abl10_$m"
done
