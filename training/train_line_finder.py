"""Distil the line finder into the slim architecture: the same text map at half resolution.

The shipped line finder (`models/line_det.onnx`) is the stock PP-OCRv4 text detector; its
stride-4 pyramid level and full-resolution head were ~40% of its time on a plate crop (onnxruntime
profile, 96 x 384, one thread), as they were in the plate detector before `train_detector.slim_fpn`.
This script cuts the stock graph the same way and trains it to reproduce the stock model's own map
(average-pooled to the half-resolution grid) on plate crops framed as the reader frames them: no
labels are needed, the teacher is the model being replaced.

    $TRAIN_VENV/bin/python training/train_line_finder.py --steps 800 --out "$WORK"/ld/line_det.onnx
    .venv/bin/python training/eval_recognizer.py        # then the whole reader: alprd bench

Crops: eu/br photo train halves and the ro-detect training frames (labelled box padded as
`alprd.read.reader.CROP_PAD`, jittered), the train half of us-crops and all br-crops (whole crop, as
`training/eval_recognizer.py` reads them). Never a US photo or any dev half.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, hash_split, photo_split, ro_detect_split, seed_everything, setup_logging
from train_detector import BASE_MODEL, build_model, export, load_crops, load_photo

log = logging.getLogger("training.line_finder")

HEIGHT = 96  # alprd.read.lines.LineFinder's input height
MAX_WIDTH = 480
STRIDE = 2
MEAN, STD = 0.5, 0.5
CROP_PAD = (0.15, 0.3)
"""alprd.read.reader.CROP_PAD, spelt out: the training venv does not install the daemon's dependencies."""


def crop_width(w: int, h: int) -> int:
    """The input width LineFinder.find gives a w x h crop."""
    return min(MAX_WIDTH, max(32, round(w * HEIGHT / h / 32) * 32))


def framed_crops(rng: np.random.Generator, jitter: int) -> tuple[list[np.ndarray], dict[str, int]]:
    """Plate crops as the reader cuts them: the box padded by CROP_PAD; `jitter` variants per box,
    the box's sides moved by up to 10% of its size (the detector's boxes are not the labels)."""
    px, py = CROP_PAD
    crops: list[np.ndarray] = []
    counts: dict[str, int] = {}
    samples = photo_split("eu")[0] + photo_split("br")[0] + ro_detect_split()[0]
    for s in samples:
        p = load_photo(s)
        H, W = p.image.shape[:2]
        for x, y, w, h in p.boxes:
            for _ in range(jitter):
                dx0, dx1, dy0, dy1 = rng.uniform(-0.1, 0.1, 4)
                bx0, bx1 = x + dx0 * w, x + w + dx1 * w
                by0, by1 = y + dy0 * h, y + h + dy1 * h
                bw, bh = bx1 - bx0, by1 - by0
                x0, x1 = max(0, math.floor(bx0 - px * bw)), min(W, math.ceil(bx1 + px * bw))
                y0, y1 = max(0, math.floor(by0 - py * bh)), min(H, math.ceil(by1 + py * bh))
                if x1 - x0 >= 8 and y1 - y0 >= 4:
                    crops.append(p.image[y0:y1, x0:x1])
        counts[s.folder] = counts.get(s.folder, 0) + len(p.boxes) * jitter
    us = load_crops("us-crops", keep=lambda name: hash_split(name) == "train")
    br = load_crops("br-crops")
    counts["us-crops-train"], counts["br-crops"] = len(us), len(br)
    return crops + us + br, counts


