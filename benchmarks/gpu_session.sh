#!/usr/bin/env bash
# One device call on a CUDA machine: GPU engine tests and latency, then training runs in
# parallel on the GPU for TRAIN_MINUTES each. Results go to $OUT (snapshotted every 30 s, so a
# cut-off call still returns them): NAME.pt (each run's best checkpoint) and logs.tar.gz (env.txt,
# gpu_tests.txt, gpu_bench_fp16/fp32.json, each run's log and output).
# Data: DATA=folder with train/ and val/. The lent machine gets only the repo, so copy the data in
# and keep git from tracking it (49 MB, under the 64 MiB that travels), then carry it:
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu && cp -r ../shared/data/faces68 .gpu/
#   device run: TRAIN_MINUTES=6 bash benchmarks/gpu_session.sh   (carry: [".gpu"])
# The runs below are the ones of 2026-11-26 (the second call added EXTRA="--minutes 0 --epochs 80").
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD PYTHONDONTWRITEBYTECODE=1
OUT=${OUT:-/tmp/gpu_out}; DATA=${DATA:-.gpu/faces68}; MIN=${TRAIN_MINUTES:-6}
DEVICE=${DEVICE:-cuda}; KILL=$(awk "BEGIN { print int($MIN * 60 + 120) }")
RUNS=/tmp/gpu_runs; mkdir -p "$OUT" "$RUNS"; M=$RUNS/meta; mkdir -p "$M"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, cv2, numba; print('torch', torch.__version__, torch.cuda.get_device_name())"
} > "$M/env.txt" 2>&1
python3 -c "import numpy as np; from tracker import heatmap; heatmap.decode(np.zeros((1,68,8,8),np.float32))"
for p in fp16 fp32; do
  timeout 120 python3 benchmarks/gpu_bench.py --engine cuda --precision $p --batches 1,8,32,64 \
    --calls 300 --json "$M/gpu_bench_$p.json" 2>&1 | tail -6
done
timeout 150 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors tests/test_engine_gpu.py tests/test_train.py \
  > "$M/gpu_tests.txt" 2>&1; tail -3 "$M/gpu_tests.txt"
COMMON="--train $DATA/train --select-frac 0.1 --device $DEVICE --minutes $MIN --epochs 400 --threads 2
  --ema 0.998 --rotate_sigma 12 --occlude_p 0.15 --no-flip ${EXTRA:-}"
train() {  # name, extra args
  local name=$1; shift
  timeout "$KILL" python3 -m tracker.training.train $COMMON --out "$RUNS/$name" "$@" \
    > "$RUNS/$name.out" 2>&1 &
}
train lite_ft --model rcn_lite --init tracker/weights/rcn_lite.pt --lr 0.001 --seed 11
train lite_s --model rcn_lite --lr 0.002 --seed 12
train wide_ft --model rcn_lite_wide --init tracker/weights/rcn_lite.pt --lr 0.002 --seed 13
train fine_ft --model rcn_lite_fine --init tracker/weights/rcn_lite.pt --lr 0.002 --seed 14
train rcn_paper --model rcn --lr 0.002 --seed 15
train sumnet_paper --model sumnet --lr 0.002 --seed 16
snapshot() {
  for d in "$RUNS"/*/; do
    [ -f "$d/best.pt" ] && cp "$d/best.pt" "$OUT/tmp.pt" && mv "$OUT/tmp.pt" "$OUT/$(basename "$d").pt"
  done
  (cd "$RUNS" && tar czf "$OUT/logs.tmp" --exclude='*.pt' --exclude='*.tmp' . ) \
    && mv "$OUT/logs.tmp" "$OUT/logs.tar.gz"
}
while [ -n "$(jobs -r)" ]; do sleep 30; snapshot; done
snapshot; nvidia-smi --query-gpu=utilization.gpu --format=csv >> "$M/env.txt"
for f in "$RUNS"/*.out; do echo "== $f"; tail -2 "$f"; done
