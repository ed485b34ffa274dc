"""Daemon: pipeline decisions, sd_notify, systemd unit, and (further down) end-to-end runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alprd.config import MatchingConfig, MotionConfig, TrackingConfig
from alprd.device.motion import MotionGate
from alprd.device.pipeline import Pipeline
from alprd.device.systemd import Notifier
from alprd.device.track import Tracker
from alprd.payloads import HitBody
from alprd.privacy.hotlist import HotList, entries_from_rows, load_bundle, pack_bundle
from alprd.types import Box, Candidate, Frame, Hit, Image, Looks, Pass, PhotoResult, Read

ROOT = Path(__file__).resolve().parent.parent


def make_hotlist(plates: dict[str, str], version: int = 1) -> HotList:
    key = os.urandom(32)
    sk = Ed25519PrivateKey.generate()
    entries = entries_from_rows([{"plate": p, "reason": r} for p, r in plates.items()])
    now = datetime.now(UTC)
    bundle = pack_bundle(entries, list_key=key, signing_key=sk, version=version, issued=now,
                         valid_for=timedelta(days=1))
    return load_bundle(bundle, sk.public_key(), key, now)


class Installed:
    """A list-backed stand-in for the hot-list installer: the pipeline matches against `active`."""

    def __init__(self, hot: HotList) -> None:
        self.active = hot


class ScriptedReader:
    """A reader whose reads per frame are given up front (the real one is exercised further down)."""

    def __init__(self, script: dict[int, list[Read]]) -> None:
        self.model_hashes = {"scripted": "0" * 64}
        self.script = script
        self.calls = 0
        self.seq = 0

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        self.calls += 1
        self.seq += 1
        return PhotoResult(tuple(self.script.get(self.seq, [])), ms=1.0)


def rd(text: str, x: int, conf: float = 0.9) -> Read:
    chars = tuple(conf for _ in text)
    return Read(text, conf, chars, (Candidate(text, conf),), Box(x, 100, 80, 40), 0.9, "us")


def frame(seq: int) -> Frame:
    return Frame(image=np.zeros((360, 640, 3), np.uint8), ts=1e9 + seq, mono=float(seq), seq=seq)


def run_pipeline(script: dict[int, list[Read]], n: int, hot: HotList, min_agree: int = 2) -> list[Hit | Pass]:
    pipe = Pipeline(
        ScriptedReader(script), Tracker(TrackingConfig(close_after_frames=3)),
        MotionGate(MotionConfig(enabled=False)), Installed(hot), MatchingConfig(min_agreeing_reads=min_agree),
    )
    events: list[Hit | Pass] = []
    for i in range(1, n + 1):
        events += pipe.step(frame(i))
    return events + pipe.flush()


def test_pipeline_one_event_per_pass_and_verified_flag() -> None:
    hot = make_hotlist({"7ABC123": "stolen vehicle", "9ZZZ999": "amber alert"})
    script = {
        1: [rd("7ABC123", 10), rd("5XYZ777", 400)],
        2: [rd("7A8C123", 40, 0.5), rd("5XYZ777", 380)],
        3: [rd("7ABC123", 70)],
        8: [rd("9ZZZ999", 200)],  # seen once: a hit, but unverified
    }
    events = run_pipeline(script, 12, hot)
    hits = [e for e in events if isinstance(e, Hit)]
    passes = [e for e in events if isinstance(e, Pass)]
    assert sorted(h.track.text for h in hits) == ["7ABC123", "9ZZZ999"]
    assert [p.track.text for p in passes] == ["5XYZ777"]
    by_plate = {h.track.text: h for h in hits}
    assert by_plate["7ABC123"].verified and by_plate["7ABC123"].track.reads == 3
    assert not by_plate["9ZZZ999"].verified
    body = HitBody.of(by_plate["7ABC123"], "dev", {"lat": 1.0, "lon": 2.0}, None).as_dict()
    for key in ("v", "hit_id", "device_id", "camera", "ts", "plate", "state", "confidence", "chars",
                "candidates", "reads", "verified", "match", "box", "location", "evidence"):
        assert key in body
    assert body["match"]["reason"] == "stolen vehicle" and body["match"]["kind"] == "exact"
    assert 0 <= body["match"]["p_not_entry"] < 1


def test_listed_car_standing_in_view_is_a_hit_at_its_second_agreeing_read() -> None:
    hot = make_hotlist({"7ABC123": "stolen vehicle"})
    # a car waits at a light in front of the camera for 40 frames, next to an unlisted one
    script = {i: [rd("7ABC123", 100), rd("5XYZ777", 400)] for i in range(1, 41)}
    script[1] = [rd("7A8C123", 100, 0.4), rd("5XYZ777", 400)]
    pipe = Pipeline(
        ScriptedReader(script), Tracker(TrackingConfig(close_after_frames=3, max_track_s=3600)),
        MotionGate(MotionConfig(enabled=False)), Installed(hot), MatchingConfig(min_agreeing_reads=2),
    )
    when: dict[str, int] = {}
    events: list[Hit | Pass] = []
    for i in range(1, 46):
        for ev in pipe.step(frame(i)):
            events.append(ev)
            when.setdefault(ev.track.text, i)
    events += pipe.flush()
    hits = [e for e in events if isinstance(e, Hit)]
    assert len(hits) == 1 and hits[0].verified and hits[0].track.agreeing_reads == 2
    assert when["7ABC123"] == 3  # frames 2 and 3 agree: no waiting for the pass to close
    assert [e.track.text for e in events if isinstance(e, Pass)] == ["5XYZ777"]  # one event per pass
    assert when["5XYZ777"] == 43  # the unlisted pass is only counted when it closes


def test_lookalike_hit_and_motion_gate_skips_reader() -> None:
    hot = make_hotlist({"8OB1234": "wanted"})
    pipe = Pipeline(
        ScriptedReader({1: [rd("BOB1234", 10)], 2: [rd("BOB1234", 20)]}),
        Tracker(TrackingConfig(close_after_frames=2)), MotionGate(MotionConfig(hold_frames=0)),
        Installed(hot), MatchingConfig(),
    )
    static = frame(1)
    events = []
    for i in range(1, 6):
        events += pipe.step(Frame(image=static.image, ts=1e9 + i, mono=float(i), seq=i))
    assert pipe.skipped == 4 and pipe.processed == 1  # only the first frame of a static scene is read
    events += pipe.flush()
    assert len(events) == 1 and isinstance(events[0], Hit) and events[0].match.kind == "lookalike"


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_s == 2.0
        n.ready("ok")
        assert server.recv(4096).decode().splitlines()[0] == "READY=1"
        n.watchdog(100.0)
        assert server.recv(4096) == b"WATCHDOG=1"
        n.watchdog(100.5)  # within half the period: no ping
        n.stopping()
        assert server.recv(4096) == b"STOPPING=1"
    assert not Notifier({}).enabled and not Notifier({}).send("READY=1")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_is_hardened() -> None:
    unit = ROOT / "systemd" / "alprd.service"
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    line = [x for x in (out.stdout + out.stderr).splitlines() if "Overall exposure level" in x]
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    score = float(line[0].split(":")[1].split()[0])
    assert score <= 2.0, line[0]
    text = unit.read_text()
    for needed in ("Type=notify", "WatchdogSec=", "StateDirectory=alprd", "LoadCredential=", "User=alprd"):
        assert needed in text


def test_unit_forbids_core_dumps_caps_memory_and_the_tpm_drop_in_parses() -> None:
    import re

    unit = (ROOT / "systemd" / "alprd.service").read_text()
    # a core dump would hold the decrypted hot list; a runaway must meet a cap, not the OOM killer
    assert re.search(r"^LimitCORE=0$", unit, re.M)
    memory = re.search(r"^MemoryMax=(\d+)([KMG])$", unit, re.M)
    assert memory is not None
    assert 512 * 2**20 <= int(memory[1]) * {"K": 2**10, "M": 2**20, "G": 2**30}[memory[2]] <= 2 * 2**30
    drop_in = (ROOT / "systemd" / "alprd-tpm-list-key.conf").read_text()
    creds = set(re.findall(r"^LoadCredential=(\S+)$", unit, re.M))
    again = set(re.findall(r"^LoadCredential=(\S+)$", drop_in, re.M))
    assert "LoadCredential=\n" in drop_in and again == {c for c in creds if not c.startswith("list.key:")}
    assert re.search(r"^LoadCredentialEncrypted=list\.key:\S+\.cred$", drop_in, re.M)
    if shutil.which("systemd-analyze") is None:
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "alprd.service"
        merged.write_text(unit + "\n" + drop_in)
        out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(merged)],
                             capture_output=True, text=True, timeout=60)
    assert "ignoring" not in out.stderr and "Unknown" not in out.stderr, out.stderr


# --- the daemon with the real privacy core and a real broker (scripted reads; real models further down) --


def agency(tmp: Path) -> Path:
    from alprd.privacy.keys import generate_agency_keys

    keys = tmp / "keys"
    generate_agency_keys(keys)
    return keys


def bundle_for(keys: Path, plates: dict[str, str], version: int) -> bytes:
    from alprd.privacy.keys import load_list_key, load_signing_key

    entries = entries_from_rows([{"plate": p, "reason": r} for p, r in plates.items()])
    return pack_bundle(entries, list_key=load_list_key(keys / "list.key"),
                       signing_key=load_signing_key(keys / "signing.key"), version=version,
                       issued=datetime.now(UTC), valid_for=timedelta(hours=2))


def daemon_config(tmp: Path, keys: Path, broker: object, source: dict[str, object]) -> object:
    from alprd.config import Config

    return Config.model_validate({
        "device_id": "test-dev",
        "source": source,
        "tracking": {"close_after_frames": 2},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5,  # type: ignore[attr-defined]
                 "reconnect_min_s": 1, "reconnect_max_s": 2, "drain_timeout_s": 10},
        "storage": {"dir": str(tmp / "state")},
        "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub"), "summary_interval_s": 60},
        "policy": {"purpose": "tests", "custodian": "the CI", "retention_days": 1, "sharing": "none"},
    })


def test_daemon_hits_summaries_bad_hotlist_and_stopped(
    tmp_path: Path, mosquitto: object, data_dir: Path
) -> None:
    import threading

    from conftest import Subscriber

    from alprd.device.daemon import build

    photos = sorted((data_dir / "us").glob("*.jpg"))[:4]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, p in enumerate(photos):
        (folder / f"{i}.jpg").symlink_to(p)
    keys = agency(tmp_path)
    cfg = daemon_config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(folder)})
    # photo 0: a listed plate; photo 1: a plate not on the list; photo 2: a look-alike of a listed plate
    reader = ScriptedReader({1: [rd("7ABC123", 10)], 2: [rd("5SECRET9", 10)], 3: [rd("8OB1234", 10)]})
    sub = Subscriber(mosquitto, "alprd/test-dev/#")  # type: ignore[arg-type]
    stop = threading.Event()
    daemon = build(cfg, stop, reader=reader)  # type: ignore[arg-type]
    try:
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen", "BOB1234": "wanted"}, 5))
        assert sub.wait_for(lambda s: any(m["state"] == "online" for m in s.json_on("/status")))
        # a forged / garbage hot-list update is refused, the old list keeps matching
        sub.client.publish("alprd/test-dev/hotlist/set", b"\x00garbage" * 10, qos=1).wait_for_publish(5)
        assert sub.wait_for(lambda s: (daemon.tick(), bool(s.on("/hotlist/result")))[1])
        result = sub.json_on("/hotlist/result")[0]
        assert result["ok"] is False and result["reason"]
        # an older version (replay) is refused too
        sub.client.publish("alprd/test-dev/hotlist/set", bundle_for(keys, {"ZZZ1": "x"}, 4), qos=1)
        assert sub.wait_for(lambda s: (daemon.tick(), len(s.on("/hotlist/result")) >= 2)[1])
        assert sub.json_on("/hotlist/result")[1]["ok"] is False
        assert daemon.run(stop) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")))
    finally:
        sub.close()
    hits = sub.json_on("/hit")
    assert sorted(h["plate"] for h in hits) == ["7ABC123", "8OB1234"]
    assert {h["match"]["kind"] for h in hits} == {"exact", "lookalike"}
    assert all(h["verified"] is False for h in hits)  # one read each < min_agreeing_reads
    assert all(h["evidence"] == h["hit_id"] for h in hits)
    summaries = sub.json_on("/summary")
    # three cars passed (two listed), four photos were read; none of it was noise
    assert summaries and summaries[-1]["passes"] == 3 and summaries[-1]["hits"] == 2
    assert summaries[-1]["reads"] == 4 and summaries[-1]["noise"] == 0
    # the non-hit plate is nowhere: not in any payload, not in any file under storage.dir
    assert_absent("5SECRET9", [p for _, p, _ in sub.messages], tmp_path / "state")
    # the audit chain says what ran (config and models) and which hits were made, and verifies
    from alprd.config import config_hash
    from alprd.store import Store

    with Store(tmp_path / "state", device_id="test-dev") as store:
        entries = store.audit_entries()
        assert store.verify_audit().ok
    start = next(e for e in entries if e.event == "start")
    assert start.object["config_hash"] == config_hash(cfg)  # type: ignore[arg-type]
    assert set(start.object["models"]) == set(reader.model_hashes)
    audited = [e.object for e in entries if e.event == "hit"]
    assert sorted(a["hit_id"] for a in audited) == sorted(h["hit_id"] for h in hits)
    assert all(a["list_version"] == 5 and "plate" not in a for a in audited)


def assert_absent(plate: str, payloads: list[bytes], storage: Path) -> None:
    import hashlib

    needles = [plate.encode()]
    for algo in ("sha256", "sha1", "md5"):
        d = hashlib.new(algo, plate.encode())
        needles += [d.hexdigest().encode(), d.hexdigest().upper().encode(), d.digest()]
    blobs = list(payloads) + [p.read_bytes() for p in storage.rglob("*") if p.is_file()]
    for blob in blobs:
        for needle in needles:
            assert needle not in blob


def write_config(tmp: Path, keys: Path, broker: object, photos: Path, **mqtt: object) -> Path:
    import yaml

    cfg = {
        "device_id": "proc-dev",
        "source": {"kind": "images", "path": str(photos), "fps": 4, "loop": True},
        # every photo a car of its own (these tests are about delivery, not about stitching passes)
        "tracking": {"close_after_frames": 1, "rehit_after_s": 0},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5,  # type: ignore[attr-defined]
                 "reconnect_min_s": 1, "reconnect_max_s": 2, "drain_timeout_s": 20, **mqtt},
        "storage": {"dir": str(tmp / "state")},
        "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub")},
        "policy": {"purpose": "tests", "custodian": "the CI", "retention_days": 1, "sharing": "none"},
    }
    path = tmp / "alprd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "daemon_runner.py"), str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)


def prepared(tmp: Path, data_dir: Path) -> tuple[Path, Path]:
    from alprd.privacy.hotlist import HotListInstaller
    from alprd.privacy.keys import load_list_key, load_signing_pub
    from alprd.store import Store

    photos = tmp / "photos"
    photos.mkdir()
    for i, p in enumerate(sorted((data_dir / "us").glob("*.jpg"))[:2]):
        (photos / f"{i}.jpg").symlink_to(p)
    keys = agency(tmp)
    with Store(tmp / "state") as store:
        HotListInstaller(store, tmp / "state" / "hotlist.bundle", load_signing_pub(keys / "signing.pub"),
                         load_list_key(keys / "list.key")).install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
    return keys, photos


def produced_hits(log: Path) -> set[str]:
    import re

    return set(re.findall(r"alprd\.device\.record: hit ([0-9a-f-]{36})", log.read_text()))


def test_broker_killed_and_restarted_mid_run_every_hit_arrives(
    tmp_path: Path, mosquitto: object, data_dir: Path
) -> None:
    import signal
    import time

    from conftest import Subscriber

    keys, photos = prepared(tmp_path, data_dir)
    cfg = write_config(tmp_path, keys, mosquitto, photos)
    sub = Subscriber(mosquitto, "alprd/proc-dev/#")  # type: ignore[arg-type]
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 2, 60), log.read_text()[-3000:]
        mosquitto.kill()  # type: ignore[attr-defined]
        time.sleep(2.0)  # hits keep coming, into the outbox
        mosquitto.start()  # type: ignore[attr-defined]
        before = produced_hits(log)
        assert sub.wait_for(lambda s: {h["hit_id"] for h in s.json_on("/hit")} >= before, 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        want = produced_hits(log)
        assert sub.wait_for(lambda s: {h["hit_id"] for h in s.json_on("/hit")} >= want, 20)
        assert sub.wait_for(lambda s: [m["state"] for m in s.json_on("/status")][-1:] == ["stopped"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()


def test_daemon_sigkilled_with_hits_in_outbox_delivers_after_restart(
    tmp_path: Path, mosquitto: object, data_dir: Path
) -> None:
    import sqlite3
    import time

    from conftest import Subscriber

    from alprd.privacy.acks import make_ack
    from alprd.privacy.keys import load_ack_key

    keys, photos = prepared(tmp_path, data_dir)
    # app_ack: hits stay in the outbox until the back office confirms them (signed with ack.key)
    cfg = write_config(tmp_path, keys, mosquitto, photos, app_ack=True, ack_pub=str(keys / "ack.pub"))
    log = tmp_path / "daemon.log"
    sub = Subscriber(mosquitto, "alprd/proc-dev/hit")  # type: ignore[arg-type]
    proc = start_daemon(cfg, log)
    try:
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 3, 60), log.read_text()[-3000:]
        proc.kill()
        proc.wait(10)
        db = tmp_path / "state" / "alprd.db"
        with sqlite3.connect(db) as c:
            left = {r[0] for r in c.execute("SELECT msg_id FROM outbox WHERE kind = 'hit'")}
        assert left
        watcher = Subscriber(mosquitto, "alprd/proc-dev/status", client_id="watcher")  # type: ignore[arg-type]
        try:
            assert watcher.wait_for(lambda s: statuses_of(s)[-1:] == ["offline"], 20)
        finally:
            watcher.close()
        seen_before = len(sub.on("/hit"))
        proc = start_daemon(cfg, log)
        assert sub.wait_for(
            lambda s: {h["hit_id"] for h in s.json_on("/hit")[seen_before:]} >= left, 60
        ), log.read_text()[-3000:]
        ack_key = load_ack_key(keys / "ack.key")
        for hit_id in left:
            sub.client.publish("alprd/proc-dev/ack", make_ack(ack_key, "proc-dev", hit_id), qos=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as c:
                still = {r[0] for r in c.execute("SELECT msg_id FROM outbox")}
            if not still & left:
                break
            time.sleep(0.2)
        assert not still & left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()


def statuses_of(sub: object) -> list[object]:
    return [m["state"] for m in sub.json_on("/status")]  # type: ignore[attr-defined]


def test_missing_camera_at_start_raises_the_alarm_over_mqtt_and_keeps_retrying(
    tmp_path: Path, mosquitto: object
) -> None:
    """No camera: MQTT first, the retained status carries the `camera` alarm, READY=1 once the broker
    has it, and the camera is retried with backoff instead of the process exiting."""
    import signal
    import sys

    import yaml
    from conftest import Subscriber

    keys = agency(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    cfg = yaml.safe_load(write_config(tmp_path, keys, mosquitto, photos).read_text())
    # /dev/video57: a USB camera that is not plugged in
    cfg["source"] = {"kind": "opencv", "path": "57", "open_timeout_s": 0,
                     "reconnect_min_s": 0.2, "reconnect_max_s": 0.5}
    path = tmp_path / "alprd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    notify = tmp_path / "notify.sock"
    log = tmp_path / "daemon.log"
    sub = Subscriber(mosquitto, "alprd/proc-dev/#")  # type: ignore[arg-type]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(notify))
        systemd.settimeout(30)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), NOTIFY_SOCKET=str(notify))
        with log.open("ab") as err:
            proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "daemon_runner.py"), str(path)],
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            ready = systemd.recv(4096).decode().splitlines()
            assert ready[0] == "READY=1" and "camera" in ready[1], (ready, log.read_text()[-3000:])
            # READY came after the broker acknowledged the alarm: it is there, retained
            watcher = Subscriber(mosquitto, "alprd/proc-dev/status", client_id="watcher")  # type: ignore[arg-type]
            try:
                assert watcher.wait_for(lambda s: bool(s.messages))
                _, payload, retained = watcher.messages[0]
            finally:
                watcher.close()
            status = json.loads(payload)
            assert retained and status["state"] == "online", status
            assert "camera" in status["alarms"] and status["camera"] == "lost" and status["camera_error"]
            # still running, still retrying the camera
            time.sleep(2.0)
            assert proc.poll() is None, log.read_text()[-3000:]
            assert log.read_text().count("retrying in") >= 2, log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(40) == 0, log.read_text()[-3000:]
            assert sub.wait_for(lambda s: statuses_of(s)[-1:] == ["stopped"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            sub.close()


# --- metrics, threads, gpsd location (scripted reads, real broker, real gpsd protocol) -------------


def test_metrics_payload_threads_and_gpsd_location_on_hits(
    tmp_path: Path, mosquitto: object, data_dir: Path
) -> None:
    import threading

    from conftest import Subscriber
    from test_location import FakeGpsd, tpv

    from alprd.config import Config
    from alprd.device.daemon import build

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(sorted((data_dir / "us").glob("*.jpg"))[:10]):
        (photos / f"{i:02d}.jpg").symlink_to(p)
    keys = agency(tmp_path)
    gpsd = FakeGpsd()
    gpsd.send(tpv(52.5162746, 13.3777041, track=92.0, speed=11.2))
    base = daemon_config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(photos), "fps": 5})
    cfg = Config.model_validate({
        **base.model_dump(mode="json"),  # type: ignore[attr-defined]
        "location": {"gpsd": {"host": "127.0.0.1", "port": gpsd.port}}, "metrics": {"interval_s": 1},
    })
    seen_threads: list[list[str]] = []
    test_threads: set[str] = set()  # the fake gpsd and the subscriber's paho thread, added below

    class WatchingReader(ScriptedReader):
        def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
            seen_threads.append(sorted(t.name for t in threading.enumerate() if t.name not in test_threads))
            return super().read(image, region)

    # photo 8 shows a listed plate; by then (~1.5 s in) gpsd has reported a fix
    reader = WatchingReader({8: [rd("7ABC123", 10)], 3: [rd("5SECRET9", 10)]})
    sub = Subscriber(mosquitto, "alprd/test-dev/#")  # type: ignore[arg-type]
    test_threads.update(t.name for t in threading.enumerate() if t is not threading.main_thread())
    stop = threading.Event()
    try:
        daemon = build(cfg, stop, reader=reader)
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
        assert daemon.run(stop) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")))
    finally:
        sub.close()
        gpsd.close()
    # never more than three threads of ours: the pipeline, paho's network thread, the purge thread
    assert seen_threads and all(len(names) <= 3 for names in seen_threads), seen_threads[-1]
    assert {n for names in seen_threads for n in names} == {
        "MainThread", "alprd-housekeeping", "paho-mqtt-client-test-dev"}
    assert not any(t.name == "alprd-housekeeping" for t in threading.enumerate())  # joined at shutdown

    (hit,) = sub.json_on("/hit")
    assert hit["location"] == {"lat": 52.5162746, "lon": 13.3777041, "source": "gpsd", "heading": 92.0,
                               "speed_mps": 11.2}
    metrics = sub.json_on("/metrics")
    assert len(metrics) >= 2
    last = metrics[-1]
    assert last["v"] == 1 and last["id"] and last["ts"] > 0
    assert last["frames_in"] == 10 and last["frames_processed"] == 10  # the final metrics: every photo
    assert last["frames_dropped"] == 0 and last["frames_skipped_motion"] == 0
    for stage in ("read", "track_match", "step"):
        ms = last["ms"][stage]
        assert 0 <= ms["p50"] <= ms["p95"] and ms["n"] == last["frames_in"]
    assert last["outbox_depth"] >= 0 and last["ram_hits"] == 0 and last["mqtt_inflight"] >= 0
    assert last["mqtt_connected"] is True
    assert metrics[0]["threads"] == 3 + len(test_threads)  # while running; the last one is sent at shutdown
    assert all(m["threads"] <= 3 + len(test_threads) for m in metrics)
    assert 20 < last["rss_mb"] < 2000
    assert last["disk_free_mb"] > 0
    assert 0 <= last["hotlist_age_s"] < 600
    assert last["alarms"] == []
    assert "cpu_temp_c" in last
    assert set(last) >= {"camera_reconnects", "reads", "hits", "passes", "open_tracks", "summaries_dropped"}


def test_cpu_temperature_is_read_when_the_thermal_zone_exists(tmp_path: Path) -> None:
    from alprd.device.health import THERMAL_ZONE, cpu_temp_c

    zone = tmp_path / "temp"
    zone.write_text("48312\n")  # what a Raspberry Pi 4 reports: millidegrees
    assert cpu_temp_c(zone) == 48.3
    zone.write_text("n/a\n")
    assert cpu_temp_c(zone) is None
    assert cpu_temp_c(tmp_path / "missing") is None
    assert cpu_temp_c() == (cpu_temp_c(THERMAL_ZONE) if THERMAL_ZONE.exists() else None)


def test_housekeeper_runs_on_its_thread_and_reports_failures() -> None:
    import threading

    from alprd.device.housekeeping import Housekeeper
    from alprd.errors import StoreError

    calls: list[str] = []
    fail = threading.Event()

    def work() -> None:
        calls.append(threading.current_thread().name)
        if fail.is_set():
            raise StoreError("storage is full")

    hk = Housekeeper(work, 0.02)
    hk.start()
    try:
        deadline = time.monotonic() + 5
        while hk.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hk.error == "" and set(calls) == {"alprd-housekeeping"}
        fail.set()
        while not hk.error and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "full" in hk.error
        fail.clear()
        while hk.error and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hk.error == ""
    finally:
        hk.stop()
    assert not any(t.name == "alprd-housekeeping" for t in threading.enumerate())


# --- a full disk: summaries stop, hits are kept in RAM and retried, alarm in status -------------------


class TmpfsDisk:
    """storage.dir on a real 4 MiB tmpfs that the test fills with a file (needs mount rights: root)."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:100]}); the Store double covers it")
        self.filler = mountpoint / "filler"
        self.store = None

    def fill(self) -> None:
        import errno

        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)