def soften(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop as a smaller, softer camera would give it (down to a third of its size): distant
    and low-resolution plates are where the rows' ends are least sure."""
    h, w = crop.shape[:2]
    f = rng.uniform(0.33, 0.8)
    small = cv2.resize(crop, (max(8, round(w * f)), max(4, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def to_input(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    resized = cv2.resize(crop, (crop_width(w, h), HEIGHT), interpolation=cv2.INTER_LINEAR)
    x = resized.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--jitter", type=int, default=3, help="framings per labelled photo box")
    ap.add_argument("--soft", type=float, default=0.0,
                    help="share of crops also added as a softened copy (`soften`)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    # The stock model, not models/line_det.onnx (the fused stock graph until this script replaced it).
    ap.add_argument("--teacher", type=Path, default=BASE_MODEL)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", default="line-finder-slim")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    setup_logging(args.run)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    log.info("run %s: %s", args.run, " ".join(sys.argv))
    timer = Timer()
    crops, counts = framed_crops(rng, args.jitter)
    soft = [soften(c, rng) for c in crops if rng.random() < args.soft]
    counts["softened"] = len(soft)
    crops += soft
    # Teacher maps once, pooled to the student's grid; inputs grouped by width for batching.
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    teacher = ort.InferenceSession(str(args.teacher), so, providers=["CPUExecutionProvider"])
    name = teacher.get_inputs()[0].name
    by_width: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for c in crops:
        x = to_input(c)
        prob = teacher.run(None, {name: x[None]})[0][0, 0]
        target = prob.reshape(HEIGHT // STRIDE, STRIDE, -1, STRIDE).mean(axis=(1, 3))
        by_width.setdefault(x.shape[2], []).append((x, target.astype(np.float32)))
    widths = sorted(by_width)
    weights = np.array([len(by_width[w]) for w in widths], np.float64)
    log.info("%d crops %s, teacher maps in %.0f s; widths %s", len(crops), counts, timer(),
             {w: len(by_width[w]) for w in widths})

    net, names = build_model(BASE_MODEL, "slim")
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = max(1, args.steps // 20)
    timer = Timer()
    ema: float | None = None
    for step in range(args.steps):
        t = (step - warm) / max(1, args.steps - warm)
        lr = args.lr * ((step + 1) / warm if step < warm else 0.02 + 0.49 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr
        w = widths[rng.choice(len(widths), p=weights / weights.sum())]
        pool = by_width[w]
        idx = rng.integers(0, len(pool), min(args.batch, len(pool)))
        xb = np.stack([pool[i][0] for i in idx])
        if rng.random() < 0.5:  # the map of a mirrored crop is the mirrored map
            xb = xb[:, :, :, ::-1]
            yb = np.stack([pool[i][1][:, ::-1] for i in idx])
        else:
            yb = np.stack([pool[i][1] for i in idx])
        x = torch.from_numpy(np.ascontiguousarray(xb))
        y = torch.from_numpy(np.ascontiguousarray(yb))[:, None]
        logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (torch.sigmoid(logits) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = float(loss.detach())
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        if (step + 1) % 50 == 0 or step == 0:
            log.info("step %d/%d loss %.4f (ema %.4f) lr %.2e width %d  %.2f s/step", step + 1, args.steps,
                     v, ema, lr, w, timer() / (step + 1))
    log.info("trained %d steps in %.1f min", args.steps, timer() / 60)
    contract: dict[str, object] = {
        "name": "line_det",
        "source": "PaddleOCR PP-OCRv4 mobile text detector (DBNet), ch_PP-OCRv4_det_infer.onnx from the PyPI "
                  "wheel rapidocr-onnxruntime==1.4.4, cut to a half-resolution map (train_detector.slim_fpn) "
                  "and trained by training/train_line_finder.py to reproduce the stock model's map",
        "licence": "Apache-2.0 (base weights); distilled on crops of AGPL-3.0 test data: "
                   "see models/README.md",
        "trained_on": counts,
        "training": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                     "jitter": args.jitter, "soft": args.soft, "minutes": round(timer() / 60, 1),
                     "log": f"training/logs/{args.run}.log",
                     "command": "training/train_line_finder.py " + " ".join(sys.argv[1:])},
        "input": {"layout": "NCHW", "color": "BGR", "mean": [MEAN] * 3, "std": [STD] * 3, "pad_multiple": 32},
        "output": {"kind": "text_probability_map", "threshold": 0.3, "stride": STRIDE},
    }
    export(net, names, BASE_MODEL, args.out, contract, "slim")
    log.info("contract %s", json.dumps(contract["output"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
