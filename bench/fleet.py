"""A fleet on a real broker cluster: N simulated devices, a node killed mid-run, nothing lost (issue 22).

    .venv/bin/python bench/fleet.py                              # 500 devices, 3 RabbitMQ nodes
    .venv/bin/python bench/fleet.py --sessions persistent --subscribe-qos 1   # quorum session queues
    .venv/bin/python bench/fleet.py --devices 20 --nodes 3 --duration 30
    .venv/bin/python bench/fleet.py --broker mosquitto           # one mosquitto, for comparison

It starts the brokers on loopback (free ports, a temporary folder, removed after; bench/brokers.py),
then N devices in a few worker processes (bench/fleet_devices.py: each device has its own id, SQLite
store and outbox, and publishes through the daemon's own `PahoPublisher` in `mqtt.app_ack` mode;
by default with `mqtt.clean_session` and `mqtt.subscribe_qos: 0`, as docs/fleet.md recommends for
RabbitMQ 3.10).
A back office takes every hit and acknowledges it with a signed ack (`alprd.privacy.acks`): on
RabbitMQ from a durable quorum queue over AMQP (pika), on mosquitto as an MQTT subscriber.

Timeline: all devices connect; hits flow at `--rate` per second, first for `--warmup` seconds (500
devices starting at once cost RabbitMQ a set-up phase), then for `--duration`; at 40% of it the node
that most devices are on gets SIGKILL, at 70% it starts again. Injection stops, a signed hot-list
bundle goes to every device on `hotlist/set` and each device's `hotlist/result` is counted (after
the hits: the simulated devices install it in turn on shared cores, which would stall the others'
hits as no fleet, with a CPU per device, is stalled). Then the run waits until every outbox is empty
(or `--drain-timeout`). One JSON object on stdout:

    {"devices", "nodes", "hits_sent", "hits_received", "lost", "duplicates", "latency_ms_p50",
     "latency_ms_p95", "reconnect_s_p95", "hotlist_ok", "broker_rss_mb", "wall_s"}

Latency is from the hit's `ts` to the back office's receipt, over the hits after the warm-up and
outside the failover window (from the kill until the last device that was on the killed node is
connected again; hits in flight at the kill count as inside); the node's return counts as outside.
`reconnect_s_p95` is over the devices that were on the killed node, from the kill until they are
connected and the new node has confirmed their subscriptions (SUBACK). `broker_rss_mb` is the
brokers' resident memory with every device connected, the highest seen. Details go to stderr as
one more JSON line (`"detail": true`): latency by phase, fan-out times, memory per connection.
Exit 0 when no hit was lost, 1 when one was, 77 when the broker cannot start.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import BrokerUnavailable, Endpoint, MosquittoBroker, RabbitCluster  # noqa: E402
from fleet_devices import DeviceSpec, run_worker  # noqa: E402

from alprd.privacy.acks import make_ack  # noqa: E402
from alprd.privacy.hotlist import entries_from_rows, pack_bundle  # noqa: E402
from alprd.privacy.keys import generate_agency_keys, load_ack_key, load_list_key, load_signing_key  # noqa: E402

EXIT_UNAVAILABLE = 77
"""The broker cannot start on this machine (the message says why); tests skip on it."""
KEYS = ("devices", "nodes", "hits_sent", "hits_received", "lost", "duplicates", "latency_ms_p50",
        "latency_ms_p95", "reconnect_s_p95", "hotlist_ok", "broker_rss_mb", "wall_s")


def say(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


# --- the back office -------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the back office saw: every hit message, and each device's hot-list result."""

    received: dict[str, tuple[float, float]] = field(default_factory=dict)  # hit_id -> (ts, first seen)
    messages: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> its last hotlist/result
    result_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, body: bytes) -> tuple[str, str]:
        msg = json.loads(body)
        now = time.time()
        with self.lock:
            self.messages += 1
            self.received.setdefault(msg["hit_id"], (float(msg["ts"]), now))
        return str(msg["device_id"]), str(msg["hit_id"])

    def result(self, device: str, body: bytes) -> None:
        with self.lock:
            self.results[device] = json.loads(body)
            self.result_at.setdefault(device, time.time())


