"""Time per photo over several folders at once: each folder's median and the pooled median.

`alprd bench` gives one folder's median; issue 2's "median <= 60 ms per photo" can be read per
folder or over all the photos, so this prints both. Timing as `alprd bench` (file read, JPEG
decoding and `PlateReader.read`; reader options and defaults as `alprd bench`'s, models warm).

    .venv/bin/python bench/bench_pooled.py [--folders us,eu,br] [--runs 1]

Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from alprd.cli.reader import add_reader_args, load_labels, reader_config
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/plates")
    ap.add_argument("--folders", default="us,eu,br")
    ap.add_argument("--runs", type=int, default=1)
    add_reader_args(ap)  # as `alprd bench`; each folder is read with its own region
    args = ap.parse_args()
    reader = PlateReader(reader_config(args))
    for _ in range(args.runs):
        pooled: list[float] = []
        folders: dict[str, float] = {}
        for folder in args.folders.split(","):
            times = []
            for name in sorted(load_labels(args.data / folder)):
                t0 = time.perf_counter()
                image, _ = read_image(args.data / folder / name)
                reader.read(image, folder)
                times.append((time.perf_counter() - t0) * 1000)
            folders[folder] = round(float(np.median(times)), 1)
            pooled += times
        print(json.dumps({"n": len(pooled), "ms_median": round(float(np.median(pooled)), 1),
                          "ms_p95": round(float(np.percentile(pooled, 95)), 1),
                          "ms_median_per_folder": folders}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
