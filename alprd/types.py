"""Frozen dataclasses that cross a stage: every type that more than one package sees is defined here.

source.read() -> Frame -> detect -> [Detection] -> recognize -> [Read] -> track -> [Track]
-> hotlist.match -> Match | None -> Hit | Pass (an Event) -> OutboxItem -> MQTT
and back: MQTT -> Command -> the command handlers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

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

    def intersection(self, other: Box) -> int:
        """The area the two boxes share."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        return ix * iy

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def share_inside(self, other: Box) -> float:
        """The share of this box's area that lies inside `other` (0 for an empty box)."""
        return self.intersection(other) / self.area if self.area else 0.0

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
    dropped: int = 0
    """Frames the source dropped just before this one (late or stale): the pipeline counts those
    that fell while a car was in view, the figure that says whether the device keeps up."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A plate found by the detector."""

    box: Box
    score: float


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    confidence: float


CONFIDENT = 0.5
"""Confidence from which a read that fits its region's grammar counts as read well (`Read.confident`)."""


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
    row_h: float = 0.0
    """Height in image pixels of the character row `text` was read from: how large its
    characters are, against other text in the frame."""
    rows: int = 1
    """Text rows `text` was read from: 2 for a two-row plate's rows joined (`read.tworow`)."""

    @property
    def confident(self) -> bool:
        """Read well: it fits the region's grammar with CONFIDENT. The reader looks no further at a
        frame with one such read; the daemon looks for its pass near where it should be next."""
        return self.grammar_ok and self.confidence >= CONFIDENT


@dataclass(frozen=True, slots=True)
class Looks:
    """Which looks the reader takes at one frame: the pipeline decides per camera and per pass.

    A photo gets every look (the defaults). A stream sees each car over many frames, so the costly
    looks are rationed there: the closer look runs where nothing reads well and no pass of the
    camera is open (`reader.closer_look`), and while one is, a frame is read near its plate (`near`)."""

    size: int | None = None
    """Long side fed to the first detectors (`sources[].detector_size`); None: `reader.detector_size`."""
    closer: bool = True
    """Whether the closer look (`reader.retry_size`) may run at this frame."""
    fallback: bool = True
    """Whether the accurate detector (`reader.fallback_model`) may read the whole frame again where
    the first reads no plate well (`reader.empty_fallback_every` rations it on an empty street)."""
    near: tuple[Box, ...] = ()
    """Where the camera's open passes expect their plates in this frame (image pixels): the near
    look reads around these first, and the whole frame only if it finds nothing there
    (`reader.full_read_every`). Empty: the whole frame."""
    whole: bool = False
    """With `near`: read the whole frame too, with the first detector, for plates beside the passes'
    (a car entering). Where the near look read its plates, the closer look stays off, and the
    accurate detector reads only where the first one missed those plates (it is blind there)."""


@dataclass(frozen=True, slots=True)
class PhotoResult:
    """All reads of one image, best first."""

    reads: tuple[Read, ...]
    ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    detections: tuple[Detection, ...] = ()


# --- after the reader: passes, matches, events ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    """One pass of one plate: the reads of several frames, voted into one text."""

    track_id: int
    text: str
    confidence: float
    chars: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    reads: int
    """How many reads the pass is made of."""
    agreeing_reads: int
    """How many of them read exactly `text`."""
    box: Box
    """The box of the best read (in `image`)."""
    first_ts: float
    last_ts: float
    camera: str
    region: str
    grammar_ok: bool
    image: Image | None
    """The frame of the best read (kept in RAM only, for hit evidence)."""
    direction: str | None
    """Movement in the picture: approaching, receding, left, right, or None when unsure."""


@dataclass(frozen=True, slots=True)
class Match:
    """A read that matched a hot-list entry."""

    kind: str
    """"exact", "lookalike" or "wildcard"."""
    reason: str
    priority: int
    list_version: int
    p_not_entry: float
    """Estimated probability that the car is *not* this entry (from per-character confidences)."""
    entry_plate: str
    read_plate: str
    substitutions: int
    state: str
    plate_type: str
    expires: datetime | None
    source: str
    case_number: str
    note: str
    list_id: str

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "priority": self.priority,
            "list_id": self.list_id,
            "list_version": self.list_version,
            "p_not_entry": self.p_not_entry,
            "entry_plate": self.entry_plate,
            "read_plate": self.read_plate,
            "substitutions": self.substitutions,
            "state": self.state,
            "plate_type": self.plate_type,
            "expires": None if self.expires is None else iso_z(self.expires),
            "source": self.source,
            "case_number": self.case_number,
            "note": self.note,
        }


def iso_z(dt: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as the hot list's manifest and the audit records write times."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Hit:
    """A pass that matched the hot list."""

    track: Track
    match: Match
    verified: bool
    hit_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    repeat: bool = False
    """The same camera reported this list entry before, more than `tracking.rehit_after_s` ago
    (closer than that, the pass is the same car and gives no second hit)."""


@dataclass(frozen=True, slots=True)
class Pass:
    """A closed pass that did not match: it only ever feeds the privacy-preserving summary."""

    track: Track
    noise: bool = False
    """Not a vehicle: its text fits no plate format of the region and is shorter than a plate
    (a badge, a sign fragment). Counted as `noise`, not as a pass."""


Event = Hit | Pass


# --- to and from the broker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting in an outbox until the broker (or, with app acks, the back office) has it."""

    msg_id: str
    """The outbox's handle for the row: what `ack` takes."""
    key: str
    """Its hit_id or summary_id (the durable outbox uses it as `msg_id` too); duplicates share it."""
    kind: str
    """`hit` or `summary`: the topic's last level."""
    payload: bytes
    topic: str = ""
    """What the durable outbox recorded as the topic (the daemon records the kind)."""
    created: float = 0.0
    """Wall-clock seconds when it was queued (durable rows)."""
    seq: int = 0
    """Queue position (durable rows; grows, never reused)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A message the back office sent, not yet parsed or verified (that is its handler's job)."""

    channel: str
    """The topic below the device's base, e.g. `hotlist/set`: how handlers are found and refusals counted."""
    payload: bytes
    error: str = ""
    """Set when the message was refused unread (too large): the payload is then empty."""