class StoreDoubleDisk:
    """Where no tmpfs can be mounted: a real Store whose writes raise StoreError while `full` is set."""

    def __init__(self, mountpoint: Path) -> None:
        from alprd.store import Store

        class FullableStore(Store):
            full = False

            def _refuse(self, what: str) -> None:
                if self.full:
                    raise StoreError(f"{what}: storage is full (database or disk is full)")

            def outbox_put(self, msg_id: str, topic: str, payload: bytes, kind: str) -> None:
                self._refuse("outbox_put")
                super().outbox_put(msg_id, topic, payload, kind)

            def outbox_ack(self, msg_id: str) -> None:
                self._refuse("outbox_ack")
                super().outbox_ack(msg_id)

            def put_evidence(self, hit_id: str, sealed: bytes) -> Path:
                self._refuse("put_evidence")
                return super().put_evidence(hit_id, sealed)

            def state_set(self, key: str, value: str) -> None:
                self._refuse("state_set")
                super().state_set(key, value)

            def audit(self, actor: str, event: str, obj: object, purpose: str = "") -> None:
                self._refuse("audit")
                super().audit(actor, event, obj, purpose)

        from alprd.errors import StoreError

        self.mountpoint = mountpoint
        self.store = FullableStore(mountpoint / "state", device_id="test-dev")

    def fill(self) -> None:
        self.store.full = True  # type: ignore[attr-defined]

    def free(self) -> None:
        self.store.full = False  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("disk_kind", ["tmpfs", "store_double"])
