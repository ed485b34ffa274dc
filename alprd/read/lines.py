"""Text-line finder: locates the character row(s) inside a plate crop.

Reading the whole detector crop fails on US plates (state names, slogans, frames); a text detector
run on the crop isolates the main row of characters, which the recognizer then reads. One
onnxruntime session (PP-OCR DBNet), created once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..types import Image
from .onnx import check_input, load_contract, normalise, open_session

log = logging.getLogger(__name__)


BOX_ROW_SHARES = ((3.3, 0.74), (0.0, 0.61))
"""Height of a plate's character row (as the line finder frames it) over the height of the
detector's box, by the box's aspect ratio (first bound it reaches): wide plates (EU, 520 x 110 mm)
carry taller characters than US (12 x 6 in) and Brazilian (400 x 130 mm) ones. Medians over the
plates of the eu/br train halves where the line finder found a row, with the shipped detector
(its boxes set the denominator: measure again when it changes): 0.74 from 3.3:1 (48 plates),
0.61 below (63); with the previous detector r3, whose boxes were taller, 0.66 and 0.59. The whole
box height also takes in frame and state name, which the recognizer then reads as characters."""


@dataclass(frozen=True, slots=True)
class TextLine:
    """A rotated rectangle in crop pixels: centre, size (w >= h) and angle in degrees."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float
    score: float


DIM_SPAN = 96
"""A crop whose grey levels span less than this (2nd to 98th percentile) is dim or washed out:
night plates lit only by the headlights (grey levels of about 30-60), fog, over-exposure."""
MAX_GAIN = 4.0
"""The stretch of a dim crop is capped: beyond it a plate in the dark is mostly sensor noise."""
DENOISE = (5, 48.0, 3.0)
"""Bilateral filter applied to a dim crop before its stretch: diameter (px), colour sigma in grey
levels after the stretch, space sigma (px). The stretch amplifies the sensor's noise and the 8-bit
steps by its gain (3-4 for a night plate at grey levels 30-60); the filter smooths differences
well under the colour sigma while a character's edge, most of the stretched span (about 190
levels), stays sharp. Photos of the us, eu, br and `us-ucsd` folders darkened to a quarter or a
third of their light with sensor noise, read by runs that never trained on them, read 17 more
plates net with it over the four sources and two light levels; the us photos at a quarter of
their light read 5 fewer, a plate there near the noise floor (BENCHMARKS.md "Class probes")."""


def even_light(crop: Image) -> Image:
    """The crop with its contrast stretched when it is dim (`DIM_SPAN`), its noise smoothed first
    (`DENOISE`), else the crop itself.

    The line finder and the recognizer were trained on plates of ordinary contrast; a dim plate
    stretched around its mid-grey looks like one. The recognizer's training rows went through
    this same function (training/prepare_rec_data.py), so it reads what it was taught on.
    """
    if crop.size == 0:
        return crop
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    lo, hi = (float(v) for v in np.percentile(grey, (2, 98)))
    span = hi - lo
    if span >= DIM_SPAN:
        return crop
    gain = min(MAX_GAIN, 2 * DIM_SPAN / max(span, 1.0))
    diameter, sigma_colour, sigma_space = DENOISE
    if sigma_colour > 0:
        smooth = cv2.bilateralFilter(crop, diameter, sigma_colour / gain, sigma_space)
        crop = np.asarray(smooth, dtype=np.uint8)
    out = (crop.astype(np.float32) - (lo + hi) / 2) * gain + 128
    return np.asarray(np.clip(out, 0, 255), dtype=np.uint8)


