#!/usr/bin/env bash
# Everything the recognizer's training needs on a bare machine, in one command (about 15 minutes on
# two cores, 7 of them the rendered plates): the training venv, the stock models from their PyPI
# wheels into .cache/base/, the fonts of the rendered plates, and the line files loso.sh reads.
# Steps already done are skipped, so it may be run again after a failure.
#
#   TRAIN_VENV=../train-venv WHEELS=../wheels DATA=../recdata bash training/setup_recognizer.sh
#   TRAIN_PY=../train-venv/bin/python DATA=../recdata RUN=r30 bash training/loso.sh
#
# The commands are those of training/README.md ("Install the training extra", "Recognizer").
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN_VENV=${TRAIN_VENV:-../train-venv}
WHEELS=${WHEELS:-../wheels}
DATA=${DATA:-../recdata}
PY="$TRAIN_VENV/bin/python"
export OMP_WAIT_POLICY=PASSIVE

if [ ! -x "$PY" ]; then
    echo "setup: the training venv in $TRAIN_VENV" >&2
    python3 -m venv "$TRAIN_VENV"
    "$TRAIN_VENV"/bin/pip install -q torch==2.13.0 onnx onnxruntime==1.32.0 opencv-python-headless==4.11.0.86 \
        numpy pillow
    "$TRAIN_VENV"/bin/pip install -q onnx2torch==1.5.15 --no-deps
fi

if [ ! -f .cache/base/PP-OCRv6_rec_small.onnx ]; then
    echo "setup: the stock models into .cache/base/" >&2
    "$TRAIN_VENV"/bin/pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
        rapidocr-onnxruntime==1.4.4 rapidocr==3.10.0
    (cd "$WHEELS" && for w in *.whl; do python3 -m zipfile -e "$w" "${w%%-*}"; done)
    mkdir -p .cache/base
    cp "$WHEELS"/rapidocr/rapidocr/models/PP-OCRv6_rec_small.onnx \
       "$WHEELS"/rapidocr_onnxruntime/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx \
       "$WHEELS"/rapidocr_onnxruntime/rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx .cache/base/
fi

if [ ! -d /usr/share/fonts/opentype/bebas-neue ]; then
    echo "setup: fonts for the rendered plates (Debian packages; needs root)" >&2
    ${SUDO:-} apt-get install -y -q fonts-dejavu fonts-liberation2 fonts-bebas-neue fonts-league-spartan \
        fonts-opendin fonts-routed-gothic fonts-roboto-unhinted fonts-urw-base35 fonts-open-sans fonts-b612 \
        fonts-play fonts-freefont-ttf > /dev/null
fi

prep() {  # prep NAME ARGS...: one line file, unless it is there
    if [ ! -f "$DATA/$1/lines.npz" ]; then
        "$PY" training/prepare_rec_data.py --out "$DATA/$1" --row-margin 0.2 "${@:2}"
    fi
}
mkdir -p "$DATA"
# two at a time, as loso.sh trains: the rendered set is the long one
prep real & a=$!; prep synth --no-labelled --synthetic 24000 & b=$!; wait $a; wait $b
prep ro --no-labelled --pseudo & a=$!
prep stack7 --no-labelled --synthetic 3000 --kind us --stacked 1.0 --seed 7 & b=$!; wait $a; wait $b
prep stack8 --no-labelled --synthetic 3000 --kind us --stacked 1.0 --seed 8
echo "setup: done; the line files are in $DATA" >&2
