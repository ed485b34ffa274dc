"""Image decoding at the boundary: corrupt, empty, tiny and huge files become ImageError or a
bounded-size image, never a crash or a multi-gigabyte allocation."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from ..errors import ImageError
from ..types import Image

MAX_DECODE_PIXELS = 40_000_000
"""Default of `reader.max_pixels`: larger JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg does
that without the full-size pixels); other formats larger than this are refused unread, because
OpenCV decodes them at full size first (a 1.1 MB 20000 x 20000 PNG took 1.4 GB)."""

_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_EXIF_ORIENTATION = 0x0112


def _segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload offset, payload length) of a JPEG's header segments, up to the scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows, no more headers
            return
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        yield marker, i + 4, length - 2
        i += 2 + length


def _header(data: bytes) -> tuple[tuple[int, int] | None, int]:
    """((width, height) or None if unknown, EXIF orientation: 1 when absent) of a PNG or JPEG,
    from one walk over a JPEG's header segments."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return (int(w), int(h)), 1
    dims: tuple[int, int] | None = None
    orientation: int | None = None
    if data[:2] == b"\xff\xd8":
        for marker, at, length in _segments(data):
            if marker == 0xE1 and orientation is None and data[at : at + 6] == b"Exif\x00\x00":
                orientation = _exif_orientation(data[at + 6 : at + length])
            elif marker in _SOF and dims is None and length >= 5 and at + 5 <= len(data):
                h, w = struct.unpack(">HH", data[at + 1 : at + 5])
                dims = int(w), int(h)
            if dims is not None and orientation is not None:
                break
    return dims, 1 if orientation is None else orientation


def _other_dims(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a BMP, WebP or TIFF: the size is known before decoding."""
    if data[:2] == b"BM" and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            w, h = struct.unpack("<HH", data[18:22])
        else:
            w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return int(w) & 0x3FFF, int(h) & 0x3FFF
        if kind == b"VP8L":
            (bits,) = struct.unpack("<I", data[21:25])
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        return None
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    size: dict[int, int] = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            break
        tag, kind_ = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            short = kind_ == 3
            size[tag] = int(struct.unpack(order + ("H" if short else "I"), entry[8 : 10 if short else 12])[0])
    return (size[256], size[257]) if len(size) == 2 else None


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag of an Exif block's first IFD (1, upright, when absent or unreadable)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == _EXIF_ORIENTATION and kind == 3:  # SHORT
            return int(struct.unpack(order + "H", entry[8:10])[0])
    return 1


def _decode_jpeg(data: bytes) -> Image | None:
    """Decode with libjpeg-turbo through simplejpeg; None where OpenCV must decide.

    The pixels are the same as OpenCV's (both are libjpeg-turbo with the same settings: identical
    on all 1900 JPEGs of ../shared/data), and a file is read and decoded ~9% faster (a 1280 x 1280
    photo 11.6 -> 10.7 ms, interleaved; BENCHMARKS.md). Whatever it does not do exactly as OpenCV
    would (an EXIF-rotated photo, CMYK or 12-bit JPEG, a damaged file) goes to OpenCV, so
    behaviour is unchanged.
    """
    try:
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
    except (ValueError, RuntimeError):
        return None
    return np.asarray(img, dtype=np.uint8)


def decode_image(
    data: bytes, name: str = "image", max_pixels: int = MAX_DECODE_PIXELS
) -> tuple[Image, float]:
    """Decode encoded image bytes to BGR; returns (image, scale of the decoded image vs the file).

    At most `max_pixels` (`reader.max_pixels`) are decoded; an image whose size its header does not
    tell, or that cannot be decoded that small, is refused before any pixel is allocated.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    scale = 1.0
    flags = cv2.IMREAD_COLOR
    dims, orientation = _header(data)
    if dims is None:
        dims = _other_dims(data)
        if dims is None:
            raise ImageError(
                f"{name}: not a readable image (no JPEG, PNG, BMP, WebP or TIFF header telling its size)"
            )
    pixels = dims[0] * dims[1]
    if pixels > max_pixels:
        if data[:2] != b"\xff\xd8" or pixels / 64 > max_pixels:
            raise ImageError(
                f"{name}: {dims[0]} x {dims[1]} pixels is more than reader.max_pixels ({max_pixels}); "
                "refused unread (downscale it, or raise reader.max_pixels)"
            )
        for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (8, cv2.IMREAD_REDUCED_COLOR_8)):
            flags, scale = flag, 1.0 / factor
            if pixels / factor**2 <= max_pixels:
                break
    elif (data[:2] == b"\xff\xd8" and orientation in (0, 1)
          and (fast := _decode_jpeg(data)) is not None):
        return fast, scale
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise ImageError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8), scale


def read_image(path: str | Path, max_pixels: int = MAX_DECODE_PIXELS) -> tuple[Image, float]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read file ({e.strerror})") from None
    return decode_image(data, str(p), max_pixels)


def encode_jpeg(image: Image, quality: int = 85) -> bytes:
    """JPEG bytes of a BGR image (b"" if OpenCV cannot encode it: evidence goes out without it)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(buf.tobytes()) if ok else b""
