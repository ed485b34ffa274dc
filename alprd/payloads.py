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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from . import __version__
from .types import Hit, Match

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
    RETAINED: ClassVar[bool] = False
    QOS: ClassVar[int] = 1
    ABOUT: ClassVar[str] = ""
    """What the topic carries, in the compliance manifest's words."""
    # the field docstrings below become the schema's descriptions (docs/payloads/*.json)
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(use_attribute_docstrings=True)

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
    suppressed: str | None = None
    """`schedule` or `geofence` while a capture rule forbids reading plates (capture.*)."""
    cameras: dict[str, str] | None = None
    """Each camera's own `ok` or `lost`: which one the `camera` alarm is about."""
    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"camera_error", "storage_error", "suppressed", "cameras"})


@dataclass(frozen=True, kw_only=True)
class StatusBody(Body):
    topic: ClassVar[str] = "status"
    RETAINED: ClassVar[bool] = True
    ABOUT: ClassVar[str] = "online, offline (the Last Will) or stopped; camera, alarms, capture suppression"
    state: str
    """`online`, `offline` (the Last Will) or `stopped` (a clean exit)."""
    session: int
    device_id: str
    ts: float
    camera: str | None = None
    alarms: tuple[str, ...] | None = None
    camera_error: str | None = None
    storage_error: str | None = None
    suppressed: str | None = None
    """`schedule` or `geofence` while a capture rule forbids reading plates: no frame is read."""
    cameras: dict[str, str] | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"camera", "alarms", "camera_error", "storage_error", "suppressed", "cameras"})

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
    RETAINED: ClassVar[bool] = True
    ABOUT: ClassVar[str] = "software version, short hashes of models, config and policy, the hot list in use"
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
    """The list entry a hit matched. The entry's own fields are null where the list left them empty."""

    kind: str
    """`exact`, `lookalike` or `wildcard`."""
    reason: str
    priority: int
    list_version: int
    p_not_entry: float
    entry_plate: str
    """The entry as listed, wildcards included (`7?B2*`): what a look-alike or wildcard hit matched."""
    list_id: str
    case_number: str | None
    source: str | None
    state: str | None
    note: str | None

    @classmethod
    def of(cls, m: Match) -> MatchBody:
        return cls(
            kind=m.kind, reason=m.reason, priority=m.priority, list_version=m.list_version,
            p_not_entry=round(float(m.p_not_entry), 6), entry_plate=m.entry_plate, list_id=m.list_id,
            case_number=m.case_number or None, source=m.source or None, state=m.state or None,
            note=m.note or None,
        )


RFC3339_MS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def rfc3339_ms(ts: float) -> str:
    """`2026-12-05T10:11:12.345Z`: RFC 3339, UTC, milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class HitBody(Body):
    """Version 2: version 1's fields, plus `time` and the matched entry's fields in `match`."""

    topic: ClassVar[str] = "hit"
    ABOUT: ClassVar[str] = "a pass that matched the hot list: the plate, the entry it matched, time and place"
    v: Literal[2] = 2
    hit_id: str
    device_id: str
    camera: str
    ts: float
    time: Annotated[str, Field(pattern=RFC3339_MS, json_schema_extra={"format": "date-time"})]
    """`ts` as RFC 3339 in UTC with milliseconds."""
    first_ts: float
    plate: str
    state: str | None
    """The plate's state as the matched entry gives it, else null (the reader does not read states)."""
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
    """The hit_id under which sealed evidence was stored (and is sent on `evidence/<hit_id>`), or None."""
    repeat: bool = False
    """This camera reported this list entry before, more than tracking.rehit_after_s ago."""

    @classmethod
    def of(cls, hit: Hit, device_id: str, location: Location | None, evidence: str | None) -> HitBody:
        t, m = hit.track, hit.match
        ts = round(t.last_ts, 3)
        return cls(
            hit_id=hit.hit_id, device_id=device_id, camera=t.camera, ts=ts, time=rfc3339_ms(ts),
            first_ts=round(t.first_ts, 3), plate=t.text, state=m.state or None, region=t.region,
            confidence=t.confidence, chars=t.chars,
            candidates=tuple(
                CandidateBody(text=c.text, confidence=round(c.confidence, 4)) for c in t.candidates
            ),
            reads=t.reads, agreeing_reads=t.agreeing_reads, verified=hit.verified,
            match=MatchBody.of(m),
            box=(t.box.x, t.box.y, t.box.w, t.box.h), direction=t.direction, location=location,
            evidence=evidence, repeat=hit.repeat,
        )


EVIDENCE_TOPIC = "evidence"
"""Sealed evidence goes out on `<prefix>/<device_id>/evidence/<hit_id>`: the bytes `alprd evidence open`
takes (not JSON; sealed to headquarters' evidence.pub), QoS 1, not retained."""


EVIDENCE_FIELDS = (
    "crop_jpeg", "frame_jpeg", "meta.hit_id", "meta.ts", "meta.box", "meta.plate", "meta.camera",
)
"""What sealed evidence holds (`privacy.evidence.seal_evidence`; the meta as `device.record` writes it)."""


