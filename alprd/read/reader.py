"""The photo reader: detect plates, find each plate's character row, recognise it, rank by grammar.

`PlateReader.read(image)` is what both `alprd read` and the daemon's pipeline call per frame.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time

import cv2
import numpy as np

from ..config import ReaderConfig
from ..errors import ImageError, ModelError
from ..types import CONFIDENT, Box, Candidate, Detection, Image, Looks, PhotoResult, Read
from . import grammar
from .detect import PlateDetector, default_detector_threads
from .lines import LineFinder, TextLine, even_light, runs_into_side, tilt
from .merge import OVERLAP, later_look, over, whole_row
from .onnx import load_contract
from .recognize import Recognition, Recognizer, chars_for
from .tworow import two_rows

log = logging.getLogger(__name__)

CROP_PAD = (0.15, 0.3)
"""Detector boxes are padded by this fraction of width and height (each side) before line finding."""
LINES_TRIED = 2
SHORT_ROW = 0.6
"""A found row narrower than this share of the detector box is a piece of the plate's row."""
SMALL_ROW = 0.7
SMALL_ROW_FACTOR = 0.5
"""A row whose characters are less than SMALL_ROW as high as the crop's tallest row ranks this
much lower: a plate's serial is its largest text (US, EU, Brazil), while the state name, slogan,
city, dealer frame and stickers are half its height or less."""
ON_PLATE = 0.8
ON_PLATE_FACTOR = 0.5
"""The same across detections: a read whose box lies mostly (ON_PLATE of its area) inside
another read's box, with characters less than SMALL_ROW as high as that read's, is text on that
plate and ranks this much lower. Where a plate fills the frame, the detectors box its stickers
(month and year tags), slogan, state name and dealer frame on their own as well as the plate
itself, and each such box is read alone, out of reach of the row rule above."""
MIN_CHARS = 2
GRAMMAR_MISS_FACTOR = 0.25
"""A read that fits no format of the region counts as this much less likely (sign and truck
lettering rank below plates)."""
MIN_PLATE_ASPECT = 1.4
SQUARE_FACTOR = 0.5
"""A read whose detector box is narrower than MIN_PLATE_ASPECT (width over height) ranks this much
lower: the narrowest car plates (US, Japan: 2:1) seen 45 degrees off-axis are ~1.4:1, while
badges, signs and stickers are often squarer (on the eu/br train halves and ro-detect training
frames, 8 of 41 reads that were not plates and none of 509 plates). Motorcycle and two-row
plates are square too: they rank lower, and are still reported; where their two rows join into
one issued number (`tworow.two_rows`), the shape costs nothing."""

TALL_SURE = 0.9
"""plate_rec_tall's read of a row stands from this confidence on; below it plate_rec reads the row
again. On the train halves of the photo folders (both detectors' boxes), 19 of 145 tall rows read
differently by the two models (large US rows: `A5C399` for ASC7399, `5VCF2037` for 5VCF203); from
0.9 on, 121 rows keep the faster read and one of them differs (a sign)."""

NEAR_PAD = (1.0, 1.5)
"""The near look's window: the plate box a pass expects, padded by this share of its width and
height on each side (three plates wide, four high): room for a car that moved further than its
pass predicts, and the plate a third of the window, as big to the detector as in the photos it
learned from."""
NEAR_TRIES = 2
"""The near look reads at most this many detections of a window, nearest the expected box first,
until one gives a read."""

