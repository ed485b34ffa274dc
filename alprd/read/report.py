"""The JSON a read plate is printed as: one object per plate in `alprd read`'s line per image (also
`alprd selftest --photo`). Boxes are in the coordinates of the file, before any decode-time scaling."""

from __future__ import annotations

from ..types import Box, Read


def plate_json(read: Read, scale: float = 1.0) -> dict[str, object]:
    b = read.box
    if scale != 1.0:
        b = Box(round(b.x / scale), round(b.y / scale), round(b.w / scale), round(b.h / scale))
    return {
        "text": read.text,
        "confidence": read.confidence,
        "box": b.as_list(),
        "chars": list(read.chars),
        "candidates": [{"text": c.text, "confidence": c.confidence} for c in read.candidates[:10]],
    }
