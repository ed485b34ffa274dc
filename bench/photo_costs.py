"""Where the photo reader's time goes, photo by photo, around the folder's median.

`alprd bench` gives a folder's median; this says what the photos near it cost, and so what would
move it. Reads DIR as `alprd bench DIR` does, with the same reader options (default here: one
onnxruntime thread for every model, `--threads 1`), each photo's JPEG decoding timed with its
read, and counts per photo the passes of each plate detector (a second look at a candidate and
the closer look are passes too), the line finder's runs and the rows the recognizers read, each
with its time (the call: the model's run and its input's preparation). Prints the photos `--around`
each side of the median, sorted by time, and per model over the folder its calls, their time a
call and a photo, and decoding's time a photo.

Usage: .venv/bin/python bench/photo_costs.py ../shared/data/plates/us [--region us] [--around 8]
       [--json] [any `alprd bench` reader option]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alprd.cli.reader import add_reader_args, load_labels, reader_config
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader


@dataclasses.dataclass(frozen=True)
class Photo:
    file: str
    ms: float
    runs: dict[str, int]
    decode_ms: float
    looks: list[str]
    right: bool


def counting(counts: Counter[str], seconds: Counter[str], key: str,
             method: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - t0
    return counted


def instrument(reader: PlateReader, counts: Counter[str], seconds: Counter[str]) -> list[str]:
    """Count and time the calls that each run one model; the keys, in the order printed."""
    parts: list[tuple[str, Any, str]] = [(reader.detector.contract.name, reader.detector, "probability_map")]
    if reader.fallback is not None:
        parts.append((reader.fallback.contract.name, reader.fallback, "probability_map"))
    parts += [("line_det", reader.lines, "find"), ("plate_rec", reader.recognizer, "probabilities")]
    if reader.tall is not None:
        parts.append(("plate_rec_tall", reader.tall, "probabilities"))
    for key, part, name in parts:
        setattr(part, name, counting(counts, seconds, key, getattr(part, name)))
    return [key for key, _, _ in parts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, metavar="DIR", help="folder of photos with a labels.csv")
    ap.add_argument("--around", type=int, default=8, help="photos printed each side of the median")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    add_reader_args(ap)
    args = ap.parse_args()
    if args.threads is None:
        args.threads = 1
    try:
        labels = load_labels(args.dir)
        reader = PlateReader(reader_config(args))
    except (OSError, ValueError) as e:
        print(f"photo_costs: {e}", file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()  # over the folder
    keys = instrument(reader, counts, seconds)
    photos: list[Photo] = []
    for i, name in enumerate(sorted(labels), 1):
        counts.clear()
        t0 = time.perf_counter()
        image, _ = read_image(args.dir / name)
        decoded = time.perf_counter()
        result = reader.read(image)
        ms = (time.perf_counter() - t0) * 1000
        top = result.reads[0].text if result.reads else ""
        photos.append(Photo(name, round(ms, 1), {k: counts[k] for k in keys},
                            round((decoded - t0) * 1000, 2), sorted(result.stage_ms),
                            top in {r["plate"] for r in labels[name]}))
        if i % 25 == 0:
            print(f"photo_costs: {i}/{len(labels)}", file=sys.stderr)
    photos.sort(key=lambda p: p.ms)
    median = statistics.median(p.ms for p in photos)
    totals = {k: sum(p.runs[k] for p in photos) for k in keys}
    per_photo = {k: round(seconds[k] * 1000 / len(photos), 2) for k in keys}
    per_call = {k: round(seconds[k] * 1000 / max(1, totals[k]), 2) for k in keys}
    decode_ms = round(statistics.fmean(p.decode_ms for p in photos), 2)
    mid = len(photos) // 2
    first = max(0, mid - args.around)
    near = photos[first : mid + args.around]
    if args.json:
        print(json.dumps({"dir": str(args.dir), "region": args.region, "threads": args.threads,
                          "n": len(photos), "ms_median": round(median, 1), "runs": totals,
                          "ms_per_call": per_call, "ms_per_photo": {**per_photo, "decode": decode_ms},
                          "photos": [dataclasses.asdict(p) for p in photos]}))
        return 0
    print(f"{len(photos)} photos, median {median:.1f} ms (decoding included, --threads {args.threads}, "
          f"--region {args.region})")
    print("over the folder, calls / ms a call / ms a photo: "
          + ", ".join(f"{k} {totals[k]} / {per_call[k]} / {per_photo[k]}" for k in keys)
          + f"; decoding {decode_ms} ms a photo")
    print("rank  ms     " + " ".join(f"{k[:14]:>14}" for k in keys) + "  right  looks  file")
    for rank, p in enumerate(near, first + 1):
        runs = " ".join(f"{p.runs[k]:>14}" for k in keys)
        right = "yes" if p.right else "no"
        print(f"{rank:>4}  {p.ms:>5.1f}  {runs}  {right:>5}  {','.join(p.looks)}  {p.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