WIDE_PAD = 0.5
"""Width padding (each side) of the second crop taken when the best row runs into the first
crop's side: the detector's box ended inside the plate (the fast detector's coarse map frames
small plates short), and the row would be read without its first or last character."""
ZOOM_OUT_PAD = 0.5
"""The wider look pads each side of the frame by this share of its width and height, so a plate
that fills the frame (a tight crop, a zoomed pole camera) fills a quarter of the padded frame:
the size of the plates the detectors learned from, and the row finder gets room at the ends."""
ZOOM_OUT_GREY = 128
FRAME_ROW = (0.5, 1 / 6)
"""Width and height, as shares of the frame, of the largest text row that make the frame itself a
plate: a serial spans most of its plate's width and a third to a half of its height (US 2:1 plates:
~0.35 of the height, EU/BR ~0.6); padding and framing leave at least half and a sixth."""
FRAME_SCORE = 0.5
"""The frame read as a plate has no detector score: it counts as an even chance of a plate."""
SMALL_FRAME = 0.75
"""A frame narrower than this share of the detector's input size (and lower than that share of
its height) is read first on a grey canvas of the detector's size, at its own scale (`_on_canvas`):
crops and cut-outs of small plates, which the detector, scaling the frame up to its input, would
see bigger and blurrier than any plate it learned from."""
CANVAS_ASPECT = 0.75
"""The canvas's height as a share of its width: a camera frame's 4:3."""
FIT_SHARE = 1 / (1 + 2 * ZOOM_OUT_PAD)
"""A frame larger than `SMALL_FRAME`, where the first detector finds nothing or a close-up, is
read shrunk to this share of the detector's input on the canvas first (`_fitted`): a crop from a
sharper or closer camera (a zoomed pole camera, a 640-px crop) read as the crop folders' plates,
half the input wide, the scale of the wider look too. Read at their own size, such crops went
through every look of a scene, and a fragment or a sticker read on the way often won. Left-out
pairs, photos and cut-outs enlarged two and three times: us-crops 333 -> 346 and 341 -> 351 of
389, br-crops 1,039 -> 1,049 of 1,144 (x3), the rest and every source at its own size the same
(BENCHMARKS.md)."""
MIN_FIT_SIDE = 8
"""Pixels a frame shrunk for `_fitted` must keep on each side (a 500 x 1 sliver shrinks to none)."""
CLOSE_UP = FRAME_ROW[1]
"""A detector box at least this share of the frame's height is a close-up: the frame may be one
plate, and the box a piece of it (a banner, a half row split at an emblem or a state graphic),
which is then read without its first or last characters."""


def configured_models(cfg: ReaderConfig) -> dict[str, str]:
    """Name -> SHA-256 of the models `cfg` runs, from their contracts, without loading them: what
    `PlateReader.model_hashes` holds once it has checked each file against its contract."""
    names = [cfg.detector_model, "line_det", "plate_rec"]
    if cfg.tall_row_px:
        names.append("plate_rec_tall")
    if cfg.fallback_model is not None and cfg.fallback_model != cfg.detector_model:
        names.append(cfg.fallback_model)
    return {name: load_contract(cfg.models_dir, name).sha256 for name in names}


