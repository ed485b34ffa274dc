"""Evaluate a plate detector the way production runs it (alprd.read.detect.PlateDetector).

Per folder: recall at IoU >= 0.5 (each detection matches at most one labelled plate), false
positives per image (detections matching no labelled plate; many are real but unlabelled plates
of other cars), and milliseconds per image. Only sets the model never trained on are reported by
default (see training/README.md):

    .venv/bin/python training/eval_detector.py                      # models/plate_det, 640 px
    .venv/bin/python training/eval_detector.py --size 960 --name plate_det_mit
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import DATA, MODELS, Sample, dev_sets, photo_split, ro_detect_split

from alprd.read.detect import PlateDetector
from alprd.types import Box, Detection


def match(gt: list[Box], dets: list[Detection], iou: float = 0.5) -> tuple[int, int]:
    """(labelled plates found, detections that found none), greedy by IoU."""
    pairs = sorted(
        ((g.iou(d.box), gi, di) for gi, g in enumerate(gt) for di, d in enumerate(dets)), reverse=True
    )
    used_g: set[int] = set()
    used_d: set[int] = set()
    for v, gi, di in pairs:
        if v < iou:
            break
        if gi in used_g or di in used_d:
            continue
        used_g.add(gi)
        used_d.add(di)
    return len(used_g), len(dets) - len(used_d)


def evaluate(det: PlateDetector, samples: list[Sample], misses: list[str] | None = None) -> dict[str, float]:
    n_gt = found = fps = 0
    ms: list[float] = []
    cpu: list[float] = []
    for s in samples:
        img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {s.path}")
        t0, c0 = time.perf_counter(), time.process_time()
        dets = det.detect(img)
        ms.append((time.perf_counter() - t0) * 1000)
        # CPU time of this process: on a machine shared with other jobs it is the honest cost of
        # one image (with 1 onnxruntime thread it equals wall time on an idle machine).
        cpu.append((time.process_time() - c0) * 1000)
        gt = [Box(*b) for b in s.boxes]
        f, fp = match(gt, dets)
        n_gt += len(gt)
        found += f
        fps += fp
        if misses is not None and f < len(gt):
            misses.append(f"{s.folder}/{s.path.name}")
    return {
        "images": len(samples),
        "plates": n_gt,
        "recall": found / max(n_gt, 1),
        "fp_per_image": fps / max(len(samples), 1),
        "ms_median": statistics.median(ms) if ms else 0.0,
        "cpu_ms_median": statistics.median(cpu) if cpu else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=MODELS)
    ap.add_argument("--name", default="plate_det", help="contract name in models-dir")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--min-score", type=float, default=None, help="default: the contract's min_score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-refine", action="store_true", help="single pass (ignore output.refine_width)")
    ap.add_argument("--sets", default="us,ro-detect-dev,eu-dev,br-dev")
    ap.add_argument("--train-sets", action="store_true",
                    help="also report the training parts (only to spot under-fitting; never a result)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--misses", action="store_true", help="list the images with a missed plate")
    args = ap.parse_args(argv)

    det = PlateDetector(args.models_dir, threads=args.threads, size=args.size, min_score=args.min_score,
                        name=args.name, refine=False if args.no_refine else None)
    sets = dev_sets(DATA)
    if args.train_sets:
        sets["ro-detect-train"] = ro_detect_split(DATA)[0]
        sets["eu-train"] = photo_split("eu", DATA)[0]
        sets["br-train"] = photo_split("br", DATA)[0]
    wanted = args.sets.split(",") + (["ro-detect-train", "eu-train", "br-train"] if args.train_sets else [])
    results = {}
    print(f"model {args.name} size {args.size} min_score {det.min_score} refine_width {det.refine_width} "
          f"threads {args.threads}")
    print(f"{'set':16} {'images':>6} {'plates':>6} {'recall':>7} {'FP/img':>7} {'ms':>6} {'cpu ms':>6}")
    for name in wanted:
        misses: list[str] = []
        r = evaluate(det, sets[name], misses if args.misses else None)
        results[name] = r
        print(f"{name:16} {r['images']:6d} {r['plates']:6d} {r['recall']:7.1%} {r['fp_per_image']:7.2f} "
              f"{r['ms_median']:6.1f} {r['cpu_ms_median']:6.1f}", flush=True)
        if misses:
            print("   missed:", " ".join(misses))
    if args.json:
        args.json.write_text(json.dumps({"name": args.name, "size": args.size, "min_score": det.min_score,
                                         "refine_width": det.refine_width,
                                         "sha256": det.contract.sha256, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
