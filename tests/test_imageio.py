"""Bad images are refused with a message; tiny and huge images decode to something bounded."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from alprd.errors import ImageError
from alprd.read.imageio import MAX_DECODE_PIXELS, decode_image, read_image


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(p)


def test_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 100)
    with pytest.raises(ImageError, match=r"not a readable image|cannot decode"):
        read_image(p)


def test_truncated_real_photo(data_dir: Path, tmp_path: Path) -> None:
    src = next(iter(sorted((data_dir / "us").glob("*.jpg"))))
    p = tmp_path / "truncated.jpg"
    p.write_bytes(src.read_bytes()[:200])
    with pytest.raises(ImageError):
        read_image(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read file"):
        read_image(tmp_path / "nope.jpg")


def test_one_pixel_and_grey_images() -> None:
    ok, png = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    assert ok
    img, scale = decode_image(png.tobytes())
    assert img.shape == (1, 1, 3) and scale == 1.0


def test_huge_jpeg_is_decoded_reduced(tmp_path: Path) -> None:
    # 20000 x 20000 = 400 Mpx: decoded at 1/4 scale (25 Mpx) instead of 1.2 GB of pixels.
    big = np.zeros((20000, 20000, 3), np.uint8)
    ok, jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 50])
    del big
    assert ok
    img, scale = decode_image(jpg.tobytes())
    assert img.shape[0] * img.shape[1] <= MAX_DECODE_PIXELS
    assert scale == pytest.approx(img.shape[1] / 20000)


def _exif_orientation_segment(value: int, order: str = "<") -> bytes:
    """An APP1 Exif segment whose IFD0 holds only the orientation tag."""
    mark = b"II" if order == "<" else b"MM"
    tiff = mark + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 1)
    tiff += struct.pack(order + "HHI", 0x0112, 3, 1) + struct.pack(order + "HH", value, 0)
    tiff += struct.pack(order + "I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def test_jpeg_pixels_match_opencv(data_dir: Path) -> None:
    # The fast JPEG path must give exactly the pixels OpenCV gives (models were measured on them).
    for folder in ("us", "eu", "br", "ro-detect"):
        for path in sorted((data_dir / folder).glob("*.jpg"))[:3]:
            data = path.read_bytes()
            img, scale = decode_image(data, path.name)
            ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert scale == 1.0 and img.shape == ref.shape and np.array_equal(img, ref), path


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_rotated_jpeg_decodes_as_opencv(orientation: int, order: str) -> None:
    # A phone photo taken sideways stores landscape pixels and an EXIF tag: it reads upright.
    rng = np.random.default_rng(orientation)
    ok, jpg = cv2.imencode(".jpg", rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    assert ok
    data = jpg.tobytes()
    data = data[:2] + _exif_orientation_segment(orientation, order) + data[2:]
    img, _ = decode_image(data)
    ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == ref.shape and np.array_equal(img, ref)
    assert img.shape[:2] == ((64, 40) if orientation in (6, 8) else (40, 64))


def test_grey_and_damaged_jpegs_decode_as_opencv(data_dir: Path) -> None:
    ok, grey = cv2.imencode(".jpg", np.tile(np.arange(64, dtype=np.uint8), (32, 1)))
    assert ok
    img, _ = decode_image(grey.tobytes())
    assert img.shape == (32, 64, 3)
    assert np.array_equal(img, cv2.imdecode(grey, cv2.IMREAD_COLOR))
    # Cut at two thirds: OpenCV refuses it, and so does the fast path (no half-grey photo).
    src = sorted((data_dir / "us").glob("*.jpg"))[0].read_bytes()
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        decode_image(src[: len(src) * 2 // 3], "cut.jpg")


def test_huge_png_is_refused_unread_with_a_message() -> None:
    """A 1.1 MB PNG of 20000 x 20000 decoded at full size took 1.4 GB: refused before decoding."""
    import resource

    ok, png = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))
    assert ok and len(png) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match=r"big\.png: 20000 x 20000 pixels is more than reader\.max_pixels"):
        decode_image(png.tobytes(), "big.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing decoded


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp", ".tif"])
def test_max_pixels_applies_to_every_format_that_tells_its_size(ext: str) -> None:
    ok, buf = cv2.imencode(ext, np.full((300, 400, 3), 7, np.uint8))
    assert ok
    img, scale = decode_image(buf.tobytes(), "x" + ext, max_pixels=120_000)
    assert img.shape == (300, 400, 3) and scale == 1.0
    with pytest.raises(ImageError, match=r"more than reader\.max_pixels"):
        decode_image(buf.tobytes(), "x" + ext, max_pixels=119_999)


def test_a_jpeg_over_the_cap_is_decoded_reduced_and_one_too_big_even_so_is_refused() -> None:
    ok, jpg = cv2.imencode(".jpg", np.zeros((400, 600, 3), np.uint8))
    assert ok
    img, scale = decode_image(jpg.tobytes(), max_pixels=100_000)
    assert img.shape == (200, 300, 3) and scale == 0.5
    with pytest.raises(ImageError, match=r"more than reader\.max_pixels"):
        decode_image(jpg.tobytes(), max_pixels=3000)  # 1/8 is still 3,750 pixels


def test_a_format_whose_size_is_unknown_is_refused() -> None:
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"P6\n20000 20000\n255\n" + b"\0" * 100, "x.ppm")
