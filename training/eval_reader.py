"""Whole-reader accuracy on the photos that neither shipped model trained on.

    .venv/bin/python training/eval_reader.py [--detector-size 640] [--retry-size 960]

Both trained models split the photos by the same rule (`common.hash_split` and
`prepare_rec_data.rec_split`: first byte of the SHA-256 of the file name): the detector trained on
the train half of eu and br (never a US photo), the recognizer on the train half of all three. A
whole-folder number therefore flatters both models; this script keeps each folder's "dev" half,
runs the shipped reader over it exactly as `alprd bench` does, and prints one JSON line per folder.
Needs only the runtime install: `common` imports torch for type checking only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import hash_split

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates"


def main() -> int:
    from alprd.cli.reader import add_reader_args, fold, load_labels, reader_config
    from alprd.read.imageio import read_image
    from alprd.read.reader import PlateReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--folders", nargs="*", default=["us", "eu", "br"])
    add_reader_args(ap)  # as `alprd bench`; each folder is read with its own region
    args = ap.parse_args()

    reader = PlateReader(reader_config(args))
    for folder in args.folders:
        labels = {name: {r["plate"] for r in rows}
                  for name, rows in load_labels(args.data / folder).items()}
        names = sorted(n for n in labels if hash_split(n) == "dev")
        exact = folded = 0
        misses = []
        for i, name in enumerate(names, 1):
            image, _ = read_image(args.data / folder / name)
            reads = reader.read(image, folder.split("-")[0]).reads  # us-crops, us-ucsd: us
            top = reads[0].text if reads else ""
            exact += top in labels[name]
            folded += fold(top) in {fold(p) for p in labels[name]}
            if top not in labels[name]:
                misses.append(f"{'/'.join(sorted(labels[name]))}->{top or '-'}")
            if i % 10 == 0:
                print(f"{folder}: {i}/{len(names)}", file=sys.stderr)
        print(json.dumps({
            "folder": folder, "n": len(names), "of": len(labels),
            "exact": round(exact / max(1, len(names)), 4), "folded": round(folded / max(1, len(names)), 4),
            "misses": misses,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
