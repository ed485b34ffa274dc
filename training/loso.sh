#!/usr/bin/env bash
# The recognizer's recipe, trained once per left-out source and once on everything, then measured
# leave-one-source-out (training/eval_loso.py). Two runs at a time, one thread each: on a 2-core
# machine that is twice the throughput of one run on two threads.
#
#   TRAIN_PY=/path/to/train-venv/bin/python DATA=/path/to/recdata RUN=r30 bash training/loso.sh
#
# DATA holds real/lines.npz, synth/lines.npz and ro/lines.npz from prepare_rec_data.py:
#   $TRAIN_PY training/prepare_rec_data.py --out $DATA/real --row-margin 0.2
#   $TRAIN_PY training/prepare_rec_data.py --out $DATA/synth --row-margin 0.2 --no-labelled --synthetic 24000
#   $TRAIN_PY training/prepare_rec_data.py --out $DATA/ro --row-margin 0.2 --no-labelled --pseudo
#
# With SOUP (names of recipes already trained this way), nothing is trained: each of the six runs
# RUN-x is the average of the SOUP runs' -x weights (training/soup_recognizer.py), so that the soup
# of runs trained without a source still never saw it. The shipped recognizer (s6), with
# MORE="$DATA/stack7/lines.npz $DATA/stack8/lines.npz" (training/setup_recognizer.sh makes them):
#   RUN=r30 ...; RUN=r33 EXTRA="--stretch 0.3" ...;
#   RUN=r37 MORE_DATA="$MORE" ...; RUN=r38 MORE_DATA="$MORE" EXTRA="--stretch 0.3" ...;
#   RUN=r39 MORE_DATA="$MORE" EXTRA="--seed 1" ...; RUN=r40 MORE_DATA="$MORE" EXTRA="--seed 1 --stretch 0.3" ...;
#   RUN=s6 SOUP="r30 r33 r37 r38 r39 r40" bash training/loso.sh
#
# With INIT (a recipe already trained this way), each run RUN-x starts from INIT-x's weights instead
# of the stock ones (and L2-SP then holds it near them), so that it too never saw its source.
# MORE_DATA adds line files to the recipe's three.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_PY=${TRAIN_PY:?set TRAIN_PY to the training venv python (training/README.md)}
DATA=${DATA:?set DATA to the folder of prepare_rec_data.py outputs}
RUN=${RUN:-r30}
STEPS=${STEPS:-2000}
RECIPE=(--data "$DATA/real/lines.npz" "$DATA/synth/lines.npz" "$DATA/ro/lines.npz" ${MORE_DATA:-} --steps "$STEPS"
        --batch 16 --freeze 90 --fold --l2sp 0.005 --threads 1 ${EXTRA:-})
export OMP_WAIT_POLICY=PASSIVE

train() {  # train NAME [LEFT-OUT], then its int8 twin NAME-q; a run already trained is kept
    local args=(--run "$1" "${RECIPE[@]}")
    if [ -n "${2:-}" ]; then args+=(--leave-out "$2"); fi
    if [ -n "${INIT:-}" ]; then args+=(--init ".cache/rec-runs/$INIT${1#"$RUN"}/plate_rec.onnx"); fi
    if [ -f ".cache/rec-runs/$1/plate_rec.json" ]; then
        echo "loso.sh: $1 is trained already: kept (delete .cache/rec-runs/$1 to train it again)" >&2
    else
        "$TRAIN_PY" training/train_recognizer.py "${args[@]}" > /dev/null
    fi
    quantize "$1"
}
pair() { train "$1" "${2:-}" & train "$3" "${4:-}"; wait; }
quantize() {
    "$TRAIN_PY" training/quantize_recognizer.py --float ".cache/rec-runs/$1/plate_rec.onnx" \
        --data "$DATA/real/lines.npz" --out ".cache/rec-runs/$1-q/plate_rec.onnx" > /dev/null
}

if [ -n "${SOUP:-}" ]; then
    for x in -no-us -no-us-crops -no-eu -no-br -no-br-crops ""; do
        ingredients=()
        for r in $SOUP; do ingredients+=("$r$x"); done
        "$TRAIN_PY" training/soup_recognizer.py --run "$RUN$x" "${ingredients[@]}"
        quantize "$RUN$x"
    done
else
    # the US pair first: its two left-out sources and us-ucsd can be read after 40 minutes, and a
    # recipe that loses there can be stopped before the other four runs, or run again to train them
    pair "$RUN-no-us" us "$RUN-no-us-crops" us-crops
    pair "$RUN-no-eu" eu "$RUN-no-br" br
    pair "$RUN-no-br-crops" br-crops "$RUN"
fi
# each run's heavy convolutions went into int8 as it ended (quantize_recognizer.py), as shipped
.venv/bin/python training/eval_loso.py --pair us="$RUN-no-us-q" --pair eu="$RUN-no-eu-q" --pair br="$RUN-no-br-q" \
    --pair us-crops="$RUN-no-us-crops-q" --pair br-crops="$RUN-no-br-crops-q" --pair us-ucsd="$RUN-q" \
    --json "training/logs/loso-$RUN.json"
