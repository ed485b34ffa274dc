"""Every MQTT body the device publishes, one frozen dataclass per topic.

The field names are the JSON keys and `topic` is the level under `<prefix>/<device_id>/`, so this
module is the schema of every message (`json_schema(HitBody)` writes it out as JSON Schema), and
`Body.encode()` is the one place a body becomes bytes: compact, keys sorted. Fields listed in a
class's `omit_if_none` are left out while they are None; every other field is always present.

What arrives *from* the back office (acks, list keys, bundles) is parsed where it is verified:
`privacy.acks`, `privacy.listkey`, `privacy.hotlist.bundle`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from . import __version__
from .types import Hit

if TYPE_CHECKING:
    from .config import Config

Location = dict[str, float | str]
"""A position as `location.Locator` reports it: lat, lon, source, and heading/speed_mps when known."""


def _plain(value: object) -> object:
    if isinstance(value, Body):
        return value.as_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Body:
    """The JSON form of a payload dataclass."""

    topic: ClassVar[str] = ""
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self.omit_if_none:
                continue
            out[f.name] = _plain(value)
        return out

    def encode(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":"), sort_keys=True).encode()


# --- status (retained; the Last Will is its `offline` form) ------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StatusDetail(Body):
    """What the `online` status says beyond being online: the camera and the alarms."""

    camera: str
    """`ok`, or `lost` while any camera is (the `camera` alarm)."""
    alarms: tuple[str, ...]
    camera_error: str | None = None
    storage_error: str | None = None
    cameras: dict[str, str] | None = None
    """Each camera's own `ok` or `lost`: which one the `camera` alarm is about."""
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"camera_error", "storage_error", "cameras"})


@dataclass(frozen=True, kw_only=True)
class StatusBody(Body):
    topic: ClassVar[str] = "status"
    state: str
    """`online`, `offline` (the Last Will) or `stopped` (a clean exit)."""
    session: int
    device_id: str
    ts: float
    camera: str | None = None
    alarms: tuple[str, ...] | None = None
    camera_error: str | None = None
    storage_error: str | None = None
    cameras: dict[str, str] | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"camera", "alarms", "camera_error", "storage_error", "cameras"})

    @classmethod
    def of(
        cls, state: str, session: int, device_id: str, ts: float, detail: StatusDetail | None
    ) -> StatusBody:
        more = {} if detail is None else {f.name: getattr(detail, f.name) for f in dataclasses.fields(detail)}
        return cls(state=state, session=session, device_id=device_id, ts=round(ts, 3), **more)


# --- info (retained, under 512 bytes) ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ListSummary(Body):
    list_id: str
    version: int
    entries: int
    expires: str


@dataclass(frozen=True, kw_only=True)
class NoList(Body):
    installed: bool = False


@dataclass(frozen=True, kw_only=True)
class InfoBody(Body):
    """Kept under 512 bytes, so a broker with a small message limit still takes it: hashes are cut to
    64 bits (enough to tell versions apart; the audit chain's `start` entry has them whole) and the
    policy is named by its hash."""

    topic: ClassVar[str] = "info"
    v: int = 1
    device_id: str
    version: str
    models: dict[str, str]
    hotlist: ListSummary | NoList
    config: str
    policy: str
    source: str

    @classmethod
    def of(cls, cfg: Config, model_hashes: Mapping[str, str], hotlist: ListSummary | None) -> InfoBody:
        from .config import config_hash

        policy = cfg.policy.model_dump_json().encode()
        return cls(
            device_id=cfg.device_id,
            version=__version__,
            models={k: v[:16] for k, v in model_hashes.items()},
            hotlist=hotlist if hotlist is not None else NoList(),
            config=config_hash(cfg)[:16],
            policy=hashlib.sha256(policy).hexdigest()[:16],
            source=",".join(dict.fromkeys(c.kind for c in cfg.cameras)),
        )


# --- hit and summary (durable: they go through the outbox) ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CandidateBody(Body):
    text: str
    confidence: float


@dataclass(frozen=True, kw_only=True)
class MatchBody(Body):
    kind: str
    reason: str
    priority: int
    list_version: int
    p_not_entry: float


@dataclass(frozen=True, kw_only=True)
class HitBody(Body):
    topic: ClassVar[str] = "hit"
    v: int = 1
    hit_id: str
    device_id: str
    camera: str
    ts: float
    first_ts: float
    plate: str
    state: str | None
    region: str
    confidence: float
    chars: tuple[float, ...]
    candidates: tuple[CandidateBody, ...]
    reads: int
    agreeing_reads: int
    verified: bool
    match: MatchBody
    box: tuple[int, int, int, int]
    direction: str | None
    """approaching, receding, left or right (in the picture), from the pass's geometry; null: unsure."""
    location: Location | None
    evidence: str | None
    """The hit_id under which sealed evidence was stored, or None."""
    repeat: bool = False
    """This camera reported this list entry before, more than tracking.rehit_after_s ago."""

    @classmethod
    def of(cls, hit: Hit, device_id: str, location: Location | None, evidence: str | None) -> HitBody:
        t, m = hit.track, hit.match
        return cls(
            hit_id=hit.hit_id, device_id=device_id, camera=t.camera, ts=round(t.last_ts, 3),
            first_ts=round(t.first_ts, 3), plate=t.text, state=None, region=t.region,
            confidence=t.confidence, chars=t.chars,
            candidates=tuple(
                CandidateBody(text=c.text, confidence=round(c.confidence, 4)) for c in t.candidates
            ),
            reads=t.reads, agreeing_reads=t.agreeing_reads, verified=hit.verified,
            match=MatchBody(kind=m.kind, reason=m.reason, priority=m.priority, list_version=m.list_version,
                            p_not_entry=round(float(m.p_not_entry), 6)),
            box=(t.box.x, t.box.y, t.box.w, t.box.h), direction=t.direction, location=location,
            evidence=evidence, repeat=hit.repeat,
        )


