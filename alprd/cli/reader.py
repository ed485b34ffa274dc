"""`alprd read` and `alprd bench`: the reader on photos, one JSON line per image."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from pydantic import ValidationError

from ..config import DETECTOR_MODELS, PHOTO_READER, ReaderConfig
from ..errors import AlprdError, ModelError
from ..exits import Exit
from ..read.imageio import read_image
from ..read.misses import count_misses, exact_interval
from ..read.report import plate_json
from ..types import Box, PhotoResult

if TYPE_CHECKING:
    from ..read.reader import PlateReader

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("read", help="read plates in photos; one JSON object per image per line",
                       description="Read licence plates in IMAGE files and print one JSON line per image.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos (JPEG, PNG, ...) to read")
    add_reader_args(p)
    p.set_defaults(handler=cmd_read)

    b = sub.add_parser("bench", help="accuracy and speed over a labelled folder",
                       description="Read DIR/labels.csv (columns file, plate and optionally x,y,w,h) and "
                       "report exact and O/0,I/1-folded accuracy, the misses by class (dropped, extra or "
                       "look-alike characters, ...), detector recall, ms per image, peak RSS.")
    b.add_argument("dir", type=Path, metavar="DIR", help="folder of photos with a labels.csv")
    b.add_argument("--json", action="store_true", help="print one final JSON object instead of text")
    b.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    add_reader_args(b)
    b.set_defaults(handler=cmd_bench)


def add_reader_args(p: argparse.ArgumentParser) -> None:
    """The reader's options, with `alprd read`'s defaults (also used by the bench/ and training/
    scripts that read photos, so that they read as `alprd bench` does)."""
    p.add_argument("--region", choices=["us", "eu", "br", "auto"], default="auto",
                   help="plate grammar used to rank candidates (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime threads of every model, the plate detectors' included (default: 1 "
                        "for the line finder and the recognizer, the CPUs available, at most 4, for "
                        "the detectors: reader.threads and reader.detector_threads)")
    p.add_argument("--detector", choices=DETECTOR_MODELS, default=PHOTO_READER["detector_model"],
                   help="first plate detector (default: %(default)s; see models/README.md)")
    p.add_argument("--fallback", choices=(*DETECTOR_MODELS, "none"), default=PHOTO_READER["fallback_model"],
                   help="detector that reads the photo again when the first reads no plate well, "
                        "or several (default: %(default)s; none: no fallback)")
    p.add_argument("--detector-size", type=int, default=640, help="detector input long side (640 or 960)")
    p.add_argument("--retry-size", type=int, default=PHOTO_READER["retry_size"],
                   help="detector size of a last, closer look when still no confident plate is found "
                        "(default: %(default)s; 0: none)")
    p.add_argument("--zoom-out", action=argparse.BooleanOptionalAction, default=PHOTO_READER["zoom_out"],
                   help="where still nothing reads well, look again at the frame padded on every side "
                        "(plates that fill the frame; in a close-up, the frame read whole replaces a "
                        "read of a piece of the plate; default: on)")
    p.add_argument("--tall-row-px", type=int, default=ReaderConfig.model_fields["tall_row_px"].default,
                   help="rows at least this many pixels high are read by a plate_rec_tall in the models "
                        "folder (default: %(default)s: plate_rec reads every row; none ships)")
    p.add_argument("--models-dir", type=Path, default=None, help="folder with the models (default: shipped)")


def reader_config(args: argparse.Namespace) -> ReaderConfig:
    """The ReaderConfig that `add_reader_args`' options describe."""
    kwargs: dict[str, Any] = {
        "region": args.region, "detector_size": args.detector_size,
        "retry_size": args.retry_size or None, "detector_model": args.detector,
        "fallback_model": None if args.fallback == "none" else args.fallback,
        "tall_row_px": args.tall_row_px, "zoom_out": args.zoom_out,
    }
    if args.models_dir is not None:
        kwargs["models_dir"] = args.models_dir
    if args.threads is not None:
        # a count of threads says how many each model may use: "one thread" is one for the
        # detectors too, which by default take every core
        kwargs["threads"] = kwargs["detector_threads"] = args.threads
    try:
        return ReaderConfig(**kwargs)
    except ValidationError as e:
        # in the options' own words: one line, not pydantic's multi-line report with a URL
        raise ValueError("; ".join(dict.fromkeys(  # --threads sets two keys: said once
            f"{_option(err['loc'])} {err['input']!r}: {err['msg'][:1].lower()}{err['msg'][1:]}"
            for err in e.errors()
        ))) from None