class LineFinder:
    """Finds text lines in a plate crop and cuts them out upright."""

    def __init__(self, models_dir: Path, threads: int = 1, height: int = 96, max_width: int = 480,
                 row_margin: float = 0.0) -> None:
        self.contract = load_contract(models_dir, "line_det")
        self.session = open_session(self.contract, threads)
        self.input_name = check_input(self.session, self.contract)
        self.height = height
        self.max_width = max_width
        # Added at each end of a row, as a fraction of its height: the recognizer's contract says
        # how the rows it was trained on were framed (train on what you read).
        self.row_margin = row_margin
        # A map coarser than the input (contract `output.stride`): one cell per stride x stride pixels.
        stride = self.contract.output.get("stride", 1)
        if isinstance(stride, bool) or stride not in (1, 2, 4) or height % stride:
            raise ModelError(
                f"{self.contract.name}.json: output.stride {stride!r} is not 1, 2 or 4 dividing "
                f"the input height {height}: restore models/ from the release"
            )
        self.stride = int(stride)
        self.join = round(height * 0.15 / self.stride) | 1
        self.min_side = 3 / self.stride
        self.threshold = float(self.contract.output.get("threshold", 0.3))
        self.sha256 = self.contract.sha256
        self.find(np.full((40, 120, 3), 255, np.uint8))  # warm-up: first run allocates

    def find(self, crop: Image) -> list[TextLine]:
        """Text lines in the crop, the most plate-like (largest characters) first."""
        h, w = crop.shape[:2]
        if h < 2 or w < 2:
            return []
        scale = self.height / h
        new_w = min(self.max_width, max(32, round(w * scale / 32) * 32))
        sx, sy = new_w / w, self.height / h
        resized = cv2.resize(crop, (new_w, self.height), interpolation=cv2.INTER_LINEAR)
        prob = self.session.run(None, {self.input_name: normalise(resized, self.contract)})[0][0, 0]
        return self._lines(prob, sx / self.stride, sy / self.stride)

    def _lines(self, prob: npt.NDArray[np.float32], sx: float, sy: float) -> list[TextLine]:
        mask = (prob > self.threshold).astype(np.uint8)
        if self.join > 0:
            # DBNet often splits one plate row at wide gaps (EU band, hyphens, spaces); closing
            # the mask horizontally only joins pieces of the same row.
            mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, self.join), np.uint8)))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        lines = []
        for c in contours:
            if len(c) < 4:
                continue
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(c)
            if min(rw, rh) < self.min_side:
                continue
            x, y, bw, bh = cv2.boundingRect(c)
            region = mask[y : y + bh, x : x + bw]
            score = float((prob[y : y + bh, x : x + bw] * region).sum() / max(1, region.sum()))
            if score < 0.5:
                continue
            # DBNet shrinks text regions during training; grow them back (its "unclip").
            d = rw * rh * 1.6 / (2 * (rw + rh))
            rw, rh = rw + 2 * d, rh + 2 * d
            if rw < rh:
                rw, rh, angle = rh, rw, angle - 90
            rw += 2 * self.row_margin * rh
            if angle < -45:
                angle += 180
            elif angle > 45:
                angle -= 180
            # Back to crop pixels; sx and sy differ only by rounding of the width.
            lines.append(TextLine(cx / sx, cy / sy, rw / sx, rh / sy, angle, score))
        lines.sort(key=lambda ln: ln.h * min(ln.w, 6 * ln.h), reverse=True)
        return lines

    def box_row(self, x: float, y: float, w: float, h: float, angle: float = 0.0) -> TextLine:
        """The row a plate box (x, y, w, h, crop pixels) most likely holds: its full width and
        the middle of its height (`BOX_ROW_SHARES`), along `angle` (degrees, the plate's `tilt`).
        Not extended at the ends like found rows: the box already reaches the plate's edges, and
        the frame beyond them read as an `I` or `L`."""
        aspect = w / max(h, 1e-6)
        rh = h * next(share for bound, share in BOX_ROW_SHARES if aspect >= bound)
        return TextLine(x + w / 2, y + h / 2, w / math.cos(math.radians(angle)), rh, angle, 0.0)

    @staticmethod
    def cut(crop: Image, line: TextLine) -> Image:
        """The line's pixels, levelled, as an image: rotated upright (w x h), or, when it slants
        by SHEAR_FROM degrees or more and its characters' strokes stand upright in the frame,
        sheared level (w cos(angle) x h / cos(angle), the row's extent across and down)."""
        rotated = _rotated(crop, line)
        if not SHEAR_FROM <= abs(line.angle) <= 45:
            return rotated
        sheared = _sheared(crop, line)
        # compared at one size: scaling along the axes keeps upright strokes upright
        same_size = np.asarray(cv2.resize(sheared, rotated.shape[1::-1]), dtype=np.uint8)
        if _uprightness(same_size) > _uprightness(rotated):
            return sheared
        return rotated