class AmqpOffice(threading.Thread):
    """The back office on RabbitMQ: durable quorum queues bound to the devices' hit and hotlist/result
    topics (`alprd/<id>/hit` is routing key `alprd.<id>.hit` on amq.topic), read over AMQP; each hit
    acked to its device with a signed ack. On a lost connection it goes on with the next node."""

    def __init__(self, nodes: list[Endpoint], ledger: Ledger, ack_key: Any, prefix: str = "alprd") -> None:
        super().__init__(daemon=True, name="back-office")
        self.nodes, self.ledger, self.ack_key, self.prefix = nodes, ledger, ack_key, prefix
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        import pika

        i = 0
        while not self.stop.is_set():
            node = self.nodes[i % len(self.nodes)]
            i += 1
            try:
                self._consume(pika, node)
            except Exception as e:  # any pika failure: reconnect elsewhere, as a back office must
                if self.stop.is_set():
                    return
                self.reconnects += 1
                say(f"back office: {node.name}: {type(e).__name__}: {e}; next node")
                time.sleep(0.5)

    def _consume(self, pika: Any, node: Endpoint) -> None:
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", node.amqp_port, heartbeat=10, blocked_connection_timeout=30,
            connection_attempts=1, socket_timeout=5))
        ch = conn.channel()
        args = {"x-queue-type": "quorum"}
        for q, key in (("backoffice.hits", f"{self.prefix}.*.hit"),
                       ("backoffice.results", f"{self.prefix}.*.hotlist.result")):
            ch.queue_declare(q, durable=True, arguments=args)
            ch.queue_bind(q, "amq.topic", routing_key=key)
        ch.basic_qos(prefetch_count=1000)
        persistent = pika.BasicProperties(delivery_mode=2)

        def on_hit(ch: Any, method: Any, props: Any, body: bytes) -> None:
            device, hit_id = self.ledger.hit(body)
            ack = make_ack(self.ack_key, device, hit_id)
            ch.basic_publish("amq.topic", f"{self.prefix}.{device}.ack", ack,
                             persistent)
            ch.basic_ack(method.delivery_tag)

        def on_result(ch: Any, method: Any, props: Any, body: bytes) -> None:
            self.ledger.result(method.routing_key.split(".")[-3], body)
            ch.basic_ack(method.delivery_tag)

        ch.basic_consume("backoffice.hits", on_hit)
        ch.basic_consume("backoffice.results", on_result)
        self.ready.set()
        try:
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.2)
        finally:
            if conn.is_open:
                conn.close()

    def publisher(self) -> Callable[[str, bytes], None]:
        """Publishes `hotlist/set` bundles (its own connection: pika is one thread per connection)."""
        import pika

        conn = None
        for node in self.nodes:
            try:
                conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
                break
            except Exception as e:
                say(f"hot-list sender: {node.name}: {type(e).__name__}: {e}; next node")
        if conn is None:
            raise RuntimeError("no RabbitMQ node took the hot-list sender's AMQP connection")
        ch = conn.channel()
        persistent = pika.BasicProperties(delivery_mode=2)

        def send(device: str, payload: bytes) -> None:
            ch.basic_publish("amq.topic", f"{self.prefix}.{device}.hotlist.set", payload, persistent)

        return send


class MqttOffice:
    """The back office on mosquitto: one MQTT client with a persistent session."""

    def __init__(self, node: Endpoint, ledger: Ledger, ack_key: Any, prefix: str = "alprd") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.ledger, self.ack_key, self.prefix = ledger, ack_key, prefix
        self.ready = threading.Event()
        self.reconnects = 0
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="back-office",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", node.mqtt_port, keepalive=10)

    def start(self) -> None:
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(f"{self.prefix}/+/hit", 1), (f"{self.prefix}/+/hotlist/result", 1)])
        if self.ready.is_set():
            self.reconnects += 1
        self.ready.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/hit"):
            device, hit_id = self.ledger.hit(msg.payload)
            client.publish(f"{self.prefix}/{device}/ack", make_ack(self.ack_key, device, hit_id), qos=1)
        else:
            self.ledger.result(msg.topic.split("/")[-3], msg.payload)

    def publisher(self) -> Callable[[str, bytes], None]:
        def send(device: str, payload: bytes) -> None:
            self.client.publish(f"{self.prefix}/{device}/hotlist/set", payload, qos=1)

        return send

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the run ---------------------------------------------------------------------------------------


