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
    """`ok` or `lost`."""
    alarms: tuple[str, ...]
    camera_error: str | None = None
    storage_error: str | None = None
    suppressed: str | None = None
    """`schedule` or `geofence` while a capture rule forbids reading plates (capture.*)."""
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"camera_error", "storage_error", "suppressed"})


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
    suppressed: str | None = None
    """`schedule` or `geofence` while a capture rule forbids reading plates: no frame is read."""
    omit_if_none: ClassVar[frozenset[str]] = frozenset(
        {"camera", "alarms", "camera_error", "storage_error", "suppressed"})

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
            source=cfg.source.kind,
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
    direction: str
    location: Location | None
    evidence: str | None
    """The hit_id under which sealed evidence was stored (and is sent on `evidence/<hit_id>`), or None."""

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
            evidence=evidence,
        )


EVIDENCE_TOPIC = "evidence"
"""Sealed evidence goes out on `<prefix>/<device_id>/evidence/<hit_id>`: the bytes `alprd evidence open`
takes (not JSON; sealed to headquarters' evidence.pub), QoS 1, not retained."""


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
    reads: int
    hits: int
    confidence_hist: tuple[int, ...]
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
class MetricsBody(Body):
    topic: ClassVar[str] = "metrics"
    v: int = 1
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: float
    frames_in: int
    frames_processed: int
    frames_skipped_motion: int
    frames_dropped: int
    camera_reconnects: int
    reads: int
    hits: int
    passes: int
    ms: dict[str, dict[str, float]]
    """p50, p95 and n per pipeline stage over the last samples."""
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


def _closed(node: object) -> None:
    """Every object with named properties admits no other keys: a field the code adds without
    regenerating the schema then fails validation instead of passing unnoticed."""
    if isinstance(node, dict):
        if "properties" in node:
            node.setdefault("additionalProperties", False)
        for v in node.values():
            _closed(v)
    elif isinstance(node, list):
        for v in node:
            _closed(v)


def json_schema(body: type[Body]) -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of a body, from its dataclass (pydantic derives it)."""
    from pydantic import TypeAdapter

    schema: dict[str, object] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(TypeAdapter(body).json_schema())
    schema["title"] = f"<prefix>/<device_id>/{body.topic}"
    _closed(schema)
    return schema


def schema_files() -> dict[str, dict[str, object]]:
    """`docs/payloads/<file>` -> its schema, for every JSON body the device publishes
    (`tools/payload_schemas.py` writes them; a test checks the committed files are these)."""
    return {f"{body.topic.replace('/', '-')}.json": json_schema(body) for body in PUBLISHED}


def schema_text(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
