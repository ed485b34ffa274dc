"""Image decoding at the boundary: corrupt, empty, tiny and huge files become ImageError or a
bounded-size image, never a crash or a multi-gigabyte allocation."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .types import Image

MAX_DECODE_PIXELS = 40_000_000
"""Larger images are decoded at 1/2, 1/4 or 1/8 scale (JPEG does this cheaply)."""


def _dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    return None


def decode_image(data: bytes, name: str = "image") -> tuple[Image, float]:
    """Decode encoded image bytes to BGR; returns (image, scale of the decoded image vs the file)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    scale = 1.0
    flags = cv2.IMREAD_COLOR
    dims = _dimensions(data)
    if dims is not None and dims[0] * dims[1] > MAX_DECODE_PIXELS:
        for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (8, cv2.IMREAD_REDUCED_COLOR_8)):
            flags, scale = flag, 1.0 / factor
            if dims[0] * dims[1] / factor**2 <= MAX_DECODE_PIXELS:
                break
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise ImageError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8), scale


def read_image(path: str | Path) -> tuple[Image, float]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read file ({e.strerror})") from None
    return decode_image(data, str(p))