def test_full_disk_stops_summaries_keeps_hits_in_ram_and_raises_the_alarm(
    tmp_path: Path, mosquitto: object, data_dir: Path, disk_kind: str
) -> None:
    import threading

    from conftest import Subscriber

    from alprd.config import Config
    from alprd.device.daemon import Daemon, build

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, p in enumerate(sorted((data_dir / "us").glob("*.jpg"))[:2]):
        (photos / f"{i}.jpg").symlink_to(p)
    keys = agency(tmp_path)
    disk = (TmpfsDisk if disk_kind == "tmpfs" else StoreDoubleDisk)(tmp_path / "disk")
    base = daemon_config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(photos), "loop": True})
    cfg = Config.model_validate({
        **base.model_dump(mode="json"),  # type: ignore[attr-defined]
        "storage": {"dir": str(disk.mountpoint / "state")},
        "hotlist": {"bundle": str(disk.mountpoint / "state" / "hotlist.bundle"),
                    "list_key": str(keys / "list.key"), "signing_pub": str(keys / "signing.pub")},
    })
    # summaries every second: below what a config may say, so set past its validation
    cfg = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={"summary_interval_s": 1})})
    # every other frame shows one listed plate, so each frame pair closes one pass
    reader = ScriptedReader({1: [rd("7ABC123", 10)], 3: [rd("4DEF567", 10)], 5: [rd("9GHJ890", 10)]})
    sub = Subscriber(mosquitto, "alprd/test-dev/#")  # type: ignore[arg-type]
    daemon: Daemon | None = None

    def frames(n: int) -> None:
        assert daemon is not None
        for _ in range(n):
            f = daemon.source.read(0.2)
            assert f is not None
            daemon.handle(daemon.pipeline.step(f))
            daemon.tick()

    def ticking(pred: object, timeout: float = 20.0) -> bool:
        assert daemon is not None
        d = daemon
        return sub.wait_for(lambda s: (d.tick(), pred(s))[1], timeout)  # type: ignore[operator]

    def hit_plates(s: Subscriber) -> list[str]:
        return [str(h["plate"]) for h in s.json_on("/hit")]

    try:
        daemon = build(cfg, threading.Event(), reader=reader, store=disk.store)
        daemon.HOUSEKEEPING_S = 0.2  # type: ignore[misc]  # summaries and status come quickly in a test
        daemon.hotlist.install(
            bundle_for(keys, {"7ABC123": "stolen", "4DEF567": "stolen", "9GHJ890": "stolen"}, 1))
        daemon.announce()
        # 1. disk fine: the hit goes through the durable outbox, evidence is sealed to disk
        frames(2)
        assert ticking(lambda s: hit_plates(s) == ["7ABC123"] and daemon.store.outbox_depth() == 0)
        assert daemon.alarms == []

        # 2a. disk full, broker up: the hit is kept in RAM and published from there; alarm in status
        disk.fill()
        summaries_before = len(sub.on("/summary"))
        frames(2)
        assert "storage" in daemon.alarms
        assert ticking(lambda s: hit_plates(s) == ["7ABC123", "4DEF567"] and len(daemon.outbox) == 0)
        assert daemon.store.outbox_depth() == 0  # it never reached the disk, and is not resent

        def storage_alarm(s: Subscriber) -> bool:
            last = s.json_on("/status")[-1:]
            return bool(last) and last[0]["state"] == "online" and last[0]["alarms"] == ["storage"] and (
                "full" in str(last[0].get("storage_error")))

        assert ticking(storage_alarm)
        # a summary came due and was dropped
        assert ticking(lambda s: daemon.recorder.summaries_dropped >= 1, 10)
        assert len(sub.on("/summary")) == summaries_before

        # 2b. disk full and broker gone: the hit waits in RAM, retried every second
        mosquitto.kill()  # type: ignore[attr-defined]
        frames(2)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            daemon.tick()
            time.sleep(0.05)
        assert len(daemon.outbox) == 1 and daemon.metrics()["ram_hits"] == 1
        assert "storage" in daemon.metrics()["alarms"]

        # 3. space again: the RAM hit moves into the durable outbox, the alarm clears
        disk.free()
        assert ticking(lambda s: len(daemon.outbox) == 0 and daemon.alarms == [], 10)
        assert daemon.store.outbox_depth() >= 1
        mosquitto.start()  # type: ignore[attr-defined]
        assert ticking(lambda s: hit_plates(s) == ["7ABC123", "4DEF567", "9GHJ890"], 30)
        assert ticking(lambda s: len(s.on("/summary")) > summaries_before, 10)  # summaries are back
        assert ticking(lambda s: s.json_on("/status")[-1].get("alarms") == [], 10)
        daemon.shutdown()
        daemon = None
        assert sub.wait_for(lambda s: s.json_on("/status")[-1]["state"] == "stopped")
    finally:
        if daemon is not None:
            daemon.store.close()
            if daemon.publisher is not None:
                daemon.publisher.stop()
        sub.close()
        disk.close()
    hits = {h["plate"]: h for h in sub.json_on("/hit")}
    assert hits["7ABC123"]["evidence"] == hits["7ABC123"]["hit_id"]
    assert hits["4DEF567"]["evidence"] is None and hits["9GHJ890"]["evidence"] is None  # no room for it
    assert len({h["hit_id"] for h in hits.values()}) == 3


