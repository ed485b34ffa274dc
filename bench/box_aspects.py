"""Plate shape by source: width over height of the box, and of the character row, of each plate
the photo reader reads right.

Whether a plate's shape could tell a reader with no region set (`--region auto`) which region's
formats to prefer: US plates are 2:1, Brazilian 3.1:1, European 4.7:1, but perspective, the
detectors' margins and how a folder was cropped move the boxes. Prints percentiles per source,
and how many boxes are long enough for `grammar.LONG_ASPECT` to rank them as eu or br plates; the
same for the row read, as cut for the recognizer, and `grammar.LONG_ROW`.

Usage: .venv/bin/python bench/box_aspects.py [--data ../shared/data/plates] [SOURCE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from alprd.cli.reader import load_labels
from alprd.config import PHOTO_READER, ReaderConfig
from alprd.read.grammar import LONG_ASPECT, LONG_ROW
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader
from alprd.read.recognize import Recognition

# each source's region, as the left-out measurement reads it
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from eval_loso import REGION

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/plates")
    ap.add_argument("sources", nargs="*", metavar="SOURCE", help=f"any of {', '.join(REGION)} (default: all)")
    args = ap.parse_args()
    if unknown := set(args.sources) - set(REGION):
        ap.error(f"unknown source(s): {', '.join(sorted(unknown))}")
    reader = PlateReader(ReaderConfig(**{**PHOTO_READER, "tall_row_px": 0}))
    rows: dict[str, float] = {}  # text -> width / height of the row it was read from, per photo
    recognize = reader.recognize_row

    def recognize_row(row: np.ndarray) -> Recognition:
        rec = recognize(row)
        for cand in rec.candidates:
            rows.setdefault(cand.text, row.shape[1] / row.shape[0])
        return rec

    reader.recognize_row = recognize_row  # type: ignore[method-assign]
    print("source: box or row, n plates read right; width / height at percentiles "
          + " ".join(map(str, PERCENTILES)))
    for source in args.sources or list(REGION):
        labels = load_labels(args.data / source)
        aspects, row_aspects = [], []
        for name, plates in sorted(labels.items()):
            image, _ = read_image(args.data / source / name)
            rows.clear()
            reads = reader.read(image, REGION[source]).reads
            if reads and reads[0].text in {r["plate"] for r in plates}:
                aspects.append(reads[0].box.w / reads[0].box.h)
                if reads[0].text in rows:  # not a two-row plate's joined read
                    row_aspects.append(rows[reads[0].text])
        for what, values, bar in (("box", aspects, LONG_ASPECT), ("row", row_aspects, LONG_ROW)):
            cuts = np.percentile(np.array(values), PERCENTILES) if values else []
            long = sum(a >= bar for a in values)
            print(f"{source}: {what} n {len(values)}; " + " ".join(f"{c:.2f}" for c in cuts)
                  + f"; {long} at {bar}:1 or longer", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
