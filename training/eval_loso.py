"""Leave-one-source-out accuracy: each source is read by a recognizer that never trained on it.

    .venv/bin/python training/eval_loso.py --runs .cache/rec-runs \\
        --pair us=s1-no-us-q --pair eu=s1-no-eu-q ... --pair us-ucsd=s1-q [--json out.json]

A pair `SOURCE=RUN` reads every photo of `../shared/data/plates/SOURCE` with the whole reader as
`alprd bench` reads it (`config.PHOTO_READER`), its recognizer replaced by RUN's `plate_rec.onnx`
(every other model is the shipped one). RUN must have been trained with `--leave-out SOURCE`
(checked against its contract), except for `us-ucsd`, which no run trains on. Prints one JSON
line per pair, with its exact rate's 95% interval (Wilson) and its misses counted by class
(`alprd.read.misses`: a left-out source's misses are read as classes, never one by one), and,
last, the mean over the pairs: the number a recognizer is shipped on.

The plate detectors trained on the train halves of eu and br (never on us, us-crops, br-crops or
us-ucsd): for eu and br, `--dev-only` keeps the halves neither model saw.

`--as-crops` reads each labelled plate of a photo source cut out of its photo, so that it fills
the frame, instead of the whole photo: a tight crop or a zoomed pole camera from a camera no run
trained on (`us-ucsd`), the class the crop folders stand for. Each side gets a margin drawn from
a seeded generator (4-20% of the box's width at each end, 15-60% of its height above and below;
`us-ucsd`'s boxes hug the characters, the others' the plate), the same margins every run.

Class probes: `--darken GAIN --noise SIGMA` reads each photo (or cut-out) at GAIN of its light
with Gaussian sensor noise (seeded by the file's name), the class of dim night plates;
`--shrink F` reads it resized by F (area interpolation), the class of small, distant plates
(above 1, cubic: the class of crops from a camera of higher resolution, or closer);
`--side-margin LO HI` sets the cut-outs' margins at each end (shares of the box's width; default
0.04 0.20), the class of tight crops whose first or last character nears the frame's edge;
`--shear DEG` shears each photo vertically by DEG degrees (its sign drawn by the file's name), the
class of plates seen from the side, whose rows slant while their characters stay upright;
`--rotate DEG` turns it by DEG degrees (sign drawn likewise), the class of a camera's roll or a
hand-held photo, whose characters turn with their rows; `--grey` takes its colour, the class of
infrared and monochrome cameras (pole and patrol-car ALPR cameras often are);
`--blur F` smears each view sideways by F of its plate's width (a horizontal line kernel that
long, at the photo's own scale: the label box's width for photo sources, the crop's for the crop
folders), the class of a moving car or a moving patrol car under a slow shutter; `--darken`
above 1 over-exposes (30 grey levels of flare added, clipped at 255: a sunlit or
IR-flashed plate); `--jpeg Q` saves each view as JPEG at quality Q (a cheap camera's stream);
`--stack` (with `--as-crops`, `us-ucsd` alone, whose boxes hug the characters) sets each cut-out's
first half of characters over the rest, a quarter of their height apart: the class of two-row
plates, which our folders lack. The photos stay real: these change their light, size, framing or
layout, never their plates' characters.

`--second RUN --below T --combine mean|max|only` measures a second recognizer where the first is
unsure: rows the first reads below confidence T are read by RUN too, and its probabilities are
averaged with the first's (`mean`), the more confident read wins (`max`), or RUN's read stands
(`only`; with `--below 2`, RUN reads every row). The stock model as RUN, head cut and folded
like ours: `train_recognizer.py --run stock-cut --data ... --fold --steps 1 --lr 0 --head-lr 0`,
then `quantize_recognizer.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates"
MODELS = ROOT / "models"
REGION = {"us": "us", "us-crops": "us", "us-ucsd": "us", "eu": "eu", "br": "br", "br-crops": "br"}
NEVER_TRAINED = {"us-ucsd"}
OVER_FLARE = 30.0
"""Grey levels added to an over-exposed probe's light (`--darken` above 1): flare lifts the dark
characters too, as the sun or an IR flash does."""
STACK_GAP = 0.25
"""`--stack`: the rows of the stacked plate are this share of the character box's height apart."""
SIDE_MARGIN = (0.04, 0.20)
"""Cut-outs' margin at each end, drawn from this range of shares of the box's width."""


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


