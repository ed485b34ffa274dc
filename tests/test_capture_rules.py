"""Capture rules (issue 21, item 7): `capture.schedule` and `capture.geofence` in front of the pipeline.
Outside them no frame is read or kept, only suppressed seconds are counted, the retained status says
why, and each change is audited; a geofence in allow mode without a position fails closed."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import Mosquitto, Subscriber
from privacy_support import FakeClock, make_agency
from pydantic import ValidationError
from run_support import DEVICE, ScriptedReader, agency, assert_absent, config, install, photos, rd

from alprd.cli import main
from alprd.config import MatchingConfig, MotionConfig, ScheduleConfig, TrackingConfig
from alprd.device.daemon import build
from alprd.device.motion import MotionGate
from alprd.device.pipeline import Pipeline
from alprd.device.record import lifecycle_audit
from alprd.device.rules import CaptureGate, Geofence, Schedule, load_geofence
from alprd.device.track import Tracker
from alprd.errors import ConfigError
from alprd.store import Store
from alprd.types import Frame, Hit

# 2026-12-07 is a Monday. Los Angeles is UTC-8 in December, UTC-7 in July.
MON_0559_LA = datetime(2026, 12, 7, 13, 59, tzinfo=UTC).timestamp()
SCHEDULE = {"timezone": "America/Los_Angeles", "windows": [
    {"days": ["mon", "tue"], "start": "06:00", "end": "22:00"},
    {"days": ["fri"], "start": "22:00", "end": "02:00"},  # into Saturday
]}


def test_the_schedule_opens_and_closes_in_its_own_time_zone() -> None:
    s = Schedule(ScheduleConfig.model_validate(SCHEDULE))
    h = 3600.0
    assert not s.open_at(MON_0559_LA)
    assert s.open_at(MON_0559_LA + 60)  # 06:00 Monday in LA, 14:00 UTC
    assert s.open_at(MON_0559_LA + 60 + 16 * h - 60) and not s.open_at(MON_0559_LA + 60 + 16 * h)  # 22:00
    assert s.open_at(MON_0559_LA + 60 + 24 * h)  # Tuesday
    assert not s.open_at(MON_0559_LA + 60 + 48 * h)  # Wednesday
    fri_2200 = MON_0559_LA + 60 + 4 * 24 * h + 16 * h
    assert not s.open_at(fri_2200 - 60) and s.open_at(fri_2200) and s.open_at(fri_2200 + 3.9 * h)
    assert not s.open_at(fri_2200 + 4 * h)  # 02:00 Saturday
    # summer time: 06:00 in LA is 13:00 UTC in July
    july_mon_0600 = datetime(2026, 7, 6, 13, 0, tzinfo=UTC).timestamp()
    assert s.open_at(july_mon_0600) and not s.open_at(july_mon_0600 - 60)


def test_schedule_config_takes_unquoted_times_and_refuses_what_makes_no_sense() -> None:
    text = "timezone: Europe/Berlin\nwindows:\n  - {days: [sat, sun], start: 06:00, end: 24:00}\n"
    cfg = ScheduleConfig.model_validate(yaml.safe_load(text))  # YAML 1.1 reads 06:00 as 360
    assert (cfg.windows[0].start, cfg.windows[0].end) == ("06:00", "24:00")
    for bad, why in [
        ({**SCHEDULE, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({**SCHEDULE, "windows": [{"days": ["mon"], "start": "06:00", "end": "06:00"}]}, "is empty"),
        ({**SCHEDULE, "windows": [{"days": ["monday"], "start": "06:00", "end": "07:00"}]}, "days"),
        ({**SCHEDULE, "windows": [{"days": ["mon"], "start": "6am", "end": "07:00"}]}, "start"),
        ({**SCHEDULE, "windows": []}, "at least 1"),
    ]:
        with pytest.raises(ValidationError, match=why):
            ScheduleConfig.model_validate(bad)


def square(lon: float, lat: float, d: float) -> list[list[float]]:
    corners = [(-d, -d), (d, -d), (d, d), (-d, d), (-d, -d)]
    return [[lon + x, lat + y] for x, y in corners]


DOWNTOWN = (-118.25, 34.05)


def fence_file(tmp: Path, name: str = "fence.geojson") -> Path:
    """Downtown with a hole (a clinic) in it, and a second area as a MultiPolygon."""
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "downtown"},
         "geometry": {"type": "Polygon", "coordinates": [square(*DOWNTOWN, 0.05), square(*DOWNTOWN, 0.001)]}},
        {"type": "Feature", "properties": {},
         "geometry": {"type": "MultiPolygon", "coordinates": [[square(-117.0, 33.0, 0.01)]]}},
    ]}
    path = tmp / name
    path.write_text(json.dumps(doc))
    return path


def at(lon: float, lat: float) -> dict[str, float | str]:
    return {"lat": lat, "lon": lon, "source": "gpsd"}


def test_geofence_polygons_holes_and_modes(tmp_path: Path) -> None:
    polygons = load_geofence(fence_file(tmp_path))
    allow, deny = Geofence(polygons, "allow"), Geofence(polygons, "deny")
    inside, hole, outside, second = at(-118.27, 34.06), at(*DOWNTOWN), at(-118.4, 34.05), at(-117.005, 33.0)
    assert [allow.allows(p) for p in (inside, hole, outside, second)] == [True, False, False, True]
    assert [deny.allows(p) for p in (inside, hole, outside, second)] == [False, True, True, False]
    assert not allow.allows(None)  # no position under allow: fail closed
    assert deny.allows(None)


@pytest.mark.parametrize(("text", "why"), [
    ("{", "not JSON"),
    ('{"type": "Point", "coordinates": [1, 2]}', "'Point' is not a polygon"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}', "end where it starts"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}', "at least 4 positions"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 99], [0, 0]]]}', "is not a lon, lat"),
    ('{"type": "FeatureCollection", "features": []}', "holds no polygon"),
    ("[" * 100 + "]" * 100, "nested deeper"),
])
def test_a_bad_geofence_file_is_a_config_error_naming_what_is_wrong(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why):
        load_geofence(path)


def test_check_config_names_a_bad_geofence_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from privacy_support import device_dir, write_config

    creds = device_dir(make_agency(tmp_path), tmp_path)
    (tmp_path / "fence.geojson").write_text('{"type": "Polygon", "coordinates": []}')
    cfg = write_config(tmp_path, creds, tmp_path / "state",
                       "capture:\n  geofence: {file: fence.geojson, mode: allow}\n")
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:" in err and "capture.geofence.file: " in err and "a list of rings" in err


class Reader(ScriptedReader):
    def __init__(self, text: str) -> None:
        super().__init__({})
        self.text = text

    def read(self, image, region=None, looks=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        from alprd.types import PhotoResult

        return PhotoResult((rd(self.text),), ms=1.0)


def test_the_gate_reads_nothing_outside_closes_open_passes_counts_seconds_and_audits(tmp_path: Path) -> None:
    from alprd.privacy.hotlist import load_bundle

    clock = FakeClock(wall=MON_0559_LA + 60 - 3)  # 05:59:57 Monday in Los Angeles
    agency_ = make_agency(tmp_path)
    hot = load_bundle(agency_.pack("plate,reason\n7ABC123,stolen\n", 1, issued=clock.now()),
                      agency_.signing_key.public_key(), agency_.list_key, clock.now())

    class Installed:
        active = hot

    reader = Reader("7ABC123")
    # min_agreeing_reads 5: no early hit, the pass is only decided when it closes
    pipe = Pipeline(reader, Tracker(TrackingConfig(close_after_frames=3, max_track_s=3600)),
                    MotionGate(MotionConfig(enabled=False)), Installed(),
                    MatchingConfig(min_agreeing_reads=5), clock=clock)
    # open from 22:00 Sunday to 06:00 Monday: capture stops at 06:00
    cfg = ScheduleConfig.model_validate({"timezone": "America/Los_Angeles", "windows": [
        {"days": ["sun"], "start": "22:00", "end": "06:00"}]})
    with Store(tmp_path / "state", clock) as store:
        gate = CaptureGate(Schedule(cfg), None, lambda: None, clock, lifecycle_audit(store))
        events: list[list[object]] = []
        for seq in range(8):
            f = Frame(np.zeros((64, 64, 3), np.uint8), clock.time(), clock.monotonic(), seq)
            events.append(list(gate.step(f, pipe)))
            clock.advance(1.0)
        entries = [(e.event, e.object) for e in store.audit_entries()]
        assert reader.calls == 3  # 05:59:57, :58, :59; from 06:00 on not one frame is read
        assert gate.suppressed == "schedule"
        # the pass that was open at 06:00 is closed then (its reads were made while allowed), once
        assert [len(batch) for batch in events] == [0, 0, 0, 1, 0, 0, 0, 0]
        hit = events[3][0]
        assert isinstance(hit, Hit) and hit.track.reads == 3 and not hit.verified
        assert gate.seconds["schedule"] == pytest.approx(4.0) and gate.seconds["geofence"] == 0
        assert [e for e in entries if e[0].startswith("capture.")] == [
            ("capture.suppressed", {"reason": "schedule", "after": None, "seconds": None})]
        clock.jump_wall(6 * 24 * 3600 + 16 * 3600)  # 22:00 next Sunday: capture again
        clock.advance(1.0)
        f = Frame(np.zeros((64, 64, 3), np.uint8), clock.time(), clock.monotonic(), 9)
        gate.step(f, pipe)
        assert gate.suppressed is None and reader.calls == 4
        resumed = [e.object for e in store.audit_entries() if e.event == "capture.resumed"]
    assert resumed == [{"after": "schedule", "seconds": 6.0}]  # 06:00:00 to 06:00:06 mono
    assert gate.seconds["schedule"] == pytest.approx(6.0)


def test_a_geofence_run_reads_no_frame_and_publishes_no_hit_and_says_why(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys = agency(tmp_path)
    fence = fence_file(tmp_path)
    outside = {"lat": 34.05, "lon": -118.4}
    cfg = config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(photos(tmp_path, data_dir, 3))},
                 capture={"geofence": {"file": str(fence), "mode": "allow"}}, location=outside)
    reader = Reader("7ABC123")  # every frame read would be a hit
    sub = Subscriber(mosquitto, f"alprd/{DEVICE}/#")
    try:
        daemon = build(cfg, threading.Event(), reader=reader)  # type: ignore[arg-type]
        install(daemon, keys, {"7ABC123": "stolen"})
        assert daemon.run(threading.Event()) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")))
    finally:
        sub.close()
    assert reader.calls == 0 and not sub.on("/hit") and not any("/evidence/" in t for t, _, _ in sub.messages)
    detailed = [m for m in sub.json_on("/status") if "alarms" in m]  # the first, at connect, has none yet
    assert [m.get("suppressed") for m in detailed] == ["geofence", "geofence"]
    metrics = sub.json_on("/metrics")[-1]
    assert metrics["reads"] == 0 and set(metrics["suppressed_s"]) == {"schedule", "geofence"}
    assert_absent("7ABC123", [p for _, p, _ in sub.messages], tmp_path / "state")
    with Store(tmp_path / "state") as store:
        events = [(e.event, e.object) for e in store.audit_entries()]
        assert store.verify_audit().ok
    assert ("capture.suppressed", {"reason": "geofence", "after": None, "seconds": None}) in events
    assert not any(e == "hit" for e, _ in events)


def test_inside_an_allow_fence_capture_runs_and_without_any_position_it_does_not(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys = agency(tmp_path)
    fence = fence_file(tmp_path)
    folder = photos(tmp_path, data_dir, 2)
    rules = {"geofence": {"file": str(fence), "mode": "allow"}}
    inside = config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(folder)}, capture=rules,
                    location={"lat": 34.06, "lon": -118.27}, mqtt={"enabled": False})
    reader = Reader("5XYZ777")
    daemon = build(inside, threading.Event(), reader=reader)  # type: ignore[arg-type]
    assert daemon.run(threading.Event()) == 0
    assert reader.calls == 2
    no_position = inside.location.model_copy(update={"lat": None, "lon": None})
    nowhere = inside.model_copy(update={"location": no_position})
    reader = Reader("5XYZ777")
    daemon = build(nowhere, threading.Event(), reader=reader)  # type: ignore[arg-type]
    assert daemon.capture.check() == "geofence"
    assert daemon.run(threading.Event()) == 0
    assert reader.calls == 0  # no GPS fix and no static position: fail closed
