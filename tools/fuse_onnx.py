"""Rewrite a PP-OCR (PPLCNetV3) ONNX graph into an equivalent one that runs faster on one CPU core.

Usage: python tools/fuse_onnx.py IN.onnx OUT.onnx [--contract OUT.json] [--check IMAGE ...]

paddle2onnx spells every hard-swish as four element-wise passes (Add 3, Clip 0..6, Mul, Div 6) and
every "learnable affine block" as a Mul and an Add by scalars. On a 640 x 384 frame those passes
over full-size feature maps took 55 of 125 ms of the detector (onnxruntime profile, one thread);
the convolutions themselves took 46. The rewrites below change no arithmetic beyond float rounding:

- Conv -> Mul(c) -> Add(c) with constant scalars or per-channel vectors: folded into the Conv's
  weight and bias;
- x -> Add(3) -> Clip(0, 6) -> Mul(x, .) -> Div(6): one HardSwish node (opset 14);
- HardSwish -> Mul(c) -> Add(c) -> 1x1 Conv without padding: folded into that Conv
  (conv(s*x + b) = conv'(x) with W' = s*W and B' = B + b * sum(W)); convolutions with padding are
  left alone, since their zero border would see the shifted values;
- HardSwish -> Mul(c) -> Add(c) before anything else (a padded depthwise convolution): one 1x1
  depthwise Conv with weight c and bias c per channel. Same arithmetic, but onnxruntime keeps a
  Conv in its blocked (NCHWc) layout, where a scalar Mul and Add each cost a layout change there
  and back: on the slim plate detector (1x3x480x640, one thread) 51.4 -> 44.7 ms.

`--check` runs both graphs on the given images (resized to 640 on the long side, as the detector
does) and fails when any output differs by more than 1e-3. `--contract` records the new SHA-256
and the rewrite in the model's contract file. Needs `onnx` (the `train` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

TARGET_OPSET = 14
"""HardSwish exists from opset 14."""


class Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model, self.g = model, model.graph
        self.inits = {i.name: i for i in self.g.initializer}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        c: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                c[i].append(n)
        for o in self.g.output:
            c[o.name].append(None)  # type: ignore[arg-type]  # a graph output is a consumer too
        return c

    def const(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def set_const(self, name: str, value: np.ndarray) -> None:
        new = numpy_helper.from_array(value.astype(np.float32), name)
        if name in self.inits:
            self.inits[name].CopyFrom(new)
        else:
            self.g.initializer.append(new)
            self.inits[name] = self.g.initializer[-1]

    def other_const(self, node: onnx.NodeProto, data: str) -> np.ndarray | None:
        """The constant operand of a binary node whose other operand is `data`."""
        if len(node.input) != 2 or data not in node.input:
            return None
        other = node.input[1] if node.input[0] == data else node.input[0]
        return self.const(other)

    def sole(self, name: str, op: str) -> onnx.NodeProto | None:
        nodes = self.consumers()[name]
        return nodes[0] if len(nodes) == 1 and nodes[0] is not None and nodes[0].op_type == op else None

    def remove(self, nodes: list[onnx.NodeProto]) -> None:
        for n in nodes:
            self.g.node.remove(n)

    def rename_input(self, old: str, new: str) -> None:
        for n in self.g.node:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new


def _is_scalar(v: np.ndarray | None, value: float) -> bool:
    return v is not None and v.size == 1 and float(v.reshape(-1)[0]) == value


def _per_channel(v: np.ndarray, channels: int) -> np.ndarray | None:
    """A scalar or a (C,) / (1, C, 1, 1)-shaped constant as a (C,) vector; None for anything else."""
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]), np.float32)
    if v.size == channels and (v.ndim == 1 or (v.ndim == 4 and v.shape[1] == channels)):
        return v.reshape(channels).astype(np.float32)
    return None


def fold_conv_affine(gr: Graph) -> int:
    done = 0
    for conv in [n for n in gr.g.node if n.op_type == "Conv"]:
        w = gr.const(conv.input[1])
        if w is None:
            continue
        c_out = w.shape[0]
        mul = gr.sole(conv.output[0], "Mul")
        if mul is None:
            continue
        s = gr.other_const(mul, conv.output[0])
        s = None if s is None else _per_channel(s, c_out)
        if s is None:
            continue
        add = gr.sole(mul.output[0], "Add")
        b = None if add is None else gr.other_const(add, mul.output[0])
        b = None if b is None else _per_channel(b, c_out)
        bias = gr.const(conv.input[2]) if len(conv.input) > 2 else np.zeros(c_out, np.float32)
        if bias is None:
            continue
        new_w = w * s.reshape(-1, 1, 1, 1)
        new_b = bias * s + (b if b is not None else 0.0)
        if _only_user(gr, conv.input[1], conv):
            w_name = conv.input[1]
            gr.set_const(w_name, new_w)
        else:
            w_name = _fresh(gr, conv.input[1], new_w)
        b_name = _fresh(gr, conv.name + "_fused_bias", new_b)
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        last = add if b is not None else mul
        assert last is not None
        out = last.output[0]
        gr.remove([mul] + ([add] if b is not None and add is not None else []))
        conv.output[0] = out
        done += 1
    return done


def _only_user(gr: Graph, name: str, node: onnx.NodeProto) -> bool:
    return all(n is node for n in gr.consumers()[name])


def _fresh(gr: Graph, base: str, value: np.ndarray) -> str:
    name, k = base, 0
    while name in gr.inits:
        k += 1
        name = f"{base}_{k}"
    gr.set_const(name, value)
    return name


def fuse_hardswish(gr: Graph) -> int:
    done = 0
    for add in [n for n in gr.g.node if n.op_type == "Add"]:
        if add not in gr.g.node:
            continue
        for x in add.input:
            if not _is_scalar(gr.other_const(add, x), 3.0):
                continue
            clip = gr.sole(add.output[0], "Clip")
            if clip is None or len(clip.input) != 3:
                continue
            if not (_is_scalar(gr.const(clip.input[1]), 0.0) and _is_scalar(gr.const(clip.input[2]), 6.0)):
                continue
            mul = gr.sole(clip.output[0], "Mul")
            if mul is None or set(mul.input) != {x, clip.output[0]}:
                continue
            div = gr.sole(mul.output[0], "Div")
            if div is None or div.input[0] != mul.output[0]:
                continue
            if not _is_scalar(gr.const(div.input[1]), 6.0):
                continue
            hs = helper.make_node("HardSwish", [x], [div.output[0]], name=div.name + "_hardswish")
            idx = list(gr.g.node).index(add)
            gr.remove([add, clip, mul, div])
            gr.g.node.insert(idx, hs)
            done += 1
            break
    return done


def fold_affine_into_pointwise(gr: Graph) -> int:
    done = 0
    for mul in [n for n in gr.g.node if n.op_type == "Mul"]:
        if mul not in gr.g.node:
            continue
        data = next((i for i in mul.input if gr.const(i) is None), None)
        if data is None:
            continue
        s = gr.other_const(mul, data)
        add = gr.sole(mul.output[0], "Add")
        b = None if add is None else gr.other_const(add, mul.output[0])
        conv = None if add is None else gr.sole(add.output[0], "Conv")
        if s is None or b is None or conv is None or s.size != 1 or b.size != 1:
            continue
        w = gr.const(conv.input[1])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if w is None or w.shape[2:] != (1, 1) or int(attrs.get("group", 1)) != 1:
            continue
        if any(attrs.get("pads", [0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            continue
        bias = gr.const(conv.input[2]) if len(conv.input) > 2 else np.zeros(w.shape[0], np.float32)
        if bias is None:
            continue
        sv, bv = float(s.reshape(-1)[0]), float(b.reshape(-1)[0])
        w_name = _fresh(gr, conv.input[1] + "_affine", w * sv)
        b_name = _fresh(gr, conv.input[1] + "_affine_bias", bias + bv * w.sum(axis=(1, 2, 3)))
        del conv.input[:]
        conv.input.extend([data, w_name, b_name])
        gr.remove([mul, add])  # type: ignore[list-item]
        done += 1
    return done


def affine_to_depthwise(gr: Graph) -> int:
    """Scalar Mul -> Add after a Conv -> HardSwish as a 1x1 depthwise Conv (channels from that Conv)."""
    producer = {o: n for n in gr.g.node for o in n.output}
    done = 0
    for mul in [n for n in gr.g.node if n.op_type == "Mul"]:
        data = next((i for i in mul.input if gr.const(i) is None), None)
        hs = producer.get(data) if data is not None else None
        conv = producer.get(hs.input[0]) if hs is not None and hs.op_type == "HardSwish" else None
        w = gr.const(conv.input[1]) if conv is not None and conv.op_type == "Conv" else None
        if data is None or w is None:
            continue
        s = gr.other_const(mul, data)
        add = gr.sole(mul.output[0], "Add")
        b = None if add is None else gr.other_const(add, mul.output[0])
        if s is None or b is None or add is None or s.size != 1 or b.size != 1:
            continue
        c = int(w.shape[0])
        scale, shift = float(s.reshape(-1)[0]), float(b.reshape(-1)[0])
        w_name = _fresh(gr, mul.name + "_dw_weight", np.full((c, 1, 1, 1), scale, np.float32))
        b_name = _fresh(gr, mul.name + "_dw_bias", np.full(c, shift, np.float32))
        dw = helper.make_node("Conv", [data, w_name, b_name], [add.output[0]], name=mul.name + "_affine",
                              group=c, kernel_shape=[1, 1])
        idx = list(gr.g.node).index(mul)
        gr.remove([mul, add])
        gr.g.node.insert(idx, dw)
        done += 1
    return done


def drop_unused(gr: Graph) -> None:
    used = {i for n in gr.g.node for i in n.input}
    for init in list(gr.g.initializer):
        if init.name not in used:
            gr.g.initializer.remove(init)


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Some exports hold their constants in `Constant` nodes; the rewrites look for initializers."""
    g, keep, moved = model.graph, [], 0
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            g.initializer.append(numpy_helper.from_array(value, node.output[0]))
            moved += 1
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    return moved


def fuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    if model.opset_import[0].version < TARGET_OPSET:
        model = version_converter.convert_version(model, TARGET_OPSET)
    moved = constants_to_initializers(model)
    gr = Graph(model)
    counts = {
        "constants": moved,
        "conv_affine": fold_conv_affine(gr),
        "hardswish": fuse_hardswish(gr),
        "affine_into_pointwise": fold_affine_into_pointwise(gr),
        "affine_to_depthwise": affine_to_depthwise(gr),
    }
    drop_unused(gr)
    onnx.checker.check_model(model)
    return model, counts


def check(before: Path, after: Path, images: list[Path]) -> float:
    """Largest absolute output difference over the images; prints the time of each graph."""
    import cv2
    import onnxruntime as ort

    def session(p: Path) -> ort.InferenceSession:
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        return ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])

    s0, s1 = session(before), session(after)
    shape = s0.get_inputs()[0].shape
    worst = 0.0
    times: dict[str, list[float]] = {"before": [], "after": []}
    for path in images:
        img = cv2.imread(str(path))
        if img is None:
            raise SystemExit(f"cannot read {path}")
        if isinstance(shape[2], int) and shape[2] > 0:  # fixed height: a recogniser
            h = shape[2]
            w = max(16, round(img.shape[1] * h / img.shape[0]))
            img = cv2.resize(img, (w, h))
        else:
            f = 640 / max(img.shape[:2])
            img = cv2.resize(img, (round(img.shape[1] * f) // 32 * 32, round(img.shape[0] * f) // 32 * 32))
        x = ((img.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
        outs = []
        for key, s in (("before", s0), ("after", s1)):
            feed = {s.get_inputs()[0].name: x}
            s.run(None, feed)
            t = time.perf_counter()
            outs.append(s.run(None, feed)[0])
            times[key].append((time.perf_counter() - t) * 1000)
        worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
    print(f"ms median, one thread: before {np.median(times['before']):.1f}, "
          f"after {np.median(times['after']):.1f}")
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--contract", type=Path, help="contract JSON to update (sha256, optimised)")
    ap.add_argument("--check", type=Path, nargs="*", default=[], metavar="IMAGE")
    args = ap.parse_args()
    model, counts = fuse(onnx.load(str(args.src)))
    tmp = args.dst.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    print(f"{args.src.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.check:
        worst = check(args.src, tmp, args.check)
        print(f"largest output difference over {len(args.check)} images: {worst:.2e}")
        if worst > 1e-3:
            tmp.unlink()
            print("outputs differ: not written", file=sys.stderr)
            return 1
    tmp.replace(args.dst)
    if args.contract:
        c = json.loads(args.contract.read_text(encoding="utf-8"))
        c["sha256"] = hashlib.sha256(args.dst.read_bytes()).hexdigest()
        c["optimised"] = ("tools/fuse_onnx.py: exact graph rewrites (conv+affine folds, HardSwish, opset "
                          f"{TARGET_OPSET}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        args.contract.write_text(json.dumps(c, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
