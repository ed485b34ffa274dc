"""Clips with known motion made from real photos: the camera's view of a labelled plate moving
towards it, away from it, across it, or standing still (tests of the track's geometry)."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from alprd.types import Box, Image

MOTIONS = ("approaching", "receding", "left", "right", "still")


def clip(photo: Image, plate: Box, motion: str, frames: int = 10, out: tuple[int, int] = (1280, 720)
         ) -> Iterator[Image]:
    """`frames` views of `photo`, each `out` pixels: a window that shrinks around the plate
    (approaching: the plate grows 1.8x, drifting a little sideways as a car does off the camera's
    axis), grows (receding), slides so that the plate crosses a third of the picture (left, right),
    or stays (still, with sensor noise)."""
    h, w = photo.shape[:2]
    cx, cy = plate.x + plate.w / 2, plate.y + plate.h / 2
    rng = np.random.default_rng(abs(hash((plate.x, plate.y, motion))) % 2**32)
    for k in range(frames):
        a = k / max(1, frames - 1)
        if motion in ("approaching", "receding"):
            s = a if motion == "approaching" else 1 - a
            zoom = 1.0 + 0.8 * s  # window = photo / zoom
            ww, wh = w / zoom, h / zoom
            x0 = cx - ww / 2 - 0.03 * ww * s
            y0 = cy - wh / 2
        elif motion in ("left", "right"):
            ww, wh = w * 0.7, h * 0.7
            s = 1 - a if motion == "left" else a  # the window moves right: the plate moves left
            x0 = cx - ww * (0.33 + 0.33 * s)
            y0 = cy - wh / 2
        else:
            ww, wh = w * 0.8, h * 0.8
            x0, y0 = cx - ww / 2, cy - wh / 2
        m = np.float32([[out[0] / ww, 0, -x0 * out[0] / ww], [0, out[1] / wh, -y0 * out[1] / wh]])
        # past the photo's edge the view is grey: the window may leave the photo, the plate never does
        view = cv2.warpAffine(photo, m, out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(110, 110, 110))
        noise = rng.integers(-2, 3, view.shape, dtype=np.int16)
        yield np.clip(view.astype(np.int16) + noise, 0, 255).astype(np.uint8)
