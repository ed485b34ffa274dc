"""Exact-match accuracy of the whole reader with every photo scaled before reading.

A plate read right at a photo's own size can be read wrong one or two pixels of framing later:
the same folder at a few scales says how much of a difference between two model sets is that
kind of luck. Reader options and defaults as `alprd bench`'s.

    .venv/bin/python bench/bench_scales.py [--models-dir DIR] [--detector plate_det_mit] [--fallback none]
        [--scales 0.8,0.9,1.1] [--folders us,eu,br]

Prints one JSON line per folder and scale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from alprd.cli.reader import add_reader_args, load_labels, reader_config
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/plates")
    ap.add_argument("--scales", default="0.8,0.9,1.1")
    ap.add_argument("--folders", default="us,eu,br")
    add_reader_args(ap)  # as `alprd bench`; each folder is read with its own region
    args = ap.parse_args()

    reader = PlateReader(reader_config(args))
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
