"""Several cameras in one daemon (`sources:`): one reader, a lane per camera, hits that name their
camera, metrics and status per camera, the camera alarm of the one that is missing."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import yaml
from conftest import Mosquitto, Subscriber
from test_daemon import agency, assert_absent, bundle_for

from alprd.config import Config, load_config
from alprd.device.daemon import build
from alprd.device.health import status_detail

POLICY = {"purpose": "tests", "custodian": "the CI", "retention_days": 1, "sharing": "none"}


def two_cameras(tmp: Path, keys: Path, broker: Mosquitto, sources: list[dict[str, object]]) -> Config:
    return Config.model_validate({
        "device_id": "cams-dev",
        "reader": {"region": "us"},
        "sources": sources,
        "motion": {"enabled": False},
        "tracking": {"close_after_frames": 2, "rehit_after_s": 3600},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5, "reconnect_min_s": 1,
                 "reconnect_max_s": 2, "drain_timeout_s": 10},
        "metrics": {"interval_s": 1},
        "storage": {"dir": str(tmp / "state")},
        "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub"), "summary_interval_s": 60},
        "policy": POLICY,
    })


def test_two_image_folder_cameras_in_one_run_give_hits_from_both(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    us = data_dir / "us"
    rows = list(csv.DictReader((us / "labels.csv").read_text().splitlines()))[:16]
    folders = {"front": rows[0::2], "rear": rows[1::2]}
    camera_of: dict[str, str] = {}
    for name, part in folders.items():
        (tmp_path / name).mkdir()
        for r in part:
            (tmp_path / name / r["file"]).symlink_to(us / r["file"])
            camera_of[r["plate"]] = name
    listed = {r["plate"] for r in rows[:12]}  # both cameras' cars; the last two of each are not listed
    keys = agency(tmp_path)
    cfg = two_cameras(tmp_path, keys, mosquitto, [
        {"name": "front", "kind": "images", "path": str(tmp_path / "front"), "heading_deg": 90},
        {"name": "rear", "kind": "images", "path": str(tmp_path / "rear"), "heading_deg": 270},
    ])
    cfg = cfg.model_copy(update={"location": cfg.location.model_copy(update={"lat": 52.5, "lon": 13.4})})
    sub = Subscriber(mosquitto, "alprd/cams-dev/#")
    stop = threading.Event()
    try:
        daemon = build(cfg, stop)  # the real reader: one for both cameras
        daemon.hotlist.install(bundle_for(keys, {p: "stolen" for p in listed}, 1))
        assert list(daemon.sources) == ["front", "rear"] and list(daemon.pipeline.lanes) == ["front", "rear"]
        assert daemon.run(stop) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")), 20)
    finally:
        sub.close()
    hits = sub.json_on("/hit")
    print(f"two cameras: {len(hits)} hits, {sorted((h['camera'], h['plate']) for h in hits)}")
    by_camera = {name: [h for h in hits if h["camera"] == name] for name in folders}
    for name, part in folders.items():
        mine = {r["plate"] for r in part} & listed
        got = {str(h["plate"]) for h in by_camera[name]}
        assert len(got & mine) >= len(mine) // 2, (name, got, mine)  # the reader works on both
        assert not got & {p for p, c in camera_of.items() if c != name}, (name, got)  # and names its camera
        assert all(h["location"]["camera_heading"] == cfg.sources[list(folders).index(name)].heading_deg
                   for h in by_camera[name])
    last = sub.json_on("/metrics")[-1]
    assert set(last["cameras"]) == {"front", "rear"}
    for name, part in folders.items():
        cam = last["cameras"][name]
        assert cam["frames_in"] == len(part) and cam["frames_processed"] == len(part)
        assert cam["frames_dropped"] == 0 and cam["read_share"] == 1.0
    assert last["frames_in"] == len(rows)
    status = [m for m in sub.json_on("/status") if m["state"] == "online"][-1]
    assert status["cameras"] == {"front": "ok", "rear": "ok"} and "camera" not in status["alarms"]
    summary = sub.json_on("/summary")[-1]
    assert summary["reads"] == len(rows) and summary["hits"] == len(hits)
    payloads = [p for _, p, _ in sub.messages]
    for r in rows[12:]:
        assert_absent(r["plate"], payloads, tmp_path / "state")


def test_a_missing_camera_raises_its_alarm_while_the_other_reads(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((data_dir / "us").glob("*.jpg"))[:2]:
        (photos / p.name).symlink_to(p)
    keys = agency(tmp_path)
    cfg = two_cameras(tmp_path, keys, mosquitto, [
        {"name": "pole", "kind": "images", "path": str(photos), "loop": True, "fps": 5},
        # /dev/video57: a USB camera that is not plugged in
        {"name": "usb", "kind": "opencv", "path": "57", "open_timeout_s": 0, "reconnect_min_s": 0.2,
         "reconnect_max_s": 0.5},
    ])
    from test_daemon import ScriptedReader, rd

    reader = ScriptedReader({i: [rd("7ABC123", 10)] for i in range(1, 100)})
    daemon = build(cfg, threading.Event(), reader=reader)
    try:
        for _ in range(6):
            for source in daemon.sources.values():
                frame = source.read(0.1)
                if frame is not None:
                    daemon.step(frame)
        detail = status_detail(daemon)
        assert detail.camera == "lost" and "camera" in detail.alarms
        assert detail.cameras == {"pole": "ok", "usb": "lost"}
        assert detail.camera_error is not None and detail.camera_error.startswith("usb: ")
        metrics = daemon.metrics()
        assert metrics["cameras"]["pole"]["frames_processed"] >= 3  # type: ignore[index]
        assert metrics["cameras"]["usb"]["connected"] is False  # type: ignore[index]
        assert reader.calls == metrics["frames_processed"]
    finally:
        daemon.shutdown()


def test_sources_and_the_one_camera_form(tmp_path: Path) -> None:
    one = Config.model_validate({"camera": "gate", "source": {"kind": "images", "path": str(tmp_path)},
                                 "motion": {"roi": [0, 0, 100, 100]}, "location": {"heading_deg": 45},
                                 "policy": POLICY})
    (cam,) = one.cameras
    assert (cam.name, cam.kind, cam.path, cam.roi, cam.heading_deg) == ("gate", "images", str(tmp_path),
                                                                         (0, 0, 100, 100), 45.0)
    b = {"name": "b", "kind": "video", "path": "y.avi", "detector_size": 512, "roi": [0, 100, 1920, 600]}
    a = {"name": "a", "kind": "images", "path": "x"}
    two = Config.model_validate({"sources": [a, b], "policy": POLICY})
    assert [c.name for c in two.cameras] == ["a", "b"] and two.cameras[1].detector_size == 512
    for bad, why in (
        ({"sources": [{"name": "a", "kind": "images", "path": "x"}], "camera": "b"}, "not both"),
        ({"sources": [{"name": "a", "kind": "images", "path": "x"}] * 2}, "must differ"),
        ({"sources": [{"name": "a", "kind": "images"}]}, "path"),
        ({"sources": [{"name": "a", "kind": "images", "path": "x", "detector_size": 500}]}, "multiple"),
    ):
        try:
            Config.model_validate({**bad, "policy": POLICY})
        except ValueError as e:
            assert why in str(e), (bad, str(e))
        else:
            raise AssertionError(f"accepted {bad}")


def test_check_config_names_the_camera_whose_folder_is_missing(tmp_path: Path) -> None:
    from alprd.cli import main

    keys = agency(tmp_path)
    cfg = {
        "sources": [{"name": "a", "kind": "images", "path": str(tmp_path)},
                    {"name": "b", "kind": "images", "path": str(tmp_path / "nowhere")}],
        "hotlist": {"list_key": str(keys / "list.key"), "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub")},
        "policy": POLICY,
    }
    path = tmp_path / "alprd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert load_config(path).cameras[1].name == "b"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["check-config", str(path)]) == 2
    line = next(x for x in err.getvalue().splitlines() if "nowhere" in x)
    number = int(line.split()[0].rsplit(":", 1)[1])
    assert "sources.1.path" in line and "path:" in path.read_text().splitlines()[number - 1], line


def test_a_patrol_cars_rear_camera_reports_its_bearing_from_the_cars_heading(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    from test_daemon import ScriptedReader, rd
    from test_location import FakeGpsd, tpv

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((data_dir / "us").glob("*.jpg"))[:6]:
        (photos / p.name).symlink_to(p)
    keys = agency(tmp_path)
    gpsd = FakeGpsd()
    gpsd.send(tpv(52.5162746, 13.3777041, track=92.0, speed=11.2))
    cfg = two_cameras(tmp_path, keys, mosquitto, [
        {"name": "rear", "kind": "images", "path": str(photos), "fps": 5, "heading_deg": 180},
    ])
    cfg = Config.model_validate({**cfg.model_dump(mode="json"),
                                 "location": {"gpsd": {"host": "127.0.0.1", "port": gpsd.port}}})
    sub = Subscriber(mosquitto, "alprd/cams-dev/#")
    stop = threading.Event()
    try:
        daemon = build(cfg, stop, reader=ScriptedReader({6: [rd("7ABC123", 10)]}))  # ~1 s in: a fix by then
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
        assert daemon.run(stop) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")), 20)
    finally:
        sub.close()
        gpsd.close()
    (hit,) = sub.json_on("/hit")
    assert hit["camera"] == "rear"
    assert hit["location"]["heading"] == 92.0 and hit["location"]["camera_heading"] == 272.0