def evidence_channel(hit_id: str) -> str:
    """The topic below the device's base that carries a hit's evidence; also its outbox row id."""
    return f"{EVIDENCE_TOPIC}/{hit_id}"


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
    ABOUT: ClassVar[str] = "per-window counts of passes (or keyed tokens): never a plate"
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
    QOS: ClassVar[int] = 0
    ABOUT: ClassVar[str] = "counters, timings and resource use of the device"
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
    suppressed_s: dict[str, int]
    """Seconds capture was suppressed since the start, per rule (`schedule`, `geofence`)."""
    fps: float
    """Frames the camera delivered per second since the last metrics message."""
    hits_today: int
    """Hits since local midnight (or since the start, if later)."""


@dataclass(frozen=True, kw_only=True)
class HotlistResultBody(Body):
    """The answer to a `hotlist/set`: accepted with its version and size, or refused with the reason."""

    topic: ClassVar[str] = "hotlist/result"
    ABOUT: ClassVar[str] = "whether a hot list sent on hotlist/set was installed, and why not"
    v: int = 1
    ts: float
    bytes: int
    ok: bool
    reason: str | None = None
    version: int | None = None
    entries: int | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"reason", "version", "entries"})


# --- the compliance manifest (retained; `alprd policy manifest` prints the same) -------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyBody(Body):
    """The SB 34 usage and privacy policy elements (Civil Code 1798.90.51), from `policy`."""

    purpose: str
    custodian: str
    retention_days: int
    sharing: str


@dataclass(frozen=True, kw_only=True)
class OutTopic(Body):
    name: str
    """The full topic; `+` stands for one level (a hit id, a sensor)."""
    about: str
    qos: int
    retained: bool
    format: str
    """`json`, `sealed` (bytes only headquarters' evidence.key opens) or `text`."""
    schema: str | None
    """Its JSON Schema under docs/payloads/, for JSON bodies."""
    fields: tuple[str, ...]
    """Every key the body may hold, nested ones as `match.kind`, list items as `candidates[].text`."""


@dataclass(frozen=True, kw_only=True)
class InTopic(Body):
    name: str
    about: str
    max_bytes: int


@dataclass(frozen=True, kw_only=True)
class Kept(Body):
    what: str
    where: str
    until: str
    max_s: int | None
    """The longest it stays, in seconds; None: for as long as the device keeps the file."""


@dataclass(frozen=True, kw_only=True)
class FenceBody(Body):
    file: str
    mode: str
    sha256: str
    polygons: int


@dataclass(frozen=True, kw_only=True)
class CaptureRulesBody(Body):
    schedule: dict[str, object] | None
    """`capture.schedule` as configured (time zone and weekly windows), None: always."""
    geofence: FenceBody | None
    """`capture.geofence`: the file, its SHA-256 and its mode; None: anywhere."""


@dataclass(frozen=True, kw_only=True)
class ManifestBody(Body):
    """What the device does with the data it sees, generated from its running config and code."""

    topic: ClassVar[str] = "manifest"
    RETAINED: ClassVar[bool] = True
    ABOUT: ClassVar[str] = "this compliance manifest: policy, what leaves and what stays, rules, keys, models"
    v: int = 1
    device_id: str
    version: str
    config: str
    """SHA-256 of the validated config (as the audit chain's `start` entry)."""
    policy: PolicyBody
    published: tuple[OutTopic, ...]
    subscribed: tuple[InTopic, ...]
    stored: tuple[Kept, ...]
    capture: CaptureRulesBody
    keys: dict[str, str]
    """Fingerprints (`alprd.privacy.keys.key_id`) of the key files in use, by config key."""
    models: dict[str, str]
    """SHA-256 of each model, by name."""
    hotlist: ListSummary | NoList


# --- Home Assistant MQTT discovery (mqtt.homeassistant) ----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HaAvailability(Body):
    topic: str  # type: ignore[misc]
    value_template: str | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"value_template"})


@dataclass(frozen=True, kw_only=True)
class HaDevice(Body):
    identifiers: tuple[str, ...]
    name: str
    manufacturer: str
    model: str
    sw_version: str


@dataclass(frozen=True, kw_only=True)
class DiscoveryBody(Body):
    """One sensor's config on `homeassistant/sensor/<node_id>/<object_id>/config`: templates that read
    the device's status, metrics and info, never a plate."""

    name: str
    unique_id: str
    state_topic: str
    value_template: str
    availability: tuple[HaAvailability, ...]
    availability_mode: str
    device: HaDevice
    origin: dict[str, str]
    entity_category: str | None = None
    unit_of_measurement: str | None = None
    state_class: str | None = None
    icon: str | None = None
    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"entity_category", "unit_of_measurement", "state_class", "icon"})


PUBLISHED: tuple[type[Body], ...] = (
    StatusBody, InfoBody, HitBody, SummaryBody, MetricsBody, HotlistResultBody, ManifestBody,
)
"""Every body the device publishes, by topic."""
