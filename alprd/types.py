"""Frozen dataclasses that flow between pipeline stages.

source.read() -> Frame -> detect -> [Detection] -> recognize -> [Read] -> track -> [Track]
-> hotlist.match -> Match | None -> publish / store / summary
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
"""An 8-bit BGR image, H x W x 3 (OpenCV's order)."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels: top-left corner and size."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return max(0, self.w) * max(0, self.h)

    def clamp(self, width: int, height: int) -> Box:
        """The part of this box inside a width x height image (possibly empty)."""
        x0 = min(max(self.x, 0), width)
        y0 = min(max(self.y, 0), height)
        x1 = min(max(self.x + self.w, 0), width)
        y1 = min(max(self.y + self.h, 0), height)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def pad(self, fx: float, fy: float) -> Box:
        """Grow by a fraction of the width (each side) and of the height (each side)."""
        dx = round(self.w * fx)
        dy = round(self.h * fy)
        return Box(self.x - dx, self.y - dy, self.w + 2 * dx, self.h + 2 * dy)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. `ts` is wall-clock seconds, `mono` monotonic seconds at capture."""

    image: Image
    ts: float
    mono: float
    seq: int
    camera: str = "cam0"
    scene: str = ""
    """Set by sources whose frames are unrelated (a folder of photos): a new scene closes all tracks."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A plate found by the detector."""

    box: Box
    score: float


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Read:
    """The recognizer's reading of one detected plate.

    `chars` holds one confidence per character of `text`; `candidates` (best first, at most 10)
    always starts with `text` itself.
    """

    text: str
    confidence: float
    chars: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    box: Box
    detection_score: float
    region: str = ""
    grammar_ok: bool = False


@dataclass(frozen=True, slots=True)
class PhotoResult:
    """All reads of one image, best first."""

    reads: tuple[Read, ...]
    ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    detections: tuple[Detection, ...] = ()
