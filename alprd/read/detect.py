"""Plate detector: one onnxruntime session over a plate-probability map.

The model (models/plate_det.onnx, trained by training/train_detector.py) maps an image to the
probability that each pixel lies inside a licence plate. Boxes are the bounding rectangles of the
connected regions above the contract's threshold; a box's score is the mean probability inside
its region. Training evaluates with this same code (training/eval_detector.py).

Two passes when the contract asks for it (`output.refine_width`): the whole frame at `size`
finds candidates (down to `candidate_score`); each candidate is then looked at again, cropped
and scaled so that it is about `refine_width` pixels wide, and that second map gives the box and
the score. At 640 px a distant plate is 30-50 px wide and its region spreads over the plate
holder; seen bigger, the map separates plate from holder.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ..errors import ImageError, ModelError
from ..types import Box, Detection, Image
from .onnx import Contract, check_input, load_contract, normalise, open_session

log = logging.getLogger(__name__)

MODEL_NAME = "plate_det"
MAX_DETECTIONS = 32
"""More regions than this in one frame are noise (or a wall of text); the best-scoring are kept."""
MIN_AREA = 12
"""Regions smaller than this many input pixels at the detector's scale (divided by the map's
stride squared for a coarser map) cannot hold a readable plate."""
DEFAULT_REFINE_WIDTH = 128
"""Second-look width when asked to refine and the contract names none."""
REFINE_MAX_UPSCALE = 4.0
"""A candidate is never enlarged more than this for the second look."""
MIN_CANDIDATE_WIDTH = 12
"""Candidates narrower than this many pixels at the detector's input size get no second look
(fewer than ~1.5 px per character: unreadable; the larger retry size sees them bigger). On the
eu/br/ro-detect dev frames none of the 71 candidates under 10 px was a plate, and with the cut at
12 px the detector's recall on every evaluation set was unchanged."""
REFINE_PAD = (0.5, 1.0)
"""The second look sees the candidate padded by this fraction of its width and height (each side)."""


