"""Evidence delivery (issue 21, item 2): sealed evidence out on `evidence/<hit_id>` from the outbox,
opened at headquarters with `alprd evidence open`, deleted on a signed evidence ack, capped in size."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import Mosquitto, Subscriber
from privacy_support import FakeClock
from run_support import DEVICE, ScriptedReader, agency, config, install, photos, rd, running, wait

from alprd.cli import main
from alprd.device.daemon import build
from alprd.device.outbox import OverflowOutbox
from alprd.device.record import EvidenceSealer
from alprd.privacy.acks import ack_text, make_ack, read_ack, verify_ack
from alprd.privacy.evidence import open_evidence
from alprd.privacy.keys import load_ack_key, load_ack_pub, load_evidence_key, load_evidence_pub
from alprd.store import DB_NAME, Store
from alprd.types import Box, Candidate, Hit, Match, Track
from alprd.untrusted import UntrustedInput


def _hit(image: np.ndarray, box: Box) -> Hit:
    t = Track(1, "7ABC123", 0.9, (0.9,) * 7, (Candidate("7ABC123", 0.9),), 2, 2, box, 1e9, 1e9 + 1, "cam0",
              "us", True, image, "left")
    m = Match("exact", "stolen", 10, 1, 0.01, "7ABC123", "7ABC123", 0, "", "", None, "", "", "", "default")
    return Hit(t, m, True)


def test_evidence_fits_its_size_cap_by_shrinking_the_frame_then_leaving_it_out(tmp_path: Path) -> None:
    keys = agency(tmp_path)
    pub, key = load_evidence_pub(keys / "evidence.pub"), load_evidence_key(keys / "evidence.key")
    noise = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), np.uint8)  # JPEG cannot shrink it
    with Store(tmp_path / "state") as store:
        sizes = []
        for cap_kb in (4096, 64, 4):
            sealer = EvidenceSealer(pub, store, cap_kb * 1024)
            hit = _hit(noise, Box(900, 500, 20, 10))
            sealed = sealer.seal(hit)
            assert sealed is not None and len(sealed) <= cap_kb * 1024
            crop, frame, meta = open_evidence(key, sealed)
            assert meta["hit_id"] == hit.hit_id and crop.startswith(b"\xff\xd8")
            assert (store.evidence_path(hit.hit_id) or Path()).read_bytes() == sealed
            sizes.append(len(frame))
        assert sizes[0] > sizes[1] > 0 and sizes[2] == 0  # smaller frame; then the crop alone
        # a crop that alone is over the cap: no evidence at all (and nothing on disk)
        big = _hit(noise, Box(0, 0, 1900, 1000))
        assert EvidenceSealer(pub, store, 16 * 1024).seal(big) is None
        assert store.evidence_path(big.hit_id) is None


def test_an_evidence_ack_is_signed_apart_from_a_hit_ack(tmp_path: Path) -> None:
    keys = agency(tmp_path)
    key, pub = load_ack_key(keys / "ack.key"), load_ack_pub(keys / "ack.pub")
    ack = make_ack(key, "dev-1", "hit-42", evidence=True)
    body = json.loads(ack)
    assert body["evidence"] is True and body["hit_id"] == "hit-42"
    pub.verify(base64.b64decode(body["sig"]), b"alprd-evidence-ack/1|dev-1|hit-42")
    assert ack_text("dev-1", "hit-42", True) == b"alprd-evidence-ack/1|dev-1|hit-42"
    assert read_ack(pub, "dev-1", ack) == ("hit-42", True)
    assert read_ack(pub, "dev-1", make_ack(key, "dev-1", "hit-42")) == ("hit-42", False)
    # a hit ack seen on the topic does not become an evidence ack, nor the other way round
    turned = json.dumps({**json.loads(make_ack(key, "dev-1", "hit-42")), "evidence": True}).encode()
    with pytest.raises(UntrustedInput, match="signature"):
        read_ack(pub, "dev-1", turned)
    with pytest.raises(UntrustedInput, match="evidence ack"):
        verify_ack(pub, "dev-1", ack)
    with pytest.raises(UntrustedInput, match="true or false"):
        read_ack(pub, "dev-1", json.dumps({**body, "evidence": "yes"}).encode())


def test_acked_or_expired_evidence_leaves_the_outbox_with_its_file(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store(tmp_path / "state", clock, evidence_ttl_s=3600) as store:
        outbox = OverflowOutbox(store, clock)
        for hit_id in ("a", "b", "c"):
            store.put_evidence(hit_id, b"ALPRDEV1" + hit_id.encode() * 100)
            assert outbox.put_evidence(hit_id)
        first = outbox.pending(10)[0]
        assert (first.msg_id, first.topic, first.kind) == ("evidence/a", "evidence/a", "evidence")
        assert first.payload == b"ALPRDEV1" + b"a" * 100  # read from the evidence file, not a copy
        assert store.ack_evidence("a")
        assert {i.msg_id for i in outbox.pending(10)} == {"evidence/b", "evidence/c"}
        outbox.ack("evidence/b")  # delivered: the outbox forgets it, the file waits for the ack or TTL
        assert store.evidence_path("b") is not None
        store.put_evidence("d", b"ALPRDEV1")
        outbox.put_evidence("d")
        (store.evidence_path("d") or Path()).unlink()  # gone behind the index's back: not sent, forgotten
        assert [i.msg_id for i in outbox.pending(10)] == ["evidence/c"] and store.outbox_depth() == 1
        clock.advance(3601)
        counts = store.purge()
        assert counts.evidence_expired == 3 and store.outbox_depth() == 0
        assert not list((tmp_path / "state" / "evidence").iterdir())


def test_evidence_goes_out_opens_with_the_hq_key_and_a_signed_ack_deletes_it(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys = agency(tmp_path)
    folder = photos(tmp_path, data_dir, 2)
    cfg = config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(folder), "fps": 5, "loop": True})
    sub = Subscriber(mosquitto, f"alprd/{DEVICE}/#")
    stop = threading.Event()
    daemon = build(cfg, stop, reader=ScriptedReader({1: [rd("7ABC123")]}))  # type: ignore[arg-type]
    install(daemon, keys, {"7ABC123": "stolen"})
    try:
        with running(daemon, stop):
            assert sub.wait_for(
                lambda s: bool(s.on("/hit")) and any("/evidence/" in t for t, _, _ in s.messages), 30)
            hit = sub.json_on("/hit")[0]
            topic, sealed, retained = next(m for m in sub.messages if "/evidence/" in m[0])
            assert topic == f"alprd/{DEVICE}/evidence/{hit['hit_id']}" and hit["evidence"] == hit["hit_id"]
            assert not retained and len(sealed) <= cfg.privacy.evidence_max_kb * 1024
            saved = tmp_path / "from-broker.sealed"
            saved.write_bytes(sealed)
            assert main(["evidence", "open", str(saved), "--key", str(keys / "evidence.key"),
                         "--out", str(tmp_path / "opened")]) == 0
            meta = json.loads((tmp_path / "opened" / "meta.json").read_text())
            assert meta["hit_id"] == hit["hit_id"] and meta["plate"] == "7ABC123"
            assert (tmp_path / "opened" / "frame.jpg").read_bytes().startswith(b"\xff\xd8")
            on_disk = daemon.store.evidence_path(hit["hit_id"])
            assert on_disk is not None and on_disk.read_bytes() == sealed
            # a hit ack with `evidence` added is refused and deletes nothing
            ack_key = load_ack_key(keys / "ack.key")
            forged = {**json.loads(make_ack(ack_key, DEVICE, hit["hit_id"])), "evidence": True}
            sub.client.publish(f"alprd/{DEVICE}/ack", json.dumps(forged), qos=1)
            assert wait(lambda: daemon.refusals.total.get("ack", 0) == 1)
            assert on_disk.exists()
            sub.client.publish(f"alprd/{DEVICE}/ack", make_ack(ack_key, DEVICE, hit["hit_id"], evidence=True),
                               qos=1)
            assert wait(lambda: not on_disk.exists())
    finally:
        sub.close()
    with Store(tmp_path / "state") as store:
        acked = [e.object for e in store.audit_entries() if e.event == "evidence_acked"]
        assert store.verify_audit().ok and store.evidence_count() == 0
    assert acked == [{"hit_id": hit["hit_id"]}]


def test_evidence_made_while_the_broker_is_down_arrives_after_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, data_dir: Path
) -> None:
    keys = agency(tmp_path)
    mosquitto.kill()
    cfg = config(tmp_path, keys, mosquitto, {"kind": "images", "path": str(photos(tmp_path, data_dir, 1))},
                 mqtt={"drain_timeout_s": 0.5})
    daemon = build(cfg, threading.Event(), reader=ScriptedReader({1: [rd("7ABC123")]}))  # type: ignore[arg-type]
    install(daemon, keys, {"7ABC123": "stolen"})
    assert daemon.run(threading.Event()) == 0
    with sqlite3.connect(tmp_path / "state" / DB_NAME) as c:
        waiting = [r[0] for r in c.execute("SELECT msg_id FROM outbox WHERE kind = 'evidence'")]
    assert len(waiting) == 1
    mosquitto.start()
    sub = Subscriber(mosquitto, f"alprd/{DEVICE}/#")
    try:
        again = build(cfg, threading.Event(), reader=ScriptedReader({}))  # type: ignore[arg-type]
        assert again.run(threading.Event()) == 0
        assert sub.wait_for(lambda s: any(t.endswith(waiting[0]) for t, _, _ in s.messages))
    finally:
        sub.close()
