"""Train a small plate detector from scratch, distilled from the shipped one (lent GPU).

The PP-OCR backbone behind `plate_det` spends most of a 640-px pass in its first, full-width
layers; this network (`Tiny`: stride-2 stem, four stages of depthwise + pointwise blocks, a
feature pyramid to stride 4) has a tenth of its parameters and is 2.6-3.8 times faster on one core
(`bench/bench_onnx.py`, untrained graphs). Nothing pretrained exists for it here, so it learns
from the same crops as `train_detector.py` (data pack, composites, augmentation) with two targets:
the labelled plate mask and the teacher's (`plate_det` g1) probability map, which also marks the
unlabelled plates in training photos and says how sure a plate-like region is.

Several students train at once on the same batches (the crops are the costly part):

    python3 training/train_tiny_detector.py --pack .gpu/pack-full.pkl \\
        --base .gpu/ch_PP-OCRv4_det_infer.onnx --teacher .gpu/detector-full-slim-g1.pt \\
        --device cuda --workers 14 --steps 4000 --out-dir .gpu/tiny

Each student is exported to DIR/NAME/plate_det.onnx + .json (output stride 4), its weights to
DIR/NAME.pt. Evaluate with training/eval_detector.py --models-dir DIR/NAME.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, publish_checked, seed_everything, setup_logging, warmup_cosine
from train_detector import (
    BASE_MODEL,
    MEAN,
    STD,
    Batches,
    Sampler,
    build_model,
    load_pack,
    loss_fn,
)

log = logging.getLogger("training.tiny")
STRIDE = 4


def cbr(i: int, o: int, k: int = 3, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o),
                         nn.ReLU(inplace=True))


class Block(nn.Module):
    """Depthwise k x k (stride s) then pointwise; residual where the shapes allow."""

    def __init__(self, i: int, o: int, s: int = 1, k: int = 3) -> None:
        super().__init__()
        self.dw = cbr(i, i, k, s, g=i)
        self.pw = nn.Sequential(nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o))
        self.res = s == 1 and i == o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return F.relu(x + y) if self.res else F.relu(y)


class Tiny(nn.Module):
    """Plate-probability logits at stride 4.

    `stem="patch"` reaches stride 4 in one 4 x 4 convolution of stride 4 instead of a 3 x 3
    stride-2 stem and a stride-2 block: the full-resolution layers were half of a 640-px pass
    (onnxruntime's convolution on 3 input channels is slow), and the map is at stride 4 anyway.
    `head="dw"` ends with depthwise + pointwise layers instead of a full 3 x 3 convolution, which
    alone was 15% of a pass at stride 4.
    """

    def __init__(self, c: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128), f: int = 48,
                 stem: str = "conv", head: str = "conv") -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = c
        if stem == "patch":
            self.stem = nn.Sequential(nn.Conv2d(3, c1, 4, 4, bias=False), nn.BatchNorm2d(c1),
                                      nn.ReLU(inplace=True))
            self.s4 = nn.Sequential(Block(c1, c2), Block(c2, c2))
        else:
            self.stem = cbr(3, c1, 3, 2)
            self.s4 = nn.Sequential(Block(c1, c2, 2), Block(c2, c2))
        self.s8 = nn.Sequential(Block(c2, c3, 2), Block(c3, c3), Block(c3, c3))
        self.s16 = nn.Sequential(Block(c3, c4, 2), Block(c4, c4, k=5), Block(c4, c4, k=5))
        self.s32 = nn.Sequential(Block(c4, c5, 2), Block(c5, c5, k=5))
        self.l4, self.l8, self.l16, self.l32 = (nn.Conv2d(ch, f, 1) for ch in (c2, c3, c4, c5))
        if head == "dw":
            self.head = nn.Sequential(cbr(f, f, 3, g=f), cbr(f, f // 2, 1), nn.Conv2d(f // 2, 1, 1))
        else:
            self.head = nn.Sequential(cbr(f, f // 2, 3), nn.Conv2d(f // 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.s4(self.stem(x))
        b = self.s8(a)
        c = self.s16(b)
        d = self.s32(c)
        p = self.l32(d)
        p = self.l16(c) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        p = self.l8(b) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        p = self.l4(a) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        return self.head(p)


STUDENTS: dict[str, dict[str, object]] = {
    "tiny": {"c": (16, 32, 64, 96, 128), "f": 48},
    "tiny-s": {"c": (16, 24, 48, 80, 112), "f": 32},
    "tiny-h": {"c": (8, 24, 48, 80, 112), "f": 32, "head": "dw"},
    "tiny-p": {"c": (24, 24, 48, 80, 112), "f": 24, "stem": "patch", "head": "dw"},
    "tiny-p16": {"c": (16, 16, 48, 80, 112), "f": 16, "stem": "patch", "head": "dw"},
    "tiny-p32": {"c": (32, 32, 48, 80, 112), "f": 32, "stem": "patch", "head": "dw"},
}


class WithSigmoid(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def export(net: nn.Module, out: Path, contract: dict[str, object]) -> None:
    net = net.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.onnx.export(WithSigmoid(net).eval(), (torch.randn(1, 3, 320, 480),), str(tmp), input_names=["x"],
                      output_names=["prob"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "prob": {2: "h4", 3: "w4"}})
    _, err = publish_checked(tmp, out, net, torch.randn(1, 3, 352, 640), contract)
    log.info("exported %s (%.2f MB, max |onnx - torch| %.1e)", out, out.stat().st_size / 1e6, err)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, required=True, help="data pack (train_detector.py --write-pack)")
    ap.add_argument("--teacher", type=Path, default=None, help="the slim detector's weights (.pt)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start each student from DIR/NAME.pt (a run to continue, e.g. on the CPU)")
    ap.add_argument("--base", type=Path, default=BASE_MODEL, help="the teacher's base graph")
    ap.add_argument("--students", default="tiny,tiny-s")
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the teacher's map in the loss")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop early after this many minutes")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--run", default="tiny-detector")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)

    setup_logging(args.run)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    log.info("run %s: %s", args.run, " ".join(sys.argv))
    photos, backgrounds, crops, counts = load_pack(args.pack, "full")
    log.info("data: %s", counts)
    sampler = Sampler(photos, backgrounds, crops, synth=0.25, composite=0.55, crop=args.crop,
                      sides=(480, 1120), seed=args.seed, holder=0.5)
    teacher = None
    if args.distill:
        if args.teacher is None:
            raise SystemExit("--distill needs --teacher")
        teacher, _ = build_model(args.base, "slim")
        teacher.load_state_dict(torch.load(args.teacher, map_location="cpu"))
        teacher.eval()
    names = args.students.split(",")
    students = {n: Tiny(**STUDENTS[n]) for n in names}  # type: ignore[arg-type]
    if args.init:
        for n, s in students.items():
            s.load_state_dict(torch.load(args.init / f"{n}.pt", map_location="cpu"))
    for n, s in students.items():
        log.info("student %s: %d parameters", n, sum(p.numel() for p in s.parameters()))
    batches = Batches(sampler, args.batch, args.seed, args.workers, 0, args.steps)  # fork before CUDA
    device = torch.device(args.device)
    if teacher is not None:
        teacher.to(device)
    opts = {}
    for n, s in students.items():
        s.to(device).train()
        opts[n] = torch.optim.AdamW(s.parameters(), lr=args.lr, weight_decay=1e-4)

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.steps, args.lr)

    timer = Timer()
    ema: dict[str, float] = {}
    done = args.steps
    for step in range(args.steps):
        if timer.past(args.max_minutes, step, args.steps):
            done = step
            break
        x, y = batches.get()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        y4 = F.avg_pool2d(y, STRIDE)
        soft = None
        if teacher is not None:
            with torch.no_grad():
                soft = F.avg_pool2d(torch.sigmoid(teacher(x)), STRIDE // 2)
        for n, s in students.items():
            for g in opts[n].param_groups:
                g["lr"] = lr_at(step)
            logits = s(x)
            loss = loss_fn(logits, y4)
            if soft is not None:
                loss = loss + args.distill * F.binary_cross_entropy_with_logits(logits, soft)
            opts[n].zero_grad(set_to_none=True)
            loss.backward()
            opts[n].step()
            v = float(loss.detach())
            ema[n] = v if n not in ema else 0.95 * ema[n] + 0.05 * v
        if (step + 1) % args.log_every == 0 or step == 0:
            el = timer()
            log.info("step %d/%d %s lr %.2e  %.3f s/step  elapsed %.1f min", step + 1, args.steps,
                     " ".join(f"{n} {ema[n]:.4f}" for n in names), lr_at(step), el / (step + 1), el / 60)
    batches.close()
    minutes = round(timer() / 60, 1)
    log.info("trained %d steps in %.1f min", done, minutes)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for n, s in students.items():
        s.cpu()
        torch.save(s.state_dict(), args.out_dir / f"{n}.pt")
        contract = {
            "name": "plate_det",
            "licence": "Apache-2.0 (architecture and training ours; the teacher is fine-tuned from "
                       "PP-OCRv4, see models/README.md)",
            "source": f"training/train_tiny_detector.py student {n}, distilled from plate_det g1",
            "trained_on": "as plate_det: ro-detect train part (MIT) + eu/br photo train halves and us-crops/"
                          "br-crops (AGPL-3.0) + rendered plates; never the US photos",
            "training": {"student": n, "arch": STUDENTS[n], "steps": args.steps, "stopped_at_step": done,
                         "batch": args.batch, "lr": args.lr, "distill": args.distill, "seed": args.seed,
                         "minutes": minutes, "log": f"training/logs/{args.run}.log",
                         "command": "training/train_tiny_detector.py " + " ".join(sys.argv[1:])},
            "input": {"size": 640, "sizes": [640, 960], "color": "BGR", "mean": list(MEAN), "std": list(STD),
                      "layout": "NCHW", "pad_multiple": 32},
            "output": {"kind": "plate_probability_map", "stride": STRIDE, "threshold": 0.5,
                       "min_score": 0.7, "candidate_score": 0.4, "refine_width": 128},
        }
        export(s, args.out_dir / n / "plate_det.onnx", contract)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
