"""The daemon against hostile input and hard faults, as the 2026-12-05 attack run tried them (issue 24):
real mosquitto, real keys, real SQLite, the real privacy core; only the reader is scripted.

Each test names the row it covers. They run the daemon in this process (its loop on a thread of
the test) where that is enough, and as its own process where the fault is the process: a second
instance, a start on a full disk, SIGTERM, SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Mosquitto, Subscriber
from daemon_runner import OnePlateReader
from test_daemon import agency, bundle_for, prepared, produced_hits, start_daemon, write_config

from alprd.config import Config
from alprd.device.daemon import Daemon, build
from alprd.privacy.acks import make_ack
from alprd.privacy.keys import load_ack_key, load_list_key, load_signing_key
from alprd.privacy.listkey import seal_for_device
from alprd.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent
DEV = "hostile-dev"


def config(tmp: Path, keys: Path, broker: Mosquitto, photos: Path, **extra: Any) -> Config:
    mqtt = {"host": broker.host, "port": broker.port, "keepalive_s": 5, "reconnect_min_s": 1,
            "reconnect_max_s": 2, "drain_timeout_s": 2, "ack_pub": str(keys / "ack.pub"),
            **extra.pop("mqtt", {})}
    hotlist = {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
               "signing_pub": str(keys / "signing.pub"), **extra.pop("hotlist", {})}
    return Config.model_validate({
        "device_id": DEV,
        "source": {"kind": "images", "path": str(photos), "fps": 4, "loop": True},
        # every photo a car of its own: a hit per photo (stitching is tested in test_daemon.py)
        "tracking": {"close_after_frames": 1, "rehit_after_s": 0},
        "mqtt": mqtt,
        "storage": {"dir": str(tmp / "state")},
        "hotlist": hotlist,
        "privacy": {"evidence_pub": str(keys / "evidence.pub")},
        "policy": {"purpose": "tests", "custodian": "the CI", "retention_days": 1, "sharing": "none"},
        **extra,
    })


class Running:
    """`Daemon.run(stop)` on a thread; whatever ends it early is kept in `error`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name="test-daemon-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.daemon.run(self.stop)
        except BaseException as e:
            self.error = e

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def finish(self, timeout: float = 40.0) -> int | None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"
        assert self.error is None, repr(self.error)
        return self.code


@pytest.fixture
def photos(tmp_path: Path, data_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, p in enumerate(sorted((data_dir / "us").glob("*.jpg"))[:2]):
        (folder / f"{i}.jpg").symlink_to(p)
    return folder


def publish(sub: Subscriber, topic: str, payload: bytes, retain: bool = False) -> None:
    sub.client.publish(f"alprd/{DEV}/{topic}", payload, qos=1, retain=retain).wait_for_publish(5)


def hit_ids(sub: Subscriber) -> set[str]:
    return {str(h["hit_id"]) for h in sub.json_on("/hit")}


def audit_events(state: Path) -> list[tuple[str, Any]]:
    with Store(state, device_id=DEV) as store:
        assert store.verify_audit().ok
        return [(e.event, e.object) for e in store.audit_entries()]


# --- bug 1: a remote crash through the ack topic and through gpsd ---------------------------------


def test_deep_nesting_on_the_ack_topic_and_from_gpsd_is_refused_not_fatal(
    tmp_path: Path, mosquitto: Mosquitto, photos: Path
) -> None:
    from test_location import FakeGpsd, tpv

    keys = agency(tmp_path)
    gpsd = FakeGpsd()
    gpsd.send(b"[" * 5000 + b"\n")
    gpsd.send(tpv(52.5, 13.4))
    cfg = config(tmp_path, keys, mosquitto, photos, mqtt={"app_ack": True},
                 location={"gpsd": {"host": "127.0.0.1", "port": gpsd.port}})
    sub = Subscriber(mosquitto, f"alprd/{DEV}/#")
    # retained: the broker hands it to the device at every (re)connect, and used to kill every start
    publish(sub, "ack", b"[" * 4000, retain=True)
    run = None
    try:
        daemon = build(cfg, threading.Event(), reader=OnePlateReader())
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
        run = Running(daemon)
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 2 and run.alive, 30), repr(run.error)
        assert run.alive and daemon.refusals.total.get("ack", 0) >= 1
        assert daemon.locator.gpsd is not None and daemon.locator.gpsd.refused >= 1
        assert sub.wait_for(lambda s: any((h.get("location") or {}).get("source") == "gpsd"
                                          for h in s.json_on("/hit")), 10)  # the next good line counts
        publish(sub, "ack", b'{"hit_id":' * 3000)
        publish(sub, "ack", b"\xff" * 5000)  # over the size limit: refused unread
        assert sub.wait_for(lambda s: daemon.refusals.total.get("ack", 0) >= 3 and run.alive, 10)
        assert run.finish() == 0
    finally:
        if run is not None and run.thread.is_alive():
            run.stop.set()
            run.thread.join(30)
        publish(sub, "ack", b"", retain=True)  # clear the retained junk
        sub.close()
        gpsd.close()