# --- end to end with the real models over real photos -------------------------------------------------


def test_real_models_end_to_end_over_us_photos(
    tmp_path: Path, mosquitto: object, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hot list = a deterministic third of the labelled plates. Every listed plate the reader gets
    right is a hit on the broker; no other labelled plate is in any payload, file or log line."""
    import csv
    import logging
    import threading

    from conftest import Subscriber

    from alprd.config import Config
    from alprd.device.daemon import build
    from alprd.read.reader import PlateReader

    us = data_dir / "us"
    labels = {r["file"]: r["plate"] for r in csv.DictReader((us / "labels.csv").read_text().splitlines())}
    plates = sorted(set(labels.values()))
    listed = set(plates[::3])
    keys = agency(tmp_path)
    base = daemon_config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(us)})
    cfg = Config.model_validate({
        **base.model_dump(mode="json"),  # type: ignore[attr-defined]
        "reader": {"region": "us"}, "motion": {"enabled": False},
        "tracking": {"close_after_frames": 2, "rehit_after_s": 3600},  # however slow the machine
    })
    stop = threading.Event()
    reads_by_photo: dict[str, list[tuple[str, tuple[int, ...]]]] = {}

    class RecordingReader:
        """The real reader; remembers what it read in which photo (the expectation below)."""

        def __init__(self) -> None:
            self.inner = PlateReader(cfg.reader)
            self.model_hashes = self.inner.model_hashes
            self.scene = ""  # the photo being read, as SceneSource hands it out

        def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
            result = self.inner.read(image, region, looks)
            reads_by_photo[self.scene] = [(r.text, tuple(r.box.as_list())) for r in result.reads]
            return result

    class SceneSource:
        """The daemon's own photo source, telling the reader which photo comes next."""

        def __init__(self, inner: object) -> None:
            self.inner = inner

        def read(self, timeout: float) -> Frame | None:
            frame: Frame | None = self.inner.read(timeout)  # type: ignore[attr-defined]
            if frame is not None:
                reader.scene = frame.scene
            return frame

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    reader = RecordingReader()
    sub = Subscriber(mosquitto, "alprd/test-dev/#")  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    try:
        daemon = build(cfg, stop, reader=reader)
        daemon.source = SceneSource(daemon.source)  # type: ignore[assignment]
        daemon.hotlist.install(bundle_for(keys, {p: "e2e test" for p in listed}, 1))
        assert daemon.run(stop) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")), 20)
    finally:
        sub.close()
    assert set(reads_by_photo) == set(labels)

    def photos_of(hit: dict[str, object]) -> list[str]:
        key = (hit["plate"], tuple(hit["box"]))  # type: ignore[arg-type]
        return [p for p, reads in reads_by_photo.items() if key in reads]

    hits = sub.json_on("/hit")
    hit_photos = {p: h for h in hits for p in photos_of(h)}
    assert len(hit_photos) >= len(hits)
    read_right = {p for p, plate in labels.items()
                  if plate in listed and plate in {t for t, _ in reads_by_photo[p]}}
    assert len(read_right) >= len([p for p in labels if labels[p] in listed]) // 3  # the reader works at all
    hit_plates = [str(h["plate"]) for h in hits]
    for photo in read_right:
        # the folder has a car photographed twice: one car within rehit_after_s, one hit from either photo
        assert photo in hit_photos or labels[photo] in {labels[q] for q in hit_photos}, (
            f"{photo}: listed plate read right but no hit")
    assert {labels[p] for p in read_right} <= set(hit_plates)
    assert len(hit_plates) == len(set(hit_plates)), "a listed car gave a second hit"
    # every other labelled plate: not listed and its car produced no hit (a look-alike hit is a hit)
    others = {plate for p, plate in labels.items() if plate not in listed and p not in hit_photos}
    assert len(others) > 40
    print(f"e2e: {len(labels)} photos, {len(listed)} listed plates, {len(read_right)} listed photos read "
          f"right, {len(hits)} hits, {len(others)} other plates checked absent")
    payloads = [p for _, p, _ in sub.messages]
    log_lines = [r.getMessage().encode() for r in caplog.records if r.levelno > logging.DEBUG]
    for plate in sorted(others):
        assert_absent(plate, payloads + log_lines, tmp_path / "state")
    for plate in sorted(set(plates)):
        assert all(plate.encode() not in line for line in log_lines), "a plate logged above DEBUG"


def test_services_bound_outbox_by_retention_rotate_token_key_audited_and_alarm_quarantine(
    tmp_path: Path,
) -> None:
    import types

    from privacy_support import FakeClock

    from alprd.device.housekeeping import purge
    from alprd.device.record import lifecycle_audit
    from alprd.privacy.summaries import Summarizer
    from alprd.store import Store

    keys = agency(tmp_path)
    broker = types.SimpleNamespace(host="127.0.0.1", port=1883)  # never contacted here
    cfg = daemon_config(tmp_path, keys, broker, {"kind": "images", "path": str(tmp_path)})
    state = tmp_path / "state"
    state.mkdir()
    (state / "alprd.db").write_bytes(b"not a database at all" * 100)
    clock = FakeClock()
    # the store and the token summarizer as the daemon builds them
    store = Store.from_config(cfg, clock, allow_unavailable=True)  # type: ignore[arg-type]
    summarizer = Summarizer("tokens", 16, 60, clock, audit=lifecycle_audit(store))
    assert store.outbox_ttl_s == 86400.0  # policy.retention_days: 1
    try:
        # the damaged database was moved aside and a fresh one started: the alarm has to say so
        assert store.quarantined is not None and store.quarantined.exists()
        store.outbox_put("h-1", "hit", b'{"hit_id":"h-1"}', "hit")
        clock.advance(3600)
        purge(store)
        assert store.outbox_depth() == 1  # an hour old: kept for delivery
        clock.advance(86400)
        purge(store)
        assert store.outbox_depth() == 0  # older than the retention the policy names: gone
        summarizer.add("7ABC123", None, 0.9, False)
        body = summarizer.flush().as_dict()
        assert body is not None and body["mode"] == "tokens"
        rotations = [e.object for e in store.audit_entries() if e.event == "summary.key_rotated"]
        assert rotations == [{"epoch": 0, "next_epoch": 1}]
    finally:
        store.close()


def test_token_key_rotation_on_a_full_disk_still_gives_the_summary(tmp_path: Path) -> None:
    from alprd.device.record import lifecycle_audit
    from alprd.privacy.summaries import Summarizer

    disk = StoreDoubleDisk(tmp_path / "disk")
    summarizer = Summarizer("tokens", audit=lifecycle_audit(disk.store))
    try:
        disk.fill()
        body = summarizer.flush().as_dict()  # the audit write fails; the summary must not
        assert body is not None and body["mode"] == "tokens" and summarizer.epoch == 1
        disk.free()
    finally:
        disk.store.close()
