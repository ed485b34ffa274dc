"""Capture rules: when (`capture.schedule`) and where (`capture.geofence`) plates may be read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from .base import Section, resolve_path

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[str, ...] = get_args(Day)
_HHMM = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


def _hhmm(value: object) -> object:
    """YAML 1.1 reads an unquoted 06:00 as the base-60 number 360: take it back as the time it was."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


class CaptureWindow(Section):
    days: tuple[Day, ...] = Field(..., min_length=1, description="Days the window starts on: mon ... sun.")
    start: str = Field(..., pattern=_HHMM, description="Local start time, HH:MM.")
    end: str = Field(
        ..., pattern=_HHMM,
        description="Local end time, HH:MM (24:00: midnight); at or before start: the next day's.",
    )

    _times = field_validator("start", "end", mode="before")(_hhmm)

    @model_validator(mode="after")
    def _check_window(self) -> CaptureWindow:
        if self.start == "24:00":
            raise ValueError("a window starts at 00:00 of the next day, not at 24:00")
        if self.start == self.end:
            raise ValueError(f"the window {self.start}-{self.end} is empty; the whole day is 00:00-24:00")
        return self


class ScheduleConfig(Section):
    timezone: str = Field(..., min_length=1, max_length=64, description="IANA time zone of the windows.")
    windows: tuple[CaptureWindow, ...] = Field(
        ..., min_length=1, max_length=100,
        description="When capture may happen; outside all of them it does not.",
    )

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as America/Los_Angeles)") from None
        return v


class GeofenceConfig(Section):
    file: Path = Field(..., description="GeoJSON file of polygons (lon, lat), checked at start.")
    mode: Literal["allow", "deny"] = Field(
        ..., description="allow: capture only inside the polygons (no position: none at all); deny: never "
        "inside them.",
    )

    _resolve = field_validator("file")(resolve_path)


class CaptureConfig(Section):
    """When and where capture may happen. Outside, no frame is read or kept: only the seconds are counted."""

    schedule: ScheduleConfig | None = Field(None, description="Weekly windows in a time zone; null: always.")
    geofence: GeofenceConfig | None = Field(
        None, description="Polygons checked against the GPS or static position (location); null: anywhere.",
    )