def _option(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return {"detector_model": "--detector", "fallback_model": "--fallback",
            "detector_threads": "--threads"}.get(
        field, "--" + field.replace("_", "-"))


def _make_reader(args: argparse.Namespace) -> PlateReader:
    from ..read.reader import PlateReader

    return PlateReader(reader_config(args))


def cmd_read(args: argparse.Namespace) -> int:
    try:
        reader = _make_reader(args)
    except (ModelError, ValueError) as e:
        print(f"alprd read: {e}", file=sys.stderr)
        return Exit.USAGE if isinstance(e, ValueError) else Exit.FAILURE
    failed = 0
    for name in args.images:
        t0 = time.perf_counter()
        try:
            image, scale = read_image(name)
            result: PhotoResult = reader.read(image)
        except AlprdError as e:
            failed += 1
            _emit({"file": name, "error": str(e)})
            continue
        ms = (time.perf_counter() - t0) * 1000
        _emit({"file": name, "ms": round(ms, 1), "plates": [plate_json(r, scale) for r in result.reads]})
    return Exit.FAILURE if failed else Exit.OK


def _emit(obj: dict[str, Any], out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def fold(text: str) -> str:
    """O/0 and I/1 folded, as the US labels write 0 for O-like glyphs."""
    return text.replace("O", "0").replace("I", "1")


class Progress:
    """A bar on a terminal, a log line every 10% otherwise."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total, self.out, self.tty = total, out, out.isatty()
        self.last_decile = -1

    def update(self, done: int, note: str = "") -> None:
        if self.tty:
            filled = int(30 * done / max(1, self.total))
            self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {note}")
            if done == self.total:
                self.out.write("\n")
            self.out.flush()
        elif (decile := 10 * done // max(1, self.total)) != self.last_decile:
            self.last_decile = decile
            self.out.write(f"bench: {done}/{self.total} images {note}\n")
            self.out.flush()


def load_labels(d: Path) -> dict[str, list[dict[str, str]]]:
    """file -> label rows (a file may hold several plates)."""
    path = d / "labels.csv"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "file" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header with at least 'file' (and 'plate' and/or x,y,w,h)")
        rows: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            rows.setdefault(row["file"], []).append(row)
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        labels = load_labels(args.dir)
        reader = _make_reader(args)
    except (OSError, ValueError) as e:
        print(f"alprd bench: {e}", file=sys.stderr)
        return Exit.USAGE
    except ModelError as e:
        print(f"alprd bench: {e}", file=sys.stderr)
        return Exit.FAILURE
    files = sorted(labels)
    if args.limit:
        files = files[: args.limit]
    n_text = exact = folded = n_boxes = found = errors = 0
    times: list[float] = []
    stages: dict[str, list[float]] = {}
    tops: list[tuple[str, set[str]]] = []
    progress = Progress(len(files))
    for i, name in enumerate(files, 1):
        rows = labels[name]
        try:
            t0 = time.perf_counter()
            image, scale = read_image(args.dir / name)
            result = reader.read(image)
            times.append((time.perf_counter() - t0) * 1000)
            for stage, ms in result.stage_ms.items():
                stages.setdefault(stage, []).append(ms)
        except AlprdError as e:
            errors += 1
            log.warning("%s", e)
            continue
        top = result.reads[0].text if result.reads else ""
        plates = {r["plate"] for r in rows if r.get("plate")}
        if plates:
            n_text += 1
            exact += top in plates
            folded += fold(top) in {fold(p) for p in plates}
            tops.append((top, plates))
        for r in rows:
            if all(r.get(k) for k in ("x", "y", "w", "h")):
                n_boxes += 1
                gt = Box(*(round(int(r[k]) * scale) for k in ("x", "y", "w", "h")))
                found += any(d.box.iou(gt) >= 0.5 for d in result.detections)
        progress.update(i, f"exact {exact}/{n_text}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "n": len(files),
        "exact": round(exact / n_text, 4) if n_text else None,
        "exact_ci95": [round(x, 4) for x in exact_interval(exact, n_text)] if n_text else None,
        "folded": round(folded / n_text, 4) if n_text else None,
        "det_recall": round(found / n_boxes, 4) if n_boxes else None,
        "ms_median": round(float(np.median(times)), 1) if times else None,
        "ms_p95": round(float(np.percentile(times, 95)), 1) if times else None,
        "rss_mb": round(rss_mb, 1),
        "errors": errors,
        "fps": round(1000 / float(np.median(times)), 1) if times else None,
        "stage_ms_median": {k: round(float(np.median(v)), 1) for k, v in stages.items()},
        "misses": count_misses(tops),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>11}: {v}")
    return Exit.FAILURE if errors else Exit.OK
