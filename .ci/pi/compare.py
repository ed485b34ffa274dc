"""Compare `alprd read` JSON lines from an emulated Pi CPU with the native x86 read of the same photos.

usage: compare.py LABEL NATIVE.jsonl EMULATED.jsonl [LABELS_ROOT]

The same plates in the same order with the same text are required, boxes within 4 pixels. Confidences
are reported, not judged: x86 (AVX2/FMA) and arm64 (NEON) kernels round differently, and on a weak
character that moves its probability by more than a few points (measured: 0.61 vs 0.76 on one US
photo, same text). Exit 0 on agreement, 1 otherwise.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

BOX_TOL = 4


def load(path: str) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out[Path(str(d["file"])).parent.name + "/" + Path(str(d["file"])).name] = d
    return out


def labels(root: Path | None, key: str) -> str:
    if root is None:
        return ""
    region, name = key.split("/", 1)
    try:
        with (root / region / "labels.csv").open() as f:
            return next((r["plate"] for r in csv.DictReader(f) if r["file"] == name), "")
    except OSError:
        return ""


def describe(d: dict[str, object]) -> str:
    if "error" in d:
        return f"error: {d['error']}"
    plates = d.get("plates") or []
    assert isinstance(plates, list)
    return " ".join(f"{p['text']}({p['confidence']:.2f})" for p in plates) or "(no plate)"


def main() -> int:
    label, native_path, emu_path = sys.argv[1:4]
    root = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    native, emu = load(native_path), load(emu_path)
    if not native:
        print(f"  {label}: no native reference reads in {native_path}")
        return 1
    ok = True
    for key, n in native.items():
        e = emu.get(key)
        truth = labels(root, key)
        head = f"  {label} {key}" + (f" [label {truth}]" if truth else "")
        if e is None:
            print(f"{head}: missing from the emulated output")
            ok = False
            continue
        problems = []
        notes = []
        np_, ep = n.get("plates") or [], e.get("plates") or []
        assert isinstance(np_, list) and isinstance(ep, list)
        if ("error" in n) != ("error" in e):
            problems.append("one side failed to read the file")
        if [p["text"] for p in np_] != [p["text"] for p in ep]:
            problems.append("different text")
        else:
            for a, b in zip(np_, ep, strict=True):
                delta = abs(a["confidence"] - b["confidence"])
                if delta >= 0.005:
                    notes.append(f"{a['text']} confidence differs by {delta:.3f}")
                if any(abs(x - y) > BOX_TOL for x, y in zip(a["box"], b["box"], strict=True)):
                    problems.append(f"{a['text']} box {a['box']} vs {b['box']}")
        verdict = "same text and boxes as native" if not problems else "DIFFERS: " + "; ".join(problems)
        if notes:
            verdict += " (" + "; ".join(notes) + ")"
        print(f"{head}: native {describe(n)} | emulated {describe(e)} -> {verdict}")
        ok = ok and not problems
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