def _rotated(crop: Image, line: TextLine) -> Image:
    w, h = max(2, round(line.w)), max(2, round(line.h))
    m = np.asarray(cv2.getRotationMatrix2D((line.cx, line.cy), line.angle, 1.0), dtype=np.float64)
    m[0, 2] += w / 2 - line.cx
    m[1, 2] += h / 2 - line.cy
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.uint8)


def _sheared(crop: Image, line: TextLine) -> Image:
    t, c = math.tan(math.radians(line.angle)), math.cos(math.radians(line.angle))
    w, h = max(2, round(float(line.w) * c)), max(2, round(float(line.h) / c))
    # output (u, v) <- crop (cx + u - w/2, cy + v - h/2 + t (u - w/2)): columns stay columns
    m = np.array([[1, 0, line.cx - w / 2], [t, 1, line.cy - h / 2 - t * w / 2]], dtype=np.float64)
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.uint8)


def _uprightness(row: Image) -> float:
    """How much of the row's vertical-edge energy stands in few columns: upright strokes gather
    into sharp peaks of the column sums, leaning ones smear across columns."""
    grey = cv2.cvtColor(row, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3))
    cols = gx.sum(axis=0)
    total = float(cols.sum())
    return float((cols**2).sum()) / (total * total) if total > 0 else 0.0


SHEAR_FROM = 6.0
"""A row slanting by this many degrees or more may be levelled by a vertical shear instead of a
rotation: the cut whose characters' strokes stand more upright (`_uprightness`) is read. A plate
seen from the side, or from above and to the side, by a camera mounted level (a pole, a dashboard)
slants in the frame while its characters' upright strokes stay upright: rotated level, they lean
by the slant, which the recognizer never learned. A camera's roll or a hand-held photo turns the
characters with the row, and only a rotation undoes that. Below the bound the two cuts differ by
a lean the recognizer tolerates, and it was trained on rows cut by rotation. Six left-out pairs,
whole reader, against rotation for every row (BENCHMARKS.md "Class probes"): sheared by 15
degrees (`eval_loso.py --shear 15`) +62 plates (us-crops +8, br-crops +48, `us-ucsd` +2), by 8
degrees +19; turned by 10 degrees (`--rotate 10`, roll) -1; plain -1 (br-crops). The shear for
every such row, without the choice, lost 27 plates turned by 10 degrees. Cutting a slanted row
both ways and comparing costs 0.16 ms more than the rotation alone (a 313 x 81 row). The
recognizer's training rows are cut here too (training/prepare_rec_data.py)."""


TILTS = tuple(float(a) for a in range(-20, 21))
"""Angles (degrees) `tilt` tries, a degree apart: a plate seen from the side, or from above and
to the side (a pole camera's view of a car turning), slants by up to about 20 degrees."""


def tilt(crop: Image) -> float:
    """The angle (degrees, as `TextLine.angle`) of the crop's dominant near-horizontal edges: a
    plate's top and bottom edges and its characters' tops and feet. Along each angle of `TILTS`
    the vertical gradient is summed line by line; the angle that gathers the edges into the
    fewest lines (the largest sum of squares) wins."""
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gy = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    ys, xs = np.nonzero(gy > np.percentile(gy, 80))
    if len(xs) < 10:
        return 0.0
    weights = gy[ys, xs]
    width = grey.shape[1]
    dx = xs - width / 2
    best, best_angle = -1.0, 0.0
    for angle in TILTS:
        lines = np.round(ys - math.tan(math.radians(angle)) * dx).astype(np.int64) + width
        score = float((np.bincount(lines, weights=weights) ** 2).sum())
        if score > best:
            best, best_angle = score, angle
    return best_angle


EDGE_TOLERANCE = 0.02
"""A row ending within this share of the crop's width (plus a pixel) of its side touches it."""


def runs_into_side(line: TextLine, crop_width: int, row_margin: float) -> bool:
    """Whether the found row (without the margin the line finder adds at its ends) reaches the
    left or right side of a crop `crop_width` pixels wide."""
    half = abs((line.w - 2 * row_margin * line.h) / 2 * math.cos(math.radians(line.angle)))
    tolerance = EDGE_TOLERANCE * crop_width + 1
    return line.cx - half < tolerance or line.cx + half > crop_width - tolerance
