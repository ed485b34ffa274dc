"""Shared helpers for the training scripts: ONNX -> PyTorch conversion, data manifest, logging.

Training needs the `train` extra (torch, onnx, onnx2torch without deps); the daemon never imports
this package.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "plates"
MODELS = REPO / "models"
LOGS = Path(__file__).resolve().parent / "logs"
BASE = REPO / ".cache" / "base"
"""Base models unpacked from PyPI wheels (training/README.md, "Base models"); git ignores .cache/."""
STOCK_REC = BASE / "PP-OCRv6_rec_small.onnx"
STOCK_REC_V4 = BASE / "ch_PP-OCRv4_rec_infer.onnx"

log = logging.getLogger("training")


# --- ONNX -> torch ---------------------------------------------------------------------------


def _stub_torchvision() -> None:
    """onnx2torch imports torchvision at import time for its NMS / RoiAlign converters only.

    Our models use neither, and torchvision would pull a second large wheel, so a stub module
    that fails loudly if those converters are ever used stands in for it.
    """
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass

    def _missing(*_a: object, **_k: object) -> None:
        raise RuntimeError("torchvision is not installed; this model needs NMS/RoiAlign converters")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = _missing  # type: ignore[attr-defined]
    ops.roi_align = _missing  # type: ignore[attr-defined]
    ops.box_convert = _missing  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops


def rewrite_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a Paddle-exported ONNX graph digestible by onnx2torch.

    - `Constant` nodes become initializers (onnx2torch would turn them into modules whose values
      some converters, e.g. Resize scales and Clip bounds, cannot read as constants).
    - Stride-1 convolutions with `auto_pad=SAME_UPPER/SAME_LOWER` get explicit `pads`
      (onnx2torch only supports NOTSET/VALID).
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            arr = numpy_helper.to_array(node.attribute[0].t)
            g.initializer.append(numpy_helper.from_array(arr, name=node.output[0]))
            continue
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)

    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        attrs = {a.name: a for a in node.attribute}
        ap = attrs.get("auto_pad")
        if ap is None or ap.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
        if any(s != 1 for s in strides):
            raise ValueError(f"{node.name}: SAME padding with stride {strides} needs shapes; unsupported")
        if "kernel_shape" in attrs:
            kernel = list(attrs["kernel_shape"].ints)
        else:
            kernel = list(inits[node.input[1]].dims[2:])
        dil = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(kernel)
        total = [(k - 1) * d for k, d in zip(kernel, dil, strict=True)]
        # SAME_UPPER puts the odd extra pixel at the end, SAME_LOWER at the beginning.
        begin = [t // 2 for t in total] if ap.s == b"SAME_UPPER" else [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin, strict=True)]
        new_attrs = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        new_attrs.append(helper.make_attribute("pads", begin + end))
        del node.attribute[:]
        node.attribute.extend(new_attrs)
    onnx.checker.check_model(model)
    return model


def prune_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the nodes no graph output depends on, and the initializers no kept node reads
    (after graph surgery cut a branch off)."""
    g = model.graph
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(n.input)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    for init in [i for i in g.initializer if i.name not in live]:
        g.initializer.remove(init)
    return model


def onnx_to_torch(path: Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """Convert an ONNX file to a trainable torch module.

    Returns the module and a map from each of its parameters / buffers to the ONNX initializer
    it came from, so trained values can be written back into the original graph (export_weights).
    """
    import onnx

    _stub_torchvision()
    from onnx2torch import convert

    model = rewrite_onnx(onnx.load(str(path)))
    net = convert(model, attach_onnx_mapping=True)
    names = _initializer_names(net, model)
    promote_buffers(net, names)
    return net, names


_POSITIONAL = {
    "Conv2d": ("", "weight", "bias"),
    "ConvTranspose2d": ("", "weight", "bias"),
    "BatchNorm2d": ("", "weight", "bias", "running_mean", "running_var"),
}


def _initializer_names(net: torch.nn.Module, model: onnx.ModelProto) -> dict[str, str]:
    # onnx2torch's mapping lists a Conv's data input only; its weight and bias names are read
    # from the ONNX node that produced the module's output.
    producer = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, str] = {}
    mods = dict(net.named_modules())
    for node in net.graph.nodes:
        if node.op != "call_module":
            continue
        mod = mods[node.target]
        mapping = getattr(mod, "onnx_mapping", None)
        if mapping is None:
            continue
        inputs = list(mapping.inputs)
        onnx_node = producer.get(mapping.outputs[0]) if mapping.outputs else None
        if onnx_node is not None:
            inputs = list(onnx_node.input)
        slots = _POSITIONAL.get(type(mod).__name__)
        if slots is not None:
            for slot, value in zip(slots, inputs, strict=False):
                if slot and getattr(mod, slot, None) is not None:
                    out[f"{node.target}.{slot}"] = value
        for arg, value in zip(node.args, inputs, strict=False):
            if getattr(arg, "op", None) == "get_attr":
                out.setdefault(arg.target, value)
    return out


def is_learnable_constant(onnx_name: str) -> bool:
    """Paddle exports name real weights after their layer (`mobile_one_block_0.w_0`); numbers the
    exporter made up (Clip bounds, Resize scales, hard-swish 3 and 6) are `p2o.helper.constant.N`."""
    return not onnx_name.startswith("p2o.")


