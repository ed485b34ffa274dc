"""Leave-one-source-out accuracy: each source is read by a recognizer that never trained on it.

    .venv/bin/python training/eval_loso.py --runs .cache/rec-runs \\
        --pair us=r30-no-us --pair eu=r30-no-eu ... --pair us-ucsd=r30 [--json out.json]

A pair `SOURCE=RUN` reads every photo of `../shared/data/plates/SOURCE` with the whole reader as
`alprd bench` reads it (`config.PHOTO_READER`), its recognizer replaced by RUN's `plate_rec.onnx`
(every other model is the shipped one). RUN must have been trained with `--leave-out SOURCE`
(checked against its contract), except for `us-ucsd`, which no run trains on. Prints one JSON
line per pair and, last, the mean over the pairs: the number a recognizer is shipped on.

The plate detectors trained on the train halves of eu and br (never on us, us-crops, br-crops or
us-ucsd): for eu and br, `--dev-only` keeps the halves neither model saw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates"
MODELS = ROOT / "models"
REGION = {"us": "us", "us-crops": "us", "us-ucsd": "us", "eu": "eu", "br": "br", "br-crops": "br"}
NEVER_TRAINED = {"us-ucsd"}


def models_with(run: Path, tmp: Path) -> Path:
    """A models folder: the shipped models, the run's recognizer as plate_rec (no tall twin)."""
    for f in MODELS.iterdir():
        if f.suffix in (".onnx", ".json") and not f.name.startswith("plate_rec"):
            (tmp / f.name).symlink_to(f)
    shutil.copyfile(run / "plate_rec.onnx", tmp / "plate_rec.onnx")
    shutil.copyfile(run / "plate_rec.json", tmp / "plate_rec.json")
    return tmp


def left_out(run: Path) -> set[str]:
    contract = json.loads((run / "plate_rec.json").read_text())
    return set(contract.get("trained_on", {}).get("left_out") or [])


def main() -> int:
    sys.path.insert(0, str(ROOT / "training"))
    from common import hash_split

    from alprd.cli.reader import fold, load_labels
    from alprd.config import PHOTO_READER, ReaderConfig
    from alprd.read.imageio import read_image
    from alprd.read.reader import PlateReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / ".cache" / "rec-runs")
    ap.add_argument("--pair", action="append", required=True, metavar="SOURCE=RUN")
    ap.add_argument("--dev-only", action="store_true", help="eu, br: only the halves the detectors never saw")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    results = []
    for pair in args.pair:
        source, _, run_name = pair.partition("=")
        run = args.runs / run_name
        if source not in REGION or not (run / "plate_rec.onnx").exists():
            ap.error(f"--pair {pair}: unknown source or no {run}/plate_rec.onnx")
        if source not in NEVER_TRAINED and source not in left_out(run):
            ap.error(f"--pair {pair}: {run_name} trained on {source} (its contract's left_out)")
        with tempfile.TemporaryDirectory() as tmp:
            models = models_with(run, Path(tmp))
            cfg = ReaderConfig(**{**PHOTO_READER, "tall_row_px": 0, "models_dir": models})
            reader = PlateReader(cfg)
        labels = load_labels(DATA / source)
        names = sorted(labels)
        if args.dev_only and source in ("eu", "br"):
            names = [n for n in names if hash_split(n) == "dev"]
        exact = folded = 0
        times = []
        for i, name in enumerate(names, 1):
            image, _ = read_image(DATA / source / name)
            t0 = time.perf_counter()
            reads = reader.read(image, REGION[source]).reads
            times.append((time.perf_counter() - t0) * 1000)
            top = reads[0].text if reads else ""
            plates = {r["plate"] for r in labels[name]}
            exact += top in plates
            folded += fold(top) in {fold(p) for p in plates}
            if i % 100 == 0:
                print(f"{source}: {i}/{len(names)} exact {exact / i:.3f}", file=sys.stderr)
        row = {"source": source, "run": run_name, "n": len(names), "exact": round(exact / len(names), 4),
               "folded": round(folded / len(names), 4), "ms_median": round(float(np.median(times)), 1)}
        print(json.dumps(row), flush=True)
        results.append(row)
    mean = {"mean_exact": round(float(np.mean([r["exact"] for r in results])), 4),
            "mean_folded": round(float(np.mean([r["folded"] for r in results])), 4), "n_pairs": len(results)}
    print(json.dumps(mean))
    if args.json:
        args.json.write_text(json.dumps({"pairs": results, **mean}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
