"""Geometry behind two reader constants, measured on the labelled photos.

1. Second looks by candidate width (`detect.py`: no second look at a candidate already
   `refine_width` wide): for every first-pass candidate of the us/eu/br photos, its width at the
   detector's input, the scale the second look would see it at relative to the first pass, and the
   IoU between the first and the second box.
2. Row height over box height (`lines.BOX_ROW_SHARES`): for every read whose box matches a labelled
   plate (IoU >= 0.5) and whose crop has a row found by the line finder, the best row's height
   over the box height, by the box's aspect ratio, on the eu/br train halves (the constants are
   chosen there) and, for reference only, on the US photos.

Usage: .venv/bin/python bench/bench_geometry.py [--data ../shared/data/plates]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from alprd.cli.reader import load_labels
from alprd.config import ReaderConfig
from alprd.read.detect import MIN_CANDIDATE_WIDTH, REFINE_MAX_UPSCALE
from alprd.read.imageio import read_image
from alprd.read.reader import CROP_PAD, PlateReader
from alprd.types import Box

# The models' train/dev split (needs only numpy at run time, as training/eval_reader.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from common import hash_split

REGIONS = ("us", "eu", "br")
WIDTH_BINS = ((12, 40), (40, 80), (80, 110), (110, 128), (128, 10_000))
ASPECT_BINS = ((0.0, 2.5), (2.5, 3.3), (3.3, 100.0))


def labelled(folder: Path) -> dict[str, list[Box]]:
    return {name: [Box(*(int(r[k]) for k in ("x", "y", "w", "h"))) for r in rows]
            for name, rows in load_labels(folder).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/plates")
    args = ap.parse_args()
    reader = PlateReader(ReaderConfig(detector_model="plate_det", fallback_model=None, retry_size=None))
    det = reader.detector
    looks: list[tuple[float, float, float]] = []  # width at input, relative scale, IoU first/second
    shares: list[tuple[str, bool, float, float]] = []  # region, train half, aspect, row h / box h
    for region in REGIONS:
        folder = args.data / region
        for name, boxes in sorted(labelled(folder).items()):
            image, _ = read_image(folder / name)
            h, w = image.shape[:2]
            prob, f = det.probability_map(image)
            for cand in det.boxes_from_map(prob, f, w, h, min(det.candidate_score, det.min_score)):
                width = cand.box.w * f * det.stride
                if width < MIN_CANDIDATE_WIDTH:
                    continue
                second = det._refine(image, cand)
                scale = min(det.refine_width / max(cand.box.w, 1), REFINE_MAX_UPSCALE) / (f * det.stride)
                looks.append((width, scale, cand.box.iou(second.box) if second else 0.0))
            for read in reader.read(image, region).reads:
                if not any(read.box.iou(b) >= 0.5 for b in boxes):
                    continue
                crop_box = read.box.pad(*CROP_PAD).clamp(w, h)
                crop = image[crop_box.y : crop_box.y + crop_box.h, crop_box.x : crop_box.x + crop_box.w]
                rows = reader.lines.find(crop)
                if rows:
                    train = hash_split(name) == "train"
                    shares.append((region, train, read.box.w / read.box.h, rows[0].h / read.box.h))
    a = np.array(looks)
    print("second looks by candidate width at the detector input (us, eu, br photos):")
    for lo, hi in WIDTH_BINS:
        m = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if m.any():
            print(f"  {lo:4d}-{hi:<5d} px: n {int(m.sum()):4d}  scale vs first pass median "
                  f"{np.median(a[m, 1]):.2f}  IoU first/second median {np.median(a[m, 2]):.2f}")
    print(f"  all: {len(a)} candidates, {int((a[:, 0] >= det.refine_width).sum())} at least "
          f"{det.refine_width} px wide")
    print("row height / box height of read plates, by box aspect (median, n):")
    for label, keep in (("eu/br train halves", lambda s: s[0] != "us" and s[1]),
                        ("us photos (reference only)", lambda s: s[0] == "us")):
        sel = [s for s in shares if keep(s)]
        parts = []
        for lo, hi in ASPECT_BINS:
            v = [s[3] for s in sel if lo <= s[2] < hi]
            parts.append(f"{lo}-{hi}: {np.median(v):.2f} (n {len(v)})" if v else f"{lo}-{hi}: -")
        print(f"  {label}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
