"""Evaluate recognizers per region on the dev split, reading through the production line path.

For each dev photo: ground-truth box -> `Box.pad(0.15, 0.3).clamp` crop -> `LineFinder.find` ->
`LineFinder.cut` of the top line -> `Recognizer` (exact and O/0, I/1-folded accuracy). "reader"
reads the top two lines and picks as `alprd.read.reader.PlateReader.read_plate` does (region grammar over
the candidates): the whole reader with a perfect detector. us-crops dev: the whole crop goes
through the same finder (region us). Dev = the SHA-256 file-name split's "dev" half; nothing here
was trained on.

`--boxes detector` crops around the shipped detector's box instead (the one that best overlaps the
ground truth, IoU >= 0.5; none: a miss for every model): the recognizer under real framing.

Usage: .venv/bin/python training/eval_recognizer.py [MODEL_DIR ...] [--stock] [--boxes gt|detector]
  MODEL_DIR holds plate_rec.onnx + plate_rec.json (default: models/).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see prepare_rec_data.py
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alprd.read import grammar  # noqa: E402
from alprd.read.detect import PlateDetector  # noqa: E402
from alprd.read.lines import LineFinder  # noqa: E402
from alprd.read.reader import CROP_PAD, GRAMMAR_MISS_FACTOR, MIN_CHARS  # noqa: E402
from alprd.read.recognize import Recognizer  # noqa: E402
from alprd.types import Box  # noqa: E402
from training.prepare_rec_data import DATA, MODELS, fold, read_labels, rec_split, stock_models_dir  # noqa: E402

REGIONS = ("eu", "br", "us", "us-crops")


def dev_crops(region: str, detector: PlateDetector | None = None) -> list[tuple[str, str, np.ndarray | None]]:
    """(file, plate, crop) for the region's dev half, cropped as the reader crops a box.

    With a detector, the box is its detection that best overlaps the ground truth (IoU >= 0.5);
    without one (or no such detection: crop None, a miss for every model) the ground-truth box.
    """
    out: list[tuple[str, str, np.ndarray | None]] = []
    for row in read_labels(region):
        if rec_split(row["file"]) != "dev":
            continue
        img = cv2.imread(str(DATA / region / row["file"]))
        if img is None:
            continue
        if region.endswith("-crops"):
            crop = img
        else:
            H, W = img.shape[:2]
            box: Box | None = Box(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            if detector is not None and box is not None:
                gt = box
                found = [d.box for d in detector.detect(img) if d.box.iou(gt) >= 0.5]
                box = max(found, key=gt.iou) if found else None
            if box is None:
                out.append((row["file"], row["plate"], None))
                continue
            c = box.pad(*CROP_PAD).clamp(W, H)
            crop = img[c.y : c.y + c.h, c.x : c.x + c.w]
        out.append((row["file"], row["plate"], crop))
    return out


def evaluate(model_dir: Path, data: dict[str, list[tuple[str, str, np.ndarray | None]]],
             lines: dict[str, list[list[np.ndarray]]], verbose: bool) -> dict[str, dict[str, float]]:
    rec = Recognizer(model_dir, threads=1)
    result: dict[str, dict[str, float]] = {}
    for region, items in data.items():
        exact = folded = reader = 0
        grammar_region = region.removesuffix("-crops")
        ms: list[float] = []
        for (name, plate, _), cuts in zip(items, lines[region], strict=True):
            reads = []
            for cut in cuts:
                t = time.perf_counter()
                reads.append(rec.recognize(cut))
                ms.append((time.perf_counter() - t) * 1000)
            top = reads[0].text if reads else ""
            exact += top == plate
            folded += fold(top) == fold(plate)
            best = (0.0, "")
            for r in reads:
                if len(r.text) < MIN_CHARS:
                    continue
                choice, fits = grammar.rank(r.candidates, grammar_region)
                score = choice.confidence * (1.0 if fits else GRAMMAR_MISS_FACTOR)
                if score > best[0] or not best[1]:
                    best = (score, choice.text)
            reader += best[1] == plate
            if verbose and top != plate:
                print(f"  {region} {name}: {plate} read {top!r}")
        n = len(items)
        result[region] = {"n": n, "exact": round(100 * exact / n, 1), "folded": round(100 * folded / n, 1),
                          "reader": round(100 * reader / n, 1),
                          "ms_per_line": round(statistics.median(ms), 1) if ms else 0.0}
    return result


def interleaved_ms(model_dirs: list[Path], cuts: list[np.ndarray], repeats: int = 3) -> list[float]:
    """Median ms per `Recognizer.recognize` for each model, alternating models line by line so that
    load from other processes on this shared machine falls on all of them alike."""
    recs = [Recognizer(d, threads=1) for d in model_dirs]
    times: list[list[float]] = [[] for _ in recs]
    for _ in range(repeats):
        for cut in cuts:
            for rec, ts in zip(recs, times, strict=True):
                t = time.perf_counter()
                rec.recognize(cut)
                ts.append((time.perf_counter() - t) * 1000)
    return [round(statistics.median(ts), 1) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--stock", action="store_true", help="also evaluate the stock PP-OCRv6 recognizer")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--boxes", choices=("gt", "detector"), default="gt",
                    help="crop photos around the ground-truth box or the shipped detector's matching box")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    detector = PlateDetector(MODELS, threads=1) if args.boxes == "detector" else None
    data = {r: dev_crops(r, detector) for r in REGIONS}
    by_margin: dict[float, dict[str, list[list[np.ndarray]]]] = {}

    def lines_for(model_dir: Path) -> dict[str, list[list[np.ndarray]]]:
        """Rows cut the way this model's contract says it was trained (input.row_margin)."""
        contract = json.loads((model_dir / "plate_rec.json").read_text())
        margin = float(contract.get("input", {}).get("row_margin", 0.0))
        if margin not in by_margin:
            finder = LineFinder(MODELS, threads=1, row_margin=margin)
            by_margin[margin] = {
                r: [[] if crop is None else [LineFinder.cut(crop, ln) for ln in finder.find(crop)[:2]]
                    for _, _, crop in items] for r, items in data.items()}
        return by_margin[margin]
    targets = list(args.models) or [MODELS]
    if args.stock:
        targets.insert(0, stock_models_dir(REPO / ".cache" / "stock-rec"))
    report = {}
    for model_dir in targets:
        lines = lines_for(model_dir)
        res = evaluate(model_dir, data, lines, args.verbose)
        sha = json.loads((model_dir / "plate_rec.json").read_text())["sha256"]
        report[str(model_dir)] = {"sha256": sha, **res}
        print(model_dir, sha[:12])
        for region, r in res.items():
            print(f"  {region:9s} n={r['n']:3d} exact {r['exact']:5.1f}  folded {r['folded']:5.1f}  "
                  f"reader {r['reader']:5.1f}  {r['ms_per_line']:.1f} ms/line")
    if len(targets) > 1:
        cuts = [c[0] for r in ("eu", "br", "us") for c in lines[r] if c]
        for model_dir, ms in zip(targets, interleaved_ms(targets, cuts), strict=True):
            report[str(model_dir)]["ms_per_line_interleaved"] = ms
            print(f"{model_dir}: {ms:.1f} ms per line (median, interleaved, {len(cuts)} lines x 3)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