def with_second(reader: Any, second: Any, below: float, combine: str) -> Any:
    """`reader.recognize_row` with `second` reading the rows the reader's own model is unsure of."""
    from alprd.read.recognize import decode

    first = reader.recognizer

    def recognize_row(row: np.ndarray) -> Any:
        p1 = first.probabilities(row)
        r1 = decode(p1)
        if r1.confidence >= below:
            return r1
        p2 = second.probabilities(row)
        if combine == "only":
            return decode(p2)
        if combine == "mean" and p2.shape == p1.shape:
            return decode((p1 + p2) / 2)
        r2 = decode(p2)
        return r2 if r2.confidence > r1.confidence else r1

    return recognize_row


def plate_crops(image: np.ndarray, rows: list[dict[str, str]], name: str,
                side: tuple[float, float] = SIDE_MARGIN, stack: bool = False) -> list[tuple[np.ndarray, str]]:
    """Each labelled plate of a photo cut out with seeded margins (see the module's docstring);
    `stack`: its first half of characters set over the rest (`--stack`)."""
    import random
    import zlib

    import cv2

    rng = random.Random(zlib.crc32(name.encode()))
    h_img, w_img = image.shape[:2]
    out = []
    for row in rows:
        x, y, w, h = (int(float(row[k])) for k in ("x", "y", "w", "h"))
        left, right = (round(w * rng.uniform(*side)) for _ in range(2))
        top, bottom = (round(h * rng.uniform(0.15, 0.60)) for _ in range(2))
        x0, y0 = max(0, x - left), max(0, y - top)
        x1, y1 = min(w_img, x + w + right), min(h_img, y + h + bottom)
        if x1 - x0 >= 8 and y1 - y0 >= 4:
            if stack:
                # the character box's halves stacked, then the margins drawn above around the pair
                split = round(w * ((len(row["plate"]) + 1) // 2) / len(row["plate"]))
                pair = stacked_halves(image[y : y + h, x : x + split], image[y : y + h, x + split : x + w],
                                      round(STACK_GAP * h))
                cut = cv2.copyMakeBorder(pair, top, bottom, left, right, cv2.BORDER_REPLICATE)
            else:
                cut = image[y0:y1, x0:x1]
            out.append((np.ascontiguousarray(cut), row["plate"]))
    return out


def stacked_halves(first: np.ndarray, rest: np.ndarray, gap: int) -> np.ndarray:
    """`first` set over `rest`, `gap` rows apart, the narrower centred and both extended by their own
    edge pixels: a two-row plate made of a one-row plate's pixels."""
    import cv2

    width = max(first.shape[1], rest.shape[1])
    rows = []
    for i, part in enumerate((first, rest)):
        extra = width - part.shape[1]
        rows.append(cv2.copyMakeBorder(part, 0, gap if i == 0 else 0, extra // 2, extra - extra // 2,
                                       cv2.BORDER_REPLICATE))
    return np.vstack(rows)


def degraded(view: np.ndarray, name: str, gain: float, noise: float, shrink: float,
             shear: float = 0.0, jpeg: int = 0, rotate: float = 0.0, grey: bool = False,
             blur: int = 0) -> np.ndarray:
    """`view` smeared sideways over `blur` pixels, at `gain` of its light (above 1: 30 grey levels
    of flare added, clipped at 255) with sensor noise of `noise` grey levels (seeded by `name`),
    resized by `shrink`, sheared by `shear` degrees one way or the other (by `name`), turned by
    `rotate` degrees likewise, in grey (`grey`), saved as JPEG at quality `jpeg`: the class probes
    of the module's docstring."""
    import zlib

    import cv2

    way = 1.0 if zlib.crc32(name.encode()) % 2 else -1.0  # one way or the other, by the file's name
    if blur > 1:
        # first, at the camera's own scale: the shutter smears what the lens sees
        view = cv2.blur(view, (blur, 1), borderType=cv2.BORDER_REPLICATE)
    if shear:
        t = np.tan(np.radians(way * shear))
        width = view.shape[1]
        m = np.float32([[1, 0, 0], [t, 1, -t * width / 2]])
        view = cv2.warpAffine(view, m, (width, view.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    if rotate:
        height, width = view.shape[:2]
        m = cv2.getRotationMatrix2D((width / 2, height / 2), way * rotate, 1.0)
        view = cv2.warpAffine(view, m, (width, height), borderMode=cv2.BORDER_REPLICATE)
    if shrink != 1.0:
        view = cv2.resize(view, None, fx=shrink, fy=shrink,
                          interpolation=cv2.INTER_AREA if shrink < 1 else cv2.INTER_CUBIC)
    if gain != 1.0 or noise:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        lit = view.astype(np.float32) * gain + rng.normal(0, noise, view.shape).astype(np.float32)
        view = np.clip(lit + (OVER_FLARE if gain > 1 else 0), 0, 255).astype(np.uint8)
    if grey:
        view = cv2.cvtColor(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if jpeg:
        ok, data = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        view = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else view
    return view


def main() -> int:
    sys.path.insert(0, str(ROOT / "training"))
    from common import hash_split

    from alprd.cli.reader import fold, load_labels
    from alprd.config import PHOTO_READER, ReaderConfig
    from alprd.read.imageio import read_image
    from alprd.read.misses import count_misses, exact_interval
    from alprd.read.reader import PlateReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / ".cache" / "rec-runs")
    ap.add_argument("--pair", action="append", required=True, metavar="SOURCE=RUN")
    ap.add_argument("--dev-only", action="store_true", help="eu, br: only the halves the detectors never saw")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--second", metavar="RUN", help="a second recognizer for the rows the first is unsure of")
    ap.add_argument("--below", type=float, default=0.5, help="--second reads rows read below this confidence")
    ap.add_argument("--combine", choices=("mean", "max", "only"), default="mean")
    ap.add_argument("--as-crops", action="store_true", help="photo sources: read each labelled plate cut out "
                    "of its photo (frame-filling), not the photo")
    ap.add_argument("--darken", type=float, default=1.0, metavar="GAIN",
                    help="class probe: read at GAIN of the light (above 1: over-exposed, with flare)")
    ap.add_argument("--jpeg", type=int, default=0, metavar="Q",
                    help="class probe: read after saving as JPEG at quality Q")
    ap.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                    help="class probe: sensor noise, grey levels")
    ap.add_argument("--shrink", type=float, default=1.0, metavar="F",
                    help="class probe: read resized by F (above 1: enlarged)")
    ap.add_argument("--shear", type=float, default=0.0, metavar="DEG",
                    help="class probe: read sheared vertically by DEG degrees, one way or the other")
    ap.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                    help="class probe: read turned by DEG degrees, one way or the other")
    ap.add_argument("--blur", type=float, default=0.0, metavar="F",
                    help="class probe: smear sideways by F of the plate's width (motion blur)")
    ap.add_argument("--grey", action="store_true", help="class probe: read in grey (monochrome cameras)")
    ap.add_argument("--stack", action="store_true",
                    help="--as-crops, us-ucsd: each cut-out's first half of characters set over the rest "
                         "(two-row plates)")
    ap.add_argument("--region", choices=("us", "eu", "br", "auto"),
                    help="read every source with this region (auto: as a user who sets none); "
                         "default: each source's own")
    ap.add_argument("--side-margin", type=float, nargs=2, default=SIDE_MARGIN, metavar=("LO", "HI"),
                    help="--as-crops: margin at each end, a share of the box's width drawn from LO-HI")
    args = ap.parse_args()
    side = (args.side_margin[0], args.side_margin[1])
    if not (0 < args.darken <= 3 and args.noise >= 0 and 0 < args.shrink <= 4 and 0 <= side[0] <= side[1]
            and 0 <= args.shear <= 30 and 0 <= args.rotate <= 30 and 0 <= args.jpeg <= 100
            and 0 <= args.blur <= 1):
        ap.error("--darken takes (0, 3], --shrink (0, 4], --noise >= 0, --side-margin LO <= HI, both >= 0, "
                 "--shear and --rotate 0-30, --jpeg 0-100, --blur 0-1")
    if args.stack and (not args.as_crops or any(not p.startswith("us-ucsd=") for p in args.pair)):
        ap.error("--stack takes --as-crops and us-ucsd pairs alone: only its boxes hug the characters")
    probe = "".join(f"@{k}{v:g}" for k, v, plain in (("darken", args.darken, 1.0), ("noise", args.noise, 0.0),
                                                    ("shrink", args.shrink, 1.0), ("shear", args.shear, 0.0),
                                                    ("rotate", args.rotate, 0.0), ("blur", args.blur, 0.0),
                                                    ("jpeg", args.jpeg, 0))
                    if v != plain) + ("@grey" if args.grey else "")
    second = None
    if args.second:
        from alprd.read.recognize import Recognizer

        with tempfile.TemporaryDirectory() as tmp:
            second = Recognizer(models_with(args.runs / args.second, Path(tmp)), 1)

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
            # one onnxruntime thread for every model, as `alprd bench --threads 1` reads: the
            # medians of the figures compare with the issue's
            cfg = ReaderConfig(**{**PHOTO_READER, "tall_row_px": 0, "models_dir": models,
                                  "detector_threads": 1})
            reader = PlateReader(cfg)
        if second is not None:
            reader.recognize_row = with_second(reader, second, args.below, args.combine)  # type: ignore[method-assign]
        labels = load_labels(DATA / source)
        names = sorted(labels)
        if args.dev_only and source in ("eu", "br"):
            names = [n for n in names if hash_split(n) == "dev"]
        exact = folded = n = 0
        times = []
        tops: list[tuple[str, set[str]]] = []
        cut = args.as_crops and source not in ("us-crops", "br-crops")  # crop folders are crops already
        for i, name in enumerate(names, 1):
            image, _ = read_image(DATA / source / name)
            plates = {r["plate"] for r in labels[name]}
            if cut:
                views = [(crop, {plate}) for crop, plate in plate_crops(image, labels[name], name, side,
                                                                         args.stack)]
            else:
                views = [(image, plates)]
            # the plate's width at the photo's scale, for --blur: the label box's, or the crop's
            plate_w = int(float(labels[name][0]["w"])) if "w" in labels[name][0] else image.shape[1]
            for view, wanted in views:
                view = degraded(view, name, args.darken, args.noise, args.shrink, args.shear, args.jpeg,
                                args.rotate, args.grey, round(args.blur * plate_w))
                t0 = time.perf_counter()
                reads = reader.read(view, args.region or REGION[source]).reads
                times.append((time.perf_counter() - t0) * 1000)
                top = reads[0].text if reads else ""
                n += 1
                exact += top in wanted
                folded += fold(top) in {fold(p) for p in wanted}
                tops.append((top, wanted))
            if i % 100 == 0:
                print(f"{source}: {i}/{len(names)} exact {exact / max(1, n):.3f}", file=sys.stderr)
        label = run_name + (f"+{args.second}<{args.below}:{args.combine}" if second else "")
        margin = ("" if side == SIDE_MARGIN or not cut else f"@side{side[0]:g}-{side[1]:g}") + (
            "@stacked" if args.stack else "")
        region = f"@region-{args.region}" if args.region else ""
        row = {"source": source + ("@crops" if cut else "") + margin + probe + region, "run": label, "n": n,
               "exact": round(exact / n, 4), "exact_ci95": [round(x, 4) for x in exact_interval(exact, n)],
               "folded": round(folded / n, 4),
               "ms_median": round(float(np.median(times)), 1), "misses": count_misses(tops)}
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
