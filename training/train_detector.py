"""Fine-tune the PP-OCRv4 mobile text detector (Apache-2.0, DBNet) into a plate detector.

The network keeps its architecture; only its target changes: a mask that is 1 inside plate
boxes and 0 elsewhere. Boxes come back at run time as connected components of the thresholded
map (alprd/detect.py), so training and production share one post-processing.

    $TRAIN_VENV/bin/python training/train_detector.py --data-set full --steps 1400
    $TRAIN_VENV/bin/python training/train_detector.py --data-set mit --out models/plate_det_mit.onnx

On a lent GPU (training/gpu_detector_sweep.sh): `--write-pack` puts the loaded training data in
one file that travels with the call, `--pack` trains on it, `--device cuda --workers N` trains on
the GPU with N processes making batches, `--export-from RUN.pt` exports the weights here.

See training/README.md for the data manifest (which folders, which split, which licence).
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
import string
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DATA,
    MODELS,
    REPO,
    Sample,
    Timer,
    export_weights,
    onnx_to_torch,
    photo_split,
    prune_dead_nodes,
    publish_checked,
    rewrite_onnx,
    ro_detect_split,
    seed_everything,
    setup_logging,
    warmup_cosine,
)

log = logging.getLogger("training.detector")

BASE_MODEL = Path(__file__).resolve().parent.parent / ".cache" / "base" / "ch_PP-OCRv4_det_infer.onnx"
"""training/README.md, "Install the training extra": unpacked from rapidocr-onnxruntime==1.4.4."""
BASE_SOURCE = (
    "PP-OCRv4 mobile text detector ch_PP-OCRv4_det_infer.onnx from the PyPI wheel "
    "rapidocr-onnxruntime==1.4.4 "
    "(PaddleOCR, Apache-2.0), fine-tuned to a plate mask by training/train_detector.py"
)
# The base model's own preprocessing (RapidOCR's det config): BGR, (x/255 - 0.5) / 0.5.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
MAX_SIDE = 1280  # photos are held in memory at most this big (br photos are up to ~3000 px)


# --- data ------------------------------------------------------------------------------------


class Photo:
    """A training photo in memory with its plate boxes (x, y, w, h) in its own pixels."""

    def __init__(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]], name: str) -> None:
        self.image = image
        self.boxes = boxes
        self.name = name


def load_photo(s: Sample) -> Photo:
    img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {s.path}")
    h, w = img.shape[:2]
    f = min(1.0, MAX_SIDE / max(h, w))
    if f < 1.0:
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    boxes = [(x * f, y * f, bw * f, bh * f) for x, y, bw, bh in s.boxes]
    return Photo(img, boxes, f"{s.folder}/{s.path.name}")


def load_crops(folder: str, keep: Callable[[str], bool] = lambda name: True) -> list[np.ndarray]:
    """The folder's images (sorted by name) whose file name `keep` accepts."""
    out = []
    for p in sorted((DATA / folder).iterdir()):
        if p.suffix.lower() in (".jpg", ".png") and keep(p.name):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                out.append(img)
    return out


FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
ALNUM = string.ascii_uppercase + string.digits


