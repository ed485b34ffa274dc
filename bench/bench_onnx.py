"""Time ONNX models as the reader runs them: one thread, sequential, no CPU memory arena.

    .venv/bin/python bench/bench_onnx.py MODEL.onnx [MODEL.onnx ...] [--shape 1x3x384x640] [--runs 10]
        [--profile]

Several models are run interleaved (A, B, A, B, ...) so that a change in machine load hits them
alike; prints the median ms of each. `--profile` also prints, per model, the share of time per
operator type from onnxruntime's profiler (what made `tools/fuse_onnx.py` worth writing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def session(path: Path, profile: bool = False) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False  # as alprd.read.onnx.open_session
    opts.log_severity_level = 3
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def op_profile(path: Path, x: np.ndarray, runs: int) -> Counter[str]:
    """Milliseconds per run spent in each operator type."""
    s = session(path, profile=True)
    feed = {s.get_inputs()[0].name: x}
    for _ in range(runs):
        s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return per_op


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--shape", default="1x3x384x640",
                    help="input tensor shape (default: a 16:9 frame at 640)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    sessions = [session(p) for p in args.models]
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, feed in zip(sessions, feeds, strict=True):
        s.run(None, feed)  # warm-up
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(args.runs):
        for k, (s, feed) in enumerate(zip(sessions, feeds, strict=True)):
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append((time.perf_counter() - t) * 1000)
    print(f"input {args.shape}, one thread, no arena, {args.runs} interleaved runs, "
          f"load {os.getloadavg()[0]:.2f}")
    for path, ts in zip(args.models, times, strict=True):
        print(f"  {path}: median {statistics.median(ts):.1f} ms")
        if args.profile:
            per_op = op_profile(path, x, args.runs)
            total = sum(per_op.values())
            top = ", ".join(f"{op} {ms:.1f}" for op, ms in per_op.most_common(6))
            print(f"    profile {total:.1f} ms/run: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
