"""Long soak of the daemon under faults: what CI's short versions (tests/test_hostile.py,
tests/test_broker.py) do a few times, done for minutes or hours.

    .venv/bin/python bench/soak.py --minutes 30 [--seed 1] [--keep DIR]

The daemon (tests/daemon_runner.py: every frame shows a listed plate) runs as its own process in
app_ack mode against a real mosquitto on loopback, with a back office that acks every hit with
ack.key. Every few seconds one fault, drawn at random: SIGKILL of the daemon (restarted), SIGKILL of
the broker (down for 1-10 s), a forced reconnect (the broker restarted at once), a burst of hostile
messages on every subscribed topic, or SIGTERM and a restart. After each fault the audit chain must
verify and every outbox row must parse. At the end (SIGTERM) every hit the daemon logged must have
reached the back office and none may be left in the outbox. Prints one JSON line; exit 1 on a loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates" / "us"
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Mosquitto, Subscriber  # noqa: E402

from alprd.privacy.acks import make_ack  # noqa: E402
from alprd.privacy.hotlist import HotListInstaller, entries_from_rows, pack_bundle  # noqa: E402
from alprd.privacy.keys import (  # noqa: E402
    generate_agency_keys,
    load_ack_key,
    load_list_key,
    load_signing_key,
    load_signing_pub,
)
from alprd.store import Store  # noqa: E402

DEV = "soak-dev"
HIT_LOG = re.compile(r"alprd\.device\.record: hit ([0-9a-f-]{36})")
JUNK = [b"[" * 4000, b"{" * 5000, b'{"hit_id":' * 2000, b"\x00" * 64, b"", b"null", b"9" * 5000]


class BackOffice(Subscriber):
    """Records every hit and acks it, signed."""

    def __init__(self, broker: Mosquitto, ack_key: object) -> None:
        self.ack_key = ack_key
        super().__init__(broker, f"alprd/{DEV}/#", client_id="soak-backoffice")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        super()._on_message(client, userdata, msg)
        if msg.topic.endswith("/hit"):  # type: ignore[attr-defined]
            hit_id = json.loads(msg.payload)["hit_id"]  # type: ignore[attr-defined]
            self.client.publish(f"alprd/{DEV}/ack", make_ack(self.ack_key, DEV, hit_id), qos=1)  # type: ignore[arg-type]


def setup(work: Path, broker: Mosquitto) -> Path:
    keys = work / "keys"
    generate_agency_keys(keys)
    photos = work / "photos"
    photos.mkdir()
    for i, p in enumerate(sorted(DATA.glob("*.jpg"))[:2]):
        (photos / f"{i}.jpg").symlink_to(p)
    bundle = pack_bundle(
        entries_from_rows([{"plate": "7ABC123", "reason": "soak"}]),
        list_key=load_list_key(keys / "list.key"), signing_key=load_signing_key(keys / "signing.key"),
        version=1, issued=datetime.now(UTC), valid_for=timedelta(days=2),
    )
    with Store(work / "state") as store:
        HotListInstaller(store, work / "state" / "hotlist.bundle", load_signing_pub(keys / "signing.pub"),
                         load_list_key(keys / "list.key")).install(bundle)
    cfg = {
        "device_id": DEV,
        "source": {"kind": "images", "path": str(photos), "fps": 4, "loop": True},
        "tracking": {"close_after_frames": 1},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5, "reconnect_min_s": 1,
                 "reconnect_max_s": 4, "drain_timeout_s": 20, "app_ack": True,
                 "ack_pub": str(keys / "ack.pub")},
        "storage": {"dir": str(work / "state")},
        "hotlist": {"bundle": str(work / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub"), "summary_interval_s": 60},
        "policy": {"purpose": "soak", "custodian": "bench", "retention_days": 1, "sharing": "none"},
    }
    path = work / "alprd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "daemon_runner.py"), str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)


def wait_up(office: BackOffice) -> None:
    """Until the (re)started daemon has published a hit: a SIGTERM before its handlers exist kills it."""
    seen = len(office.on("/hit"))
    if not office.wait_for(lambda s: len(s.on("/hit")) > seen, 60):
        raise SystemExit("no hit for 60 s after a (re)start")


def check_storage(state: Path) -> int:
    with Store(state, device_id=DEV) as store:
        result = store.verify_audit()
        if not result.ok or store.quarantined is not None:
            raise SystemExit(f"audit chain broken or database quarantined: {result.reason}")
        for row in store.outbox_pending(100_000):
            json.loads(row.payload)
        return result.count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the work folder here (logs, database)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="alprd-soak-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(work / "broker")
    broker.start()
    cfg = setup(work, broker)
    office = BackOffice(broker, load_ack_key(work / "keys" / "ack.key"))
    log = work / "daemon.log"
    proc = start(cfg, log)
    faults: dict[str, int] = {}
    deadline = time.monotonic() + args.minutes * 60
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 8.0))
            fault = rng.choice(["kill_daemon", "kill_broker", "reconnect", "junk", "restart"])
            faults[fault] = faults.get(fault, 0) + 1
            if fault == "kill_daemon":
                proc.kill()
                proc.wait(10)
                check_storage(work / "state")
                proc = start(cfg, log)
            elif fault == "kill_broker":
                broker.kill()
                time.sleep(rng.uniform(1.0, 10.0))
                broker.start()
            elif fault == "reconnect":
                broker.restart()
            elif fault == "restart":
                wait_up(office)
                proc.send_signal(signal.SIGTERM)
                if proc.wait(60) != 0:
                    raise SystemExit(f"the daemon exited {proc.returncode} on SIGTERM; see {log}")
                check_storage(work / "state")
                proc = start(cfg, log)
            else:
                for topic in ("hotlist/set", "ack"):
                    for payload in JUNK:
                        office.client.publish(f"alprd/{DEV}/{topic}", payload, qos=1)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon died ({proc.returncode}); see {log}")
        wait_up(office)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        entries = check_storage(work / "state")
        made = set(HIT_LOG.findall(log.read_text()))
        office.wait_for(lambda s: {h["hit_id"] for h in s.json_on("/hit")} >= made, 30)
        got = {str(h["hit_id"]) for h in office.json_on("/hit")}
        with Store(work / "state", device_id=DEV) as store:
            left = {r.msg_id for r in store.outbox_pending(100_000) if r.kind == "hit"}
        lost = made - got
        report = {"minutes": args.minutes, "faults": faults, "hits_made": len(made),
                  "hits_received": len(got), "lost": len(lost), "left_in_outbox": len(left),
                  "audit_entries": entries, "exit": code, "work": str(work)}
        print(json.dumps(report))
        return 0 if not lost and code == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        office.close()
        broker.kill()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
