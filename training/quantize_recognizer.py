"""Quantize the recognizer's heavy 1 x 1 convolutions to int8 and install it as models/plate_rec.onnx.

The backbone's middle and last stages (192-768 channels on 6 x W/4 and 3 x W/4 cells) spend most
of a row's time in 1 x 1 convolutions; onnxruntime runs them a quarter faster as QLinearConv
(uint8 activations, int8 weights per output channel). Everything else (stem, depthwise and
squeeze-excite convolutions, the sequence neck, the head) stays float: all 57 convolutions
quantized (MinMax ranges) changed the greedy reading of 59 of 600 training rows, these 19 change 2.

Activation ranges come from 300 training rows (seeded sample of the recognizer's `lines.npz`, only
of the sources the run trained on: a run left out of a source, for a leave-one-source-out figure,
is not calibrated on its rows either), each resized to 48 x 160 (32 x 96 for a 32-px model), with
the 99.99th percentile of each tensor's values:
of MinMax, Percentile and Entropy calibration it moved the float model's per-step probabilities
least on another 600 training rows (`--check`). No dev or test photo is used.

Usage (training venv: needs onnx and onnxruntime.quantization):
  $TRAIN_VENV/bin/python training/quantize_recognizer.py \
      --float .cache/rec-runs/r10/plate_rec.onnx --data $WORK/recdata/real/lines.npz
  # the recognizer for tall rows (run r16, 32 px high):
  $TRAIN_VENV/bin/python training/quantize_recognizer.py \
      --float .cache/rec-runs/r16/plate_rec.onnx --data $WORK/recdata/real/lines.npz \
      --out models/plate_rec_tall.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import training.train_recognizer as tr  # noqa: E402
from training.train_recognizer import (  # noqa: E402
    MODELS,
    greedy,
    load_lines,
    target_width,
    to_tensor,
    use_sizes_of,
)

CALIB_WIDTH = 160
MIN_CHANNELS = 192


def rows(images: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    return [images[i] for i in random.Random(seed).sample(range(len(images)), n)]


def tensor(img: np.ndarray, width: int) -> np.ndarray:
    return to_tensor(img, width)[None]


def calib_width() -> int:
    """CALIB_WIDTH at a 48-px height, in proportion at another (a multiple of 32)."""
    return max(32, round(CALIB_WIDTH * tr.HEIGHT / 48 / 32) * 32)


def heavy_convs(model) -> list[str]:  # type: ignore[no-untyped-def]
    """1 x 1 convolutions with at least MIN_CHANNELS channels in and out."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        dims = inits.get(n.input[1]) if n.op_type == "Conv" else None
        if dims and dims[2:] == [1, 1] and min(dims[:2]) >= MIN_CHANNELS:
            out.append(n.name)
    return out


def quantize(src: Path, dst: Path, calib: list[np.ndarray]) -> int:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(src))
    name = model.graph.input[0].name
    nodes = heavy_convs(model)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter([{name: tensor(img, calib_width())} for img in calib])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    # reduce_range: 7-bit weights. With full 8-bit weights, x86 CPUs without VNNI add uint8 x int8
    # products in saturating 16-bit lanes (vpmaddubsw) and VNNI CPUs do not, so the same model read
    # a row differently on two machines; 7 bits cannot saturate, so every CPU computes the same.
    # op_types_to_quantize: only Conv tensors are calibrated (all of them by default), which holds
    # the 300 rows' activations in a quarter of the memory; the ranges of the convolutions quantized
    # do not depend on the other tensors'.
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    reduce_range=True, op_types_to_quantize=["Conv"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, nodes_to_quantize=nodes,
                    extra_options={"ActivationSymmetric": False, "CalibPercentile": 99.99})
    return len(nodes)


def check(float_path: Path, int8_path: Path, samples: list[np.ndarray],
          width_scale: float) -> tuple[int, float]:
    """(rows whose greedy reading differs, mean over rows of the largest probability change)."""
    import onnxruntime as ort

    def session(p: Path):  # type: ignore[no-untyped-def]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])

    a, b = session(float_path), session(int8_path)
    changed, largest = 0, []
    for img in samples:
        x = tensor(img, target_width(img, width_scale))  # as the runtime sizes the row
        pa = a.run(None, {a.get_inputs()[0].name: x})[0][0]
        pb = b.run(None, {b.get_inputs()[0].name: x})[0][0]
        changed += greedy(pa) != greedy(pb)
        largest.append(float(np.abs(pa - pb).max()))
    return changed, float(np.mean(largest))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--float", dest="float_model", type=Path, required=True,
                    help="the trained float recognizer (a run's plate_rec.onnx with its plate_rec.json)")
    ap.add_argument("--data", type=Path, required=True,
                    help="training rows (prepare_rec_data.py's lines.npz)")
    ap.add_argument("--out", type=Path, default=MODELS / "plate_rec.onnx")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    contract = json.loads(args.float_model.with_suffix(".json").read_text())
    use_sizes_of(contract)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "plate_rec.onnx"
        images, _, sources = load_lines(args.data)
        left_out = set(contract.get("trained_on", {}).get("left_out") or [])
        images = [img for img, src in zip(images, sources, strict=True) if src not in left_out]
        count = quantize(args.float_model, staged, rows(images, 300, args.seed))
        width_scale = float(contract["input"]["width_scale"])
        changed, largest = check(args.float_model, staged, rows(images, 600, args.seed + 123), width_scale)
        print(f"{count} convolutions in int8; 600 training rows: {changed} readings differ from the float "
              f"model, largest probability change {largest:.3f} on average")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(staged.read_bytes())
    float_sha = hashlib.sha256(args.float_model.read_bytes()).hexdigest()
    contract["name"], contract["file"] = args.out.stem, args.out.name
    contract["source"] += (f"; its {count} 1x1 convolutions of at least {MIN_CHANNELS} channels quantized "
                           f"to int8 by training/quantize_recognizer.py (float model SHA-256 {float_sha})")
    contract["sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    args.out.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n")
    print(f"wrote {args.out} sha256 {contract['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