# --- bug 6: only signed acks drop a hit ---------------------------------------------------------


def test_unsigned_or_wrongly_signed_acks_drop_nothing_signed_ones_do(
    tmp_path: Path, mosquitto: Mosquitto, photos: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = agency(tmp_path)
    cfg = config(tmp_path, keys, mosquitto, photos, mqtt={"app_ack": True})
    sub = Subscriber(mosquitto, f"alprd/{DEV}/#")
    forger = Ed25519PrivateKey.generate()
    run = None
    try:
        daemon = build(cfg, threading.Event(), reader=OnePlateReader())
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
        run = Running(daemon)
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 4, 30), repr(run.error)
        ids = sorted(hit_ids(sub))
        # everything a client that reads the hit topic could send without ack.key
        for hit_id in ids:
            publish(sub, "ack", json.dumps({"hit_id": hit_id}).encode())
            publish(sub, "ack", hit_id.encode())
            publish(sub, "ack", make_ack(forger, DEV, hit_id))
            publish(sub, "ack", json.dumps({"hit_id": hit_id, "sig": "AAAA"}).encode())
        ack_key = load_ack_key(keys / "ack.key")
        publish(sub, "ack", make_ack(ack_key, "another-device", ids[0]))  # signed, for another device
        assert sub.wait_for(lambda s: daemon.refusals.total.get("ack", 0) >= 4 * len(ids) + 1, 15)
        depth = sqlite3.connect(tmp_path / "state" / DB_NAME).execute(
            "SELECT msg_id FROM outbox WHERE kind = 'hit'").fetchall()
        assert set(ids) <= {r[0] for r in depth}  # not one hit was dropped
        for hit_id in ids:
            publish(sub, "ack", make_ack(ack_key, DEV, hit_id))

        def acked(_: Subscriber) -> bool:
            rows = sqlite3.connect(tmp_path / "state" / DB_NAME).execute("SELECT msg_id FROM outbox")
            return not set(ids) & {r[0] for r in rows}

        assert sub.wait_for(acked, 15)
        assert daemon.metrics()["refused"]["ack"] == 4 * len(ids) + 1
        run.finish()
    finally:
        if run is not None and run.thread.is_alive():
            run.stop.set()
            run.thread.join(30)
        sub.close()
    # one audit row for the window's refusals, not one per message
    refused = [obj for event, obj in audit_events(tmp_path / "state") if event == "refused"]
    assert len(refused) == 1 and refused[0]["counts"]["ack"] == 4 * len(ids) + 1


# --- 11: fuzzing every subscribed topic (hq key mode: hotlist/set, hotlist/key and ack) -----------


