"""The photo reader's speed against another revision's, alternated on one machine.

This VM's speed drifts by 20-30% within minutes and more across days, so a median measured alone
says little about a change: only runs taken in turns, in the same minutes, compare. Checks out
BASE (a commit, tag or branch) in a temporary git worktree, then runs `alprd bench DIR --json`
of BASE and of this checkout in turn, ROUNDS times each, one onnxruntime thread, each with its
own code and its own models/. Prints each run and, per side, the median of the runs' medians,
their exact accuracy and the ratio of the two.

Usage: .venv/bin/python bench/speed_pair.py --base a974881 ../shared/data/plates/us [--region us]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached checkout of `rev`, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="alprd-speed-") as tmp:
        path = Path(tmp) / "base"
        added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev],
                               capture_output=True, text=True, check=False)
        if added.returncode != 0:
            print(f"speed_pair: cannot check out {rev!r}: {added.stderr.strip()}", file=sys.stderr)
            raise SystemExit(2)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                           check=False)


def bench(root: Path, data: Path, region: str, limit: int) -> dict[str, object]:
    """One `alprd bench` of the code and models under `root`."""
    cmd = [sys.executable, "-m", "alprd", "bench", str(data), "--json", "--threads", "1",
           "--region", region, "--limit", str(limit)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"alprd bench under {root} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, metavar="DIR", help="folder of photos with a labels.csv")
    ap.add_argument("--base", required=True, help="revision to compare with (commit, tag, branch)")
    ap.add_argument("--region", default="auto", choices=("us", "eu", "br", "auto"))
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, taken in turns (default 3)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0 = all)")
    args = ap.parse_args()
    if not (args.data / "labels.csv").is_file():
        ap.error(f"{args.data} has no labels.csv")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    data = args.data.resolve()
    medians: dict[str, list[float]] = {"base": [], "this": []}
    exact: dict[str, object] = {}
    with worktree(args.base) as base:
        for i in range(args.rounds):
            for side, root in (("base", base), ("this", REPO)):
                r = bench(root, data, args.region, args.limit)
                medians[side].append(float(r["ms_median"]))  # type: ignore[arg-type]
                exact[side] = r["exact"]
                print(f"round {i + 1}/{args.rounds} {side}: {r['ms_median']} ms median, "
                      f"p95 {r['ms_p95']} ms, exact {r['exact']}, RSS {r['rss_mb']} MB, "
                      f"stages {r.get('stage_ms_median')}", flush=True)
    base_ms, this_ms = (statistics.median(medians[s]) for s in ("base", "this"))
    print(json.dumps({
        "data": str(args.data), "region": args.region, "base": args.base, "rounds": args.rounds,
        "base_ms_median": base_ms, "this_ms_median": this_ms,
        "base_runs": medians["base"], "this_runs": medians["this"],
        "ratio": round(this_ms / base_ms, 3), "base_exact": exact["base"], "this_exact": exact["this"],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