def _put_fit(img: np.ndarray, text: str, box: tuple[int, int, int, int], color: tuple[int, ...],
             rng: np.random.Generator, thick: int | None = None) -> None:
    """Draw `text` scaled to fill the box (x, y, w, h) of `img`."""
    x, y, w, h = box
    font = FONTS[rng.integers(len(FONTS))]
    t = int(thick if thick is not None else max(1, round(h * rng.uniform(0.08, 0.16))))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, t)
    scale = min(w / max(tw, 1), h / max(th, 1))
    (tw, th), _ = cv2.getTextSize(text, font, scale, t)
    org = (x + (w - tw) // 2, y + (h + th) // 2)
    cv2.putText(img, text, org, font, scale, color, t, cv2.LINE_AA)


def render_plate(rng: np.random.Generator) -> np.ndarray:
    """A synthetic plate drawn with OpenCV's Hershey fonts: licence-clean training positives.

    Three layouts (US-like 2:1 with state line, EU-like long with a blue band, BR-like with a top
    band); colours, fonts, stroke widths and texts are random, so the detector learns "a framed
    rectangle with a row of large characters", not any one region's look.
    """
    kind = rng.choice(["us", "eu", "br"], p=[0.5, 0.3, 0.2])
    n = int(rng.integers(5, 9))
    text = "".join(ALNUM[i] for i in rng.integers(len(ALNUM), size=n))
    if rng.random() < 0.5:
        k = int(rng.integers(2, n - 1))
        text = text[:k] + rng.choice([" ", "-", " "]) + text[k:]
    light = rng.random() < 0.85
    if light:
        bg = tuple(int(v) for v in rng.integers(170, 256, size=3))
        if rng.random() < 0.25:  # yellow-ish
            bg = (int(rng.integers(0, 90)), int(rng.integers(180, 240)), int(rng.integers(200, 256)))
        fg = tuple(int(v) for v in rng.integers(0, 90, size=3))
        if rng.random() < 0.3:  # coloured characters (red / blue / green US plates)
            fg = tuple(int(v) for v in rng.permutation([int(rng.integers(120, 200)), 20, 30]))
    else:
        bg = tuple(int(v) for v in rng.integers(0, 80, size=3))
        fg = tuple(int(v) for v in rng.integers(180, 256, size=3))
    if kind == "us":
        W, H = 320, 160
    elif kind == "eu":
        W, H = int(rng.integers(440, 560)), int(rng.integers(100, 125))
    else:
        W, H = int(rng.integers(360, 420)), int(rng.integers(115, 135))
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = bg
    if rng.random() < 0.4:  # gradient / picture background as on many US plates
        g = np.linspace(0, rng.uniform(-60, 60), H)[:, None, None]
        img = np.clip(img.astype(np.float32) + g, 0, 255).astype(np.uint8)
    x0 = 0
    if kind == "eu":
        bw = int(W * 0.08)
        img[:, :bw] = (int(rng.integers(120, 200)), int(rng.integers(30, 80)), 0)
        _put_fit(img, str(rng.choice(list("DFIRSNLPBE"))), (2, H // 2, bw - 4, H // 3), (255, 255, 255), rng)
        x0 = bw
        _put_fit(img, text, (x0 + 8, int(H * 0.12), W - x0 - 16, int(H * 0.76)), fg, rng)
    elif kind == "br":
        band = int(H * 0.22)
        img[:band] = (int(rng.integers(120, 200)), int(rng.integers(40, 100)), 0)
        _put_fit(img, "BRASIL", (W // 3, 2, W // 3, band - 4), (255, 255, 255), rng)
        _put_fit(img, text, (10, band + 6, W - 20, H - band - 14), fg, rng)
    else:
        top = "".join(string.ascii_uppercase[i] for i in rng.integers(26, size=int(rng.integers(4, 11))))
        _put_fit(img, top, (int(W * 0.15), 8, int(W * 0.7), int(H * 0.16)), fg, rng)
        _put_fit(img, text, (14, int(H * 0.28), W - 28, int(H * 0.5)), fg, rng)
        if rng.random() < 0.6:
            k = int(rng.integers(6, 16))
            bottom = "".join(string.ascii_lowercase[i] for i in rng.integers(26, size=k))
            _put_fit(img, bottom, (int(W * 0.2), int(H * 0.82), int(W * 0.6), int(H * 0.12)), fg, rng)
    t = int(rng.integers(2, 7))
    frame = fg if rng.random() < 0.5 else (40, 40, 40)
    cv2.rectangle(img, (t // 2, t // 2), (W - 1 - t // 2, H - 1 - t // 2), frame, t)
    return img


def add_holder(plate: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Put a plate into a holder: a dark (or chrome) recess around it, sometimes a dealer frame
    with small lettering. Returns the bigger picture and the plate's rectangle inside it.

    Real plates sit in such recesses; a model that only saw plates pasted on arbitrary backgrounds
    learnt to include the holder in the box (US photos: IoU < 0.5 with the labelled plate).
    """
    ph0, pw0 = plate.shape[:2]
    mx = round(pw0 * rng.uniform(0.04, 0.2))
    mt = round(ph0 * rng.uniform(0.08, 0.4))
    mb = round(ph0 * rng.uniform(0.08, 0.4))
    H, W = ph0 + mt + mb, pw0 + 2 * mx
    base = rng.uniform(140, 220) if rng.random() < 0.25 else rng.uniform(10, 90)  # chrome or dark
    out = np.empty((H, W, 3), np.float32)
    out[:] = base + rng.normal(0, 8, size=3)
    out += np.linspace(0, rng.uniform(-30, 30), H)[:, None, None]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:  # dealer frame: lettering above and below the plate
        fg = (230, 230, 230) if base < 120 else (30, 30, 30)
        for y, hh in ((0, mt), (mt + ph0, mb)):
            if hh >= 6:
                k = int(rng.integers(5, 16))
                txt = "".join(string.ascii_uppercase[i] for i in rng.integers(26, size=k))
                _put_fit(out, txt, (mx + pw0 // 8, y + hh // 6, pw0 * 3 // 4, hh * 2 // 3), fg, rng)
    out[mt:mt + ph0, mx:mx + pw0] = plate
    return out, (mx, mt, pw0, ph0)


def paste(bg: np.ndarray, boxes: list[tuple[float, float, float, float]], plate: np.ndarray,
          rng: np.random.Generator,
          inner: tuple[int, int, int, int] | None = None) -> tuple[float, float, float, float] | None:
    """Paste `plate` into `bg` (in place) with a mild perspective warp; returns its box or None.

    `inner` (x, y, w, h in `plate` pixels) is the part that is labelled: the plate in its holder.
    """
    H, W = bg.shape[:2]
    ph0, pw0 = plate.shape[:2]
    pw = W * rng.uniform(0.035, 0.22)
    ph = pw * ph0 / pw0 * rng.uniform(0.85, 1.15)
    if ph < 6 or pw >= W - 2 or ph >= H - 2:
        return None
    for _ in range(10):
        x = rng.uniform(0, W - pw)
        y = rng.uniform(H * 0.15, H - ph) if H - ph > H * 0.15 else rng.uniform(0, H - ph)
        if all(x + pw < bx or bx + bw < x or y + ph < by or by + bh < y for bx, by, bw, bh in boxes):
            break
    else:
        return None
    j = 0.05 * pw
    dst = np.float32([[x, y], [x + pw, y], [x + pw, y + ph], [x, y + ph]])
    dst += rng.normal(0, j, size=(4, 2)).astype(np.float32)
    shear = rng.uniform(-0.08, 0.08) * pw  # a plate seen slightly from the side
    dst[:, 1] += np.float32([0, shear, shear, 0])
    x0 = max(0, math.floor(dst[:, 0].min()))
    y0 = max(0, math.floor(dst[:, 1].min()))
    x1 = min(W, math.ceil(dst[:, 0].max()) + 1)
    y1 = min(H, math.ceil(dst[:, 1].max()) + 1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    src = np.float32([[0, 0], [pw0, 0], [pw0, ph0], [0, ph0]])
    M = cv2.getPerspectiveTransform(src, dst - np.float32([x0, y0]))
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpPerspective(plate, M, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpPerspective(np.full((ph0, pw0), 255, np.uint8), M, size, flags=cv2.INTER_LINEAR)
    if inner is None:
        label = mask
    else:
        ix, iy, iw, ih = inner
        lab = np.zeros((ph0, pw0), np.uint8)
        lab[iy:iy + ih, ix:ix + iw] = 255
        label = cv2.warpPerspective(lab, M, size, flags=cv2.INTER_LINEAR)
    roi = bg[y0:y1, x0:x1]
    # Match the scene: the background's brightness, a colour cast, blur and noise.
    w = warped.astype(np.float32)
    gain = (roi.mean() + 40) / (w.mean() + 1) * rng.uniform(0.7, 1.3)
    w = w * min(max(gain, 0.3), 1.4) + rng.normal(0, 4, size=3)
    if rng.random() < 0.7:
        s = rng.uniform(0.3, 1.0 + pw / 150)
        w = cv2.GaussianBlur(w, (0, 0), s)
    w += rng.normal(0, rng.uniform(0, 6), size=w.shape)
    a = (mask.astype(np.float32) / 255)[..., None]
    roi[:] = np.clip(w * a + roi.astype(np.float32) * (1 - a), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(label > 127)
    if len(xs) == 0:
        return None
    return (x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


class Sampler:
    """Makes training crops: a photo (maybe with pasted plates) at a random scale, cropped."""

    def __init__(self, photos: list[Photo], backgrounds: list[Photo], crops: list[list[np.ndarray]],
                 synth: float, composite: float, crop: int, sides: tuple[float, float], seed: int,
                 holder: float = 0.0) -> None:
        self.photos = photos
        self.backgrounds = backgrounds
        self.crops = crops
        self.synth = synth
        self.composite = composite
        self.crop = crop
        self.sides = sides
        self.rng = np.random.default_rng(seed)
        self.holder = holder

    def _composite(self) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
        rng = self.rng
        bg = self.backgrounds[rng.integers(len(self.backgrounds))]
        img = bg.image.copy()
        boxes = list(bg.boxes)
        for _ in range(int(rng.integers(1, 4))):
            if not self.crops or rng.random() < self.synth:
                plate = render_plate(rng)
            else:
                # Each crop folder equally often: 389 US crops would otherwise drown in 1144 BR ones.
                folder = self.crops[rng.integers(len(self.crops))]
                plate = folder[rng.integers(len(folder))]
            inner = None
            if self.holder > 0 and rng.random() < self.holder:
                plate, inner = add_holder(plate, rng)
            b = paste(img, boxes, plate, rng, inner)
            if b is not None:
                boxes.append(b)
        return img, boxes

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if rng.random() < self.composite:
            img, boxes = self._composite()
        else:
            p = self.photos[rng.integers(len(self.photos))]
            img, boxes = p.image, p.boxes
        h, w = img.shape[:2]
        # The image is seen as the runtime would see it at a random detector size.
        side = math.exp(rng.uniform(math.log(self.sides[0]), math.log(self.sides[1])))
        f = side / max(h, w)
        sw, sh = max(1, round(w * f)), max(1, round(h * f))
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (sw, sh), interpolation=interp)
        boxes = [(x * f, y * f, bw * f, bh * f) for x, y, bw, bh in boxes]
        c = self.crop
        if boxes and rng.random() < 0.75:
            bx, by, bw, bh = boxes[rng.integers(len(boxes))]
            cx = bx + bw / 2 + rng.uniform(-0.4, 0.4) * c
            cy = by + bh / 2 + rng.uniform(-0.4, 0.4) * c
        else:
            cx, cy = rng.uniform(0, sw), rng.uniform(0, sh)
        x0 = round(min(max(cx - c / 2, 0), max(sw - c, 0)))
        y0 = round(min(max(cy - c / 2, 0), max(sh - c, 0)))
        out = np.zeros((c, c, 3), np.uint8)  # zero padding, like the runtime's bottom/right pad
        part = img[y0:y0 + c, x0:x0 + c]
        out[: part.shape[0], : part.shape[1]] = part
        mask = np.zeros((c, c), np.float32)
        for bx, by, bw, bh in boxes:
            xa, ya = round(bx - x0), round(by - y0)
            xb, yb = round(bx + bw - x0), round(by + bh - y0)
            if xb > 0 and yb > 0 and xa < c and ya < c:
                mask[max(ya, 0):max(yb, 0), max(xa, 0):max(xb, 0)] = 1.0
        out = self._photometric(out)
        return out, mask

    def _photometric(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        x = img.astype(np.float32)
        if rng.random() < 0.8:
            x = x * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
            x = x * rng.uniform(0.85, 1.15, size=3)
        if rng.random() < 0.15:
            x[:] = x.mean(axis=2, keepdims=True)
        if rng.random() < 0.25:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.3))
        if rng.random() < 0.3:
            x = x + rng.normal(0, rng.uniform(2, 8), size=x.shape)
        x = np.clip(x, 0, 255).astype(np.uint8)
        if rng.random() < 0.3:
            q = int(rng.integers(35, 90))
            ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                x = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        return x

    def batch_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n samples as (images NCHW float32, normalised; masks N1HW float32)."""
        xs, ms = zip(*(self.sample() for _ in range(n)), strict=True)
        x = np.stack(xs).astype(np.float32) / 255.0
        x = (x - np.float32(MEAN)) / np.float32(STD)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.stack(ms)[:, None]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = self.batch_arrays(n)
        return torch.from_numpy(x), torch.from_numpy(m)


# Data workers (`--workers`): forked processes that share the loaded photos copy-on-write. Batch
# k is drawn from a generator seeded with (seed, k), so a run gives the same batches whatever the
# number of workers or their timing.
_WORKER: tuple[Sampler, int, int] | None = None


def _worker_init(sampler: Sampler, n: int, seed: int) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = (sampler, n, seed)


def _worker_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER is not None
    sampler, n, seed = _WORKER
    sampler.rng = np.random.default_rng([seed, step])
    return sampler.batch_arrays(n)


class Batches:
    """Batches for steps start..end-1 in order, made by `workers` processes, a few steps ahead."""

    def __init__(self, sampler: Sampler, n: int, seed: int, workers: int, start: int, end: int) -> None:
        import multiprocessing

        # fork, before any CUDA call: the workers inherit the photos without pickling them.
        self.pool = multiprocessing.get_context("fork").Pool(
            workers, initializer=_worker_init, initargs=(sampler, n, seed))
        self.ahead = 2 * workers
        self.end = end
        self.pending = [self.pool.apply_async(_worker_batch, (k,))
                        for k in range(start, min(end, start + self.ahead))]
        self.next = start + len(self.pending)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = self.pending.pop(0).get()
        if self.next < self.end:
            self.pending.append(self.pool.apply_async(_worker_batch, (self.next,)))
            self.next += 1
        return torch.from_numpy(x), torch.from_numpy(m)

    def close(self) -> None:
        self.pool.terminate()


# --- model -----------------------------------------------------------------------------------


class PlateNet(torch.nn.Module):
    """The converted detector without its final Sigmoid (logits train stably with BCE)."""

    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


ARCHS = ("dbnet", "slim", "slim-early", "slim-narrow")
"""dbnet: the base network unchanged (map at the input's resolution). slim: its feature pyramid
without the stride-4 level, the head on stride 8, so the map comes out at half resolution: the
stride-4 level and the head's full-resolution layers were half of the detector's time on one core
(plates at 640 px are 30+ px wide: a half-resolution map still outlines them). slim-early: slim,
and the backbone's first block downsamples one layer earlier (see `early_stride`). slim-narrow:
slim with half the channels in the layers at stride 2 (see `narrow_stem`)."""
OUTPUT_STRIDE = {"dbnet": 1, "slim": 2, "slim-early": 2, "slim-narrow": 2}


def slim_fpn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Cut the PP-OCR DBNet's stride-4 pyramid level (graph surgery on the rewritten base).

    The head concatenates [p5 x8, p4 x4, p3 x2, p2] at stride 4; slim concatenates [p5 x4, p4 x2,
    p3] at stride 8 and keeps the first 72 input channels of the head's first convolution (the
    weights that read p5, p4, p3). Everything that only fed p2 is pruned.
    """
    from onnx import numpy_helper

    g = model.graph
    init = {i.name: i for i in g.initializer}
    concat = [n for n in g.node if n.op_type == "Concat" and len(n.input) == 4]
    if len(concat) != 1:
        raise SystemExit("slim: expected one 4-input Concat (the DBNet pyramid)")
    cat = concat[0]
    resizes = {n.output[0]: n for n in g.node if n.op_type == "Resize"}
    ups = [resizes[i] for i in cat.input[:3]]
    for r, want in zip(ups, (8.0, 4.0, 2.0), strict=True):
        scales = numpy_helper.to_array(init[r.input[2]]).astype(np.float32)
        if list(scales) != [1.0, 1.0, want, want]:
            raise SystemExit(f"slim: {r.name} scales {list(scales)}, expected x{want}")
        name = r.input[2] + ".slim"
        g.initializer.append(numpy_helper.from_array(scales * np.float32([1, 1, 0.5, 0.5]), name))
        r.input[2] = name
    # p3 needs no upsampling any more: read it directly.
    new_inputs = [ups[0].output[0], ups[1].output[0], ups[2].input[0]]
    del cat.input[:]
    cat.input.extend(new_inputs)
    conv = [n for n in g.node if n.op_type == "Conv" and n.input[0] == cat.output[0]]
    if len(conv) != 1:
        raise SystemExit("slim: expected one Conv after the pyramid Concat")
    w = numpy_helper.to_array(init[conv[0].input[1]])
    if w.shape[1] != 96:
        raise SystemExit(f"slim: head conv has {w.shape[1]} input channels, expected 96")
    g.initializer.remove(init[conv[0].input[1]])
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, :72]), conv[0].input[1]))
    return prune_dead_nodes(model)


def _attr(n: onnx.NodeProto, name: str) -> list[int] | int | None:
    a = next((a for a in n.attribute if a.name == name), None)
    return None if a is None else onnx.helper.get_attribute_value(a)


def early_stride(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move the backbone's second downsampling one depthwise convolution earlier.

    PPLCNetV3 runs stem (3x3, stride 2) -> depthwise 3x3 -> pointwise 16 -> 32 -> depthwise 3x3
    stride 2. On one core the two layers at stride 2 that follow the stem were ~40% of the slim
    detector's time (the 16 -> 32 pointwise alone 11 of 64 ms, onnxruntime profile, 480 x 640):
    with the first depthwise at stride 2 and the second at stride 1, the pointwise and everything
    after it see a quarter of the pixels. Every tensor shape after that block, and so every weight,
    is unchanged: the base weights load as they are and fine-tuning adapts them.
    """
    g = model.graph
    convs = [n for n in g.node if n.op_type == "Conv"]

    def set_strides(n: onnx.NodeProto, v: int) -> None:
        for a in n.attribute:
            if a.name == "strides":
                del a.ints[:]
                a.ints.extend([v, v])

    depthwise = [n for n in convs[1:8] if (_attr(n, "group") or 1) > 1]
    if _attr(convs[0], "strides") != [2, 2] or len(depthwise) < 2 \
            or _attr(depthwise[0], "strides") != [1, 1] or _attr(depthwise[1], "strides") != [2, 2]:
        raise SystemExit("slim-early: expected stem stride 2, then depthwise stride 1, then stride 2")
    set_strides(depthwise[0], 2)
    set_strides(depthwise[1], 1)
    return model


def narrow_stem(model: onnx.ModelProto, keep: float = 0.5) -> onnx.ModelProto:
    """Keep `keep` of the channels of the layers that run at stride 2 (stem 3 -> 16, depthwise 16,
    pointwise 16 -> 32, depthwise 32 with stride 2).

    Those four layers were ~40% of the slim detector's time on one core (onnxruntime profile,
    640 x 640): their cost grows with their channels, and unlike `early_stride` this keeps the
    resolution small plates need. The kept channels are those whose weights in and out are
    largest (product of L2 norms); the network is then fine-tuned as usual.
    """
    from onnx import numpy_helper

    g = model.graph
    init = {i.name: i for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    stem, dw1, pw, dw2, nxt = convs[:5]
    bn = next(n for n in g.node if n.op_type == "BatchNormalization" and n.input[0] == stem.output[0])

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(init[name]).astype(np.float32)

    def put(name: str, value: np.ndarray) -> None:
        g.initializer.remove(init[name])
        init[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        g.initializer.append(init[name])

    def group(n: onnx.NodeProto) -> int:
        g = _attr(n, "group")
        return g if isinstance(g, int) else 1

    def keep_outputs(conv: onnx.NodeProto, idx: np.ndarray) -> None:
        """Keep the output channels `idx` of `conv` (weight and bias; a depthwise one's groups too)."""
        depthwise = group(conv) > 1
        put(conv.input[1], arr(conv.input[1])[idx])
        if len(conv.input) > 2:
            put(conv.input[2], arr(conv.input[2])[idx])
        if depthwise:
            for a in conv.attribute:
                if a.name == "group":
                    a.i = len(idx)

    w_stem, w_dw1, w_pw, w_dw2, w_nxt = (arr(n.input[1]) for n in (stem, dw1, pw, dw2, nxt))
    if (not w_stem.shape[0] == w_dw1.shape[0] == w_pw.shape[1] == group(dw1)
            or not w_pw.shape[0] == w_dw2.shape[0] == w_nxt.shape[1] == group(dw2)
            or group(nxt) != 1 or len(stem.input) != 2):
        raise SystemExit("slim-narrow: unexpected layers after the stem")

    def norm(w: np.ndarray, axis: int) -> np.ndarray:
        return np.sqrt((np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) ** 2).sum(1))

    bn_scale = np.abs(arr(bn.input[1])) / np.sqrt(arr(bn.input[4]) + 1e-5)
    a_score = norm(w_stem, 0) * bn_scale * norm(w_dw1, 0) * norm(w_pw, 1)
    b_score = norm(w_pw, 0) * norm(w_dw2, 0) * norm(w_nxt, 1)
    a = np.sort(np.argsort(a_score)[::-1][: max(1, round(len(a_score) * keep))])
    b = np.sort(np.argsort(b_score)[::-1][: max(1, round(len(b_score) * keep))])
    keep_outputs(stem, a)
    for name in bn.input[1:5]:
        put(name, arr(name)[a])
    keep_outputs(dw1, a)
    keep_outputs(pw, b)
    put(pw.input[1], arr(pw.input[1])[:, a])
    keep_outputs(dw2, b)
    put(nxt.input[1], w_nxt[:, b])
    return model


def base_graph(base: Path, arch: str) -> onnx.ModelProto:
    """The base ONNX graph in trainable form (constants as initializers), cut to `arch`."""
    model = rewrite_onnx(onnx.load(str(base)))
    if arch == "dbnet":
        return model
    model = slim_fpn(model)
    if arch == "slim-narrow":
        return narrow_stem(model)
    return early_stride(model) if arch == "slim-early" else model


def build_model(base: Path, arch: str = "dbnet") -> tuple[PlateNet, dict[str, str]]:
    m = base_graph(base, arch)
    g = m.graph
    out_name = g.output[0].name
    sig = [n for n in g.node if n.op_type == "Sigmoid" and n.output[0] == out_name]
    if len(sig) != 1:
        raise SystemExit(f"{base}: expected the output to come from a Sigmoid")
    g.output[0].name = sig[0].input[0]
    g.node.remove(sig[0])
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir) / f"plate_det_base_logits_{arch}.onnx"
        onnx.save(m, str(tmp))
        body, names = onnx_to_torch(tmp)
    trainable = sum(p.numel() for p in body.parameters())
    log.info("converted %s (%s): %d trainable parameters, %d tensors mapped back to ONNX",
             base.name, arch, trainable, len(names))
    return PlateNet(body), {f"body.{k}": v for k, v in names.items()}


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with 3:1 hard-negative mining plus dice (the DBNet recipe for probability maps)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten()
    t = target.flatten()
    pos = t > 0.5
    npos = int(pos.sum())
    neg = bce[~pos]
    nneg = min(neg.numel(), max(3 * npos, 4096))
    hard = torch.topk(neg, nneg).values
    l_bce = (bce[pos].sum() + hard.sum()) / (npos + nneg)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return l_bce + dice


def export(net: PlateNet, names: dict[str, str], base: Path, out: Path, contract: dict[str, object],
           arch: str = "dbnet") -> None:
    """Write the trained weights into the base ONNX graph (which ends in its Sigmoid), check it."""
    device = next(net.parameters()).device
    net.cpu()
    net.eval()
    model = export_weights(net, names, base_graph(base, arch))
    # The shipped graph is the fused one (a third faster on one core, same outputs): see the tool.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from fuse_onnx import fuse

    model, _ = fuse(model)
    model.producer_name = "alprd training/train_detector.py"
    del model.metadata_props[:]
    tmp = out.with_suffix(".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(tmp))
    # The exported graph must reproduce the torch model (a non-square input, like real photos).
    contract, err = publish_checked(tmp, out, net, torch.randn(1, 3, 320, 480), contract)
    log.info("exported %s (%.1f MB, sha256 %s, max |onnx - torch| %.2e)", out,
             out.stat().st_size / 1e6, contract["sha256"], err)
    net.train()
    net.to(device)


# --- main ------------------------------------------------------------------------------------


def build_data(data_set: str) -> tuple[list[Photo], list[Photo], list[list[np.ndarray]], dict[str, int]]:
    ro_train, _ = ro_detect_split()
    photos = [load_photo(s) for s in ro_train]
    counts = {"ro-detect-train": len(photos)}
    crops: list[list[np.ndarray]] = []
    if data_set == "full":
        for folder in ("eu", "br"):
            tr, _ = photo_split(folder)
            photos += [load_photo(s) for s in tr]
            counts[f"{folder}-train"] = len(tr)
        for folder in ("us-crops", "br-crops"):
            c = load_crops(folder)
            counts[folder] = len(c)
            crops.append(c)
    # Backgrounds for composites: every training photo (its own plates stay labelled).
    backgrounds = photos
    # US photos are never loaded for training: they are the clean test set.
    assert not any(p.name.startswith("us/") for p in photos)
    return photos, backgrounds, crops, counts


PACK_SIDE = 1120  # the largest simulated detector size (--max-side): no draw needs more pixels
PACK_QUALITY = 85  # WebP; a lent GPU takes 64 MiB with the repo, and training adds JPEG noise anyway


def save_pack(path: Path, photos: list[Photo], crops: list[list[np.ndarray]], counts: dict[str, int]) -> None:
    """The loaded training data in one file, so a machine without ../shared/data (a lent GPU) can
    train on the same photos: each at most PACK_SIDE pixels long, re-encoded as WebP."""
    def enc(img: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, PACK_QUALITY])
        if not ok:
            raise SystemExit("cannot encode a training image")
        return buf.tobytes()

    def shrink(p: Photo) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
        h, w = p.image.shape[:2]
        f = min(1.0, PACK_SIDE / max(h, w))
        if f == 1.0:
            return p.image, p.boxes
        img = cv2.resize(p.image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        return img, [(x * f, y * f, bw * f, bh * f) for x, y, bw, bh in p.boxes]

    pack = {"photos": [(p.name, enc(img), boxes) for p in photos for img, boxes in [shrink(p)]],
            "crops": [[enc(c) for c in folder] for folder in crops], "counts": counts}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(pack, f, protocol=pickle.HIGHEST_PROTOCOL)
    log.info("wrote %s (%.1f MB): %s", path, path.stat().st_size / 1e6, counts)


def load_pack(path: Path, data_set: str) -> tuple[list[Photo], list[Photo], list[list[np.ndarray]],
                                                  dict[str, int]]:
    """A pack's data; for the mit data set only its ro-detect frames (a pack of the full set
    holds them first, and the AGPL photos and crops are left out)."""
    def dec(b: bytes) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{path}: corrupt image in pack")
        return img

    with open(path, "rb") as f:
        pack = pickle.load(f)  # our own file, written by save_pack
    mit = data_set == "mit"
    photos = [Photo(dec(b), list(boxes), name) for name, b, boxes in pack["photos"]
              if not mit or name.startswith("ro-detect/")]
    crops = [] if mit else [[dec(b) for b in folder] for folder in pack["crops"]]
    counts = {"ro-detect-train": len(photos)} if mit else dict(pack["counts"])
    return photos, photos, crops, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-set", choices=["full", "mit"], default="full")
    ap.add_argument("--arch", choices=ARCHS, default="slim",
                    help="slim: pyramid without its stride-4 level, map at half resolution (default)")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=384)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-side", type=float, default=480, help="smallest simulated detector size")
    ap.add_argument("--max-side", type=float, default=1120, help="largest simulated detector size")
    ap.add_argument("--composite", type=float, default=0.45, help="share of samples with pasted plates")
    ap.add_argument("--synth", type=float, default=0.3,
                    help="share of pasted plates that are rendered (the rest real crops; mit: all)")
    ap.add_argument("--holder", type=float, default=0.0,
                    help="share of pasted plates put into a synthetic holder / dealer frame first")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device (cuda on a lent GPU)")
    ap.add_argument("--workers", type=int, default=0,
                    help="data worker processes (0: make batches in the training process)")
    ap.add_argument("--pack", type=Path, default=None,
                    help="train on a data pack written by --write-pack instead of ../shared/data")
    ap.add_argument("--write-pack", type=Path, default=None,
                    help="write the loaded training data to this file and stop")
    ap.add_argument("--export-from", type=Path, default=None,
                    help="skip training: export the weights saved by an earlier run (its .pt)")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop early after this many minutes of training (0: never; logged)")
    ap.add_argument("--base", type=Path, default=BASE_MODEL)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--run", default=None, help="log name (training/logs/<run>.log)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--export-every", type=int, default=0, help="also export a snapshot every N steps")
    ap.add_argument("--checkpoint-every", type=int, default=25,
                    help="save model, optimiser and random states every N steps (for --resume)")
    ap.add_argument("--checkpoint-dir", type=Path, default=REPO / ".cache" / "detector-runs",
                    help="resume checkpoints and the final RUN.pt (for --export-from) go here")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run from its last checkpoint (same arguments); the result is the same "
                         "as an uninterrupted run")
    args = ap.parse_args(argv)

    out = args.out or (MODELS / ("plate_det.onnx" if args.data_set == "full" else "plate_det_mit.onnx"))
    run = args.run or f"detector-{args.data_set}"
    ckpt_path = args.checkpoint_dir / f"{run}.ckpt"
    logpath = setup_logging(run, append=args.resume)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    log.info("run %s: %s", run, " ".join(sys.argv))
    log.info("args %s", vars(args))

    timer = Timer()
    if args.pack:
        photos, backgrounds, crops, counts = load_pack(args.pack, args.data_set)
    else:
        photos, backgrounds, crops, counts = build_data(args.data_set)
    log.info("data loaded in %.0f s: %s", timer(), counts)
    if args.write_pack:
        save_pack(args.write_pack, photos, crops, counts)
        return 0
    sampler = Sampler(photos, backgrounds, crops, synth=1.0 if args.data_set == "mit" else args.synth,
                      composite=args.composite, crop=args.crop, sides=(args.min_side, args.max_side),
                      seed=args.seed, holder=args.holder)

    net, names = build_model(args.base, args.arch)
    stride = OUTPUT_STRIDE[args.arch]
    if args.export_from:
        net.load_state_dict(torch.load(args.export_from, map_location="cpu"))
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.steps, args.lr)

    trained_on = {
        "full": "ro-detect train part (MIT) + eu/br photo train halves (AGPL-3.0 test data) + us-crops and "
                "br-crops (AGPL-3.0) and rendered plates pasted on those photos; never the US photos",
        "mit": "ro-detect train part (MIT) + plates rendered with OpenCV Hershey fonts pasted on "
               "those frames",
    }[args.data_set]
    contract: dict[str, object] = {
        "name": "plate_det" if args.data_set == "full" else "plate_det_mit",
        "licence": "Apache-2.0 (base weights); fine-tuned weights: see models/README.md",
        "source": BASE_SOURCE,
        "trained_on": trained_on,
        "data_set": args.data_set,
        "training": {"arch": args.arch, "steps": args.steps, "batch": args.batch, "crop": args.crop,
                     "seed": args.seed,
                     "sides": [args.min_side, args.max_side], "composite": args.composite,
                     "synth": 1.0 if args.data_set == "mit" else args.synth, "holder": args.holder,
                     "log": f"training/logs/{run}.log",
                     "command": "training/train_detector.py " + " ".join(sys.argv[1:])},
        "input": {"size": 640, "sizes": [640, 960], "color": "BGR", "mean": list(MEAN), "std": list(STD),
                  "layout": "NCHW", "pad_multiple": 32},
        # Post-processing chosen on eu-dev, br-dev and ro-detect-dev (never on the US photos):
        # candidates down to 0.4 on the whole frame, each looked at again 128 px wide, kept at 0.7.
        "output": {"kind": "plate_probability_map", "stride": OUTPUT_STRIDE[args.arch], "threshold": 0.5,
                   "min_score": 0.7, "candidate_score": 0.4, "refine_width": 128},
    }

    if args.export_from:
        log.info("exporting the weights of %s (no training)", args.export_from)
        export(net, names, args.base, out, contract, args.arch)
        return 0

    timer = Timer()
    t_data = 0.0
    ema: float | None = None
    start, before = 0, 0.0  # steps and seconds done by earlier, interrupted processes of this run
    if args.resume:
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sampler.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        start, ema, before, t_data = ck["step"], ck["ema"], ck["elapsed"], ck["t_data"]
        log.info("resumed from %s at step %d", ckpt_path, start)
    timer.t0 -= before
    batches = None
    if args.workers:
        batches = Batches(sampler, args.batch, args.seed, args.workers, start, args.steps)
    device = torch.device(args.device)
    net.to(device)
    for state in opt.state.values():  # a resumed optimiser's moments follow the weights
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)
    done = args.steps
    for step in range(start, args.steps):
        if timer.past(args.max_minutes, step, args.steps):
            done = step
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        t0 = timer()
        x, y = batches.get() if batches else sampler.batch(args.batch)
        t_data += timer() - t0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        if stride > 1:
            # The map's cell covers stride x stride pixels: its target is their plate share.
            y = F.avg_pool2d(y, stride)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = float(loss.detach())
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        if (step + 1) % args.log_every == 0 or step == 0:
            el = timer()
            eta = el / (step + 1) * (args.steps - step - 1)  # (approximate after a resume)
            log.info("step %d/%d loss %.4f (ema %.4f) lr %.2e  %.2f s/step (data %.0f%%)  "
                     "elapsed %.1f min  eta %.1f min", step + 1, args.steps, v, ema, lr_at(step),
                     el / (step + 1), 100 * t_data / el, el / 60, eta / 60)
        if args.export_every and (step + 1) % args.export_every == 0 and step + 1 < args.steps:
            # A snapshot in the final place, so the reader can integrate before the run ends.
            snap = dict(contract, snapshot=f"step {step + 1} of {args.steps}")
            try:
                export(net, names, args.base, out, snap, args.arch)
            except RuntimeError as e:
                log.error("snapshot export failed: %s", e)
        if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0:
            args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"step": step + 1, "net": net.state_dict(), "opt": opt.state_dict(),
                        "rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "ema": ema, "elapsed": timer(), "t_data": t_data}, tmp)
            tmp.replace(ckpt_path)
    if batches:
        batches.close()
    net.cpu()
    log.info("trained %d steps in %.1f min", done, timer() / 60)
    contract["training"]["minutes"] = round(timer() / 60, 1)  # type: ignore[index]
    if done < args.steps:
        contract["training"]["stopped_at_step"] = done  # type: ignore[index]
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint_dir / f"{run}.pt"
    torch.save(net.state_dict(), ckpt)  # to retry an export without retraining (--export-from)
    log.info("torch checkpoint %s", ckpt)
    export(net, names, args.base, out, contract, args.arch)
    log.info("log: %s", logpath.relative_to(REPO))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