def test_fuzzing_every_subscribed_topic_counts_refusals_per_window_and_hits_keep_flowing(
    tmp_path: Path, mosquitto: Mosquitto, photos: Path
) -> None:
    import random

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from alprd.privacy.keys import load_or_create_device_seal_key

    keys = agency(tmp_path)
    cfg = config(tmp_path, keys, mosquitto, photos, mqtt={"app_ack": True},
                 hotlist={"key_source": "hq", "list_key": str(tmp_path / "absent.key")})
    sub = Subscriber(mosquitto, f"alprd/{DEV}/#")
    rng = random.Random(24)
    run = None
    try:
        daemon = build(cfg, threading.Event(), reader=OnePlateReader())
        run = Running(daemon)
        assert sub.wait_for(lambda s: any(json.loads(p).get("state") == "online" for p in s.on("/status")))
        assert "no_hotlist" in daemon.alarms  # no list key on the device: nothing to decrypt with
        device_pub = load_or_create_device_seal_key(tmp_path / "state" / "device-x25519.key").public_key()
        signing = load_signing_key(keys / "signing.key")
        list_key = load_list_key(keys / "list.key")
        publish(sub, "hotlist/key", seal_for_device(signing, device_pub, DEV, list_key), retain=True)
        assert sub.wait_for(lambda s: daemon.hotlist.has_list_key, 10)
        publish(sub, "hotlist/set", bundle_for(keys, {"7ABC123": "stolen"}, 5))
        assert sub.wait_for(lambda s: any(r["ok"] for r in s.json_on("/hotlist/result")), 10)
        good_bundle = bundle_for(keys, {"7ABC123": "stolen"}, 6)
        junk: list[bytes] = [
            b"", b"[" * 4000, b"{" * 5000, b'{"a":' * 3000, b"]" * 100, b"null", b"1e999999", b"9" * 5000,
            b'"' + b"\\" * 3000, b"\x00" * 100, bytes(rng.randrange(256) for _ in range(3000)),
            json.dumps({"hit_id": ["x"] * 10}).encode(), json.dumps([{"v": 1}] * 50).encode(),
            good_bundle[:-1], good_bundle[:100], good_bundle[:-64] + bytes(64),
        ]
        other = seal_for_device(signing, X25519PrivateKey.generate().public_key(), DEV, list_key)
        old = seal_for_device(signing, device_pub, DEV, list_key, issued=1)
        wrong_device = seal_for_device(signing, device_pub, "other", list_key)
        sent = 0
        for topic in ("hotlist/set", "hotlist/key", "ack"):
            for payload in junk:
                publish(sub, topic, payload)
                sent += 1
        for payload in (other, old, wrong_device):
            publish(sub, "hotlist/key", payload)
            sent += 1
        for _ in range(200):  # bulk: each one would have been an audit row
            publish(sub, "hotlist/set", bytes(rng.randrange(256) for _ in range(64)))
            sent += 1
        assert sub.wait_for(lambda s: sum(daemon.refusals.total.values()) >= sent and run.alive, 30), (
            daemon.refusals.total, repr(run.error))
        assert sum(daemon.refusals.total.values()) == sent
        assert run.alive and set(daemon.refusals.total) == {"hotlist/set", "hotlist/key", "ack"}
        assert daemon.hotlist.active is not None and daemon.hotlist.active.version == 5
        # hits still flow and leave the outbox on signed acks
        ack_key = load_ack_key(keys / "ack.key")
        before = len(sub.on("/hit"))
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= before + 2, 20)
        for hit_id in hit_ids(sub):
            publish(sub, "ack", make_ack(ack_key, DEV, hit_id))
        assert run.finish() == 0
    finally:
        if run is not None and run.thread.is_alive():
            run.stop.set()
            run.thread.join(30)
        publish(sub, "hotlist/key", b"", retain=True)
        sub.close()
    events = audit_events(tmp_path / "state")
    refused = [obj for event, obj in events if event == "refused"]
    assert len(refused) == 1 and sum(refused[0]["counts"].values()) == sent
    assert not [e for e, _ in events if e in ("hotlist.reject", "hotlist_reject")]
    assert [e for e, _ in events].count("hotlist.key") == 1
    # the list key never touched the card: not in any file under storage.dir
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert list_key not in path.read_bytes(), path


# --- bug 7: the SIGTERM drain ends when every hit is acked ------------------------------------------