def promote_buffers(net: torch.nn.Module, names: dict[str, str]) -> int:
    """onnx2torch keeps the operands of MatMul/Add/Mul (learnable scales, biases) as buffers,
    which never train. Turn the ones that are real weights into Parameters; fixed constants stay."""
    import torch

    n = 0
    for mname, mod in net.named_modules():
        for name, buf in list(mod._buffers.items()):
            full = f"{mname}.{name}" if mname else name
            if buf is None or not torch.is_floating_point(buf) or full not in names:
                continue
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                continue
            if not is_learnable_constant(names[full]):
                continue
            del mod._buffers[name]
            mod.register_parameter(name, torch.nn.Parameter(buf.clone()))
            n += 1
    return n


def export_weights(net: torch.nn.Module, names: dict[str, str], base: onnx.ModelProto,
                   prefix: str = "") -> onnx.ModelProto:
    """Write the module's trained tensors back into the (rewritten) original ONNX graph.

    The exported graph is the original one, op for op, so its size and speed stay those of the
    base model and nothing depends on the torch exporter's tracing of dynamic shapes.
    """
    from onnx import numpy_helper

    state = {k[len(prefix):]: v for k, v in net.state_dict().items() if k.startswith(prefix)}
    by_name = {i.name: i for i in base.graph.initializer}
    written = 0
    for tname, oname in names.items():
        if tname not in state or oname not in by_name:
            continue
        old = by_name[oname]
        arr = state[tname].detach().cpu().numpy().astype(numpy_helper.to_array(old).dtype)
        arr = arr.reshape(numpy_helper.to_array(old).shape)
        old.CopyFrom(numpy_helper.from_array(arr, name=oname))
        written += 1
    if written == 0:
        raise RuntimeError("no weights written back; the name map does not match the graph")
    return base


# --- data manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    path: Path
    boxes: tuple[tuple[int, int, int, int], ...]  # x, y, w, h
    folder: str


def publish_checked(tmp: Path, out: Path, net: torch.nn.Module, x: torch.Tensor,
                    contract: dict[str, object]) -> tuple[dict[str, object], float]:
    """Move an exported detector graph `tmp` to `out` once it reproduces sigmoid(net(x)), and write
    its contract beside it (file name and SHA-256 filled in). Returns the contract and the largest
    difference; raises RuntimeError (and leaves `out` alone) above 1e-3."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        want = torch.sigmoid(net(x)).numpy()
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    err = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - want).max())
    if err > 1e-3:
        raise RuntimeError(f"exported ONNX differs from torch by {err}")
    tmp.replace(out)
    contract = dict(contract, file=out.name, sha256=sha256_file(out))
    out.with_suffix(".json").write_text(json.dumps(contract, indent=2) + "\n")
    return contract, err


def hash_split(name: str) -> str:
    """Deterministic 50/50 train/dev split by file name (stable across machines and Python runs)."""
    return "train" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "dev"


def load_boxes(folder: str, data: Path = DATA) -> list[Sample]:
    """All labelled photos of a folder, one Sample per file (rows of the same file merged), file order."""
    rows: dict[str, list[tuple[int, int, int, int]]] = {}
    with open(data / folder / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            box = (int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))
            rows.setdefault(r["file"], []).append(box)
    return [Sample(data / folder / k, tuple(v), folder) for k, v in sorted(rows.items())]


# ro-detect holds one day ride (dusk towards its end) followed by the first half of a night ride
# (data README). Their boundary was found by looking at the frames: ro0209 is a black frame and
# from ro0210 on it is night. Frames are in time order within each ride.
RO_NIGHT_START = "ro0210.jpg"


def ro_detect_rides(data: Path = DATA) -> list[list[Sample]]:
    """ro-detect frames grouped into their two rides, each in file (= time) order."""
    samples = load_boxes("ro-detect", data)
    day = [s for s in samples if s.path.name < RO_NIGHT_START]
    night = [s for s in samples if s.path.name >= RO_NIGHT_START]
    return [day, night]


def ro_detect_split(data: Path = DATA, held_out: float = 0.2) -> tuple[list[Sample], list[Sample]]:
    """(train, dev): the last `held_out` fraction of each ride, in file order, is dev.

    Neighbouring dash-cam frames are near-duplicates, so a random split would leak.
    """
    train: list[Sample] = []
    dev: list[Sample] = []
    for ride in ro_detect_rides(data):
        cut = round(len(ride) * (1 - held_out))
        train += ride[:cut]
        dev += ride[cut:]
    return train, dev


def photo_split(folder: str, data: Path = DATA) -> tuple[list[Sample], list[Sample]]:
    samples = load_boxes(folder, data)
    train = [s for s in samples if hash_split(s.path.name) == "train"]
    dev = [s for s in samples if hash_split(s.path.name) == "dev"]
    return train, dev


def dev_sets(data: Path = DATA) -> dict[str, list[Sample]]:
    """The evaluation sets, never trained on: US photos (all), ro-detect tail, eu/br dev halves."""
    return {
        "us": load_boxes("us", data),
        "ro-detect-dev": ro_detect_split(data)[1],
        "eu-dev": photo_split("eu", data)[1],
        "br-dev": photo_split("br", data)[1],
    }


# --- misc ------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(step: int, steps: int, peak: float) -> float:
    """Learning rate at `step` of `steps`: linear warm-up over the first 5%, then a cosine down to
    2% of `peak` (the detectors' schedule)."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def setup_logging(run: str, append: bool = False) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / f"{run}.log"
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in (logging.FileHandler(path, mode="a" if append else "w"), logging.StreamHandler(sys.stdout)):
        h.setFormatter(fmt)
        root.addHandler(h)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Timer:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0

    def past(self, max_minutes: float, step: int, steps: int) -> bool:
        """True once `--max-minutes` (0: no limit) is spent; logs where the run stops."""
        if not max_minutes or self() <= 60 * max_minutes:
            return False
        log.warning("stopping at step %d of %d: --max-minutes %.1f reached", step, steps, max_minutes)
        return True
