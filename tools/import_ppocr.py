"""Import the stock PP-OCR models shipped inside Apache-2.0 PyPI wheels into models/.

Usage: python tools/import_ppocr.py WHEEL_DIR
  where WHEEL_DIR holds rapidocr-3.10.0 and rapidocr_onnxruntime-1.4.4 unpacked
  (`pip download --no-deps rapidocr==3.10.0 rapidocr-onnxruntime==1.4.4` then `unzip`).

Copies the files unchanged and writes the contract JSON beside each (input size, colour order,
normalisation, alphabet, SHA-256). Nothing is downloaded at run time. The shipped line_det is then
rewritten by `tools/fuse_onnx.py models/line_det.onnx models/line_det.onnx --contract
models/line_det.json` (same outputs, faster on one core).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from alprd.read.onnx import file_sha256

MODELS = Path(__file__).resolve().parent.parent / "models"

IMPORTS = [
    {
        "name": "line_det",
        "file": "line_det.onnx",
        "from": "rapidocr_onnxruntime/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "source": "PaddleOCR PP-OCRv4 mobile text detector (DBNet), ONNX from the PyPI wheel "
        "rapidocr-onnxruntime==1.4.4 (ch_PP-OCRv4_det_infer.onnx)",
        "licence": "Apache-2.0",
        "input": {"layout": "NCHW", "color": "BGR", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "pad_multiple": 32},
        "output": {"kind": "text_probability_map", "threshold": 0.3},
    },
    {
        "name": "plate_rec",
        "file": "plate_rec.onnx",
        "from": "rapidocr/rapidocr/models/PP-OCRv6_rec_small.onnx",
        "source": "PaddleOCR PP-OCRv6 small text recognizer (SVTR, CTC), ONNX from the PyPI wheel "
        "rapidocr==3.10.0 (PP-OCRv6_rec_small.onnx), unchanged",
        "licence": "Apache-2.0",
        "input": {"layout": "NCHW", "color": "BGR", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "height": 48, "min_width": 64, "max_width": 480},
        # Index 0 is the CTC blank, then the metadata's charset, then a space (PaddleOCR's convention).
        "output": {"kind": "ctc", "blank": 0, "alphabet": "metadata:character", "space_last": True},
    },
]


def main(wheel_dir: str) -> None:
    for spec in IMPORTS:
        src = Path(wheel_dir) / str(spec.pop("from"))
        dst = MODELS / str(spec["file"])
        shutil.copyfile(src, dst)
        spec["sha256"] = file_sha256(dst)
        (MODELS / f"{spec['name']}.json").write_text(json.dumps(spec, indent=2) + "\n")
        print(f"{dst.name}: {spec['sha256']}")


if __name__ == "__main__":
    main(sys.argv[1])
