"""Bad images are refused with a message; tiny and huge images decode to something bounded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alprd.errors import ImageError
from alprd.imageio import MAX_DECODE_PIXELS, decode_image, read_image


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
