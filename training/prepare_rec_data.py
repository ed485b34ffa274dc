"""Build the recognizer's training lines by running the production read path on jittered boxes.

Train on what you read: each sample is the top text line that `LineFinder` finds in a crop framed
the way the reader frames a detector box (`Box.pad(0.15, 0.3).clamp`), cut upright with
`LineFinder.cut`. The ground-truth box is jittered to imitate the detector's boxes: measured on
half of the eu/br/us photos (plate_det at 640 px, matched boxes), its boxes are wider than the
ground truth by x0.87-1.5 and taller by x0.65-1.5 (5th-95th percentile, median x1.05 and x1.15),
centres off by up to 9 % of the width and 13 % of the height. A jitter of +-8 % / +-10 % alone
trained a model that read ground-truth boxes better than the stock model but detector boxes worse.
Crop folders (us-crops, br-crops) have no box: the whole crop is the plate region, and the jitter
picks a window of it.

A cut line is kept only when it plausibly holds the plate text: the stock recognizer's reading of it
is within half the label's length (edit distance). Otherwise the 2nd line is tried (the reader tries
it too); lines holding a state name or a frame slogan would teach the model to invent plates.

Every photo and crop of the five labelled sources is written (eu, br, us, us-crops, br-crops),
with its source and file name: `train_recognizer.py --leave-out SOURCE` trains without a source,
and the reader is then measured on that source (leave-one-source-out). `us-ucsd` is never read
here: it is the check of a camera no model has seen. With `--synthetic N`, N plates rendered by
`synth_plates.py` are cut the same way (sources synth-us, synth-eu, synth-br).

Dim crops are stretched by `alprd.read.lines.even_light` first, as the reader does.

Output: one .npz (lines resized to height 48, uint8 BGR, labels, sources, file names) plus a JSON
summary.

Usage: python training/prepare_rec_data.py --out DIR [--synthetic 20000] [--seed 0]
"""

from __future__ import annotations

import os

# A multi-threaded BLAS spin-waits for cores this shared machine does not have: the stock
# recognizer's 18,710-class fold matmul took 0.001-1.9 s per line with it. One thread, always.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import csv
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alprd.read.grammar import edit_distance  # noqa: E402
from alprd.read.lines import LineFinder, even_light  # noqa: E402
from alprd.read.recognize import Recognizer  # noqa: E402
from alprd.types import Box  # noqa: E402
from training.common import STOCK_REC, STOCK_REC_V4, hash_split  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "plates"
MODELS = REPO / "models"
HEIGHT = 48
NEVER = "us-ucsd"
"""Measured on, never trained on (../shared/data/README.md)."""
STORE_MAX_WIDTH = 480

log = logging.getLogger("prepare_rec_data")

# samples per source image: photos are few and framed by a detector in production, so they get
# more jitters than the abundant br crops.
JITTERS = {"eu": 16, "br": 12, "us": 16, "us-crops": 6, "br-crops": 2}


def rec_split(name: str) -> str:
    """The project-wide train/dev split of a file name: the detector's (`common.hash_split`), so a
    photo is dev for both models or for neither. Recognizer runs up to r4 used SHA-1 mod 2, which
    disagreed with it on half the photos."""
    return hash_split(name)


def read_labels(folder: str) -> list[dict[str, str]]:
    with (DATA / folder / "labels.csv").open(newline="") as f:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


# (low, high) of the uniform jitter: centre shift as a fraction of the side, scale factors.
SHIFT_X, SHIFT_Y = (-0.08, 0.08), (-0.12, 0.12)
SCALE_W, SCALE_H = (0.9, 1.4), (0.8, 1.5)


def jitter_box(box: Box, rng: random.Random) -> Box:
    """A detector-like box around the ground truth: centre moved, sides rescaled."""
    cx = box.x + box.w / 2 + rng.uniform(*SHIFT_X) * box.w
    cy = box.y + box.h / 2 + rng.uniform(*SHIFT_Y) * box.h
    w = box.w * rng.uniform(*SCALE_W)
    h = box.h * rng.uniform(*SCALE_H)
    return Box(round(cx - w / 2), round(cy - h / 2), max(2, round(w)), max(2, round(h)))