def host_lists(n_devices: int, nodes: list[Endpoint]) -> list[tuple[str, ...]]:
    """Each device's `mqtt.hosts`: first choices spread evenly, and so are the second choices of the
    devices that share a first (half go on clockwise, half counter-clockwise). An agency orders its
    lists so; with one list for all, every device lands on the same node, and fails over to the same."""
    n, out = len(nodes), []
    for i in range(n_devices):
        first = i % n
        rest = [nodes[(first + k) % n].hostport for k in range(1, n)]
        if (i // n) % 2:
            rest.reverse()
        out.append((nodes[first].hostport, *rest))
    return out


@dataclass
class Fleet:
    """The orchestrator's view of the devices, from the workers' reports."""

    out: Any
    workers: list[Any]
    states: dict[str, tuple[bool, str, int, float | None]] = field(default_factory=dict)
    ups: dict[str, list[float]] = field(default_factory=dict)  # device -> times it (re)connected
    hits: dict[str, list[str]] = field(default_factory=dict)
    ready: int = 0
    closed: int = 0

    def poll(self, timeout: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            self._take(msg)

    def _take(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "state":
            for device, connected, endpoint, depth, seen in msg[2]:
                self.states[device] = (connected, endpoint, depth, seen)
        elif kind == "up":
            self.ups.setdefault(msg[1], []).append(msg[2])
        elif kind == "ready":
            self.ready += 1
        elif kind == "hits":
            self.hits.update(msg[2])
        elif kind == "closed":
            self.closed += 1

    def connected(self) -> int:
        return sum(1 for c, *_ in self.states.values() if c)

    def on(self, endpoint: str) -> list[str]:
        return [d for d, (c, ep, *_) in self.states.items() if c and ep == endpoint]

    def depth(self) -> int:
        return sum(s[2] for s in self.states.values())

    def wait(self, until: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.2)
            if dead := [p.name for p in self.workers if p.exitcode not in (None, 0)]:
                raise RuntimeError(f"device worker(s) {dead} died: see the traceback above")
            if until():
                return True
        return bool(until())


def start_broker(args: argparse.Namespace, work: Path) -> RabbitCluster | MosquittoBroker:
    if args.broker == "mosquitto":
        broker: RabbitCluster | MosquittoBroker = MosquittoBroker(work / "mosquitto")
    else:
        broker = RabbitCluster(work / "rabbitmq", args.nodes, session_queues=args.session_queues)
    t = time.monotonic()
    broker.__enter__()
    say(f"{args.broker}: {len(broker.nodes)} node(s) up in {time.monotonic() - t:.1f} s: "
        + ", ".join(f"{n.name} mqtt {n.mqtt_port}" for n in broker.nodes))
    return broker


def make_bundle(keys: Path, entries: int, version: int) -> bytes:
    import random

    rng = random.Random(version)
    alnum = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    rows = [{"plate": "".join(rng.choices(alnum, k=7)), "reason": "stolen vehicle"} for _ in range(entries)]
    return pack_bundle(entries_from_rows(rows), list_key=load_list_key(keys / "list.key"),
                       signing_key=load_signing_key(keys / "signing.key"), version=version,
                       issued=datetime.now(UTC), valid_for=timedelta(days=1))


def spawn_workers(
    args: argparse.Namespace, broker: Any, work: Path, keys: Path
) -> tuple[list[Any], list[Any], Any]:
    ctx = mp.get_context("spawn")  # no fork of a process that holds threads and sockets
    out = ctx.Queue()
    lists = host_lists(args.devices, broker.nodes)
    specs = [DeviceSpec(f"fleet-{i:04d}", lists[i], str(work / "devices" / f"{i:04d}"))
             for i in range(args.devices)]
    workers, ctls = [], []
    n_workers = max(1, min(args.workers, args.devices))
    protocol = "3.1.1"  # RabbitMQ 3.10's MQTT plugin speaks 3.1.1 only; mosquitto gets the same
    for w in range(n_workers):
        share = specs[w::n_workers]
        ctl = ctx.Queue()
        p = ctx.Process(target=run_worker, name=f"fleet-worker-{w}", daemon=True, args=(
            w, share, str(keys), protocol, args.resend_after, args.sessions == "clean",
            args.subscribe_qos, args.rate * len(share) / args.devices, ctl, out))
        p.start()
        workers.append(p)
        ctls.append(ctl)
    return workers, ctls, out


def tell(ctls: list[Any], word: str) -> None:
    for c in ctls:
        c.put(word)


@dataclass
class Timeline:
    t_inject: float = 0.0
    t_measure: float = 0.0
    t_kill: float | None = None
    killed: str = ""
    affected: list[str] = field(default_factory=list)
    t_restart: float | None = None
    t_back: float | None = None
    t_push: float | None = None
    t_stop_inject: float = 0.0
    rss_idle: float = 0.0
    rss_connected: float = 0.0


def failover(args: argparse.Namespace, broker: Any, fleet: Fleet, tl: Timeline, t0: float) -> None:
    """Kill the node most devices are on at 40% of the run, start it again at 70%."""
    node = max(broker.nodes, key=lambda n: len(fleet.on(n.hostport)))
    fleet.wait(lambda: time.monotonic() >= t0 + 0.4 * args.duration, args.duration)
    fleet.poll(0)
    tl.affected = fleet.on(node.hostport)
    tl.killed = node.name
    tl.t_kill = time.time()
    broker.kill(node)
    say(f"SIGKILL {node.name}: {len(tl.affected)} devices were on it")
    fleet.wait(lambda: time.monotonic() >= t0 + 0.7 * args.duration, args.duration)
    restarting = threading.Thread(target=broker.restart, args=(node,), daemon=True)
    t = time.monotonic()
    tl.t_restart = time.time()
    restarting.start()
    fleet.wait(lambda: not restarting.is_alive(), 300)
    tl.t_back = time.time()
    say(f"{node.name} back in {time.monotonic() - t:.1f} s")


def push_hotlist(args: argparse.Namespace, office: Any, keys: Path, tl: Timeline) -> int:
    bundle = make_bundle(keys, args.hotlist_entries, version=1)
    send = office.publisher()
    tl.t_push = time.time()
    for i in range(args.devices):
        send(f"fleet-{i:04d}", bundle)
    say(f"hot list: {args.hotlist_entries} entries, {len(bundle)} bytes, sent to {args.devices} devices in "
        f"{time.time() - tl.t_push:.1f} s")
    return len(bundle)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="alprd-fleet-"))
    broker: Any = None
    office: Any = None
    workers: list[Any] = []
    try:
        keys = work / "keys"
        generate_agency_keys(keys)
        broker = start_broker(args, work)
        tl = Timeline(rss_idle=broker.rss_mb())
        ledger = Ledger()
        ack_key = load_ack_key(keys / "ack.key")
        office = MqttOffice(broker.nodes[0], ledger, ack_key) if args.broker == "mosquitto" else \
            AmqpOffice(list(reversed(broker.nodes)), ledger, ack_key)
        office.start()
        if not office.ready.wait(60):
            raise RuntimeError("the back office did not connect within 60 s")
        workers, ctls, out = spawn_workers(args, broker, work, keys)
        fleet = Fleet(out, workers)
        t = time.monotonic()
        if not fleet.wait(lambda: fleet.ready == len(workers) and fleet.connected() == args.devices,
                          args.connect_timeout):
            raise RuntimeError(f"only {fleet.connected()} of {args.devices} devices connected "
                               f"within {args.connect_timeout:.0f} s")
        tl.rss_connected = max(broker.rss_mb() for _ in range(3))
        say(f"{args.devices} devices connected in {time.monotonic() - t:.1f} s; broker RSS "
            f"{tl.rss_idle:.0f} MB idle, {tl.rss_connected:.0f} MB with every device connected")
        tell(ctls, "inject")
        tl.t_inject = time.time()
        # 500 devices that start publishing at once cost RabbitMQ ~20-25 s of set-up (measured: p50
        # of 7 s in the first 5 s): hits of that warm-up count for loss, not for latency
        fleet.wait(lambda: time.time() >= tl.t_inject + args.warmup, args.warmup + 1)
        tl.t_measure = time.time()
        t0 = time.monotonic()
        if not args.no_kill:
            failover(args, broker, fleet, tl, t0)
        fleet.wait(lambda: time.monotonic() >= t0 + args.duration, args.duration)
        tell(ctls, "hold")
        tl.t_stop_inject = time.time()
        # after the hits: simulated devices install it in turn on shared cores, which would stall
        # the hits of the others in a way a fleet (a CPU per device) does not see
        fleet.wait(lambda: fleet.connected() == args.devices, 120)
        bundle_bytes = push_hotlist(args, office, keys, tl)
        fleet.wait(lambda: len(ledger.results) >= args.devices, args.hotlist_timeout)
        drained = fleet.wait(lambda: fleet.poll(0) is None and fleet.depth() == 0, args.drain_timeout)
        say(f"outboxes {'empty' if drained else f'NOT empty ({fleet.depth()} rows left)'} "
            f"{time.time() - tl.t_stop_inject:.1f} s after injection stopped")
        tell(ctls, "stop")
        fleet.wait(lambda: fleet.closed == len(workers), 120)
        return report(args, fleet, ledger, tl, office, bundle_bytes, time.monotonic() - t_start)
    finally:
        for p in workers:
            p.join(5)
            if p.is_alive():
                p.kill()
        if office is not None:
            if isinstance(office, AmqpOffice):
                office.stop.set()
                office.join(5)
            else:
                office.close()
        if broker is not None:
            broker.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, fleet: Fleet, ledger: Ledger, tl: Timeline, office: Any,
           bundle_bytes: int, wall_s: float) -> dict[str, Any]:
    sent = {h for ids in fleet.hits.values() for h in ids}
    received = set(ledger.received)
    reconnect = []
    for device in tl.affected:
        later = [t for t in fleet.ups.get(device, []) if tl.t_kill is not None and t > tl.t_kill]
        reconnect.append(min(later) - tl.t_kill if later and tl.t_kill is not None else math.inf)
    t_recovered = max((tl.t_kill + r for r in reconnect if r < math.inf), default=tl.t_kill or 0.0) \
        if tl.t_kill is not None else None

    def in_window(ts: float, seen: float) -> bool:
        if tl.t_kill is None or t_recovered is None:
            return False
        return tl.t_kill <= ts <= t_recovered or (ts < tl.t_kill < seen)

    calm = [(seen - ts) * 1000 for ts, seen in ledger.received.values()
            if not in_window(ts, seen) and ts >= tl.t_measure]
    t_confirmed = max(ledger.result_at.values(), default=None)

    def phase(ts: float, seen: float) -> str:
        if ts < tl.t_measure:
            return "warmup"
        if in_window(ts, seen):
            return "failover"
        if tl.t_push is not None and t_confirmed is not None and tl.t_push <= ts <= t_confirmed:
            return "hotlist_fanout"
        if tl.t_restart is not None and tl.t_back is not None and tl.t_restart <= ts <= tl.t_back:
            return "node_restart"
        return "before_kill" if tl.t_kill is None or ts < tl.t_kill else "other"

    phases: dict[str, list[float]] = {}
    for ts, seen in ledger.received.values():
        phases.setdefault(phase(ts, seen), []).append((seen - ts) * 1000)
    by_phase = {k: {"hits": len(v), "p50_ms": round(pct(v, 50) or 0, 1), "p95_ms": round(pct(v, 95) or 0, 1)}
                for k, v in sorted(phases.items())}
    every = [(seen - ts) * 1000 for ts, seen in ledger.received.values()]
    r95 = pct(reconnect, 95)
    ok = sum(1 for r in ledger.results.values() if r.get("ok"))
    result = {
        "devices": args.devices, "nodes": 1 if args.broker == "mosquitto" else args.nodes,
        "hits_sent": len(sent), "hits_received": len(sent & received), "lost": len(sent - received),
        "duplicates": ledger.messages - len(received),
        "latency_ms_p50": round(pct(calm, 50) or 0.0, 1), "latency_ms_p95": round(pct(calm, 95) or 0.0, 1),
        "reconnect_s_p95": None if r95 is None or r95 == math.inf else round(r95, 2),
        "hotlist_ok": ok, "broker_rss_mb": round(tl.rss_connected, 1), "wall_s": round(wall_s, 1),
    }
    if args.dump:
        args.dump.write_text(json.dumps({"timeline": vars(tl), "hits": list(ledger.received.values()),
                                         "ups": fleet.ups}))
    inject_s = max(1e-9, tl.t_stop_inject - tl.t_inject)
    fanout = max(ledger.result_at.values(), default=0.0) - (tl.t_push or 0.0)
    seen = [s[3] for s in fleet.states.values() if s[3] is not None]
    say(json.dumps({
        "detail": True, "broker": args.broker, "sessions": args.sessions, "subscribe_qos": args.subscribe_qos,
        "killed": tl.killed,
        "devices_on_killed_node": len(tl.affected),
        "never_reconnected": sum(1 for r in reconnect if r == math.inf),
        "reconnect_s_p50": pct([r for r in reconnect if r < math.inf], 50),
        "reconnect_s_max": max((r for r in reconnect if r < math.inf), default=None),
        "failover_window_s":
            None if t_recovered is None or tl.t_kill is None else round(t_recovered - tl.t_kill, 2),
        "latency_ms_p95_all_hits": round(pct(every, 95) or 0.0, 1), "latency_by_phase": by_phase,
        "latency_ms_max_all_hits": round(max(every, default=0.0), 1),
        "hits_per_s_offered": round(len(sent) / inject_s, 1),
        "broker_mb_per_device_connection": round((tl.rss_connected - tl.rss_idle) / args.devices, 3),
        "hotlist_bytes": bundle_bytes, "hotlist_entries": args.hotlist_entries,
        "hotlist_delivered_s": round(max(seen) - tl.t_push, 2) if seen and tl.t_push else None,
        "hotlist_confirmed_s": round(fanout, 2) if ledger.result_at else None,
        "hotlist_refused": len(ledger.results) - ok,
        "back_office_reconnects": office.reconnects,
    }))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=3,
                    help="RabbitMQ nodes (3 or more: its MQTT plugin needs a majority up)")
    ap.add_argument("--broker", choices=("rabbitmq", "mosquitto"), default="rabbitmq")
    ap.add_argument("--sessions", choices=("clean", "persistent"), default="clean",
                    help="the devices' MQTT sessions: mqtt.clean_session true (the default here: what "
                    "docs/fleet.md recommends on RabbitMQ 3.10), or persistent sessions")
    ap.add_argument("--subscribe-qos", type=int, choices=(0, 1), default=0,
                    help="the devices' mqtt.subscribe_qos: acks and commands at QoS 0 (the default here, "
                    "with clean sessions) or 1 (with persistent sessions; docs/fleet.md)")
    ap.add_argument("--session-queues", choices=("quorum", "classic"), default="quorum",
                    help="RabbitMQ mqtt.durable_queue_type, for persistent sessions (docs/fleet.md)")
    ap.add_argument("--workers", type=int, default=4, help="device processes")
    ap.add_argument("--rate", type=float, default=100.0, help="hits per second, the whole fleet")
    ap.add_argument("--warmup", type=float, default=30.0,
                    help="seconds of hits before the measured run (counted for loss, not latency)")
    ap.add_argument("--duration", type=float, default=120.0,
                    help="seconds of hits; the kill at 40%%, the node back at 70%%")
    ap.add_argument("--hotlist-entries", type=int, default=10_000)
    ap.add_argument("--resend-after", type=float, default=30.0, help="the devices' mqtt.resend_after_s")
    ap.add_argument("--connect-timeout", type=float, default=300.0)
    ap.add_argument("--hotlist-timeout", type=float, default=300.0)
    ap.add_argument("--drain-timeout", type=float, default=180.0)
    ap.add_argument("--no-kill", action="store_true", help="no node killed (throughput, memory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--dump", type=Path, help="write every hit's (ts, received) and the timeline here")
    args = ap.parse_args(argv)
    if args.broker == "rabbitmq" and args.nodes < 1:
        ap.error("--nodes must be at least 1")
    try:
        result = run(args)
    except BrokerUnavailable as e:
        say(f"broker unavailable: {e}")
        return EXIT_UNAVAILABLE
    assert tuple(result) == KEYS
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
