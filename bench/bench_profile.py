"""Per-model MACs and per-operator time of the daemon's reader on the stream bench's frames.

    .venv/bin/python bench/bench_profile.py [--photos 12] [--frames 60] [--detector-threads 1]
        [--looks daemon|photo] [--size 480]

Reads `--frames` frames of cars passing (made as bench/bench_stream.py makes its stream: real US
photos at 1080p, panned) with the daemon's default reader, every onnxruntime session profiling
(`SessionOptions.enable_profiling`). From the profiles: per model, how many runs a frame costs,
ms per run, MACs per run (convolutions and matrix products, from the shapes onnxruntime logged),
and the share of each operator type. Prints a Markdown table (docs/pi-performance.md) and, with
--json, the numbers. MACs do not depend on the machine; the milliseconds do (say how busy it was).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates" / "us"

WEIGHT_INPUT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3, "NhwcFusedConv": 1}
MATMUL = {"MatMul", "Gemm", "MatMulInteger", "QGemm", "FusedMatMul", "MatMulIntegerToFloat", "QLinearMatMul"}


def shapes(arg: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(d.values())) for d in arg]


def macs(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """Multiply-accumulates of one node run, from the shapes onnxruntime logged."""
    if not outputs:
        return 0
    out = math.prod(outputs[0])
    if op in WEIGHT_INPUT and len(inputs) > WEIGHT_INPUT[op]:
        w = inputs[WEIGHT_INPUT[op]]
        return out * math.prod(w[1:]) if len(w) == 4 else 0
    if op == "ConvTranspose" and len(inputs) > 1:
        return math.prod(inputs[0]) * math.prod(inputs[1][1:])
    if op in MATMUL and inputs and inputs[0]:
        return out * inputs[0][-1]
    return 0


def bucket(model: str, shape: list[int]) -> str:
    """Which look a run was: the whole frame at the detector's size, the closer look, a second look
    at one candidate (refine), or a text row / crop of the size given."""
    if len(shape) != 4:
        return "?"
    h, w = shape[2], shape[3]
    if model.startswith("plate_det"):
        if w in (320, 416, 480, 512, 640, 960, 1280) and h >= w // 2:
            return f"frame {w} px ({w}x{h})"
        return "candidate (refine)"
    if model.startswith("plate_rec"):
        return f"row {h} px high"
    return "plate crop"


def frames(n_photos: int, n_frames: int) -> list[np.ndarray]:
    """Frames of the stream bench's pans: each photo at 1080p, seen through a moving window."""
    rows = list(csv.DictReader((DATA / "labels.csv").read_text().splitlines()))[:n_photos]
    out = []
    per = max(1, n_frames // len(rows))
    for r in rows:
        img = cv2.imread(str(DATA / r["file"]))
        big = cv2.resize(img, (2112, 1188), interpolation=cv2.INTER_LINEAR)
        for k in range(per):
            dx = int(192 * k / max(1, per - 1))
            out.append(np.ascontiguousarray(big[54 : 54 + 1080, dx : dx + 1920]))
    return out[:n_frames]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--detector-threads", type=int, default=1,
                    help="1 (default) makes per-operator times add up to the run's")
    ap.add_argument("--looks", choices=("daemon", "photo"), default="daemon",
                    help="daemon: no closer look (as while a pass is open; it runs once per pass); "
                    "photo: every look, as alprd read")
    ap.add_argument("--size", type=int, default=0, help="the first detectors' size (sources[].detector_size)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import onnxruntime as ort

    from alprd.config import ReaderConfig
    from alprd.read.reader import PlateReader

    tmp = Path(tempfile.mkdtemp(prefix="alprd-profile-"))
    base = ort.SessionOptions

    class Profiling(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = str(tmp / f"p{time.perf_counter_ns()}")

    ort.SessionOptions = Profiling
    try:
        reader = PlateReader(ReaderConfig(region="us", detector_threads=args.detector_threads))
        sessions = {
            reader.detector.contract.name: reader.detector._session,
            "line_det": reader.lines.session,
            "plate_rec": reader.recognizer.session,
        }
        if reader.fallback is not None:
            sessions[reader.fallback.contract.name] = reader.fallback._session
        if reader.tall is not None:
            sessions["plate_rec_tall"] = reader.tall.session
        todo = frames(args.photos, args.frames)
        t0 = time.perf_counter()
        from alprd.types import Looks

        looks = Looks(size=args.size or None, closer=args.looks == "photo")
        for f in todo:
            reader.read(f, "us", looks)
        wall = time.perf_counter() - t0
        report: dict[str, dict[str, Any]] = {}
        for name, sess in sessions.items():
            events = json.loads(Path(sess.end_profiling()).read_text())
            runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
            runs = runs[1:]  # the warm-up run at load
            nodes = sorted((e for e in events if e.get("cat") == "Node"
                            and str(e.get("name", "")).endswith("_kernel_time")), key=lambda e: e["ts"])
            by_op: dict[str, float] = defaultdict(float)
            buckets: dict[str, list[tuple[float, int]]] = defaultdict(list)
            i = 0
            for run in runs:
                while i < len(nodes) and nodes[i]["ts"] < run["ts"]:
                    i += 1
                mine = []
                while i < len(nodes) and nodes[i]["ts"] <= run["ts"] + run["dur"]:
                    mine.append(nodes[i])
                    i += 1
                total = 0
                for e in mine:
                    a = e.get("args", {})
                    op = str(a.get("op_name", "?"))
                    by_op[op] += e["dur"] / 1000
                    ins, outs = shapes(a.get("input_type_shape", [])), shapes(a.get("output_type_shape", []))
                    total += macs(op, ins, outs)
                first = shapes(mine[0].get("args", {}).get("input_type_shape", [])) if mine else []
                buckets[bucket(name, first[0] if first else [])].append((run["dur"] / 1000, total))
            report[name] = {
                "op_share": {op: round(ms / max(1e-9, sum(by_op.values())), 3)
                             for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:5]},
                "inputs": {
                    b: {"runs_per_frame": round(len(v) / len(todo), 2),
                        "mmacs_per_run": round(sum(m for _, m in v) / len(v) / 1e6, 1),
                        "ms_per_run_p50": round(sorted(d for d, _ in v)[len(v) // 2], 2),
                        "ms_per_frame": round(sum(d for d, _ in v) / len(todo), 2)}
                    for b, v in sorted(buckets.items())
                },
            }
        out = {"frames": len(todo), "ms_per_frame_wall": round(wall * 1000 / len(todo), 1),
               "looks": args.looks, "size": args.size or 640,
               "detector_threads": args.detector_threads, "loadavg": os.getloadavg()[0], "models": report}
        if args.json:
            print(json.dumps(out))
            return 0
        print(f"{len(todo)} frames, {out['ms_per_frame_wall']} ms per frame (wall), "
              f"load {out['loadavg']:.2f}\n")
        print("| model | input | runs per frame | MMACs per run | ms per run (p50) | ms per frame |")
        print("|---|---|---|---|---|---|")
        for name, r in report.items():
            for b, v in r["inputs"].items():
                print(f"| {name} | {b} | {v['runs_per_frame']} | {v['mmacs_per_run']} | "
                      f"{v['ms_per_run_p50']} | {v['ms_per_frame']} |")
        print("\n| model | operators, share of its time |\n|---|---|")
        for name, r in report.items():
            ops = ", ".join(f"{op} {share:.0%}" for op, share in r["op_share"].items())
            print(f"| {name} | {ops} |")
        return 0
    finally:
        ort.SessionOptions = base
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