def crop_window(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """A jittered window of a plate crop: each side moved in by up to 8 % (never out: no pixels)."""
    h, w = img.shape[:2]
    x0 = round(rng.uniform(0, 0.08) * w)
    x1 = w - round(rng.uniform(0, 0.08) * w)
    y0 = round(rng.uniform(0, 0.08) * h)
    y1 = h - round(rng.uniform(0, 0.08) * h)
    return img[y0:y1, x0:x1]


def fold(s: str) -> str:
    return s.replace("O", "0").replace("I", "1")


def to_height(line: np.ndarray) -> np.ndarray:
    h, w = line.shape[:2]
    width = int(np.clip(round(w * HEIGHT / max(1, h)), 8, STORE_MAX_WIDTH))
    return cv2.resize(line, (width, HEIGHT), interpolation=cv2.INTER_AREA if h > HEIGHT else cv2.INTER_LINEAR)


class Cutter:
    def __init__(self, stock_dir: Path, row_margin: float = 0.0) -> None:
        self.finder = LineFinder(MODELS, threads=1, row_margin=row_margin)
        self.rec = Recognizer(stock_dir, threads=1)
        self.kept = 0
        self.second = 0
        self.dropped = 0
        self.empty = 0

    def sample(self, crop: np.ndarray, label: str) -> np.ndarray | None:
        crop = even_light(crop)
        lines = self.finder.find(crop)
        if not lines:
            self.empty += 1
            return None
        for rank, ln in enumerate(lines[:2]):
            cut = LineFinder.cut(crop, ln)
            read = self.rec.recognize(cut).text
            if edit_distance(fold(read), fold(label)) <= len(label) // 2:
                self.kept += 1
                self.second += rank
                return to_height(cut)
        self.dropped += 1
        return None


PSEUDO_JITTERS = 4


def pseudo_labels(cutter: Cutter, second: Recognizer, rng: random.Random,
                  add: Callable[[str, str, str, np.ndarray | None], None]) -> None:
    """Lines of the unlabelled ro-detect plates (MIT dash-cam frames, day and night, small and
    distant), labelled where two stock recognizers (PP-OCRv6 small and PP-OCRv4) agree on a text
    that fits an EU format: two models trained apart rarely make the same mistake, and both are
    un-tuned, so no labelled source leaks in through them (left-out runs stay clean). This is how
    the stock models' knowledge of real cameras joins the training. Boxes are jittered like
    detector boxes."""
    from alprd.read.grammar import GRAMMARS

    eu = GRAMMARS["eu"]
    for row in read_labels("ro-detect"):
        img = cv2.imread(str(DATA / "ro-detect" / row["file"]))
        if img is None:
            continue
        H, W = img.shape[:2]
        gt = Box(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
        agreed: list[tuple[str, np.ndarray]] = []
        for j in range(PSEUDO_JITTERS):
            box = gt if j == 0 else jitter_box(gt, rng)
            c = box.pad(0.15, 0.3).clamp(W, H)
            if not c.area:
                continue
            crop = even_light(img[c.y : c.y + c.h, c.x : c.x + c.w])
            lines = cutter.finder.find(crop)
            if lines:
                cut = LineFinder.cut(crop, lines[0])
                a, b = cutter.rec.recognize(cut), second.recognize(cut)
                if a.text == b.text and 5 <= len(a.text) <= 8 and eu.fits(a.text):
                    agreed.append((a.text, to_height(cut)))
        # The jitters of one box must agree too: a box cut short reads both models without its
        # first character (IF82EVA as F82EVA), and the majority text is the plate.
        texts = [t for t, _ in agreed]
        major = max(sorted(set(texts)), key=texts.count) if texts else ""
        for j in range(PSEUDO_JITTERS):
            text, line = agreed[j] if j < len(agreed) else ("", None)
            add("ro-pseudo", row["file"], text, line if text == major and texts.count(major) >= 2 else None)


def stock_models_dir(tmp: Path, stock: Path = STOCK_REC) -> Path:
    """A models dir holding the stock recognizer: the data filter must not depend on a fine-tune."""
    import shutil

    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stock, tmp / "plate_rec.onnx")
    contract = {
        "name": "plate_rec",
        "file": "plate_rec.onnx",
        "input": {"color": "BGR", "mean": [0.5] * 3, "std": [0.5] * 3, "height": 48, "min_width": 64,
                  "max_width": 480},
        "output": {"kind": "ctc", "blank": 0, "alphabet": "metadata:character", "space_last": True},
        "sha256": hashlib.sha256((tmp / "plate_rec.onnx").read_bytes()).hexdigest(),
    }
    (tmp / "plate_rec.json").write_text(json.dumps(contract))
    return tmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for lines.npz and summary.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=int, default=0, metavar="N", help="also cut N rendered plates")
    ap.add_argument("--kind", choices=("us", "eu", "br"),
                    help="render only this kind of plate (default: us, eu and br in synth_plates.SHARES)")
    ap.add_argument("--stacked", type=float, metavar="SHARE",
                    help="share of US plates rendered with stacked letters beside the serial "
                    "(default: synth_plates.STACKED)")
    ap.add_argument("--pseudo", action="store_true",
                    help="also cut the unlabelled ro-detect plates and keep a line where the stock and the "
                    "shipped recognizer read the same plate-like text (source ro-pseudo)")
    ap.add_argument("--no-labelled", action="store_true", help="skip the labelled folders")
    ap.add_argument("--stock", type=Path, default=STOCK_REC,
                    help="the stock PP-OCRv6 small recognizer (filters lines; see training/README.md)")
    ap.add_argument("--row-margin", type=float, default=0.0,
                    help="extend each cut row by this fraction of its height at both ends (recorded "
                    "in summary.json; train_recognizer.py copies it into the model's contract)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cv2.setNumThreads(1)
    rng = random.Random(args.seed)
    cutter = Cutter(stock_models_dir(args.out / "stock", args.stock), args.row_margin)
    images: list[np.ndarray] = []
    labels: list[str] = []
    sources: list[str] = []
    files: list[str] = []
    stats: dict[str, dict[str, int]] = {}
    t0 = time.monotonic()

    def add(src: str, name: str, label: str, line: np.ndarray | None) -> None:
        st = stats.setdefault(src, {"tried": 0, "kept": 0})
        st["tried"] += 1
        if line is not None:
            st["kept"] += 1
            images.append(line)
            labels.append(label)
            sources.append(src)
            files.append(name)

    for folder in () if args.no_labelled else ("eu", "br", "us"):
        for row in read_labels(folder):
            img = cv2.imread(str(DATA / folder / row["file"]))
            if img is None:
                continue
            H, W = img.shape[:2]
            gt = Box(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            for j in range(JITTERS[folder]):
                box = gt if j == 0 else jitter_box(gt, rng)
                c = box.pad(0.15, 0.3).clamp(W, H)
                crop = img[c.y : c.y + c.h, c.x : c.x + c.w]
                add(folder, row["file"], row["plate"], cutter.sample(crop, row["plate"]) if c.area else None)
        log.info("%s: %s (%.0f s)", folder, stats.get(folder), time.monotonic() - t0)

    for folder in () if args.no_labelled else ("us-crops", "br-crops"):
        for row in read_labels(folder):
            img = cv2.imread(str(DATA / folder / row["file"]))
            if img is None:
                continue
            for j in range(JITTERS[folder]):
                crop = img if j == 0 else crop_window(img, rng)
                add(folder, row["file"], row["plate"], cutter.sample(crop, row["plate"]))
        log.info("%s: %s (%.0f s)", folder, stats.get(folder), time.monotonic() - t0)

    if args.pseudo:
        v4 = Recognizer(stock_models_dir(args.out / "stock-v4", STOCK_REC_V4), threads=1)
        pseudo_labels(cutter, v4, rng, add)
        log.info("ro-pseudo: %s (%.0f s)", stats.get("ro-pseudo"), time.monotonic() - t0)

    if args.synthetic:
        from training.synth_plates import STACKED, render

        stacked = STACKED if args.stacked is None else args.stacked
        srng = random.Random(args.seed + 1)
        for i in range(args.synthetic):
            sample = render(srng, args.kind, stacked)
            src = f"synth-{sample.kind}"
            add(src, f"synth{i:06d}", sample.label, cutter.sample(sample.image, sample.label))
            if (i + 1) % 2000 == 0:
                log.info("synthetic %d/%d: %s (%.0f s)", i + 1, args.synthetic,
                         {k: v for k, v in stats.items() if k.startswith("synth")}, time.monotonic() - t0)
    assert NEVER not in sources

    args.out.mkdir(parents=True, exist_ok=True)
    obj = np.empty(len(images), dtype=object)
    obj[:] = images
    np.savez(args.out / "lines.npz", images=obj, labels=np.array(labels), sources=np.array(sources),
             files=np.array(files))
    summary = {"seed": args.seed, "row_margin": args.row_margin, "jitters": JITTERS,
               "shift_x": SHIFT_X, "shift_y": SHIFT_Y,
               "scale_w": SCALE_W, "scale_h": SCALE_H, "per_source": stats, "samples": len(images),
               "second_line_used": cutter.second, "no_line": cutter.empty, "filtered_out": cutter.dropped,
               "seconds": round(time.monotonic() - t0, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("wrote %d lines to %s: %s", len(images), args.out, json.dumps(summary))


if __name__ == "__main__":
    main()
