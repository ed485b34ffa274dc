"""Motion gating: a static scene costs a downscaled frame difference, not a plate-detector run.

A frame is worth reading when enough of the (ROI) picture changed against a slowly updated background,
and for `hold_frames` frames after that (the vehicle leaving). A new scene (a folder of photos)
always counts as motion.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from .config import MotionConfig
from .types import Box, Frame

_WORK_WIDTH = 320  # difference image width: enough for a car, ~0.3 ms per 1080p frame


class MotionGate:
    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._background: npt.NDArray[np.float32] | None = None
        self._scene: str | None = None
        self._shape: tuple[int, ...] | None = None
        self._hold = 0
        self.last_fraction = 0.0

    def roi_box(self, width: int, height: int) -> Box:
        if self.cfg.roi is None:
            return Box(0, 0, width, height)
        x, y, w, h = self.cfg.roi
        return Box(x, y, w, h).clamp(width, height)

    def wants(self, frame: Frame) -> bool:
        """True if this frame should go to the plate reader."""
        if not self.cfg.enabled:
            return True
        image = frame.image
        h, w = image.shape[:2]
        roi = self.roi_box(w, h)
        if roi.area == 0:
            return False
        crop = image[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w]
        scale = min(1.0, _WORK_WIDTH / max(1, crop.shape[1]))
        if scale < 1:
            small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            crop = np.asarray(small, dtype=np.uint8)
        grey = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32)
        new_scene = frame.scene != self._scene or self._shape != grey.shape
        self._scene = frame.scene
        if new_scene or self._background is None:
            self._background = grey
            self._shape = grey.shape
            self._hold = self.cfg.hold_frames
            self.last_fraction = 1.0
            return True
        diff = cv2.absdiff(grey, self._background)
        fraction = float(np.count_nonzero(diff > self.cfg.threshold)) / diff.size
        self.last_fraction = fraction
        # a slow running average absorbs lighting drift and parked cars, not a passing vehicle
        cv2.accumulateWeighted(grey, self._background, 0.05)
        if fraction >= self.cfg.min_area and fraction > 0:
            self._hold = self.cfg.hold_frames
            return True
        if self._hold > 0:
            self._hold -= 1
            return True
        return False

    def inside(self, box: Box, width: int, height: int) -> bool:
        """True if the centre of a plate box lies in the ROI."""
        if self.cfg.roi is None:
            return True
        roi = self.roi_box(width, height)
        cx = box.x + box.w / 2
        cy = box.y + box.h / 2
        return roi.x <= cx < roi.x + roi.w and roi.y <= cy < roi.y + roi.h
