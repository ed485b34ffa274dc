#!/usr/bin/env bash
# Train five detector variants at once on one lent GPU (the `device` tool's machine), each from the
# same data pack, and leave their weights and logs in $OUT. Export and evaluation happen on the
# 2-core machine afterwards (training/train_detector.py --export-from RUN.pt, eval_detector.py).
#
# Needs, in the ignored folder .gpu/ (carried with the call):
#   pack-full.pkl               train_detector.py --data-set full --write-pack .gpu/pack-full.pkl
#   ch_PP-OCRv4_det_infer.onnx  the base model (train_detector.BASE_MODEL)
#   onnx2torch-1.5.15-*.whl     the one training package the GPU image lacks
#
# Each run: batch 16, 3000 steps (48,000 crops, 8.6 times the shipped r3's 5,600), three data
# workers; the other settings are r3's. --max-minutes stops a run early (and says so in its log)
# if the machine makes crops slower than planned, so the call ends inside its limit.
set -euo pipefail
OUT=${OUT:-.gpu/out}      # the device tool sets $OUT to the folder it brings back
WORK=${WORK:-.gpu/work}   # scratch: the onnx2torch install, exports, stdout, RUN.pt
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .gpu/onnx2torch-*.whl
export PYTHONPATH="$WORK/site" PYTHONUNBUFFERED=1
nvidia-smi -L || true
nproc

common=(--pack .gpu/pack-full.pkl --base .gpu/ch_PP-OCRv4_det_infer.onnx --device "${DEVICE:-cuda}" --workers 3
        --threads 1 --batch 16 --steps "${STEPS:-3000}" --crop 320 --composite 0.55 --synth 0.25
        --holder 0.5 --log-every 100 --checkpoint-every 0 --max-minutes "${MAX_MINUTES:-6.5}")
declare -A runs=(
  [detector-full-slim-g1]="--data-set full --arch slim --seed 1234"
  [detector-full-slim-g2]="--data-set full --arch slim --seed 7"
  [detector-full-slim-early-g3]="--data-set full --arch slim-early --seed 1234"
  [detector-full-slim-narrow-g4]="--data-set full --arch slim-narrow --seed 1234"
  [detector-mit-slim-g5]="--data-set mit --arch slim --seed 1234 --composite 0.6"
)
for run in "${!runs[@]}"; do
  # shellcheck disable=SC2086
  "$PY" training/train_detector.py "${common[@]}" ${runs[$run]} --run "$run" \
    --checkpoint-dir "$WORK" --out "$WORK/export/$run/plate_det.onnx" >"$WORK/$run.stdout" 2>&1 &
done
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
for run in "${!runs[@]}"; do
  tail -n 4 "$WORK/$run.stdout"
  cp "$WORK/$run.pt" "$OUT/" || fail=1
done
tar czf "$OUT/logs.tgz" training/logs/detector-*-g?.log "$WORK"/detector-*.stdout
exit $fail