class PlateDetector:
    """Finds plate boxes in BGR images.

    `size` is the long side the image is resized to before inference (640 for near cameras, 960
    for distant ones); `min_score` drops boxes whose mean probability is lower (None: the
    contract's recommended value). `refine` turns the second look on or off (None: as the
    contract says).
    """

    def __init__(self, models_dir: Path, threads: int = 1, size: int = 640,
                 min_score: float | None = None, name: str = MODEL_NAME,
                 refine: bool | None = None) -> None:
        if size % 32 or not 32 <= size <= 4096:
            raise ValueError(f"detector size must be a multiple of 32 between 32 and 4096, got {size}")
        self.contract: Contract = load_contract(Path(models_dir), name)
        self._check_contract(self.contract)
        out = self.contract.output
        self.size = size
        self.threshold = float(out["threshold"])
        self.min_score = float(out.get("min_score", 0.5) if min_score is None else min_score)
        self.pad_multiple = int(self.contract.input.get("pad_multiple", 32))
        # A map coarser than the input (contract `output.stride`): one cell per stride x stride pixels.
        self.stride = int(out.get("stride", 1))
        self.min_area = max(1, MIN_AREA // (self.stride * self.stride))
        expand = out.get("expand", [0.0, 0.0])
        self._expand = (float(expand[0]), float(expand[1]))
        self.refine_width = int(out.get("refine_width", 0))
        if refine is not None and not refine:
            self.refine_width = 0
        elif refine and not self.refine_width:
            self.refine_width = DEFAULT_REFINE_WIDTH
        self.candidate_score = float(out.get("candidate_score", self.min_score))
        self._session: Any = open_session(self.contract, threads)
        self._input = check_input(self._session, self.contract)
        outputs = self._session.get_outputs()
        if len(outputs) != 1 or len(outputs[0].shape) != 4 or outputs[0].shape[1] not in (1, "1"):
            raise ModelError(
                f"model {self.contract.path} must return one 1-channel probability map, got "
                f"{[o.shape for o in outputs]}: {name}.json does not describe this file; restore both"
            )
        # Warm-up: the first run allocates and plans; do it before the first frame counts.
        self.detect(np.zeros((size * 9 // 16, size, 3), np.uint8))
        log.info("plate detector %s loaded (size %d, threads %d)", self.contract.path.name, size, threads)

    @staticmethod
    def _check_contract(c: Contract) -> None:
        inp, out = c.input, c.output
        problems = []
        if inp.get("layout", "NCHW") != "NCHW":
            problems.append(f"input.layout {inp.get('layout')!r} (expected NCHW)")
        if inp.get("color", "BGR") not in ("BGR", "RGB"):
            problems.append(f"input.color {inp.get('color')!r} (expected BGR or RGB)")
        for key in ("mean", "std"):
            v = inp.get(key, [0.5, 0.5, 0.5])
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(a, int | float) for a in v)):
                problems.append(f"input.{key} {v!r} (expected 3 numbers)")
        if out.get("kind") != "plate_probability_map":
            problems.append(f"output.kind {out.get('kind')!r} (expected 'plate_probability_map')")
        if not isinstance(out.get("threshold"), int | float) or not 0 < out["threshold"] < 1:
            problems.append(f"output.threshold {out.get('threshold')!r} (expected a number in (0, 1))")
        stride = out.get("stride", 1)
        if not isinstance(stride, int) or isinstance(stride, bool) or stride not in (1, 2, 4, 8):
            problems.append(f"output.stride {stride!r} (expected 1, 2, 4 or 8)")
        elif int(inp.get("pad_multiple", 32)) % stride:
            problems.append(
                f"input.pad_multiple {inp.get('pad_multiple')!r} is not a multiple of output.stride"
            )
        if problems:
            raise ModelError(
                f"model contract for {c.path} is not a plate detector's: " + "; ".join(problems)
                + ": restore models/ from the release"
            )

    def prepare(
        self, image: Image, f: float | None = None
    ) -> tuple[npt.NDArray[np.float32], float, tuple[int, int]]:
        """Resize (long side = size, or by `f`), pad to the multiple, normalise.

        Returns the tensor, the resize factor and the (h, w) of the image part of the tensor.
        """
        h, w = image.shape[:2]
        if f is None:
            f = self.size / max(h, w)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        # INTER_AREA reads every source pixel once: memory stays that of the output even for
        # a 20000 x 20000 input.
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        resized = np.asarray(cv2.resize(image, (nw, nh), interpolation=interp), dtype=np.uint8)
        m = self.pad_multiple
        ph, pw = math.ceil(nh / m) * m, math.ceil(nw / m) * m
        canvas = np.zeros((ph, pw, 3), np.uint8)
        canvas[:nh, :nw] = _to_bgr(resized)
        return normalise(canvas, self.contract), f, (nh, nw)

    def probability_map(
        self, image: Image, f: float | None = None
    ) -> tuple[npt.NDArray[np.float32], float]:
        """The model's map over the resized image (padding cut off) and the factor from image
        pixels to map cells (the resize factor over the map's stride)."""
        _check_image(image)
        x, f, (nh, nw) = self.prepare(image, f)
        prob = self._session.run(None, {self._input: x})[0]
        s = self.stride
        return np.asarray(prob[0, 0, : -(-nh // s), : -(-nw // s)], dtype=np.float32), f / s

    def detect(self, image: Image, size: int | None = None) -> list[Detection]:
        """Plate boxes in `image` pixels, clamped to the image, best score first; `size` (default:
        the detector's own) is the long side the image is resized to for the first pass."""
        _check_image(image)
        h, w = image.shape[:2]
        prob, f = self.probability_map(image, None if size is None else size / max(h, w))
        if not self.refine_width:
            return self.boxes_from_map(prob, f, w, h, self.min_score)
        found: list[Detection] = []
        for cand in self.boxes_from_map(prob, f, w, h, min(self.candidate_score, self.min_score)):
            width = cand.box.w * f * self.stride  # at the detector's input scale
            if width < MIN_CANDIDATE_WIDTH:
                continue
            # A candidate already as wide as the second look would make it is seen no closer by
            # looking again: the first map's box stands.
            r = cand if width >= self.refine_width else self._refine(image, cand)
            # Two candidates on one plate refine to the same box: keep the better one.
            if r is not None and r.score >= self.min_score and all(r.box.iou(o.box) < 0.5 for o in found):
                found.append(r)
        found.sort(key=lambda d: d.score, reverse=True)
        return found

    def _refine(self, image: Image, d: Detection) -> Detection | None:
        """Look again at one candidate with its width scaled to `refine_width` pixels."""
        h, w = image.shape[:2]
        b = d.box
        win = b.pad(*REFINE_PAD).clamp(w, h)
        if win.area == 0:
            return None
        g = min(self.refine_width / max(b.w, 1), REFINE_MAX_UPSCALE)
        crop = image[win.y:win.y + win.h, win.x:win.x + win.w]
        prob, g = self.probability_map(crop, g)
        # The plate is the region that covers most of the candidate's centre (window pixels).
        centre = Box(b.x - win.x + b.w // 4, b.y - win.y + b.h // 4, max(1, b.w // 2), max(1, b.h // 2))
        best: tuple[float, Detection] | None = None
        for cand in self.boxes_from_map(prob, g, win.w, win.h, 0.0):
            inter = cand.box.intersection(centre)
            if inter > 0 and (best is None or inter * cand.score > best[0]):
                best = (inter * cand.score, cand)
        if best is None:
            return None
        cb = best[1].box
        return Detection(box=Box(cb.x + win.x, cb.y + win.y, cb.w, cb.h).clamp(w, h), score=best[1].score)

    def boxes_from_map(
        self, prob: npt.NDArray[np.float32], f: float, width: int, height: int, min_score: float
    ) -> list[Detection]:
        """Regions of the map above the threshold whose mean probability is at least `min_score`,
        as boxes in the pixels of the (width x height) image the map was made from (f: map cells
        per image pixel)."""
        mask = (prob >= self.threshold).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return []
        # Mean probability per region in one pass (bincount) instead of one mask per region.
        sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)
        found: list[Detection] = []
        fx, fy = self._expand
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if area < self.min_area:
                continue
            score = float(sums[i] / area)
            if score < min_score:
                continue
            x0, y0 = x / f, y / f
            x1, y1 = (x + bw) / f, (y + bh) / f
            dx, dy = (x1 - x0) * fx, (y1 - y0) * fy
            box = Box(
                math.floor(x0 - dx), math.floor(y0 - dy),
                math.ceil(x1 - x0 + 2 * dx), math.ceil(y1 - y0 + 2 * dy),
            ).clamp(width, height)
            if box.area > 0:
                found.append(Detection(box=box, score=round(score, 4)))
        found.sort(key=lambda d: d.score, reverse=True)
        return found[:MAX_DETECTIONS]


def _check_image(image: Image) -> None:
    """Accept H x W x 3 BGR, H x W grey and H x W x 4 BGRA 8-bit images; refuse anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ImageError(f"expected an 8-bit image array, got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ImageError(f"expected an H x W x 3 BGR image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image (shape {image.shape})")


def _to_bgr(image: Image) -> Image:
    """Convert the (already small) resized image, never the full-size input."""
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return image


MAX_AUTO_THREADS = 4
"""`reader.detector_threads: null` gives the detectors the CPUs this process may use, up to this
many: a Pi 4 or 5 has four cores, and a 640-px detector run splits into too little work per
thread for more to pay."""


def default_detector_threads() -> int:
    """The CPUs this process may run on (systemd's CPUAffinity= and cgroup cpusets shrink the set),
    at most MAX_AUTO_THREADS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_THREADS, cpus))