def test_sigterm_in_app_ack_mode_ends_once_every_hit_is_acked(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys, photos = prepared(tmp_path, data_dir)
    cfg = write_config(tmp_path, keys, mosquitto, photos, app_ack=True, ack_pub=str(keys / "ack.pub"),
                       drain_timeout_s=30)
    ack_key = load_ack_key(keys / "ack.key")
    acked: set[str] = set()

    class BackOffice(Subscriber):
        def _on_message(self, client: object, userdata: object, msg: object) -> None:
            super()._on_message(client, userdata, msg)
            if msg.topic.endswith("/hit"):  # type: ignore[attr-defined]
                hit_id = json.loads(msg.payload)["hit_id"]  # type: ignore[attr-defined]
                acked.add(hit_id)
                self.client.publish("alprd/proc-dev/ack", make_ack(ack_key, "proc-dev", hit_id), qos=1)

    sub = BackOffice(mosquitto, "alprd/proc-dev/#")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 3, 60), log.read_text()[-3000:]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        took = time.monotonic() - t0
        assert took < 10, f"the drain waited {took:.1f} s of its 30 s although every hit was acked"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()
    with sqlite3.connect(tmp_path / "state" / DB_NAME) as c:
        left = {r[0] for r in c.execute("SELECT msg_id FROM outbox WHERE kind = 'hit'")}
    assert not left & acked, "acked hits are still in the outbox: they would be sent again at the next start"


# --- bug 4: one instance per storage dir ------------------------------------------------------------


