"""Capture rules (`capture.schedule`, `capture.geofence`): when and where plates may be read at all.

`CaptureGate` stands in front of the pipeline: the loop hands it each frame (`step`), and it runs the
pipeline only while capture is allowed. Outside the rules the frame is dropped unread, so nothing of
it is read, tracked or kept; the passes that were open when capture stopped are closed then (their
reads were made while it was allowed). What is recorded is the number of suppressed seconds per rule
(`seconds`, in metrics), the reason in the retained status (`suppressed`), and one audit entry per
change. The rules are looked at once a second at most: a schedule boundary or a position moves
slower than that.

A geofence in `allow` mode with no position (no GPS fix and no static position) suppresses capture:
it fails closed. In `deny` mode with no position, capture goes on: nothing says the car is inside a
denied area.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from ..clock import Clock, SystemClock
from ..config import DAYS, CaptureConfig, ScheduleConfig
from ..errors import ConfigError, StoreError
from ..payloads import Location
from ..types import Event, Frame
from ..untrusted import UntrustedInput, loads

log = logging.getLogger(__name__)

MAX_GEOJSON_BYTES = 16 * 1024 * 1024
MAX_VERTICES = 1_000_000
CHECK_EVERY_S = 1.0
SCHEDULE, GEOFENCE = "schedule", "geofence"


# --- the schedule ------------------------------------------------------------------------------------


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Schedule:
    """Weekly windows in one time zone. A window whose end is at or before its start ends the next day."""

    def __init__(self, cfg: ScheduleConfig) -> None:
        self.zone = ZoneInfo(cfg.timezone)
        # (day the window starts on 0..6, start minute, end minute, ends the next day)
        self._spans = [
            (DAYS.index(day), _minutes(w.start), _minutes(w.end), _minutes(w.end) <= _minutes(w.start))
            for w in cfg.windows for day in w.days
        ]

    def open_at(self, ts: float) -> bool:
        """Whether wall-clock time `ts` falls in a window (in the schedule's zone, DST included)."""
        local = datetime.fromtimestamp(ts, self.zone)
        day, minute = local.weekday(), local.hour * 60 + local.minute
        for start_day, start, end, overnight in self._spans:
            if not overnight:
                if day == start_day and start <= minute < end:
                    return True
            elif (day == start_day and minute >= start) or (day == (start_day + 1) % 7 and minute < end):
                return True
        return False


# --- the geofence -----------------------------------------------------------------------------------


Ring = Sequence[tuple[float, float]]
"""A closed ring of (lon, lat) points, as GeoJSON writes them."""


@dataclass(frozen=True)
class Polygon:
    outer: Ring
    holes: tuple[Ring, ...]
    box: tuple[float, float, float, float]
    """min lon, min lat, max lon, max lat: most positions are far outside most polygons."""

    def contains(self, lon: float, lat: float) -> bool:
        x0, y0, x1, y1 = self.box
        if not (x0 <= lon <= x1 and y0 <= lat <= y1):
            return False
        return _in_ring(self.outer, lon, lat) and not any(_in_ring(h, lon, lat) for h in self.holes)


def _in_ring(ring: Ring, x: float, y: float) -> bool:
    """Even-odd ray casting on the plane of lon/lat degrees (fences are small; none crosses 180 degrees)."""
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _ring(raw: object, where: str) -> Ring:
    if not isinstance(raw, list) or len(raw) < 4:
        raise ValueError(f"{where}: a ring needs at least 4 positions")
    out: list[tuple[float, float]] = []
    for p in raw:
        if (not isinstance(p, list) or len(p) < 2
                or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in p[:2])):
            raise ValueError(f"{where}: a position is [lon, lat]")
        lon, lat = float(p[0]), float(p[1])
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"{where}: position {[p[0], p[1]]} is not a lon, lat")
        out.append((lon, lat))
    if out[0] != out[-1]:
        raise ValueError(f"{where}: a ring must end where it starts")
    return out


def _polygon(rings: object, where: str) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise ValueError(f"{where}: a Polygon's coordinates are a list of rings")
    parsed = [_ring(r, where) for r in rings]
    xs = [p[0] for p in parsed[0]]
    ys = [p[1] for p in parsed[0]]
    return Polygon(parsed[0], tuple(parsed[1:]), (min(xs), min(ys), max(xs), max(ys)))


def _geometries(node: object, where: str) -> Iterable[Polygon]:
    if not isinstance(node, dict):
        raise ValueError(f"{where}: not a GeoJSON object")
    kind = node.get("type")
    if kind == "FeatureCollection":
        features = node.get("features")
        if not isinstance(features, list):
            raise ValueError(f"{where}: a FeatureCollection needs features")
        for i, f in enumerate(features):
            yield from _geometries(f, f"{where}.features[{i}]")
    elif kind == "Feature":
        yield from _geometries(node.get("geometry"), f"{where}.geometry")
    elif kind == "GeometryCollection":
        for i, g in enumerate(node.get("geometries") or []):
            yield from _geometries(g, f"{where}.geometries[{i}]")
    elif kind == "Polygon":
        yield _polygon(node.get("coordinates"), where)
    elif kind == "MultiPolygon":
        coords = node.get("coordinates")
        if not isinstance(coords, list):
            raise ValueError(f"{where}: a MultiPolygon's coordinates are a list of polygons")
        for i, rings in enumerate(coords):
            yield _polygon(rings, f"{where}.coordinates[{i}]")
    else:
        raise ValueError(f"{where}: {kind!r} is not a polygon (Polygon, MultiPolygon, Feature, "
                         "FeatureCollection)")


