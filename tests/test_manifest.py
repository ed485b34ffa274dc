"""The compliance manifest (issue 21, item 8) and Home Assistant discovery (item 9), checked on one real
run: a real broker, real keys, a list packed from NCIC columns by the command line, evidence, and the
payloads validated against docs/payloads/*.json. The issue's checks:
- the hits carry the v2 fields, filled from the NCIC list;
- the manifest names every topic the run published (and `alprd policy manifest` prints the same);
- the privacy scan finds the non-hit plate in no payload and no file, discovery configs included."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from conftest import Mosquitto, Subscriber
from run_support import DEVICE, ScriptedReader, agency, assert_absent, config, photos, rd

from alprd.cli import main
from alprd.config import Config, ReaderConfig, load_config
from alprd.device.daemon import build
from alprd.payloads import EVIDENCE_FIELDS
from alprd.privacy.evidence import open_evidence
from alprd.privacy.keys import load_evidence_key
from alprd.read.reader import PlateReader, configured_models

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "payloads"
NCIC = """\
LIC,LIS,LIT,NIC,OCA,ORI,MKE,VIN
7ABC123,CA,PC,V123456789,24-00123,CA0194200,stolen vehicle,1HGCM82633A004352
7?B2*,,,V555000111,,CA0194200,partial plate: armed robbery,
"""


def write(tmp: Path, cfg: Config) -> Path:
    path = tmp / "alprd.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def schema_for(topic: str) -> str:
    if topic.startswith("homeassistant/"):
        return "homeassistant-discovery.json"
    return topic.split(f"/{DEVICE}/", 1)[1].replace("/", "-") + ".json"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):  # type: ignore[no-untyped-def]
    """One daemon run with everything on: returns (tmp, keys, config path, messages)."""
    from conftest import MOSQUITTO

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    tmp = tmp_path_factory.mktemp("manifest")
    broker = Mosquitto(tmp / "broker")
    broker.start()
    try:
        keys = agency(tmp)
        (tmp / "ncic.csv").write_text(NCIC)
        bundle = tmp / "list.bundle"
        assert main(["hotlist", "pack", str(tmp / "ncic.csv"), "--keys", str(keys), "--version", "4",
                     "--columns", "ncic", "--list-id", "patrol", "--out", str(bundle)]) == 0
        cfg_path = write(tmp, config(
            tmp, keys, broker, {"kind": "images", "path": str(photos(tmp, data_dir, 4))},
            mqtt={"homeassistant": True}, hotlist={"list_id": "patrol"},
            location={"lat": 34.05, "lon": -118.25},
        ))
        cfg = load_config(cfg_path)
        # a listed plate, a plate on no list, a wildcard hit, then a refused hotlist/set
        reader = ScriptedReader({1: [rd("7ABC123")], 2: [rd("5SECRET9")], 3: [rd("7XB2999")]})
        sub = Subscriber(broker, "#")
        try:
            daemon = build(cfg, threading.Event(), reader=reader)  # type: ignore[arg-type]
            daemon.hotlist.install(bundle.read_bytes())
            assert sub.wait_for(lambda s: any(m["state"] == "online" for m in s.json_on("/status")))
            sub.client.publish(f"alprd/{DEVICE}/hotlist/set", b"not a bundle", qos=1).wait_for_publish(5)
            assert sub.wait_for(lambda s: (daemon.tick(), bool(s.on("/hotlist/result")))[1])
            assert daemon.run(threading.Event()) == 0
            assert sub.wait_for(lambda s: s.on("/availability")[-1:] == [b"offline"])
        finally:
            sub.close()
        yield tmp, keys, cfg_path, list(sub.messages)
    finally:
        broker.kill()


def test_hits_from_an_ncic_list_carry_the_v2_fields(run) -> None:  # type: ignore[no-untyped-def]
    _, _, _, messages = run
    hits = {h["plate"]: h for h in (json.loads(p) for t, p, _ in messages if t.endswith("/hit"))}
    assert set(hits) == {"7ABC123", "7XB2999"}
    exact, wild = hits["7ABC123"], hits["7XB2999"]
    assert exact["v"] == 2 and exact["time"].endswith("Z") and exact["state"] == "CA"
    assert {k: exact["match"][k] for k in ("entry_plate", "list_id", "case_number", "source", "state", "note",
                                           "reason", "list_version")} == {
        "entry_plate": "7ABC123", "list_id": "patrol", "case_number": "V123456789", "source": "CA0194200",
        "state": "CA", "note": "24-00123", "reason": "stolen vehicle", "list_version": 4}
    assert wild["match"]["entry_plate"] == "7?B2*" and wild["match"]["kind"] == "wildcard"
    assert wild["state"] is None and wild["match"]["note"] is None
    assert wild["match"]["case_number"] == "V555000111"


def test_every_payload_of_the_run_validates_against_its_published_schema(run) -> None:  # type: ignore[no-untyped-def]
    _, keys, _, messages = run
    seen: set[str] = set()
    for topic, payload, _ in messages:
        if "/evidence/" in topic:
            _, _, meta = open_evidence(load_evidence_key(keys / "evidence.key"), payload)
            assert {f"meta.{k}" for k in meta} == {f for f in EVIDENCE_FIELDS if f.startswith("meta.")}
            seen.add("evidence")
            continue
        if topic.endswith("/availability"):
            assert payload in (b"online", b"offline")
            continue
        if topic.endswith("/hotlist/set"):
            continue  # the back office's message, not the device's
        name = schema_for(topic)
        schema = json.loads((SCHEMAS / name).read_text())
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
            json.loads(payload))
        seen.add(name)
    assert seen == {"status.json", "info.json", "hit.json", "summary.json", "metrics.json", "manifest.json",
                    "hotlist-result.json", "homeassistant-discovery.json", "evidence"}


def test_the_manifest_names_every_topic_the_run_published(run) -> None:  # type: ignore[no-untyped-def]
    _, _, _, messages = run
    manifest = json.loads(next(p for t, p, _ in messages if t.endswith("/manifest")))
    names = [t["name"] for t in manifest["published"]]
    used = {t for t, _, _ in messages if not t.endswith(("/hotlist/set",))}  # the back office's own message
    assert used and all(any(mqtt.topic_matches_sub(n, t) for n in names) for t in used), (
        sorted(t for t in used if not any(mqtt.topic_matches_sub(n, t) for n in names)))
    # and nothing it names goes unused in a run that did everything
    assert all(any(mqtt.topic_matches_sub(n, t) for t in used) for n in names)
    base = f"alprd/{DEVICE}"
    assert [t["name"] for t in manifest["subscribed"]] == [f"{base}/hotlist/set", f"{base}/ack"]
    assert manifest["hotlist"]["version"] == 4 and manifest["hotlist"]["list_id"] == "patrol"
    assert manifest["policy"] == {"purpose": "tests", "custodian": "the CI", "retention_days": 1,
                                  "sharing": "none"}
    stored = {s["where"].rsplit("/", 1)[-1] or s["where"]: s["max_s"] for s in manifest["stored"]}
    assert stored["alprd.db (outbox)"] == 86400 and stored["nowhere"] == 0


def test_the_command_line_prints_the_manifest_the_daemon_published(
    run, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    _, keys, cfg_path, messages = run
    published = json.loads([p for t, p, _ in messages if t.endswith("/manifest")][-1])
    capsys.readouterr()
    assert main(["policy", "manifest", "--config", str(cfg_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # the run's reader was scripted: the command line names the models the config would load
    assert published.pop("models") == {"scripted": "0" * 64}
    assert printed.pop("models") == configured_models(load_config(cfg_path).reader)
    assert printed == published
    from alprd.config import config_hash
    from alprd.privacy.keys import key_id, load_list_key

    assert printed["config"] == config_hash(load_config(cfg_path))
    assert printed["keys"]["hotlist.list_key"] == key_id(load_list_key(keys / "list.key"))
    assert set(printed["keys"]) == {"hotlist.signing_pub", "privacy.evidence_pub", "mqtt.ack_pub",
                                    "hotlist.list_key", "storage.device_key"}
    assert main(["policy", "manifest", "--config", str(cfg_path)]) == 0
    text = capsys.readouterr().out
    for line in ("purpose:   tests", f"alprd/{DEVICE}/evidence/+ (qos 1, sealed)",
                 "Hot list: patrol version 4", "schedule: none (any time)", "geofence: none (anywhere)",
                 "plates that match no list entry"):
        assert line in text, line


def test_the_models_a_config_names_are_the_ones_the_reader_loads() -> None:
    for cfg in (ReaderConfig(), ReaderConfig(fallback_model="plate_det", detector_model="plate_det_fast",
                                             tall_row_px=0)):
        assert configured_models(cfg) == PlateReader(cfg).model_hashes


def test_home_assistant_discovery_says_nothing_of_plates_and_tracks_availability(  # type: ignore[no-untyped-def]
    run,
) -> None:
    tmp, _, _, messages = run
    configs = {t: json.loads(p) for t, p, _ in messages if t.startswith("homeassistant/")}
    assert sorted(configs) == [f"homeassistant/sensor/{DEVICE}/{k}/config"
                               for k in ("alarms", "fps", "hits_today", "hotlist_version", "status")]
    device_topics = {t for t, _, _ in messages if t.startswith(f"alprd/{DEVICE}/")}
    for c in configs.values():
        assert c["state_topic"] in device_topics and c["availability_mode"] == "all"
        watched = [a["topic"] for a in c["availability"]]
        assert watched == [f"alprd/{DEVICE}/availability", f"alprd/{DEVICE}/status"]
    assert len({c["unique_id"] for c in configs.values()}) == 5
    assert [p for t, p, _ in messages if t.endswith("/availability")] == [b"online", b"offline"]
    metrics = [json.loads(p) for t, p, _ in messages if t.endswith("/metrics")][-1]
    assert metrics["hits_today"] == 2 and metrics["fps"] >= 0
    # the privacy scan: the plate on no list is in no payload (discovery included) and no file
    assert_absent("5SECRET9", [p for _, p, _ in messages], tmp / "state")
    for plate in ("7ABC123", "7XB2999"):
        assert not any(plate.encode() in json.dumps(c).encode() for c in configs.values())


def test_home_assistant_is_off_by_default(tmp_path: Path, mosquitto: Mosquitto, data_dir: Path) -> None:
    keys = agency(tmp_path)
    cfg = config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(photos(tmp_path, data_dir, 1))})
    sub = Subscriber(mosquitto, "#")
    try:
        daemon = build(cfg, threading.Event(), reader=ScriptedReader({}))  # type: ignore[arg-type]
        assert daemon.run(threading.Event()) == 0
        assert sub.wait_for(lambda s: any(m["state"] == "stopped" for m in s.json_on("/status")))
    finally:
        sub.close()
    topics = {t for t, _, _ in sub.messages}
    assert not [t for t in topics if t.startswith("homeassistant/") or t.endswith("/availability")]
    manifest = sub.json_on("/manifest")[0]
    assert not [t for t in manifest["published"] if "homeassistant" in t["name"]]


def test_the_shipped_acl_lets_a_device_publish_and_read_what_its_manifest_names(tmp_path: Path) -> None:
    from alprd.device.manifest import build_manifest

    keys = agency(tmp_path)
    broker = type("Broker", (), {"host": "127.0.0.1", "port": 1883})()
    cfg = config(tmp_path, keys, broker, {"kind": "images", "path": str(tmp_path)},
                 mqtt={"homeassistant": True}, hotlist={"key_source": "hq"})
    rules = [line.split() for line in (ROOT / "config" / "mosquitto" / "alprd.acl").read_text().splitlines()
             if line.startswith("pattern ")]
    allowed = {mode: [r[2].replace("%u", DEVICE) for r in rules if r[1] == mode]
               for mode in ("read", "write")}
    manifest = build_manifest(cfg, models={}, hotlist=None, ack=True,
                              channels={"hotlist/set": 1, "ack": 1, "hotlist/key": 1})
    for t in manifest.published:
        topic = t.name.replace("+", "some-hit-id")
        assert any(mqtt.topic_matches_sub(a, topic) for a in allowed["write"]), topic
    for t in manifest.subscribed:
        assert any(mqtt.topic_matches_sub(a, t.name) for a in allowed["read"]), t.name
    assert len(manifest.published) == 14 and len(manifest.subscribed) == 3  # 7 bodies, evidence, HA 5 + 1
