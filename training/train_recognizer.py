"""Fine-tune the PP-OCRv6-small recognizer for plates: 37-class CTC head, CPU, reproducible.

Starts from the stock Apache-2.0 ONNX (rapidocr==3.10.0 `PP-OCRv6_rec_small.onnx`), converts it to
torch with onnx2torch, swaps the 18,710-class head for [blank, 0-9, A-Z] (rows copied from the
stock head), trains with CTC on the lines written by `prepare_rec_data.py` (plus optional
plates rendered by `synth_plates.py`), and writes the trained weights back into the stock
ONNX graph: the exported model is the stock graph with a smaller head, so runtime speed and
operators are unchanged, and the export is checked against the torch model.

Usage:
  python training/train_recognizer.py --run NAME --data DIR/lines.npz [--leave-out us] [--install]
`--install` copies the model into models/ and writes models/plate_rec.json (contract + SHA-256).
`--leave-out SOURCE` trains without a source's lines, so that source measures generality.
"""

from __future__ import annotations

import os

# A multi-threaded BLAS spin-waits for cores this shared machine does not have: the stock
# recognizer's 18,710-class fold matmul took 0.001-1.9 s per line with it. One thread, always.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alprd.read.lines import even_light  # noqa: E402
from training.common import STOCK_REC, _stub_torchvision, prune_dead_nodes, rewrite_onnx  # noqa: E402

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
RUNS = REPO / ".cache" / "rec-runs"
LOGS = REPO / "training" / "logs"
MODELS = REPO / "models"
HEIGHT = 48
MIN_WIDTH = 64
MIN_INPUT = 0  # --min-width: no line narrower than this at the input (0: MIN_WIDTH at the width scale)
MAX_WIDTH = 320

log = logging.getLogger("train_recognizer")

# Share of each source in the training stream (renormalised over the sources present): the real
# lines are what the reader sees, but come from a few cameras; the rendered plates carry the
# fonts, layouts, light and sizes those cameras lack (a third of the stream); br-crops are many and
# one region only. ro-pseudo: ro-detect plates where the stock and the shipped model agree.
MIX = {"eu": 0.14, "br": 0.10, "us": 0.14, "us-crops": 0.12, "br-crops": 0.07, "ro-pseudo": 0.08,
       "synth-us": 0.18, "synth-eu": 0.11, "synth-br": 0.06}


# --- model -----------------------------------------------------------------------------------


# Stock classes that win frames on plate lines besides [0-9A-Za-z] (counted on the dev lines'
# argmax: '-' 31, '·' 19, ':' 14, ' ' 6, '=' 2, '+' 1): separators the model should skip.
SEPARATORS = "-·:=+.&*：~'•/,—_|"


def fold_matrix(fold: bool) -> np.ndarray:
    """Head rows -> [blank, 0-9, A-Z]. With `fold`, rows a-z add their probability to A-Z and the
    separator rows (then the space) add theirs to blank, as `alprd.read.recognize` folds the stock model."""
    n = 1 + len(ALPHABET)
    extra = 26 + len(SEPARATORS) + 1 if fold else 0
    matrix = np.zeros((n + extra, n), np.float32)
    matrix[np.arange(n), np.arange(n)] = 1.0
    if fold:
        for i in range(26):
            matrix[n + i, 11 + i] = 1.0  # a-z -> A-Z, which start at 1 + 10
        matrix[n + 26 :, 0] = 1.0
    return matrix