def load_geofence(path: Path) -> tuple[Polygon, ...]:
    """The polygons of a GeoJSON file; raises ConfigError saying what is wrong where."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"capture.geofence.file {path}: {e.strerror}") from None
    try:
        polygons = tuple(_geometries(loads(data, MAX_GEOJSON_BYTES), "$"))
    except (UntrustedInput, ValueError) as e:
        raise ConfigError(f"capture.geofence.file {path}: {e}") from None
    if not polygons:
        raise ConfigError(f"capture.geofence.file {path}: holds no polygon")
    if sum(len(p.outer) + sum(map(len, p.holes)) for p in polygons) > MAX_VERTICES:
        raise ConfigError(f"capture.geofence.file {path}: more than {MAX_VERTICES} positions")
    return polygons


class Geofence:
    def __init__(self, polygons: Sequence[Polygon], mode: str) -> None:
        self.polygons = tuple(polygons)
        self.mode = mode

    def allows(self, where: Location | None) -> bool:
        if where is None:
            return self.mode == "deny"
        lon, lat = float(where["lon"]), float(where["lat"])
        inside = any(p.contains(lon, lat) for p in self.polygons)
        return inside if self.mode == "allow" else not inside


# --- the gate ----------------------------------------------------------------------------------------


class Steps(Protocol):
    """A pipeline (`alprd.device.pipeline.Pipeline`)."""

    def step(self, frame: Frame) -> list[Event]: ...

    def flush(self) -> list[Event]: ...


class CaptureGate:
    """Asks the rules whether capture is allowed now; runs the pipeline only when it is."""

    def __init__(
        self,
        schedule: Schedule | None,
        geofence: Geofence | None,
        position: Callable[[], Location | None],
        clock: Clock,
        audit: Callable[[str, dict[str, object]], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self.geofence = geofence
        self._position = position
        self._clock = clock
        self._audit = audit
        self.suppressed: str | None = None
        """Why capture is suppressed now (`schedule` or `geofence`), None while it is allowed."""
        self.seconds = {SCHEDULE: 0.0, GEOFENCE: 0.0}
        """Seconds capture was suppressed, per rule, since the start."""
        self._since = 0.0
        self._checked: float | None = None
        self._flushed: set[int] = set()

    @classmethod
    def off(cls) -> CaptureGate:
        """No rules: capture always."""
        return cls(None, None, lambda: None, SystemClock())

    @classmethod
    def from_config(
        cls,
        cfg: CaptureConfig,
        position: Callable[[], Location | None],
        clock: Clock,
        audit: Callable[[str, dict[str, object]], None] | None = None,
    ) -> CaptureGate:
        """Raises ConfigError for a geofence file that does not load."""
        fence = cfg.geofence
        return cls(
            Schedule(cfg.schedule) if cfg.schedule is not None else None,
            Geofence(load_geofence(fence.file), fence.mode) if fence is not None else None,
            position, clock, audit,
        )

    def rule_now(self) -> str | None:
        """The rule that forbids capture at this moment and place, if any (schedule first)."""
        if self.schedule is not None and not self.schedule.open_at(self._clock.time()):
            return SCHEDULE
        if self.geofence is not None and not self.geofence.allows(self._position()):
            return GEOFENCE
        return None

    def check(self) -> str | None:
        """Look at the rules (at most once a second), count the suppressed time, audit a change."""
        now = self._clock.monotonic()
        if self._checked is not None and now - self._checked < CHECK_EVERY_S:
            return self.suppressed
        if self._checked is not None and self.suppressed is not None:
            self.seconds[self.suppressed] += now - self._checked
        self._checked = now
        if self.schedule is None and self.geofence is None:
            return None
        rule = self.rule_now()
        if rule != self.suppressed:
            self._changed(rule, now)
        return rule

    def _changed(self, rule: str | None, now: float) -> None:
        was, self.suppressed = self.suppressed, rule
        lasted = round(now - self._since, 1) if was is not None else None
        self._since = now
        body: dict[str, object]
        if rule is None:
            log.info("capture resumed (%s allows it again after %.0f s)", was, lasted or 0)
            event, body = "capture.resumed", {"after": was, "seconds": lasted}
        else:
            log.warning("capture suppressed by capture.%s: no frame is read", rule)
            event, body = "capture.suppressed", {"reason": rule, "after": was, "seconds": lasted}
            self._flushed.clear()
        if self._audit is not None:
            try:
                self._audit(event, body)
            except StoreError as e:  # a full disk must not keep the rules from applying
                log.error("audit entry %s not written: %s", event, e)

    def step(self, frame: Frame, pipeline: Steps) -> list[Event]:
        """The pipeline's events for this frame while capture is allowed. Once it is not: the passes
        that were open are closed (once per pipeline), and every frame is dropped unread."""
        if self.check() is None:
            return pipeline.step(frame)
        if id(pipeline) in self._flushed:
            return []
        self._flushed.add(id(pipeline))
        return pipeline.flush()
