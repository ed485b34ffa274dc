"""Simulated devices for bench/fleet.py: many in one process, each on the daemon's real publishing path.

A `SimDevice` is what `alprd.device.daemon.build` wires around MQTT, minus the camera and the reader:
its own SQLite store and outbox, a `PahoPublisher` (with its paho network thread, as on a device),
the command registry (signed acks, `hotlist/set` into a real `HotListInstaller`) and the `Recorder`
that turns a hit into an outbox row and an audit entry. Hits are made up and handed to the recorder
at the configured rate. `run_worker` drives a share of the fleet in one process: the pipeline
thread's `tick()` for each device, and reports to the orchestrator through a queue.
"""

from __future__ import annotations

import logging
import queue
import random
import time
from dataclasses import dataclass
from pathlib import Path

from alprd.clock import SystemClock
from alprd.config import Config
from alprd.device.commands import Refusals, device_commands
from alprd.device.outbox import OverflowOutbox
from alprd.device.publish import PahoPublisher
from alprd.device.record import EvidenceSealer, Recorder, lifecycle_audit
from alprd.privacy.hotlist import HotListInstaller
from alprd.privacy.keys import load_ack_pub, load_evidence_pub, load_list_key, load_signing_pub
from alprd.privacy.summaries import Summarizer
from alprd.store import Store
from alprd.types import Box, Hit, Match, Track

PUMP_EVERY_S = 1.0
"""Besides right after a hit or a command (as the daemon's loop does in the same pass), each device
pumps once a second, for resends: the daemon pumps every loop (~0.2 s), but 500 devices doing that
on two cores would measure the simulation, not the broker."""

ALNUM = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    hosts: tuple[str, ...]
    dir: str


