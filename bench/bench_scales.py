"""Exact-match accuracy of the whole reader with every photo scaled before reading.

A plate read right at a photo's own size can be read wrong one or two pixels of framing later:
the same folder at a few scales says how much of a difference between two model sets is that
kind of luck. Reader settings as `alprd bench` (`config.PHOTO_READER`, one thread).

    .venv/bin/python bench/bench_scales.py [--models-dir DIR] [--detector plate_det_mit] [--fallback none]
        [--scales 0.8,0.9,1.1] [--folders us,eu,br]

Prints one JSON line per folder and scale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from alprd.cli_reader import load_labels
from alprd.config import DETECTOR_MODELS, PHOTO_READER, ReaderConfig
from alprd.imageio import read_image
from alprd.reader import PlateReader


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/plates")
    ap.add_argument("--models-dir", type=Path, default=None, help="candidate models (default: shipped)")
    ap.add_argument("--detector", default=PHOTO_READER["detector_model"], choices=DETECTOR_MODELS)
    ap.add_argument("--fallback", default=PHOTO_READER["fallback_model"], choices=(*DETECTOR_MODELS, "none"))
    ap.add_argument("--scales", default="0.8,0.9,1.1")
    ap.add_argument("--folders", default="us,eu,br")
    args = ap.parse_args()

    extra = {"models_dir": args.models_dir} if args.models_dir else {}
    config = ReaderConfig(detector_size=640, retry_size=960, detector_model=args.detector,
                          fallback_model=None if args.fallback == "none" else args.fallback, **extra)
    reader = PlateReader(config)
    for folder in args.folders.split(","):
        labels = {n: {r["plate"] for r in rows} for n, rows in load_labels(args.data / folder).items()}
        for scale in (float(s) for s in args.scales.split(",")):
            right = 0
            for name in sorted(labels):
                image, _ = read_image(args.data / folder / name)
                if scale != 1.0:
                    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interp)
                reads = reader.read(image, folder).reads
                right += (reads[0].text if reads else "") in labels[name]
            print(json.dumps({"folder": folder, "scale": scale, "n": len(labels),
                              "exact": round(right / len(labels), 4)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
