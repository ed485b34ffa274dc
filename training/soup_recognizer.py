"""Average the weights of recognizers fine-tuned from the same stock model (a uniform "model soup").

Runs of one recipe that differ in an augmentation (here `--stretch`) or a seed start from the
same stock weights and stay near them (L2-SP), so their weights can be averaged into one model
of the same size and speed. Averaged, such fine-tunes read data unlike their training data better
than each of them (Wortsman et al., 2022, "Model soups"). Leave-one-source-out, the soup of r30
and r33 read the camera no run saw (us-ucsd) 2 points better than either, the mean of the six
sources half a point better (BENCHMARKS.md "Recognizer").

Every ingredient must share the graph, the input contract, the left-out sources and its photo,
crop and pseudo lines (recipes may add rendered plates), so that the soup of runs trained
without a source still never saw it:

    $TRAIN_VENV/bin/python training/soup_recognizer.py --run s1-no-us r30-no-us r33-no-us

writes `.cache/rec-runs/s1-no-us/plate_rec.onnx` and its contract (`quantize_recognizer.py`
then makes its int8 twin, `--install-run` of train_recognizer.py installs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.train_recognizer import RUNS, use_sizes_of, write_contract  # noqa: E402

SAME_INPUT = ("height", "min_width", "max_width", "width_scale", "row_margin")


def check_alike(contracts: dict[str, dict[str, Any]]) -> None:
    """Refuse ingredients that read rows differently or left out different sources."""
    first_name, first = next(iter(contracts.items()))
    for name, c in contracts.items():
        for key in SAME_INPUT:
            if c["input"].get(key) != first["input"].get(key):
                raise SystemExit(f"{name}: input {key} {c['input'].get(key)} differs from {first_name}'s")
        lo, lo0 = c["trained_on"].get("left_out"), first["trained_on"].get("left_out")
        if lo != lo0:
            raise SystemExit(f"{name} left out {lo}, {first_name} {lo0}: a soup leaves out the same sources")
        if real_lines(c) != real_lines(first):
            raise SystemExit(f"{name} trained on other photo, crop or pseudo lines than {first_name}")


def real_lines(contract: dict[str, Any]) -> dict[str, int]:
    """A run's lines by source, rendered ones (`synth-*`) left out: recipes that add rendered
    plates (`loso.sh MORE_DATA`) may be souped together, runs that saw other real lines may not."""
    lines = contract["trained_on"].get("lines") or {}
    return {k: v for k, v in lines.items() if not k.startswith("synth-")}


def average(models: list[Any]) -> tuple[Any, int]:
    """The first model with each float tensor replaced by the mean over all; returns (model, count)."""
    from onnx import numpy_helper

    base = models[0]
    tensors = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in models]
    if any(t.keys() != tensors[0].keys() for t in tensors):
        raise SystemExit("the ingredients' graphs differ: not runs of the same stock model")
    if any([n.op_type for n in m.graph.node] != [n.op_type for n in base.graph.node] for m in models):
        raise SystemExit("the ingredients' graphs differ in their operators")
    averaged = 0
    for init in base.graph.initializer:
        arrays = [t[init.name] for t in tensors]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise SystemExit(f"tensor {init.name} has different shapes")
        if all(np.array_equal(a, arrays[0]) for a in arrays):
            continue  # frozen in training, or an integer constant of the graph
        if arrays[0].dtype.kind != "f":
            raise SystemExit(f"tensor {init.name} is not float but differs between the ingredients")
        mean = np.mean(np.stack(arrays), axis=0).astype(arrays[0].dtype)
        init.CopyFrom(numpy_helper.from_array(mean, init.name))
        averaged += 1
    return base, averaged


def portable(command: str) -> str:
    """A run's command with its data folder written as training/README.md names it ($WORK/recdata)."""
    return re.sub(r"\S*/recdata/", "$WORK/recdata/", command)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="name of the soup: written to RUNS/RUN/plate_rec.onnx")
    ap.add_argument("--runs", type=Path, default=RUNS, help="folder of the runs (default: .cache/rec-runs)")
    ap.add_argument("ingredients", nargs="+", help="two or more float runs of the same stock model")
    args = ap.parse_args()
    if len(args.ingredients) < 2:
        ap.error("a soup needs at least two runs")
    import onnx

    contracts = {r: json.loads((args.runs / r / "plate_rec.json").read_text()) for r in args.ingredients}
    check_alike(contracts)
    print(f"averaging {len(args.ingredients)} runs: {' '.join(args.ingredients)}", flush=True)
    model, count = average([onnx.load(str(args.runs / r / "plate_rec.onnx")) for r in args.ingredients])
    onnx.checker.check_model(model)
    out = args.runs / args.run / "plate_rec.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))

    first = contracts[args.ingredients[0]]
    use_sizes_of(first)
    trained_on = dict(first["trained_on"])
    trained_on.pop("command", None)
    lines: dict[str, int] = {}
    for c in contracts.values():  # each source's largest count: a recipe's MORE_DATA adds rendered lines
        for source, count in c["trained_on"]["lines"].items():
            lines[source] = max(lines.get(source, 0), count)
    trained_on["lines"] = dict(sorted(lines.items()))
    trained_on["soup"] = [{"run": r, "command": portable(c["trained_on"].get("command") or "")}
                          for r, c in contracts.items()]
    trained_on["minutes_2core_cpu"] = round(sum(c["trained_on"].get("minutes_2core_cpu", 0)
                                                for c in contracts.values()), 1)
    extra = {
        "source": first["source"] + f"; the weights of {len(contracts)} such runs averaged "
        "(a uniform model soup) by training/soup_recognizer.py",
        "licence": first["licence"],
        "trained_on": trained_on,
    }
    contract = write_contract(out, extra, float(first["input"].get("row_margin", 0.0)),
                              float(first["input"].get("width_scale", 1.0)))
    print(f"{count} tensors averaged; wrote {out} sha256 {contract['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