def _stock_graph(stock: Path, fold: bool, height: int = 48, halve_width_at: str = ""):  # type: ignore[no-untyped-def]
    """The stock ONNX with a [blank, 0-9, A-Z] head and no metadata charset.

    `height` other than the stock 48 changes the input's fixed height and the pooling that folds
    the last stage's rows (height / 16 of them) into one: the convolutions do not depend on it.

    `halve_width_at` names a row-only downsampling convolution (stride 2 x 1) that then also halves
    the width, and the final pooling stops halving it: the output keeps its time steps (one per 8
    input columns) while every stage after that convolution runs on half the columns.

    With `fold`, the head keeps the a-z and separator rows too, and a MatMul after the Softmax
    adds them to their capital or to blank (`fold_matrix`), so that before training the model reads
    much as the stock one does. Keeping only the 37 rows cost 14 points of EU dev before training:
    a '-' or '·' between characters then became a character.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(stock))
    meta = {p.key: p.value for p in model.metadata_props}
    charset = ["<blank>", *meta["character"].split("\n"), " "]
    rows = [0] + [charset.index(c) for c in ALPHABET]
    if fold:
        rows += [charset.index(c) for c in ALPHABET[10:].lower()]
        rows += [charset.index(c) for c in SEPARATORS] + [len(charset) - 1]  # the space is last
    g = model.graph
    final = g.node[-1]
    assert final.op_type == "Softmax", final.op_type
    inits = {i.name: i for i in g.initializer}
    for name in ("linear_8.w_0", "linear_8.b_0"):
        arr = numpy_helper.to_array(inits[name])
        sliced = arr[:, rows] if arr.ndim == 2 else arr[rows]
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(sliced), name))
    out = g.output[0]
    out.type.tensor_type.shape.dim[2].dim_value = 1 + len(ALPHABET)
    if height != 48:
        if height % 16:
            raise SystemExit(f"--height {height}: must be a multiple of 16 (the backbone's row stride)")
        g.input[0].type.tensor_type.shape.dim[2].dim_value = height
        (pool,) = [n for n in g.node if n.op_type == "AveragePool"]
        for a in pool.attribute:
            if a.name in ("kernel_shape", "strides"):
                assert list(a.ints) == [3, 2], list(a.ints)
                a.ints[:] = [height // 16, 2]
    if halve_width_at:
        _halve_width(g, halve_width_at)
    if fold:
        g.initializer.append(numpy_helper.from_array(fold_matrix(True), "plate_fold"))
        final.output[0] = "head_probs"
        g.node.append(helper.make_node("MatMul", ["head_probs", "plate_fold"], [out.name], name="PlateFold"))
    del g.value_info[:]  # stale 18,710-class shapes; onnxruntime infers them again
    del model.metadata_props[:]
    return model


def _halve_width(g, conv_name: str) -> None:  # type: ignore[no-untyped-def]
    """Move the width halving of the final pooling forward to the convolution `conv_name`."""
    convs = [n for n in g.node if n.name == conv_name and n.op_type == "Conv"]
    if len(convs) != 1:
        raise SystemExit(f"--halve-width-at: no convolution {conv_name} in the stock graph")
    (stride,) = [a for a in convs[0].attribute if a.name == "strides"]
    if list(stride.ints) != [2, 1]:
        raise SystemExit(f"--halve-width-at {conv_name}: strides {list(stride.ints)}, not a row-only [2, 1]")
    stride.ints[:] = [2, 2]
    (pool,) = [n for n in g.node if n.op_type == "AveragePool"]
    for a in pool.attribute:
        if a.name in ("kernel_shape", "strides"):
            assert a.ints[1] == 2, list(a.ints)
            a.ints[1] = 1


def _load_weights(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Start from an earlier run's weights: its ONNX is the same stock graph (same initializer
    names and shapes, `RecNet.export`)."""
    import onnx

    trained = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    for init in model.graph.initializer:
        t = trained.get(init.name)
        if t is None or list(t.dims) != list(init.dims):
            raise SystemExit(f"--init {path}: no tensor {init.name} of shape {list(init.dims)}")
        init.CopyFrom(t)


def drop_blocks(model, adds: list[str]):  # type: ignore[no-untyped-def]
    """Bypass residual blocks: each named Add (block input + block branch) is replaced by its first
    input and every node left without a consumer is removed.

    The backbone's middle stage (48 x W input: 6 x W/4 cells, 192 -> 384 -> 192 channels) runs six
    such blocks, over a third of a line's time on one core; the network is fine-tuned after.
    """
    g = model.graph
    nodes = {n.name: n for n in g.node}
    alias: dict[str, str] = {}
    for name in adds:
        n = nodes.get(name)
        if n is None or n.op_type != "Add" or len(n.input) != 2:
            raise SystemExit(f"--drop-blocks: {name} is not a two-input Add of the stock graph")
        alias[n.output[0]] = n.input[0]
    for n in g.node:
        for i, x in enumerate(n.input):
            while x in alias:
                x = alias[x]
            n.input[i] = x
    return prune_dead_nodes(model)