@dataclass(frozen=True, kw_only=True)
class SummaryWindow(Body):
    """One window of non-hit statistics (`privacy.summaries.Summarizer`): never a plate."""

    v: int = 1
    mode: str
    """`counts`, or `tokens` when the window carries keyed tokens."""
    epoch: int
    start: float
    end: float
    passes: int
    """Vehicles that passed (hits included); a car hidden for a moment counts once."""
    hits: int
    noise: int
    """Passes that were no vehicle: text shorter than a plate and in no plate format."""
    reads: int
    """Frames the reader read (frames with motion)."""
    confidence_hist: tuple[int, ...]
    """The passes' voted confidences, in tenths."""
    token_bits: int | None = None
    tokens: dict[str, int] | None = None
    tokens_withheld: str | None = None
    """Set instead of `tokens` while the wall clock is behind the last window sent."""
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"token_bits", "tokens", "tokens_withheld"})


@dataclass(frozen=True, kw_only=True)
class SummaryBody(SummaryWindow):
    topic: ClassVar[str] = "summary"
    summary_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    device_id: str
    ts: float

    @classmethod
    def of(cls, window: SummaryWindow, device_id: str, ts: float) -> SummaryBody:
        fields = {f.name: getattr(window, f.name) for f in dataclasses.fields(window)}
        return cls(device_id=device_id, ts=round(ts, 3), **fields)


# --- metrics and command results (sent while connected, else dropped) -----------------------------------


@dataclass(frozen=True, kw_only=True)
class CameraMetrics(Body):
    """One camera's counters in `metrics`: with too little CPU the cameras are read in turn, and
    this says which of them loses frames."""

    connected: bool
    frames_in: int
    frames_processed: int
    frames_skipped_motion: int
    frames_dropped: int
    frames_dropped_motion: int
    """Dropped next to a frame with motion: while a car was in view."""
    read_share: float | None
    """frames_processed / (frames_processed + frames_dropped_motion): the share of motion frames
    read (null before the first motion)."""
    reconnects: int
    open_tracks: int
    stitched: int
    """Passes joined to the pass before them: the same car seen again within rehit_after_s."""


@dataclass(frozen=True, kw_only=True)
class MetricsBody(Body):
    topic: ClassVar[str] = "metrics"
    v: int = 1
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: float
    frames_in: int
    frames_processed: int
    frames_skipped_motion: int
    frames_dropped: int
    frames_dropped_motion: int
    read_share: float | None
    """Over all cameras: frames read / (read + dropped while a car was in view)."""
    camera_reconnects: int
    reads: int
    hits: int
    passes: int
    noise: int
    """Passes that were no vehicle (`summary.noise`)."""
    ms: dict[str, dict[str, float]]
    """p50, p95 and n per pipeline stage over the last samples."""
    cameras: dict[str, CameraMetrics]
    open_tracks: int
    outbox_depth: int | None
    """Durable rows waiting (None while the database cannot be read)."""
    ram_hits: int
    ram_hits_dropped: int
    summaries_dropped: int
    mqtt_inflight: int
    mqtt_connected: bool
    threads: int
    rss_mb: float
    cpu_temp_c: float | None
    disk_free_mb: float | None
    hotlist_age_s: float | None
    refused: dict[str, int]
    mqtt_too_large: int
    alarms: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class HotlistResultBody(Body):
    """The answer to a `hotlist/set`: accepted with its version and size, or refused with the reason."""

    topic: ClassVar[str] = "hotlist/result"
    v: int = 1
    ts: float
    bytes: int
    ok: bool
    reason: str | None = None
    version: int | None = None
    entries: int | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"reason", "version", "entries"})


PUBLISHED: tuple[type[Body], ...] = (
    StatusBody, InfoBody, HitBody, SummaryBody, MetricsBody, HotlistResultBody,
)
"""Every body the device publishes, by topic."""


def json_schema(body: type[Body]) -> dict[str, object]:
    """The JSON Schema of a body, from its dataclass (pydantic derives it)."""
    from pydantic import TypeAdapter

    schema: dict[str, object] = TypeAdapter(body).json_schema()
    schema["title"] = f"<prefix>/<device_id>/{body.topic}"
    return schema