def test_a_second_instance_on_the_same_storage_exits_2_naming_the_pid(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys, photos = prepared(tmp_path, data_dir)
    cfg = write_config(tmp_path, keys, mosquitto, photos)
    sub = Subscriber(mosquitto, "alprd/proc-dev/#")
    log = tmp_path / "daemon.log"
    first = start_daemon(cfg, log)
    try:
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 1, 60), log.read_text()[-3000:]
        out = subprocess.run([sys.executable, "-m", "alprd", "run", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"PID {first.pid}" in out.stderr and str(tmp_path / "state") in out.stderr
        assert first.poll() is None  # the first one runs on, undisturbed
        first.send_signal(signal.SIGTERM)
        assert first.wait(40) == 0
        # the lock goes with the process, even a SIGKILLed one: a restart is never blocked
        again = start_daemon(cfg, log)
        seen = len(sub.on("/hit"))
        assert sub.wait_for(lambda s: len(s.on("/hit")) > seen, 60), log.read_text()[-3000:]
        again.kill()
        again.wait(10)
        third = start_daemon(cfg, log)
        try:
            seen = len(sub.on("/hit"))
            assert sub.wait_for(lambda s: len(s.on("/hit")) > seen, 60), log.read_text()[-3000:]
        finally:
            third.send_signal(signal.SIGTERM)
            assert third.wait(40) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        sub.close()


# --- bug 3: starting on a full disk runs degraded -----------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:100]}); CI runs as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    import errno

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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


def test_start_on_a_full_disk_runs_degraded_with_hits_in_ram_and_the_storage_alarm(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path, tiny_disk: Path
) -> None:
    keys, photos = prepared(tiny_disk, data_dir)  # storage.dir, its database and the list on the tmpfs
    cfg = write_config(tiny_disk, keys, mosquitto, photos)
    # it has run before: a database, a session file, a lock file (as a real device would have)
    Store(tiny_disk / "state").close()
    (tiny_disk / "state" / "session").write_text("4")
    fill(tiny_disk / "filler")
    sub = Subscriber(mosquitto, "alprd/proc-dev/#")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        def degraded(s: Subscriber) -> bool:
            last = s.json_on("/status")[-1:]
            return bool(last) and last[0]["state"] == "online" and "storage" in last[0].get("alarms", [])

        assert sub.wait_for(degraded, 60), log.read_text()[-3000:]
        assert sub.wait_for(lambda s: len(s.on("/hit")) >= 2, 30), log.read_text()[-3000:]
        assert proc.poll() is None
        assert "full" in str(sub.json_on("/status")[-1].get("storage_error"))
        (tiny_disk / "filler").unlink()  # space again: the alarm clears, the store opens
        assert sub.wait_for(lambda s: s.json_on("/status")[-1].get("alarms") == [], 30), (
            log.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sub.close()
    assert "Traceback" not in log.read_text()


# --- 11: a SIGKILL loop, the chain and the outbox checked after each kill ----------------------------


def test_thirty_sigkills_leave_a_verifying_chain_and_a_sound_outbox(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    import random

    keys, photos = prepared(tmp_path, data_dir)
    cfg = write_config(tmp_path, keys, mosquitto, photos, app_ack=True, ack_pub=str(keys / "ack.pub"))
    text = yaml.safe_load(cfg.read_text())
    text["source"]["fps"] = 20
    cfg.write_text(yaml.safe_dump(text))
    sub = Subscriber(mosquitto, "alprd/proc-dev/hit")
    log = tmp_path / "daemon.log"
    rng = random.Random(30)
    state = tmp_path / "state"
    entries = 0
    try:
        for kill in range(30):
            proc = start_daemon(cfg, log)
            time.sleep(rng.uniform(0.4, 1.8))  # mid-start, mid-hit, mid-purge: wherever it lands
            proc.kill()
            proc.wait(10)
            with Store(state, device_id="proc-dev") as store:
                result = store.verify_audit()
                assert result.ok, f"kill {kill}: {result.reason}"
                assert store.quarantined is None, f"kill {kill}: the database needed a quarantine"
                assert result.count >= entries  # nothing committed was lost
                entries = result.count
                for row in store.outbox_pending(10_000):
                    if row.kind == "evidence":  # names a hit's evidence file, holds no copy of it
                        assert row.payload == b"" and row.msg_id == f"evidence/{row.msg_id[9:]}"
                        continue
                    body = json.loads(row.payload)  # every row whole: a hit or a summary
                    assert body["hit_id" if row.kind == "hit" else "summary_id"] == row.msg_id
        produced = produced_hits(log)
        with Store(state, device_id="proc-dev") as store:
            waiting = {r.msg_id for r in store.outbox_pending(10_000) if r.kind == "hit"}
        # app_ack and no back office: every hit ever made is either still waiting or was published
        assert produced and produced <= waiting | hit_ids(sub)
    finally:
        sub.close()


# --- 8: a broker off the machine without TLS or a password; 10: info under 512 bytes -------------------


def test_a_broker_off_this_machine_without_tls_or_password_raises_insecure_transport(
    tmp_path: Path, mosquitto: Mosquitto, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alprd.cli import main
    from alprd.device.preflight import transport_warnings

    keys = agency(tmp_path)
    local = config(tmp_path, keys, mosquitto, photos)
    assert transport_warnings(local) == []  # plain MQTT on loopback is fine
    far = Config.model_validate({**local.model_dump(mode="json"),
                                 "mqtt": {**local.mqtt.model_dump(mode="json"), "host": "192.0.2.10",
                                          "drain_timeout_s": 0}})
    assert [k for k, _ in transport_warnings(far)] == ["mqtt.tls", "mqtt.password_file"]
    password = tmp_path / "pw"
    password.write_text("x")
    os.chmod(password, 0o600)
    safe = Config.model_validate({**far.model_dump(mode="json"), "mqtt": {
        **far.mqtt.model_dump(mode="json"), "tls": {"ca": str(keys / "signing.pub")}, "username": DEV,
        "password_file": str(password)}})
    assert transport_warnings(safe) == []
    # the longest device id and policy, five models: the retained info still fits 512 bytes
    worst = Config.model_validate({**far.model_dump(mode="json"), "device_id": "d" * 64,
                                   "policy": {"purpose": "p" * 500, "custodian": "c" * 200,
                                              "retention_days": 1, "sharing": "s" * 500}})
    reader = OnePlateReader()
    reader.model_hashes = {f"model_{i}": "f" * 64 for i in range(5)}
    daemon = build(worst, threading.Event(), reader=reader)
    try:
        daemon.hotlist.install(bundle_for(keys, {"7ABC123": "stolen"}, 1))
        assert "insecure_transport" in daemon.alarms
        info = json.dumps(daemon.info(), separators=(",", ":"), sort_keys=True)
        assert len(info) < 512, len(info)
    finally:
        daemon.shutdown()
    path = tmp_path / "far.yaml"
    text = yaml.safe_dump({**far.model_dump(mode="json"), "reader": {}})
    path.write_text(text)
    capsys.readouterr()
    assert main(["check-config", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"{path}:" in err and "mqtt.tls: warning: broker 192.0.2.10 is not on this machine" in err
    assert "mqtt.password_file: warning:" in err