def device_config(spec: DeviceSpec, keys: Path, protocol: str, resend_after_s: float,
                  clean_session: bool = False, subscribe_qos: int = 1) -> Config:
    d = Path(spec.dir)
    return Config.model_validate({
        "device_id": spec.device_id,
        "mqtt": {"hosts": list(spec.hosts), "protocol": protocol, "app_ack": True,
                 "ack_pub": str(keys / "ack.pub"), "resend_after_s": resend_after_s,
                 "clean_session": clean_session, "subscribe_qos": subscribe_qos},
        "storage": {"dir": str(d)},
        "hotlist": {"bundle": str(d / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub")},
        "policy": {"purpose": "fleet benchmark", "custodian": "bench/fleet.py", "retention_days": 1,
                   "sharing": "none"},
    })


def made_up_hit(rng: random.Random, camera: str) -> Hit:
    """A hit as the pipeline hands it to the recorder; `last_ts` is now, which the back office's
    latency is measured from."""
    plate = "".join(rng.choices(ALNUM, k=7))
    now = time.time()
    track = Track(track_id=rng.randrange(1 << 30), text=plate, confidence=0.93, chars=(0.93,) * 7,
                  candidates=(), reads=4, agreeing_reads=3, box=Box(100, 200, 120, 40),
                  first_ts=now - 1.0, last_ts=now, camera=camera, region="us", grammar_ok=True, image=None,
                  direction="approaching")
    match = Match(kind="exact", reason="fleet bench", priority=1, list_version=0, p_not_entry=0.01,
                  entry_plate=plate, read_plate=plate, substitutions=0, state="", plate_type="",
                  expires=None, source="", case_number="", note="", list_id="default")
    return Hit(track=track, match=match, verified=True)


class SimDevice:
    def __init__(self, cfg: Config, session: int) -> None:
        clock = SystemClock()
        self.cfg = cfg
        self.store = Store.from_config(cfg, clock)
        self.store.__enter__()
        keys = cfg.hotlist
        self.installer = HotListInstaller.from_config(keys, self.store, load_signing_pub(keys.signing_pub),
                                                      load_list_key(keys.list_key), clock)
        self.outbox = OverflowOutbox(self.store, clock)
        audit = lifecycle_audit(self.store)
        self.publisher = PahoPublisher(cfg.mqtt, cfg.device_id, session)
        self.recorder = Recorder(cfg.device_id, self.outbox, Summarizer(clock=clock, audit=audit),
                                 EvidenceSealer(load_evidence_pub(cfg.privacy.evidence_pub), self.store),
                                 audit, lambda: None, clock)
        self.commands = device_commands(
            cfg, Refusals(900.0, clock), self.installer, self.publisher, self.outbox, clock,
            list_changed=lambda: None, audit=audit, ack_pub=load_ack_pub(cfg.mqtt.ack_pub), list_keys=None)
        for channel, limit in self.commands.inbound.items():
            self.publisher.subscribe(channel, limit)
        # when paho's thread received the bundle: the broker's fan-out, apart from the install time
        # (which here 125 devices take in turn on two shared cores, where a fleet has a CPU each)
        deliver = self.publisher.client.on_message

        def timed(client: object, userdata: object, msg: object) -> None:
            if self.hotlist_seen is None and str(getattr(msg, "topic", "")).endswith("/hotlist/set"):
                self.hotlist_seen = time.time()
            deliver(client, userdata, msg)

        self.publisher.client.on_message = timed
        self._next_pump = 0.0
        self.hit_ids: list[str] = []
        self.connected = False
        self.lost_at: float | None = None  # wall time the connection was seen lost
        self.hotlist_seen: float | None = None  # wall time a hotlist/set arrived

    def start(self) -> None:
        self.publisher.start()

    def inject(self, rng: random.Random) -> None:
        hit = made_up_hit(rng, self.cfg.camera)
        self.recorder.handle([hit])
        self.hit_ids.append(hit.hit_id)
        self._next_pump = 0.0  # out now, as the daemon's loop would in this same pass

    def tick(self, now: float) -> list[tuple[str, float]]:
        """The daemon's `tick()` as far as MQTT goes; returns connection events (kind, wall time)."""
        events: list[tuple[str, float]] = []
        cmds = self.publisher.commands()
        if cmds:
            self.commands.dispatch(cmds)
            self._next_pump = 0.0
        if now >= self._next_pump:
            self._next_pump = now + PUMP_EVERY_S
            self.publisher.pump(self.outbox)
        # up: connected and subscribed (a node that answers CONNECT but cannot serve the SUBSCRIBE, as a
        # RabbitMQ 3.10 node cannot while the device's subscription queue is on a dead node, is no failover)
        up = self.publisher.subscribed
        if up != self.connected:
            self.connected = up
            events.append(("up" if up else "down", time.time()))
        return events

    def depth(self) -> int:
        return self.outbox.depth() + len(self.outbox)

    def close(self) -> None:
        self.publisher.stop("stopped", timeout=2.0)
        self.store.close()


def run_worker(wid: int, specs: list[DeviceSpec], keys: str, protocol: str, resend_after_s: float,
               clean_session: bool, subscribe_qos: int, rate: float, ctl: queue.Queue[str],
               out: queue.Queue[tuple[object, ...]]) -> None:
    """One process's share of the fleet. `rate` is this share's hits per second (Poisson arrivals
    spread over its devices). Control words: inject, hold, drain, stop."""
    logging.basicConfig(level=logging.ERROR, format=f"w{wid} %(levelname)s %(name)s: %(message)s")
    rng = random.Random(wid)
    devices = [SimDevice(device_config(s, Path(keys), protocol, resend_after_s, clean_session, subscribe_qos),
                         session=1) for s in specs]
    for d in devices:
        d.start()
    out.put(("ready", wid, len(devices)))
    mode, next_hit, next_report = "hold", float("inf"), 0.0
    while mode != "stop":
        now = time.monotonic()
        try:
            word = ctl.get_nowait()
            mode = word
            next_hit = now + rng.expovariate(rate) if word == "inject" and rate > 0 else float("inf")
        except queue.Empty:
            pass
        while now >= next_hit:
            rng.choice(devices).inject(rng)
            next_hit += rng.expovariate(rate)
        for d in devices:
            for kind, t in d.tick(now):
                out.put((kind, d.cfg.device_id, t, d.publisher.brokers.current))
        if now >= next_report:
            next_report = now + 2.0
            out.put(("state", wid, [(d.cfg.device_id, d.connected, d.publisher.brokers.current, d.depth(),
                                     d.hotlist_seen) for d in devices]))
        time.sleep(0.01)
    out.put(("hits", wid, {d.cfg.device_id: d.hit_ids for d in devices}))
    for d in devices:
        d.close()
    out.put(("closed", wid))