def _for_torch(model):  # type: ignore[no-untyped-def]
    """Graph for onnx2torch: explicit pads (stride-1 SAME MaxPool too) and logits out, no Softmax."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    for n in g.node:
        if n.op_type == "MaxPool" and any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in n.attribute):
            attrs = {a.name: a for a in n.attribute}
            k = list(attrs["kernel_shape"].ints)
            assert list(attrs["strides"].ints) == [1, 1], "SAME MaxPool with stride > 1 needs input sizes"
            begin = [(x - 1) // 2 for x in k]
            end = [x - 1 - b for x, b in zip(k, begin, strict=True)]
            keep = [a for a in n.attribute if a.name not in ("auto_pad", "pads")]
            keep.append(onnx.helper.make_attribute("pads", begin + end))
            del n.attribute[:]
            n.attribute.extend(keep)
    at = max(i for i, n in enumerate(g.node) if n.op_type == "Softmax")
    logits = g.node[at].input[0]
    for n in list(g.node)[at:]:
        g.node.remove(n)
    g.output[0].name = logits
    g.output[0].type.tensor_type.shape.dim[2].dim_param = "classes"
    return rewrite_onnx(model)


def torch_parameter() -> type:
    import torch

    return torch.nn.Parameter


class RecNet:
    """The converted network plus the map from its tensors back to ONNX initializer names."""

    def __init__(self, stock: Path, fold: bool = False, drop: list[str] | None = None,
                 init: Path | None = None, height: int = 48, halve_width_at: str = "") -> None:
        import torch

        _stub_torchvision()
        from onnx2torch import convert
        from onnx2torch.onnx_graph import OnnxGraph, ValueType

        self.export_graph = _stock_graph(stock, fold, height, halve_width_at)
        if init is not None:
            _load_weights(self.export_graph, init)
        if drop:
            self.export_graph = drop_blocks(self.export_graph, drop)
        self.fold = fold_matrix(fold)
        self.n_rows = self.fold.shape[0]
        tmodel = _for_torch(self.export_graph)
        self.net = convert(tmodel, attach_onnx_mapping=True)
        graph = OnnxGraph(tmodel.graph)
        children = dict(self.net.named_children())
        # (torch owner module, attribute name) -> ONNX initializer name, mirroring onnx2torch's
        # own walk: initializers fed as inputs become initializers.onnx_initializer_<n> in order.
        self.links: list[tuple[torch.nn.Module, str, str]] = []
        counter = 0
        container = children["initializers"]
        self.node_of: dict[str, int] = {}  # ONNX initializer -> index of the first node using it
        for index, (uname, node) in enumerate(graph.nodes.items()):
            for value in node.input_values:
                self.node_of.setdefault(value, index)
            mod = children[uname]
            for value in mod.onnx_mapping.inputs:
                if graph.value_type(value) == ValueType.GRAPH_INITIALIZER:
                    self.links.append((container, f"onnx_initializer_{counter}", value))
                    counter += 1
            ins = node.input_values
            # asymmetric pads arrive as Sequential(pad, conv)
            conv = next((m for m in mod.modules() if isinstance(m, torch.nn.Conv2d)), None)
            if conv is not None:
                self.links.append((conv, "weight", ins[1]))
                if len(ins) > 2:
                    self.links.append((conv, "bias", ins[2]))
            elif isinstance(mod, torch.nn.BatchNorm2d):
                attrs = ("weight", "bias", "running_mean", "running_var")
                for attr, value in zip(attrs, ins[1:], strict=True):
                    self.links.append((mod, attr, value))
        # onnx2torch keeps initializer operands (MatMul weights, LayerNorm scales, biases) as
        # buffers, which never train: make every non-scalar float one a Parameter, one Parameter
        # per ONNX initializer so a weight used twice stays tied.
        shared: dict[str, torch.nn.Parameter] = {}
        for owner, attr, value in self.links:
            if owner is not container:
                continue
            buf = owner._buffers.get(attr)
            if buf is None or not torch.is_floating_point(buf) or buf.numel() <= 1:
                continue
            if value not in shared:
                shared[value] = torch.nn.Parameter(buf.clone())
            del owner._buffers[attr]
            owner.register_parameter(attr, shared[value])
        self.n_params = sum(p.numel() for p in self.net.parameters())
        linked = {id(getattr(owner, attr)) for owner, attr, _ in self.links}
        missing = [n for n, p in self.net.named_parameters() if id(p) not in linked]
        assert not missing, f"parameters the export would not write back: {missing}"

    def freeze_before(self, node_index: int) -> int:
        """Stop training every tensor first used before ONNX node `node_index`; returns their count.

        Autograd then never runs backward through the early, high-resolution stages, the costly part
        of a step on this CPU. Frozen BatchNorm layers (none this early in v6) would keep training.
        """
        n = 0
        for owner, attr, value in self.links:
            t = getattr(owner, attr)
            if isinstance(t, torch_parameter()) and self.node_of.get(value, 1 << 30) < node_index:
                t.requires_grad_(False)
                n += t.numel()
        return n

    def export(self, path: Path) -> None:
        """Write the trained tensors into the stock graph (with its Softmax) and save it."""
        import onnx
        from onnx import numpy_helper

        model = onnx.ModelProto.FromString(self.export_graph.SerializeToString())
        inits = {i.name: i for i in model.graph.initializer}
        done: set[str] = set()
        for owner, attr, value in self.links:
            tensor = getattr(owner, attr)
            if value in done or value not in inits:
                continue
            old = numpy_helper.to_array(inits[value])
            arr = tensor.detach().cpu().numpy().astype(old.dtype).reshape(old.shape)
            inits[value].CopyFrom(numpy_helper.from_array(arr, value))
            done.add(value)
        model.metadata_props.add(key="alphabet", value=ALPHABET)
        onnx.checker.check_model(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))


# --- data ------------------------------------------------------------------------------------


def augment(img: np.ndarray, rng: random.Random, stretch: float = 0.0, dim: float = 0.0,
            italic: float = 0.0, small_jpeg: float = 0.0, grey: float = 0.1,
            low_res: float = 0.3, smear: float = 0.0) -> np.ndarray:
    """Photometric and small geometric changes of a 48-high line image (BGR uint8).

    dim P: a share P of the lines is lit as a night plate lit by headlights only (a sixth to
    two fifths of its light, grey levels of about 30-60 for white, with sensor noise before the
    8-bit steps); the reader's stretch (`even_light`) then gives them back their contrast, noise
    and steps amplified, as it does at run time.

    stretch F: half the lines are squeezed or stretched sideways by up to 1 + F. A condensed
    state font or a plate seen at an angle gives fewer CTC steps per character than the plates
    of our folders, and too few steps is how a character gets dropped.

    italic A: a third of the lines lean by up to A degrees either way. A plate seen from the
    side slants in the frame while its characters stay upright; the reader levels the row by
    rotating it (`LineFinder.cut`), and its characters then lean by the slant. With A = 0 the
    random draws are those of earlier runs.

    small_jpeg P: a share P of the lines made small (distant plates) is JPEG-compressed at that
    small size (quality 15-60) before it is enlarged again. A camera compresses a frame at its
    own resolution, so a small plate's characters are a block or two of 8 x 8 pixels; the JPEG
    step further down, on the 48-high line, leaves blocks a sixth of the line's height.

    grey P: a share P of the lines loses its colour (default 0.1, the draws of earlier runs):
    infrared and monochrome cameras, common on poles and patrol cars, see every plate in grey.

    low_res F: the smallest scale (of the 48-high line) a line made small is drawn from (default
    0.3, the draws of earlier runs, rows of 14 px and up). The smallest plates the reader meets,
    46 px wide in a 640 x 480 frame, carry characters about 10 px high: 0.2 of the line.

    smear F: a quarter of the lines is smeared sideways over 2 px up to F of its width, before
    it is made small or compressed, as a camera smears a car crossing the view under a slow
    shutter and then compresses the frame. The blur below smears by 3-7 px in one line of 13;
    the reader loses half its plates smeared by 6% of the plate's width (BENCHMARKS.md, "Class
    probes"). With F = 0 the random draws are those of earlier runs.
    """
    h, w = img.shape[:2]
    if stretch > 0 and rng.random() < 0.5:
        f = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(stretch))
        inter = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (max(8, round(w * f)), h), interpolation=inter)
        w = img.shape[1]
    # line-finder framing: trim or extend each side a little
    if rng.random() < 0.5:
        left, right = rng.randint(-4, 12), rng.randint(-4, 12)
        t, b = rng.randint(-3, 8), rng.randint(-3, 8)
        img = cv2.copyMakeBorder(img, max(0, t), max(0, b), max(0, left), max(0, right), cv2.BORDER_REPLICATE)
        hh, ww = img.shape[:2]
        img = img[max(0, -t) : hh - max(0, -b), max(0, -left) : ww - max(0, -right)]
        h, w = img.shape[:2]
    if rng.random() < 0.4:  # rotation + shear / perspective
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        d = 0.06 * h
        dst = src + np.float32([[rng.uniform(-d, d), rng.uniform(-d, d)] for _ in range(4)])
        ang = math.radians(rng.uniform(-3, 3))
        c, s = math.cos(ang), math.sin(ang)
        dst = (dst - [w / 2, h / 2]) @ np.float32([[c, -s], [s, c]]).T + [w / 2, h / 2]
        m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        img = cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if italic > 0 and rng.random() < 1 / 3:
        t = math.tan(math.radians(rng.uniform(-italic, italic)))
        pad = math.ceil(abs(t) * h / 2)
        m = np.float32([[1, t, pad - t * h / 2], [0, 1, 0]])
        img = cv2.warpAffine(img, m, (w + 2 * pad, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        w = img.shape[1]
    if smear > 0 and rng.random() < 0.25:
        k = rng.randint(2, max(2, round(smear * w)))
        img = cv2.blur(img, (k, 1), borderType=cv2.BORDER_REPLICATE)
    if rng.random() < 0.3:  # lower resolution (distant plates)
        f = rng.uniform(low_res, 0.8)
        small = cv2.resize(img, (max(4, round(w * f)), max(4, round(h * f))), interpolation=cv2.INTER_AREA)
        if small_jpeg > 0 and rng.random() < small_jpeg:
            ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(15, 60)])
            if ok:
                small = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:
        k = rng.choice([3, 5])
        img = cv2.GaussianBlur(img, (k, k), 0)
    elif rng.random() < 0.1:  # horizontal motion blur
        k = rng.choice([3, 5, 7])
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        img = cv2.filter2D(img, -1, kernel)
    x = img.astype(np.float32)
    night = dim > 0 and rng.random() < dim
    if night:
        x = x * rng.uniform(0.15, 0.4) + rng.uniform(0, 20)
        x = x + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(1, 4), x.shape)
    elif rng.random() < 0.6:  # brightness / contrast / gamma (dim results are stretched back below)
        x = (x - 128) * rng.uniform(0.6, 1.4) + 128 + rng.uniform(-40, 40)
        x = np.clip(x, 0, 255)
        if rng.random() < 0.3:
            x = 255 * (x / 255) ** rng.uniform(0.6, 1.6)
    if rng.random() < grey:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if not night and rng.random() < 0.3:
        x = x + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 12), x.shape)
    img = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(15, 85)])
        if ok:
            img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    # the reader stretches dim crops before cutting rows (alprd.read.lines.even_light): so must we
    return even_light(img)


def width_bounds(scale: float) -> tuple[int, int]:
    """Input width range for a width scale (multiples of 32, at least 32), in proportion to the height."""
    scale *= HEIGHT / 48
    lo = max(32, MIN_INPUT, round(MIN_WIDTH * scale / 32) * 32)
    return lo, max(lo, round(MAX_WIDTH * scale / 32) * 32)


def target_width(img: np.ndarray, scale: float = 1.0) -> int:
    h, w = img.shape[:2]
    lo, hi = width_bounds(scale)
    return int(np.clip(round(w * HEIGHT / max(1, h) * scale), lo, hi))


def bucket(width: int, scale: float = 1.0) -> int:
    lo, hi = width_bounds(scale)
    return int(np.clip(round(width / 32) * 32, lo, hi))


def to_tensor(img: np.ndarray, width: int) -> np.ndarray:
    x = cv2.resize(img, (width, HEIGHT), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return ((x / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


class Stream:
    """Endless batches: sources drawn by MIX, each batch from one width bucket."""

    def __init__(self, images: list[np.ndarray], labels: list[str], sources: list[str], batch: int,
                 seed: int, width_scale: float = 1.0, stretch: float = 0.0, dim: float = 0.0,
                 italic: float = 0.0, small_jpeg: float = 0.0, grey: float = 0.1,
                 low_res: float = 0.3, smear: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.width_scale = width_scale
        self.stretch = stretch
        self.dim = dim
        self.italic = italic
        self.small_jpeg = small_jpeg
        self.grey = grey
        self.low_res = low_res
        self.smear = smear
        self.batch = batch
        self.images, self.labels = images, labels
        by_source: dict[str, list[int]] = {}
        for i, s in enumerate(sources):
            by_source.setdefault(s, []).append(i)
        mix = {s: MIX.get(s, 0.1) for s in by_source}
        total = sum(mix.values())
        self.sources = list(by_source)
        self.weights = [mix[s] / total for s in self.sources]
        self.by_source = by_source
        self.pending: dict[int, list[tuple[np.ndarray, str, str]]] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        while True:
            src = self.rng.choices(self.sources, self.weights)[0]
            i = self.rng.choice(self.by_source[src])
            img = augment(self.images[i], self.rng, self.stretch, self.dim, self.italic, self.small_jpeg,
                          self.grey, self.low_res, self.smear)
            b = bucket(target_width(img, self.width_scale), self.width_scale)
            queue = self.pending.setdefault(b, [])
            queue.append((img, self.labels[i], src))
            if len(queue) == self.batch:
                self.pending[b] = []
                x = np.stack([to_tensor(im, b) for im, _, _ in queue])
                yield x, [lab for _, lab, _ in queue], [s for _, _, s in queue]


def load_lines(path: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    z = np.load(path, allow_pickle=True)
    return list(z["images"]), [str(s) for s in z["labels"]], [str(s) for s in z["sources"]]


# --- train -----------------------------------------------------------------------------------


def greedy(logits: np.ndarray) -> str:
    best = logits.argmax(-1)
    out, prev = [], 0
    for k in best:
        if k and k != prev:
            out.append(ALPHABET[k - 1])
        prev = int(k)
    return "".join(out)


def write_contract(onnx_path: Path, extra: dict[str, object], row_margin: float = 0.0,
                   width_scale: float = 1.0) -> dict[str, object]:
    """Contract for a model of the current HEIGHT (`main` sets it from --height, `install` from the run)."""
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    lo, hi = width_bounds(width_scale)
    contract: dict[str, object] = {
        "name": "plate_rec",
        "file": onnx_path.name,
        **extra,
        "input": {"layout": "NCHW", "color": "BGR", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "height": HEIGHT, "min_width": lo, "max_width": hi, "width_scale": width_scale,
                  "row_margin": row_margin},
        "output": {"kind": "ctc", "blank": 0, "alphabet": ALPHABET},
        "sha256": digest,
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n")
    return contract


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="run name: output in .cache/rec-runs/RUN, log training/logs/rec_RUN.log")
    ap.add_argument("--runs", type=Path, default=RUNS, help="folder of the runs (default: .cache/rec-runs)")
    ap.add_argument("--stock", type=Path, default=STOCK_REC, help="the stock PP-OCRv6 small recognizer")
    ap.add_argument("--data", type=Path, nargs="+", required=False, default=[],
                    help="lines.npz files from prepare_rec_data.py (their summary.json gives row_margin)")
    ap.add_argument("--leave-out", default="", metavar="SOURCES",
                    help="comma-separated sources whose lines are not trained on (leave-one-source-out)")
    ap.add_argument("--l2sp", type=float, default=0.0, metavar="W",
                    help="pull the trained weights toward the stock model's (L2-SP, weight W): keeps "
                         "what the stock model knows of text the plates here do not show")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--freeze", type=int, default=0,
                    help="freeze tensors first used before this ONNX node (90: stem+stage 1, 243: +stage 2)")
    ap.add_argument("--fold", action="store_true",
                    help="keep the stock a-z and separator rows, folded into A-Z and blank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width-scale", type=float, default=1.0,
                    help="squeeze lines horizontally by this factor (0.5: half the input width, about half "
                         "the time per line); written into the contract, the runtime follows it")
    ap.add_argument("--stretch", type=float, default=0.0, metavar="F",
                    help="squeeze or stretch half the lines sideways by up to 1+F (fonts and angles vary)")
    ap.add_argument("--dim", type=float, default=0.0, metavar="P",
                    help="light a share P of the lines as night plates (dim, noisy; see augment)")
    ap.add_argument("--small-jpeg", type=float, default=0.0, metavar="P",
                    help="JPEG-compress a share P of the lines made small at that size (see augment)")
    ap.add_argument("--grey", type=float, default=0.1, metavar="P",
                    help="take the colour of a share P of the lines (infrared and monochrome cameras)")
    ap.add_argument("--low-res", type=float, default=0.3, metavar="F",
                    help="smallest scale a line made small is drawn from (0.3: earlier runs; see augment)")
    ap.add_argument("--italic", type=float, default=0.0, metavar="A",
                    help="lean a third of the lines by up to A degrees (plates seen from the side; "
                         "see augment)")
    ap.add_argument("--smear", type=float, default=0.0, metavar="F",
                    help="smear a quarter of the lines sideways by up to F of their width (moving cars; "
                         "see augment)")
    ap.add_argument("--drop-blocks", default="",
                    help="comma-separated residual Add nodes of the stock graph whose blocks are bypassed "
                         "(e.g. Add.74,Add.98,Add.122: every other block of the middle stage)")
    ap.add_argument("--height", type=int, default=48,
                    help="input height (multiple of 16; the stock model's is 48): 32 takes about half the "
                         "time per line at the same width scale")
    ap.add_argument("--halve-width-at", default="", metavar="CONV",
                    help="a row-only downsampling convolution of the stock graph that also halves the width "
                         "(Conv.16: the middle and last stages on half the columns, a third less time per "
                         "line, same output steps)")
    ap.add_argument("--min-width", type=int, default=0, metavar="PX",
                    help="stretch lines narrower than this at the input (with --halve-width-at, short "
                         "rows keep enough columns per character); written into the contract")
    ap.add_argument("--teacher", type=Path, default=None, metavar="ONNX",
                    help="an earlier run's plate_rec.onnx with the same output steps: its per-step "
                         "probabilities join the CTC loss (KL divergence, weight --distill)")
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the teacher's KL term")
    ap.add_argument("--o-neutral", default="", metavar="SOURCES",
                    help="comma-separated sources (us,us-crops) whose labels write 0 for an O-like glyph: "
                         "their loss merges O into 0, so they teach nothing about telling the two apart")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this earlier run's plate_rec.onnx instead of the stock weights")
    ap.add_argument("--install", action="store_true", help="after training, install into models/")
    ap.add_argument("--install-run", metavar="RUN", help="only install a finished run into models/")
    args = ap.parse_args()
    global HEIGHT, MIN_INPUT
    HEIGHT = args.height
    MIN_INPUT = args.min_width
    if args.install_run:
        install(args.runs / args.install_run / "plate_rec.onnx")
        return
    if not args.run or not args.data:
        ap.error("--run and --data are required to train")
    if not 0 <= args.smear <= 0.2:
        ap.error("--smear takes 0-0.2 (a share of the line's width)")
    if not 0.05 <= args.low_res <= 0.8:
        ap.error("--low-res takes 0.05-0.8 (a scale of the 48-high line)")

    import torch
    import torch.nn.functional as F

    LOGS.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.FileHandler(LOGS / f"rec_{args.run}.log", mode="w"),
                                  logging.StreamHandler(sys.stdout)])
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    log.info("args %s", vars(args))

    rec = RecNet(args.stock, args.fold, [a for a in args.drop_blocks.split(",") if a], args.init, args.height,
                 args.halve_width_at)
    log_fold = torch.from_numpy(np.log(rec.fold))  # 0 where a head row feeds a class, -inf elsewhere

    def log_probs(logits: torch.Tensor) -> torch.Tensor:
        """N, T, 37 log-probabilities over [blank, 0-9, A-Z], as the exported model computes them."""
        logp = F.log_softmax(logits, -1)
        if not args.fold:
            return logp
        return torch.logsumexp(logp.unsqueeze(-1) + log_fold, dim=-2)

    net = rec.net
    log.info("converted: %d parameters", rec.n_params)
    if args.freeze:
        log.info("frozen %d parameters (before node %d)", rec.freeze_before(args.freeze), args.freeze)
    images, labels, sources = [], [], []
    for path in args.data:
        im, lb, sr = load_lines(path)
        images, labels, sources = images + im, labels + lb, sources + sr
    left_out = {s for s in args.leave_out.split(",") if s}
    if left_out - set(sources):
        ap.error(f"--leave-out: no lines from {sorted(left_out - set(sources))}")
    keep = [i for i, s in enumerate(sources) if s not in left_out]
    images, labels, sources = [images[i] for i in keep], [labels[i] for i in keep], [sources[i] for i in keep]
    counts = {s: sources.count(s) for s in sorted(set(sources))}
    log.info("lines %d: %s", len(images), counts)
    bad = [lab for lab in labels if not lab or any(c not in ALPHABET for c in lab)]
    assert not bad, bad[:5]

    named = [(n, p) for n, p in net.named_parameters() if "onnx_initializer" in n]
    head = [p for _, p in named if p.shape[-1] == rec.n_rows]
    assert len(head) == 2, [tuple(p.shape) for p in head]
    head_ids = {id(p) for p in head}
    body = [p for p in net.parameters() if id(p) not in head_ids and p.requires_grad]
    decay = [p for p in body if p.ndim >= 2]
    no_decay = [p for p in body if p.ndim < 2]
    opt = torch.optim.AdamW([
        {"params": decay, "lr": args.lr, "weight_decay": 1e-4},
        {"params": no_decay, "lr": args.lr, "weight_decay": 0.0},
        {"params": head, "lr": args.head_lr, "weight_decay": 0.0},
    ])
    base = [g["lr"] for g in opt.param_groups]
    warm = max(1, args.steps // 20)
    # L2-SP: the stock weights (the head excepted: it was cut to plates) are the prior
    anchors = [(p, p.detach().clone()) for p in body] if args.l2sp > 0 else []

    teacher = None
    if args.teacher is not None:
        import onnxruntime as ort

        topts = ort.SessionOptions()
        topts.intra_op_num_threads = args.threads
        teacher = ort.InferenceSession(str(args.teacher), topts, providers=["CPUExecutionProvider"])
        log.info("teacher %s, KL weight %.2f", args.teacher, args.distill)

    net.train()
    t0 = time.monotonic()
    run_loss, run_ok, run_n, run_steps = 0.0, 0, 0, 0
    stream = Stream(images, labels, sources, args.batch, args.seed, args.width_scale, args.stretch, args.dim,
                    args.italic, args.small_jpeg, args.grey, args.low_res, args.smear)
    neutral = {s for s in args.o_neutral.split(",") if s}
    unknown = neutral - set(sources)
    if unknown:
        ap.error(f"--o-neutral: no lines from {sorted(unknown)}")
    zero, oh = ALPHABET.index("0") + 1, ALPHABET.index("O") + 1
    for step, (x, labs, srcs) in enumerate(stream, 1):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))
        f = step / warm if step <= warm else cosine
        for g, b in zip(opt.param_groups, base, strict=True):
            g["lr"] = b * max(f, 0.02)
        logits = net(torch.from_numpy(x))  # N, T, 37
        logp37 = log_probs(logits)
        logp = logp37.permute(1, 0, 2)
        if neutral and any(s in neutral for s in srcs):
            # The US labels write 0 for every round glyph (the plates' O and 0 are often one
            # glyph): for those lines O and 0 count as one class, so only EU/BR lines, whose
            # labels keep the letter, teach the difference.
            mask = torch.tensor([s in neutral for s in srcs])
            merged = logp.clone()
            merged[:, :, zero] = torch.logaddexp(logp[:, :, zero], logp[:, :, oh])
            logp = torch.where(mask[None, :, None], merged, logp)
            labs = [lab.replace("O", "0") if s in neutral else lab for lab, s in zip(labs, srcs, strict=True)]
        targets = torch.tensor([ALPHABET.index(c) + 1 for lab in labs for c in lab], dtype=torch.long)
        lengths = torch.tensor([len(lab) for lab in labs], dtype=torch.long)
        in_len = torch.full((len(labs),), logp.shape[0], dtype=torch.long)
        loss = F.ctc_loss(logp, targets, in_len, lengths, blank=0, zero_infinity=True)
        if anchors:
            loss = loss + args.l2sp * sum(((p - p0) ** 2).sum() for p, p0 in anchors)
        if teacher is not None:
            # The teacher's folded probabilities per step, the same steps as the student's: the
            # frames between characters and the runner-up classes carry what CTC labels do not.
            soft = torch.from_numpy(teacher.run(None, {teacher.get_inputs()[0].name: x})[0]).clamp_min(1e-8)
            if soft.shape != logp37.shape:
                raise SystemExit(f"--teacher: {tuple(soft.shape)}, the student {tuple(logp37.shape)}")
            kl = (soft * (soft.log() - logp37)).sum(-1).mean()
            loss = loss + args.distill * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        run_loss += float(loss.detach())
        pred = logp37.detach().numpy()
        run_ok += sum((greedy(p).replace("O", "0") if s in neutral else greedy(p)) == lab
                      for p, lab, s in zip(pred, labs, srcs, strict=True))
        run_n += len(labs)
        run_steps += 1
        if step % 20 == 0 or step == args.steps:
            elapsed = time.monotonic() - t0
            log.info("step %d/%d loss %.3f train-acc %.3f lr %.2e width %d %.1f s/step elapsed %.0f s",
                     step, args.steps, run_loss / run_steps, run_ok / max(1, run_n),
                     opt.param_groups[0]["lr"], x.shape[3], elapsed / step, elapsed)
            run_loss, run_ok, run_n, run_steps = 0.0, 0, 0, 0
        if step >= args.steps:
            break
    minutes = (time.monotonic() - t0) / 60
    log.info("trained %d steps in %.1f min", args.steps, minutes)

    out = args.runs / args.run / "plate_rec.onnx"
    net.eval()
    rec.export(out)
    # The export must compute what the torch model computes.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(0).uniform(-1, 1, (2, 3, HEIGHT, 192)).astype(np.float32)
    with torch.no_grad():
        ref = log_probs(net(torch.from_numpy(probe))).exp().numpy()
    diff = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: probe})[0] - ref).max())
    log.info("export %s: max |onnx - torch| = %.2e", out, diff)
    assert diff < 1e-3, diff
    trained_on = {
        "lines": counts,
        "left_out": sorted(left_out) or None,
        "data": "../shared/data/plates: eu, br, us photos (boxes jittered, cut by LineFinder), us-crops, "
        "br-crops, ro-detect plates where two models agree (ro-pseudo), and plates rendered by "
        "training/synth_plates.py (synth-*); only the sources listed under lines",
        "l2sp": args.l2sp or None,
        "steps": args.steps, "batch": args.batch, "seed": args.seed, "folded_head": args.fold,
        "height": args.height,
        "halve_width_at": args.halve_width_at or None,
        "teacher": str(args.teacher) if args.teacher else None,
        "o_neutral": sorted(neutral) or None,
        "minutes_2core_cpu": round(minutes, 1),
        "command": "training/prepare_rec_data.py && training/train_recognizer.py " + " ".join(sys.argv[1:]),
    }
    if args.init is not None and (init_contract := args.init.with_suffix(".json")).exists():
        # a continued run carries what its starting point was trained on (a soup's ingredients)
        trained_on["init"] = {"run": args.init.parent.name,
                              "trained_on": json.loads(init_contract.read_text()).get("trained_on")}
    extra = {
        "source": "PaddleOCR PP-OCRv6 small text recognizer (rapidocr==3.10.0 PP-OCRv6_rec_small.onnx), "
        + ("head cut to its blank, 0-9, A-Z, a-z and separator rows, folded to [blank, 0-9, A-Z] in "
           "the graph" if args.fold else "head cut to [blank, 0-9, A-Z]")
        + ", fine-tuned on plate lines by training/train_recognizer.py",
        "licence": "Apache-2.0 base weights (PaddleOCR); fine-tuned on AGPL-3.0 test data "
        "(openalpr/benchmarks eu, br, us photos and us crops; openalpr/train-detector br crops): "
        "whether that data's licence reaches the weights is a licence question to settle before "
        "redistribution"
        + "; synthetic plates are our own",
        "trained_on": trained_on,
    }
    summary = args.data[0].parent / "summary.json"
    row_margin = float(json.loads(summary.read_text()).get("row_margin", 0.0)) if summary.exists() else 0.0
    write_contract(out, extra, row_margin, args.width_scale)
    if args.install:
        install(out)


def use_sizes_of(contract: dict[str, Any]) -> None:
    """Size rows (HEIGHT, MIN_INPUT) as the model of this run contract was trained to read them."""
    global HEIGHT, MIN_INPUT
    HEIGHT = int(contract.get("input", {}).get("height", 48))
    MIN_INPUT = int(contract.get("input", {}).get("min_width", 0))


def install(onnx_path: Path) -> None:
    """Copy a run's model into models/ and rewrite its contract there (SHA-256 of the copy)."""
    run_contract = json.loads(onnx_path.with_suffix(".json").read_text())
    use_sizes_of(run_contract)
    extra = {k: run_contract[k] for k in ("source", "licence", "trained_on") if k in run_contract}
    shutil.copyfile(onnx_path, MODELS / "plate_rec.onnx")
    row_margin = float(run_contract.get("input", {}).get("row_margin", 0.0))
    width_scale = float(run_contract.get("input", {}).get("width_scale", 1.0))
    contract = write_contract(MODELS / "plate_rec.onnx", extra, row_margin, width_scale)
    print(f"installed models/plate_rec.onnx sha256 {contract['sha256']}")


if __name__ == "__main__":
    main()