class PlateReader:
    """Loads its models once (SHA-256 checked, warmed up) and reads photos."""

    def __init__(self, cfg: ReaderConfig) -> None:
        self.cfg = cfg
        self.detector_threads = cfg.detector_threads or default_detector_threads()
        self.detector = PlateDetector(cfg.models_dir, self.detector_threads, cfg.detector_size,
                                      cfg.min_detection_score, name=cfg.detector_model)
        fallback = cfg.fallback_model if cfg.fallback_model != cfg.detector_model else None
        self.fallback = (
            PlateDetector(cfg.models_dir, self.detector_threads, cfg.detector_size, cfg.min_detection_score,
                          name=fallback)
            if fallback else None
        )
        # The closer look reuses the accurate detector's session at a larger input size.
        self.retry = self.fallback or self.detector
        self.retry_size = cfg.retry_size if cfg.retry_size and cfg.retry_size > cfg.detector_size else None
        self.recognizer = Recognizer(cfg.models_dir, cfg.threads)
        self.tall = Recognizer(cfg.models_dir, cfg.threads, "plate_rec_tall") if cfg.tall_row_px else None
        if self.tall is not None and self.tall.row_margin != self.recognizer.row_margin:
            # One line finder cuts the rows for both: they must have been trained on the same cut.
            raise ModelError(
                f"plate_rec_tall.json: input.row_margin {self.tall.row_margin} differs from "
                f"plate_rec.json's {self.recognizer.row_margin}: restore models/ from the release"
            )
        self.lines = LineFinder(cfg.models_dir, cfg.threads, row_margin=self.recognizer.row_margin)
        self.model_hashes = {
            cfg.detector_model: self.detector.contract.sha256,
            "line_det": self.lines.sha256,
            "plate_rec": self.recognizer.sha256,
        }
        if self.tall is not None:
            self.model_hashes["plate_rec_tall"] = self.tall.sha256
        if self.fallback is not None:
            self.model_hashes[self.fallback.contract.name] = self.fallback.contract.sha256

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        """Every plate in `image`, best first. `looks` (from the daemon's pipeline) sets the first
        detectors' size, whether the closer look may run, and where to look first (`near`); a photo
        gets every look at the whole image.

        `stage_ms` has the near look's time where it ran (`near`, of which `near_fallback` is the
        accurate detector's part), and where the whole image was read the detectors' time
        (`detect`), the rest (`recognize`: line finding and recognition), and the time of each
        later look that ran (`fallback`, `whole`, `closer`, `wider`)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected an 8-bit BGR image, got shape {image.shape} {image.dtype}")
        region = region or self.cfg.region
        looks = looks or Looks()
        if not looks.near:
            if self.cfg.zoom_out and self._small(image, looks):
                return self._on_canvas(image, region, looks)
            return self._read_whole(image, region, looks)
        t0 = time.perf_counter()
        reads, detections, stages = self._read_near(image, looks.near, region)
        reads = [r for r in reads if r.confidence >= self.cfg.min_confidence]
        stages["near"] = (time.perf_counter() - t0) * 1000
        if reads and looks.whole and "near_fallback" not in stages:
            # the passes' plates are read: the rest of the frame, for a car beside them; not in a
            # frame whose near look already took the accurate detector (two costly looks in one
            # frame drop the next): the pipeline asks again at the next frame
            rest = self._read_whole(image, region, dataclasses.replace(looks, closer=False), known=reads)
            reads += rest.reads
            detections += rest.detections
            stages.update(rest.stage_ms)
        if reads:
            reads.sort(key=lambda r: r.confidence, reverse=True)
            ms = (time.perf_counter() - t0) * 1000
            return PhotoResult(tuple(reads), detections=tuple(detections), ms=ms, stage_ms=stages)
        # Nothing where the passes' plates should be (the car left, or turned): the whole frame.
        whole = self._read_whole(image, region, looks)
        return dataclasses.replace(whole, ms=whole.ms + stages["near"], stage_ms={**stages, **whole.stage_ms})

    def _read_near(
        self, image: Image, boxes: tuple[Box, ...], region: str
    ) -> tuple[list[Read], list[Detection], dict[str, float]]:
        """The near look: each expected plate box padded by NEAR_PAD into a window, which the first
        detector reads at `near_size` (the plate about a third of it: as big to the detector as a
        plate filling a third of a photo), and the accurate one where that finds no plate.
        Only the plate nearest the expected box is read in each window: the other text there (a
        grille, a sticker, a dealer's frame) would cost a read each, and a plate beside it is the
        whole frame's to find (`reader.full_read_every`). Detections in image pixels."""
        h, w = image.shape[:2]
        reads: list[Read] = []
        found: list[Detection] = []
        stages: dict[str, float] = {}
        for box in boxes:
            win = box.pad(*NEAR_PAD).clamp(w, h)
            if win.w < 4 or win.h < 4:
                continue  # expected outside the picture: it has left
            crop = image[win.y : win.y + win.h, win.x : win.x + win.w]
            got = self._read_nearest(image, region, self.detector, crop, win, box, found)
            # The accurate detector only where the first found no plate here: where the first read
            # one poorly, the accurate one boxed the same plate (IoU >= 0.7 in 63 of 64 such windows
            # of panned us photos 13-60) and read it the same in 62.
            if self.fallback is not None and got is None:
                t = time.perf_counter()
                got = self._read_nearest(image, region, self.fallback, crop, win, box, found)
                stages["near_fallback"] = stages.get("near_fallback", 0.0) + (time.perf_counter() - t) * 1000
            if got is not None:
                reads.append(got[0])
                found.append(got[1])
        return reads, found, stages

    def _read_nearest(
        self, image: Image, region: str, detector: PlateDetector, crop: Image, win: Box, expected: Box,
        seen: list[Detection],
    ) -> tuple[Read, Detection] | None:
        """The read of the detection in a window (`crop`, at `win` in the image) nearest the expected
        box, or of the next nearest where that reads nothing; none that another window found."""
        dets = [Detection(Box(d.box.x + win.x, d.box.y + win.y, d.box.w, d.box.h), d.score)
                for d in detector.detect(crop, self.cfg.near_size)[: self.cfg.max_plates]]
        cx, cy = expected.x + expected.w / 2, expected.y + expected.h / 2
        dets = sorted((d for d in dets if all(d.box.iou(o.box) < OVERLAP for o in seen)),
                      key=lambda d: math.hypot(d.box.x + d.box.w / 2 - cx, d.box.y + d.box.h / 2 - cy))
        for det in dets[:NEAR_TRIES]:
            if (read := self.read_plate(image, det, region)) is not None:
                return read, det
        return None

    def _small(self, image: Image, looks: Looks) -> bool:
        size = looks.size or self.cfg.detector_size
        h, w = image.shape[:2]
        return bool(w < SMALL_FRAME * size and h < SMALL_FRAME * CANVAS_ASPECT * size)

    def _on_canvas(self, image: Image, region: str, looks: Looks, whole: bool = True) -> PhotoResult:
        """A small frame read at its own scale, centred on a grey canvas the detector's size. Only
        plates that fill at least half the frame's width are the canvas's to read: a plate that is
        a small part of a small photo is seen better enlarged, as every other frame is. So where the
        first detector finds boxes on the canvas and none of them is a close-up's (`CLOSE_UP` of the
        frame's height), the frame is a scene and costs that one pass more; else the filling boxes
        are read, and the accurate detector's too where none reads well. Where the canvas gives no
        confident read, the frame itself is read, with every look. Boxes in frame pixels.

        The detectors look at the grey canvas; the boxes are read from the frame extended by its
        own edge pixels (`CANVAS_READ_BORDER`), not from the grey. `whole=False` (the `_fitted`
        look) leaves reading the frame itself to the caller."""
        t0 = time.perf_counter()
        size = looks.size or self.cfg.detector_size
        h, w = image.shape[:2]
        px, py = (size - w) // 2, (round(CANVAS_ASPECT * size) - h) // 2
        canvas = _on_grey(image, px, py)
        found = self.detector.detect(canvas, looks.size)[: self.cfg.max_plates]
        reads: list[Read] = []
        filling: list[Detection] = []
        if not found or any(d.box.h >= CLOSE_UP * h for d in found):
            reading = _on_grey(image, px, py, CANVAS_READ_BORDER)
            filling = [d for d in found if d.box.w >= FRAME_ROW[0] * w]
            reads = self._read_all(reading, filling, region)
            if not _confident(reads) and self.fallback is not None and looks.fallback:
                # as in `_read_whole`, the accurate detector's reads stand (the first one's coarse
                # boxes frame a plate that fills the frame loosely)
                more = [d for d in self.fallback.detect(canvas, looks.size)[: self.cfg.max_plates]
                        if d.box.w >= FRAME_ROW[0] * w]
                reads, filling = over(more, self._read_all(reading, more, region), reads, filling)
        reads = [dataclasses.replace(r, box=_shifted(r.box, -px, -py, w, h)) for r in reads]
        detections = [Detection(_shifted(d.box, -px, -py, w, h), d.score) for d in filling]
        stages = {"canvas": (time.perf_counter() - t0) * 1000}
        if whole and not _confident(reads):
            frame = self._read_whole(image, region, looks, ranked=False)
            reads = later_look(reads, list(frame.reads))
            detections += frame.detections
            stages.update(frame.stage_ms)
        reads = [r for r in _on_plates(reads) if r.confidence >= self.cfg.min_confidence]
        reads.sort(key=lambda r: r.confidence, reverse=True)
        return PhotoResult(tuple(reads), detections=tuple(detections), ms=(time.perf_counter() - t0) * 1000,
                           stage_ms=stages)

    def _read_whole(
        self, image: Image, region: str, looks: Looks, known: list[Read] | None = None, ranked: bool = True
    ) -> PhotoResult:
        """The whole frame, every look `looks` allows. `known`: plates the near look has read in
        this frame, which are not read again; the accurate detector then reads the frame only where
        the first one missed them too (its finding nothing else says nothing in a scene where it is
        blind), and the looks for plates that fill the frame stay off. `ranked=False` leaves text on
        a plate (`ON_PLATE`) at its own rank, for a caller that ranks these reads among its own."""
        size = looks.size if looks.size and looks.size != self.cfg.detector_size else None
        t0 = time.perf_counter()
        detections = self.detector.detect(image, size)[: self.cfg.max_plates]
        fallback = looks.fallback
        if known:
            new = [d for d in detections if all(d.box.iou(k.box) < OVERLAP for k in known)]
            fallback = fallback and len(new) == len(detections)
            detections = new
        detect_s = time.perf_counter() - t0
        if (self.cfg.zoom_out and not known and looks.fallback and not self._small(image, looks)
                and (not detections or any(d.box.h >= CLOSE_UP * image.shape[0] for d in detections))
                and (fitted := self._fitted(image, region, looks)) is not None):
            # the first detector's pass counts as this frame's whole-frame detection (the pipeline
            # tells a whole-frame read by its `detect` stage)
            return dataclasses.replace(fitted, ms=(time.perf_counter() - t0) * 1000,
                                       stage_ms={"detect": detect_s * 1000, **fitted.stage_ms})
        reads = self._read_all(image, detections, region)
        stages: dict[str, float] = {}
        if self.fallback is not None and fallback and _confident(reads) != 1:
            # The first detector is the fast one, the fallback the accurate one. Where the first
            # reads no plate well, or several (its scores, less even than the accurate one's,
            # would decide their order), the accurate detector reads the frame again; its reads
            # stand, and the first pass's stay for the plates it did not find.
            t = time.perf_counter()
            more = [d for d in self.fallback.detect(image, size)[: self.cfg.max_plates]
                    if all(d.box.iou(k.box) < OVERLAP for k in known or ())]
            detect_s += time.perf_counter() - t
            reads, detections = over(more, self._read_all(image, more, region), reads, detections)
            stages["fallback"] = (time.perf_counter() - t) * 1000
        closer = self._closer_size(looks) if looks.closer else 0
        if closer and not _confident(reads):
            # Distant plates are a few dozen pixels wide at the first size: look closer, once.
            t = time.perf_counter()
            again = [d for d in self.retry.detect(image, closer)[: self.cfg.max_plates]
                     if all(d.box.iou(o.box) < OVERLAP for o in detections)]
            detect_s += time.perf_counter() - t
            detections += again
            reads += self._read_all(image, again, region)
            stages["closer"] = (time.perf_counter() - t) * 1000
        zoom_out = self.cfg.zoom_out and not known
        # the frame read as one plate: line finding on the whole frame, done once for both looks
        as_plate = functools.cache(lambda: self._frame_as_plate(image, region))
        if zoom_out and any(r.box.h >= CLOSE_UP * image.shape[0] for r in reads):
            t = time.perf_counter()
            reads = whole_row(as_plate(), reads)
            stages["whole"] = (time.perf_counter() - t) * 1000
        if zoom_out and not _confident(reads):
            t = time.perf_counter()
            wider = self._zoomed_out(image, region, detections)
            detections += [Detection(r.box, r.detection_score) for r in wider]
            reads = later_look(reads, wider)
            if not _confident(reads) and (whole := as_plate()) is not None:
                detections.append(Detection(whole.box, whole.detection_score))
                reads.append(whole)
            detect_s += time.perf_counter() - t
            stages["wider"] = (time.perf_counter() - t) * 1000
        if ranked:
            reads = _on_plates(reads)
        reads = [r for r in reads if r.confidence >= self.cfg.min_confidence]
        reads.sort(key=lambda r: r.confidence, reverse=True)
        ms = (time.perf_counter() - t0) * 1000
        return PhotoResult(
            tuple(reads),
            detections=tuple(detections),
            ms=ms,
            stage_ms={"detect": detect_s * 1000, "recognize": ms - detect_s * 1000, **stages},
        )

    def _fitted(self, image: Image, region: str, looks: Looks) -> PhotoResult | None:
        """A frame too large for the canvas (`SMALL_FRAME`), in which the first detector found
        nothing or a close-up: shrunk to `FIT_SHARE` of the detector's input and read on the canvas
        with the first detector alone, as a crop of ordinary size is. The reads where one is
        confident, boxes in frame pixels; else None, and the frame is read at its own size."""
        t0 = time.perf_counter()
        size = looks.size or self.cfg.detector_size
        h, w = image.shape[:2]
        f = min(FIT_SHARE * size / w, FIT_SHARE * CANVAS_ASPECT * size / h)
        sw, sh = round(w * f), round(h * f)
        if f >= 1 or min(sw, sh) < MIN_FIT_SIDE:
            return None  # already small, or a sliver no plate fits in
        small = np.asarray(cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        fit = self._on_canvas(small, region, dataclasses.replace(looks, fallback=False), whole=False)
        if not _confident(list(fit.reads)):
            return None

        def up(b: Box) -> Box:
            return Box(round(b.x * w / sw), round(b.y * h / sh), round(b.w * w / sw),
                       round(b.h * h / sh)).clamp(w, h)

        ms = (time.perf_counter() - t0) * 1000
        return PhotoResult(tuple(dataclasses.replace(r, box=up(r.box)) for r in fit.reads),
                           detections=tuple(Detection(up(d.box), d.score) for d in fit.detections),
                           ms=ms, stage_ms={"fitted": ms})

    def _closer_size(self, looks: Looks) -> int:
        """The closer look's detector size for this frame; 0 when it would be no closer."""
        if self.retry_size is None or self.retry_size <= (looks.size or self.cfg.detector_size):
            return 0
        return self.retry_size

    def _zoomed_out(self, image: Image, region: str, seen: list[Detection]) -> list[Read]:
        """Reads of the frame seen from further away: padded with grey on every side, detected
        again by the accurate detector, boxes mapped back into the frame. Plates that fill the
        frame are found only this way; plates already found (`seen`) are not read twice, unless
        read here confidently as a two-row plate (`merge.later_look` then weighs it against the
        first look's read)."""
        h, w = image.shape[:2]
        px, py = round(w * ZOOM_OUT_PAD), round(h * ZOOM_OUT_PAD)
        padded = _on_grey(image, px, py)
        reads = []
        for det in self.retry.detect(padded)[: self.cfg.max_plates]:
            plate = self.read_plate(padded, det, region)
            if plate is None:
                continue
            box = _shifted(plate.box, -px, -py, w, h)
            new = all(box.iou(d.box) < OVERLAP for d in seen) or (plate.rows == 2 and plate.confident)
            if box.area and new:
                reads.append(dataclasses.replace(plate, box=box))
        return reads

    def _frame_as_plate(self, image: Image, region: str) -> Read | None:
        """The whole frame read as one plate, when its largest text row is as wide and as tall as
        a plate's serial filling the frame (`FRAME_ROW`): a crop tighter than any detector box,
        which even the wider look found nothing in. A scene's text rows are a small part of it."""
        h, w = image.shape[:2]
        rows = self.lines.find(even_light(image))
        if not rows or rows[0].w < FRAME_ROW[0] * w or rows[0].h < FRAME_ROW[1] * h:
            return None
        # the frame's box padded is the frame: its rows are the ones just found
        return self.read_plate(image, Detection(Box(0, 0, w, h), FRAME_SCORE), region, rows)

    def _read_all(self, image: Image, detections: list[Detection], region: str) -> list[Read]:
        return [r for d in detections if (r := self.read_plate(image, d, region)) is not None]

    def read_plate(self, image: Image, det: Detection, region: str,
                   found: list[TextLine] | None = None) -> Read | None:
        """Read one detected plate; None if no character row is found. `found`: the rows of the
        padded box's crop where the caller has them already (the whole frame's, for its box)."""
        h, w = image.shape[:2]
        box = det.box.pad(*CROP_PAD).clamp(w, h)
        if box.w < 4 or box.h < 4:
            return None
        crop = even_light(image[box.y : box.y + box.h, box.x : box.x + box.w])
        best: tuple[float, Recognition, Candidate, bool, float, float] | None = None
        rows = (self.lines.find(crop) if found is None else found)[:LINES_TRIED]
        if rows and runs_into_side(rows[0], box.w, self.lines.row_margin):
            wide = det.box.pad(WIDE_PAD, CROP_PAD[1]).clamp(w, h)
            if wide.w > box.w:
                box, crop = wide, even_light(image[wide.y : wide.y + wide.h, wide.x : wide.x + wide.w])
                rows = self.lines.find(crop)[:LINES_TRIED]
        found_rows = list(rows)  # the line finder's, in the crop read; the bands come next
        if not rows:
            # The line finder sees nothing in some small, soft crops (a 17-px-high plate): the
            # detector's own box, which hugs the plate, then says where the row is.
            rows = [self._band(crop, det.box, box)]
        elif rows[0].w < SHORT_ROW * det.box.w:
            # Only a piece of the row was found (an emblem or a wide gap split it): the box's
            # middle band is read too, and the better read wins. A piece small beside the tallest
            # row scores SMALL_ROW_FACTOR of its read at most, which no more than ties CONFIDENT:
            # the band is read first then, and where it reads well the piece cannot win.
            band = self._band(crop, det.box, box)
            small = rows[0].h < SMALL_ROW * max(band.h, *(line.h for line in rows))
            rows.insert(0 if small else 1, band)
        tallest = max(line.h for line in rows)
        aspect = det.box.w / max(1, det.box.h)
        read_rows: list[tuple[TextLine, Recognition, Candidate]] = []
        for line in rows:
            cut = LineFinder.cut(crop, line)
            rec = self.recognize_row(cut)
            if len(rec.text) < MIN_CHARS:
                continue
            row_aspect = cut.shape[1] / max(1, cut.shape[0])
            choice, fits = grammar.rank_shaped(rec.candidates, region, aspect, row_aspect)
            if line in found_rows:
                read_rows.append((line, rec, choice))
            score = choice.confidence * (1.0 if fits else GRAMMAR_MISS_FACTOR) * grammar.likeness(choice.text)
            if line.h < SMALL_ROW * tallest:
                score *= SMALL_ROW_FACTOR
            if best is None or score > best[0]:
                best = (score, rec, choice, fits, line.h, row_aspect)
            if fits and score >= CONFIDENT:
                break  # the most plate-like row reads well: the next row is a state name or slogan
        if best is None:
            return None
        score, rec, choice, fits, row_h, row_aspect = best
        chars = rec.chars if choice.text == rec.text else chars_for(choice.text, rec)
        shape = 1.0 if det.box.w >= MIN_PLATE_ASPECT * det.box.h else SQUARE_FACTOR
        two = two_rows(read_rows, region) if len(read_rows) == 2 else None
        if two is None and shape < 1.0:
            two = self._halves(crop, det.box, box, region)
        rows_read = 1
        if two is not None and two[0] > score * shape:
            # a two-row plate: square by nature, so its shape costs it nothing (and its rows read
            # alone, as they compete with it, pay it)
            (score, choice, chars, row_h), fits, shape, rows_read = two, True, 1.0, 2
            rec = Recognition(choice.text, choice.confidence, chars, (choice,))
        return Read(
            text=choice.text,
            confidence=round(score * det.score * shape, 4),
            chars=chars,
            candidates=grammar.reorder(rec.candidates, choice),
            box=det.box,
            detection_score=det.score,
            region=region,
            grammar_ok=fits and (rows_read == 2 or grammar.in_shape(choice.text, region, aspect, row_aspect)),
            row_h=round(row_h, 1),
            rows=rows_read,
        )

    def _halves(self, crop: Image, plate: Box, at: Box, region: str
                ) -> tuple[float, Candidate, tuple[float, ...], float] | None:
        """A square box (`plate`, in a crop taken at `at`) read as a two-row plate whose rows the
        line finder did not find apart: its upper and lower halves each searched for one row, as
        each row alone looks like the one-row plates the line finder learned from (`tworow.two_rows`)."""
        mid = plate.y - at.y + plate.h // 2
        rows: list[tuple[TextLine, Recognition, Candidate]] = []
        for y0, y1 in ((0, mid), (mid, crop.shape[0])):
            found = self.lines.find(crop[y0:y1])[:1]
            if not found:
                return None
            line = dataclasses.replace(found[0], cy=found[0].cy + y0)
            rec = self.recognize_row(LineFinder.cut(crop, line))
            choice, _ = grammar.rank(rec.candidates, region)
            rows.append((line, rec, choice))
        return two_rows(rows, region)

    def _band(self, crop: Image, plate: Box, at: Box) -> TextLine:
        """The middle band of a detector box (`plate`) in a crop taken at `at`, along the plate's
        tilt: where the line finder found no whole row. A plate seen from the side or from above
        slants in the frame (its rows too; on a slanted plate the line finder more often finds
        nothing), and a level band through its box cuts off the first or last character."""
        x, y = plate.x - at.x, plate.y - at.y
        angle = tilt(crop[y : y + plate.h, x : x + plate.w])
        return self.lines.box_row(x, y, plate.w, plate.h, angle)

    def recognize_row(self, row: Image) -> Recognition:
        """plate_rec_tall reads a row at least `tall_row_px` high and its read stands when it is
        sure (TALL_SURE); every other row, and a tall one it is unsure of, plate_rec reads."""
        if self.tall is not None and row.shape[0] >= self.cfg.tall_row_px:
            rec = self.tall.recognize(row)
            if rec.confidence >= TALL_SURE:
                return rec
        return self.recognizer.recognize(row)


def _on_plates(reads: list[Read]) -> list[Read]:
    """`reads` with those that are text on another read's plate (`ON_PLATE`) ranked lower."""
    return [
        dataclasses.replace(r, confidence=round(r.confidence * ON_PLATE_FACTOR, 4))
        if any(r.row_h < SMALL_ROW * o.row_h and r.box.share_inside(o.box) >= ON_PLATE for o in reads)
        else r
        for r in reads
    ]


def _on_grey(image: Image, px: int, py: int, border: int = cv2.BORDER_CONSTANT) -> Image:
    """`image` with `px` grey columns at each side and `py` grey rows above and below; `border`
    another OpenCV border kind fills them from the image's own edges instead."""
    return np.asarray(cv2.copyMakeBorder(image, py, py, px, px, border,
                                         value=(ZOOM_OUT_GREY,) * 3), dtype=np.uint8)


CANVAS_READ_BORDER = cv2.BORDER_REPLICATE
"""How a small frame is extended past its edges for reading (`_on_canvas`). The recognizer's rows
of plate crops were cut from the crops themselves in training, their ends past the crop's edge
filled with its edge pixels (`LineFinder.cut`); read from the grey canvas, the same rows ended in
flat grey, and the characters at the frame's edges were dropped, or a frame edge read as one.
Left-out cut-outs of us and `us-ucsd` and us-crops read 4, 4 and 9 more plates this way
(br-crops 2 fewer), BENCHMARKS.md."""


def _shifted(box: Box, dx: int, dy: int, width: int, height: int) -> Box:
    """A box moved by (dx, dy), clamped to a frame `width` x `height` (a padded frame's box mapped back)."""
    return Box(box.x + dx, box.y + dy, box.w, box.h).clamp(width, height)


def _confident(reads: list[Read]) -> int:
    """How many reads are confident and fit the region's grammar."""
    return sum(r.confident for r in reads)
