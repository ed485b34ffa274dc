"""The long-running service: capture -> read -> track -> match -> outbox -> MQTT.

`Pipeline.step(frame) -> list[Event]` is the pure part (motion gate, reader, tracker, hot-list
match) and is tested on real photos. `Daemon` owns the side effects: durable outbox, evidence,
summaries, MQTT, metrics, sd_notify, and the loop `run(stop)`. `build(config)` wires the stages
from the config; only this module knows all of them.

Threads: this loop (the pipeline), paho's network thread and one housekeeping thread (the TTL
purge, which may delete many files and must not stall the loop); nothing else. One stop Event.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .acks import verify_ack
from .capture import Clock, FrameSource, SystemClock
from .config import Config, MatchingConfig, config_hash
from .errors import AlprdError, CaptureError, HotListError, StoreError
from .location import Locator
from .motion import MotionGate
from .publish import Command, Outbox, OutboxItem, Publisher
from .track import Track, Tracker
from .types import Frame, Image, PhotoResult
from .untrusted import UntrustedInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from .store import InstanceLock

log = logging.getLogger(__name__)


# --- what the pipeline needs from the reader and the privacy core ------------------------------


class Reader(Protocol):
    model_hashes: dict[str, str]

    def read(self, image: Image, region: str | None = None) -> PhotoResult: ...


class MatchLike(Protocol):
    kind: str
    reason: str
    priority: int
    list_version: int
    p_not_entry: float


class Matcher(Protocol):
    def match(
        self, text: str, chars: tuple[float, ...] = (), state: str | None = None, now: datetime | None = None
    ) -> MatchLike | None: ...


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """A closed pass that matched the hot list."""

    track: Track
    match: MatchLike
    verified: bool
    hit_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True, slots=True)
class Pass:
    """A closed pass that did not match: it only ever feeds the privacy-preserving summary."""

    track: Track


Event = Hit | Pass


class StageTimer:
    """Milliseconds per stage over the last N samples, for p50/p95 in metrics."""

    def __init__(self, keep: int = 1000) -> None:
        self._ms: dict[str, deque[float]] = {}
        self._keep = keep

    def add(self, stage: str, ms: float) -> None:
        self._ms.setdefault(stage, deque(maxlen=self._keep)).append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self._ms.items():
            v = sorted(values)
            if v:
                out[stage] = {
                    "p50": round(v[len(v) // 2], 2),
                    "p95": round(v[min(len(v) - 1, int(len(v) * 0.95))], 2),
                    "n": len(v),
                }
        return out


class Pipeline:
    """One frame in, the events of the passes that closed out. No I/O beyond the reader."""

    def __init__(
        self,
        reader: Reader,
        tracker: Tracker,
        gate: MotionGate,
        matcher: Matcher | None,
        matching: MatchingConfig,
        region: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.tracker = tracker
        self.gate = gate
        self.matcher = matcher
        self.matching = matching
        self.region = region
        self.clock = clock or SystemClock()
        self.timer = StageTimer()
        self.frames = 0
        self.processed = 0
        self.skipped = 0
        self.reads = 0
        self.last_frame: Frame | None = None
        self._reported: set[int] = set()

    def step(self, frame: Frame) -> list[Event]:
        self.frames += 1
        self.last_frame = frame
        t0 = time.perf_counter()
        reads: list[Any] = []
        if self.gate.wants(frame):
            self.processed += 1
            result = self.reader.read(frame.image, self.region)
            h, w = frame.image.shape[:2]
            reads = [r for r in result.reads if self.gate.inside(r.box, w, h)]
            self.reads += len(reads)
            for stage, ms in result.stage_ms.items():
                self.timer.add(stage, ms)
            self.timer.add("read", result.ms)
        else:
            self.skipped += 1
        t1 = time.perf_counter()
        closed = self.tracker.update(frame, reads)
        events = self._decide(closed)
        if reads:
            events += self._early()
        self.timer.add("track_match", (time.perf_counter() - t1) * 1000)
        self.timer.add("step", (time.perf_counter() - t0) * 1000)
        return events

    def flush(self) -> list[Event]:
        """Close every open pass (end of a finite source, shutdown)."""
        return self._decide(self.tracker.close_all())

    def _match(self, t: Track) -> MatchLike | None:
        if self.matcher is None or not t.text or t.confidence < self.matching.min_confidence:
            return None
        return self.matcher.match(t.text, t.chars, None, datetime.fromtimestamp(self.clock.time(), UTC))

    def _early(self) -> list[Event]:
        """A pass whose vote is already backed by enough agreeing reads and matches is a hit now:
        a listed car stopped at a light in front of the camera must not wait for its pass to close."""
        events: list[Event] = []
        for t in self.tracker.just_read():
            if t.track_id in self._reported or t.agreeing_reads < self.matching.min_agreeing_reads:
                continue
            m = self._match(t)
            if m is not None:
                self._reported.add(t.track_id)
                events.append(Hit(t, m, True))
        return events

    def _decide(self, tracks: Iterable[Track]) -> list[Event]:
        events: list[Event] = []
        for t in tracks:
            if t.track_id in self._reported:
                self._reported.discard(t.track_id)  # its hit went out while it was open: one event per pass
                continue
            if not t.text:
                continue
            m = self._match(t)
            if m is None:
                events.append(Pass(t))
            else:
                events.append(Hit(t, m, t.agreeing_reads >= self.matching.min_agreeing_reads))
        return events


def hit_payload(
    hit: Hit, device_id: str, location: dict[str, Any] | None, evidence: str | None
) -> dict[str, Any]:
    t, m = hit.track, hit.match
    return {
        "v": 1,
        "hit_id": hit.hit_id,
        "device_id": device_id,
        "camera": t.camera,
        "ts": round(t.last_ts, 3),
        "first_ts": round(t.first_ts, 3),
        "plate": t.text,
        "state": None,
        "region": t.region,
        "confidence": t.confidence,
        "chars": list(t.chars),
        "candidates": [{"text": c.text, "confidence": round(c.confidence, 4)} for c in t.candidates],
        "reads": t.reads,
        "agreeing_reads": t.agreeing_reads,
        "verified": hit.verified,
        "match": {
            "kind": m.kind,
            "reason": m.reason,
            "priority": m.priority,
            "list_version": m.list_version,
            "p_not_entry": round(float(m.p_not_entry), 6),
        },
        "box": t.box.as_list(),
        "direction": t.direction,
        "location": location,
        "evidence": evidence,
    }


# --- sd_notify without a dependency ------------------------------------------------------------


class Notifier:
    """systemd's notify protocol: one datagram per state change to $NOTIFY_SOCKET (no-op without it)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr.startswith("@"):
            self._addr = "\0" + addr[1:]
        elif addr.startswith("/"):
            self._addr = addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *lines: str) -> bool:
        if self._addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(lines).encode(), self._addr)
            return True
        except OSError as e:
            log.warning("sd_notify failed: %s", e)
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", f"STATUS={status}" if status else "STATUS=running")

    def watchdog(self, now: float) -> None:
        """Ping at half the watchdog period; called from the pipeline loop so a hung loop gets restarted."""
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s / 2:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")


# --- machine health for metrics --------------------------------------------------------------


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
"""The SoC temperature on a Raspberry Pi (millidegrees); absent on most VMs."""


def cpu_temp_c(path: Path = THERMAL_ZONE) -> float | None:
    try:
        return round(int(path.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def disk_free_mb(path: Path) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 2**20, 1)
    except OSError:
        return None


def next_session(state_dir: Path) -> int:
    """A number that grows with every start (status and Last Will carry it); atomic replace.

    On a full disk the number is used without being saved (the next start may repeat it): a start
    on a full disk runs degraded instead of failing."""
    path = state_dir / "session"
    try:
        n = int(path.read_text().strip()) + 1
    except (OSError, ValueError):
        n = 1
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(str(n))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        log.error("session number %d not saved (%s): the disk is full or read-only", n, e.strerror)
        with contextlib.suppress(OSError):
            tmp.unlink()
    return n


# --- the one extra thread, and hits the disk refused ---------------------------------------------


class Housekeeper:
    """Runs `work()` every `interval` seconds on one named thread (Frigate's cleanup idiom).

    A failure is logged and kept in `error` (the daemon raises its storage alarm) until a run succeeds.
    """

    NAME = "alprd-housekeeping"

    def __init__(self, work: Callable[[], None], interval: float) -> None:
        self._work = work
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.NAME, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._work()
                self.error = ""
            except (StoreError, OSError) as e:
                log.error("housekeeping failed: %s", e)
                self.error = str(e)[:200]
            self.runs += 1

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


RAM_HITS_MAX = 1000
"""Hits kept in memory while the disk refuses them (~2 KB each); beyond this the oldest is dropped."""


class HitBuffer:
    """The publisher's outbox while the disk may be full: hits the store refused come first.

    They are offered to MQTT straight from memory (a stolen car cannot wait for disk space) and
    retried into the durable outbox; whichever succeeds first forgets them. An acknowledgement the
    full disk cannot record is remembered here, so the row is not resent in a loop.
    """

    def __init__(self, disk: Outbox, limit: int = RAM_HITS_MAX) -> None:
        self.disk = disk
        self.limit = limit
        self.ram: dict[str, OutboxItem] = {}
        self.dropped = 0
        self._unforgotten: set[str] = set()
        self._read_error = ""

    def keep(self, key: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        self.ram[key] = OutboxItem(key, key, "hit", payload)
        while len(self.ram) > self.limit:
            oldest = next(iter(self.ram))
            del self.ram[oldest]
            self.dropped += 1
            log.error("hit %s dropped: %d hits already wait in memory for the disk", oldest, self.limit)

    def pending(self, limit: int) -> list[OutboxItem]:
        items = list(self.ram.values())[:limit]
        if len(items) < limit:
            try:
                rows = self.disk.pending(limit - len(items) + len(self._unforgotten))
            except StoreError as e:
                # asked for several times a second: say it when it starts or changes, not each time
                (log.error if str(e) != self._read_error else log.debug)("outbox unreadable: %s", e)
                self._read_error = str(e)
                rows = []
            else:
                self._read_error = ""
            items += [r for r in rows if r.item_id not in self._unforgotten and r.item_id not in self.ram]
        return items[:limit]

    def ack(self, item_id: str) -> None:
        self.ram.pop(item_id, None)
        try:
            self.disk.ack(item_id)
        except StoreError as e:
            log.error("delivered outbox row %s not forgotten yet: %s", item_id, e)
            self._unforgotten.add(item_id)
        else:
            self._unforgotten.discard(item_id)

    def retry(self, put: Callable[[str, dict[str, Any]], None]) -> bool:
        """Move RAM hits into the durable outbox and forget delivered rows; True when nothing is left."""
        for key, item in list(self.ram.items()):
            try:
                put(key, json.loads(item.payload))
            except StoreError:
                return False
            self.ram.pop(key, None)
        for item_id in list(self._unforgotten):
            try:
                self.disk.ack(item_id)
            except StoreError:
                return False
            self._unforgotten.discard(item_id)
        return True

    def __len__(self) -> int:
        return len(self.ram)


class Refusals:
    """Messages refused at the boundary, counted per window.

    A refusal is never fatal and never one audit row per message (9,540 junk `hotlist/set` messages
    once made 6,594 rows and 5.6 MB): the first refusal of a window per channel is logged at WARNING,
    the rest at DEBUG, and each window with any ends in one audit row with the counts.
    """

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self.total: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, str] = {}
        self._start = clock.monotonic()

    def note(self, channel: str, reason: str) -> None:
        reason = reason[:200]
        self.total[channel] = self.total.get(channel, 0) + 1
        n = self._counts[channel] = self._counts.get(channel, 0) + 1
        self._last[channel] = reason
        if n == 1:
            log.warning("%s: message refused (%s); more this window are only counted", channel, reason)
        else:
            log.debug("%s: message refused (%s)", channel, reason)

    def due(self) -> bool:
        return self._clock.monotonic() - self._start >= self.window_s

    def flush(self) -> dict[str, Any] | None:
        """The window's counts (None if nothing was refused); starts the next window."""
        out = None
        if self._counts:
            out = {"window_s": round(self._clock.monotonic() - self._start, 1), "counts": dict(self._counts),
                   "last_reason": dict(self._last)}
            log.warning("refused in the last %.0f s: %s", out["window_s"], self._counts)
        self._counts.clear()
        self._last.clear()
        self._start = self._clock.monotonic()
        return out


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_warnings(cfg: Config) -> list[tuple[str, str]]:
    """(key, message) for a broker link that others could read or use: the `insecure_transport`
    alarm and `check-config` warnings. Plain MQTT to a broker on this machine is fine."""
    m = cfg.mqtt
    if not m.enabled or _is_loopback(m.host):
        return []
    out = []
    if m.tls is None:
        out.append(("mqtt.tls", f"broker {m.host} is not on this machine and TLS is off: every hit "
                                "crosses the network in clear; set mqtt.tls"))
    if m.password_file is None and (m.tls is None or m.tls.cert is None):
        out.append(("mqtt.password_file", f"broker {m.host} is not on this machine and the device "
                    "authenticates with neither a password nor a client certificate: an anonymous "
                    "client may read every hit; set mqtt.username and mqtt.password_file (or mqtt.tls.cert)"))
    return out


# --- the service -------------------------------------------------------------------------------


class Services(Protocol):
    """What the daemon needs from the privacy core (storage, hot list, summaries, evidence, audit)."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def matcher(self) -> Matcher | None: ...

    def hotlist_info(self) -> dict[str, Any]: ...

    def install_hotlist(self, bundle: bytes) -> dict[str, Any]:
        """Verify and activate a bundle like `alprd hotlist install`; raises HotListError. A refusal
        is not audited here: the daemon counts refusals per window."""

    def install_list_key(self, payload: bytes) -> dict[str, Any]:
        """A sealed list key from headquarters (hotlist.key_source hq); raises UntrustedInput."""

    def put(self, kind: str, key: str, body: dict[str, Any]) -> None:
        """Write a hit/summary to the durable outbox; raises StoreError (disk full...)."""

    def outbox_depth(self) -> int: ...

    def seal_evidence(self, hit: Hit, frame_image: Image | None) -> str | None: ...

    def note_pass(self, track: Track) -> None:
        """A non-hit: counted (or tokenised) for the next summary, never stored."""

    def note_hit(self, hit: Hit) -> None: ...

    def summary(self, now: float) -> dict[str, Any] | None:
        """The summary due now (or None), already free of plates."""

    def housekeeping(self, now: float) -> None:
        """TTL purge and the like; called every few seconds from the housekeeping thread."""

    def probe_storage(self) -> None:
        """A tiny durable write; raises StoreError while the disk is still full."""

    def audit(self, event: str, obj: str | dict[str, Any] = "") -> None:
        """Append to the tamper-evident audit chain (never a plate in clear); raises StoreError."""

    @property
    def quarantined(self) -> Path | None:
        """Where a damaged database was moved at start-up (a fresh one replaced it), else None."""

    def close(self) -> None: ...


class Daemon:
    HOUSEKEEPING_S = 5.0
    """How often the purge thread runs, and how often the loop sends summaries and status."""

    def __init__(
        self,
        cfg: Config,
        source: FrameSource,
        pipeline: Pipeline,
        services: Services,
        publisher: Publisher | None,
        locator: Locator,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
        state_dir: Path | None = None,
        *,
        ack_pub: Ed25519PublicKey | None = None,
        lock: InstanceLock | None = None,
    ) -> None:
        self.cfg = cfg
        self.ack_pub = ack_pub
        self.lock = lock
        self.source = source
        self.pipeline = pipeline
        self.services = services
        self.publisher = publisher
        self.locator = locator
        self.notifier = notifier or Notifier()
        self.clock = clock or SystemClock()
        self.state_dir = state_dir
        self.hits = 0
        self.passes = 0
        self.summaries_dropped = 0
        self.outbox = HitBuffer(services.outbox)
        self.housekeeper = Housekeeper(
            lambda: self.services.housekeeping(self.clock.time()), self.HOUSEKEEPING_S
        )
        self._storage_error = ""
        self._next_retry = 0.0
        self._status_sent: dict[str, Any] | None = None
        self._next_metrics = 0.0
        self._next_house = 0.0
        self.refusals = Refusals(float(cfg.privacy.summary_interval_s), self.clock)
        self._gpsd_refused = 0
        self._insecure = transport_warnings(cfg)
        for key, msg in self._insecure:
            log.warning("%s: %s", key, msg)
        self._ready = False
        self.on_event: Callable[[Event, dict[str, Any] | None], None] | None = None

    # --- start-up ---------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The retained `info`: kept under 512 bytes, so a broker with a small message limit still
        takes it. Hashes are cut to 64 bits (enough to tell versions apart; the audit chain's `start`
        entry has them whole) and the policy is named by its hash."""
        policy = self.cfg.policy.model_dump_json().encode()
        hot = self.services.hotlist_info()
        return {
            "v": 1,
            "device_id": self.cfg.device_id,
            "version": __version__,
            "models": {k: v[:16] for k, v in self.pipeline.reader.model_hashes.items()},
            "hotlist": {k: hot.get(k) for k in ("list_id", "version", "entries", "expires")}
            if hot.get("installed") else {"installed": False},
            "config": config_hash(self.cfg)[:16],
            "policy": hashlib.sha256(policy).hexdigest()[:16],
            "source": self.cfg.source.kind,
        }

    def announce(self) -> None:
        if self.publisher is not None:
            self.publisher.publish_retained(self.publisher.topics.info, self.info())
        self._notify_ready()

    def _notify_ready(self) -> None:
        """READY=1 once the camera is open, or else once the broker has the status with the `camera`
        alarm: then the service is up and says what is wrong, and it keeps retrying the camera."""
        if self._ready:
            return
        if self.source.stats.connected or self.source.finished:
            status = f"reading from {self.cfg.source.kind}"
        elif (self.publisher is not None and "camera" in (self._status_sent or {}).get("alarms", ())
              and self.publisher.status_delivered):
            status = "camera not available: camera alarm published, retrying"
        else:
            return
        self._ready = True
        self.notifier.ready(status)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Loop until `stop` is set or a finite source ends; then drain and publish `stopped`."""
        self.announce()
        # Which configuration and models ran is part of the record an auditor reads back.
        self._audit("start", {
            "session": self.publisher.session if self.publisher else 0, "version": __version__,
            "config_hash": config_hash(self.cfg), "models": dict(self.pipeline.reader.model_hashes),
        })
        self.housekeeper.start()
        try:
            while not stop.is_set():
                frame = self.source.read(0.2)
                if frame is not None:
                    self.handle(self.pipeline.step(frame))
                elif self.source.finished:
                    log.info("source finished: draining")
                    break
                self.tick()
        finally:
            self.housekeeper.stop()
        return self.shutdown()

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Hit):
                self._hit(ev)
            else:
                self.passes += 1
                self.services.note_pass(ev.track)
                if self.on_event is not None:
                    self.on_event(ev, None)

    def _hit(self, hit: Hit) -> None:
        self.hits += 1
        evidence = None
        try:
            evidence = self.services.seal_evidence(hit, hit.track.image)
        except (StoreError, OSError) as e:
            self._storage_fault(f"evidence for hit {hit.hit_id} not stored", e)
        body = hit_payload(hit, self.cfg.device_id, self.locator.current(), evidence)
        self.services.note_hit(hit)
        try:
            self.services.put("hit", hit.hit_id, body)
        except StoreError as e:
            # disk full or broken: the hit waits in RAM (and goes out over MQTT from there)
            self._storage_fault(f"hit {hit.hit_id} kept in RAM, outbox write failed", e)
            self.outbox.keep(hit.hit_id, body)
        # The chain records that a hit was made and against which list, not the plate.
        self._audit("hit", {"hit_id": hit.hit_id, "kind": hit.match.kind, "verified": hit.verified,
                            "list_version": hit.match.list_version, "evidence": evidence is not None})
        log.info("hit %s (%s, verified=%s)", hit.hit_id, hit.match.kind, hit.verified)
        if self.on_event is not None:
            self.on_event(hit, body)

    @property
    def alarms(self) -> list[str]:
        out = set()
        if self._storage_error or self.housekeeper.error or len(self.outbox):
            out.add("storage")
        info = self.services.hotlist_info()
        if not info.get("installed"):
            out.add("no_hotlist")
        elif info.get("expired"):
            out.add("hotlist_expired")
        if not (self.source.stats.connected or self.source.finished):
            out.add("camera")
        if self.services.quarantined is not None:
            out.add("storage_quarantined")
        if self._insecure:
            out.add("insecure_transport")
        if self.publisher is not None and self.publisher.too_large:
            out.add("mqtt_message_too_large")
        return sorted(out)

    def _storage_fault(self, what: str, e: Exception) -> None:
        log.error("%s: %s", what, e)
        self._storage_error = str(e)[:200]

    def _storage_check(self) -> None:
        """While the storage alarm is up: RAM hits into the outbox, else a probe write; clear on success."""
        if not self._storage_error and not len(self.outbox):
            return
        try:
            if not self.outbox.retry(lambda key, body: self.services.put("hit", key, body)):
                return
            self.services.probe_storage()
        except StoreError as e:
            self._storage_error = str(e)[:200]
            return
        if self._storage_error:
            log.warning("storage writable again: storage alarm cleared")
        self._storage_error = ""

    def tick(self) -> None:
        now = self.clock.monotonic()
        self.notifier.watchdog(now)
        self.locator.poll(now)
        if len(self.outbox) and now >= self._next_retry:
            self._next_retry = now + 1.0
            self._storage_check()
        if self.publisher is not None:
            for cmd in self.publisher.commands():
                self._command(cmd)
            self.publisher.pump(self.outbox)
        if now >= self._next_house:
            self._next_house = now + self.HOUSEKEEPING_S
            self._storage_check()
            self._summary(self.clock.time())
            if self.refusals.due():
                self._refusal_window()
            self._status()
        self._notify_ready()
        if now >= self._next_metrics:
            self._next_metrics = now + self.cfg.metrics.interval_s
            if self.publisher is not None:
                self.publisher.publish_event(self.publisher.topics.metrics, self.metrics(), qos=0)

    def _summary(self, now: float, force: bool = False) -> None:
        body = self.services.summary(now) if not force else self.services.summary(float("inf"))
        if body is None:
            return
        if "storage" in self.alarms:
            # summaries stop while the disk is full: the space left is for hits
            self.summaries_dropped += 1
            log.warning("summary dropped: storage alarm (hits come first)")
            return
        ts = now if now != float("inf") else self.clock.time()
        body = {"summary_id": str(uuid.uuid4()), "device_id": self.cfg.device_id, "ts": round(ts, 3), **body}
        try:
            self.services.put("summary", body["summary_id"], body)
        except StoreError as e:
            self.summaries_dropped += 1
            self._storage_fault("summary dropped", e)

    def _audit(self, event: str, obj: str | dict[str, Any] = "") -> None:
        try:
            self.services.audit(event, obj)
        except StoreError as e:
            self._storage_fault(f"audit entry {event!r} not written", e)

    def _status(self) -> None:
        stats = self.source.stats
        extra: dict[str, Any] = {
            "camera": "ok" if stats.connected or self.source.finished else "lost",
            "alarms": self.alarms,
        }
        if stats.last_error and not stats.connected:
            extra["camera_error"] = stats.last_error[:200]
        storage_error = self._storage_error or self.housekeeper.error
        if storage_error:
            extra["storage_error"] = storage_error
        if extra != self._status_sent and self.publisher is not None:
            self._status_sent = extra
            self.publisher.set_status(extra)

    def _refusal_window(self) -> None:
        body = self.refusals.flush()
        gpsd = self.locator.gpsd.refused if self.locator.gpsd is not None else 0
        if gpsd > self._gpsd_refused:
            body = body or {"counts": {}}
            body["counts"]["gpsd"] = gpsd - self._gpsd_refused
            self._gpsd_refused = gpsd
        if body is not None:
            self._audit("refused", body)

    def _command(self, cmd: Command) -> None:
        """One message from the back office: applied or refused (counted), whatever it holds; never
        fatal (4,000 `[` on the ack topic used to end the daemon with RecursionError, and published
        retained, on every restart)."""
        try:
            if cmd.error:
                self._refuse(cmd, cmd.error)
            elif cmd.name == "ack":
                self._ack(cmd)
            elif cmd.name == "hotlist_key":
                self._list_key(cmd)
            else:
                self._hotlist_set(cmd)
        except (RecursionError, MemoryError) as e:
            self._refuse(cmd, type(e).__name__)

    def _refuse(self, cmd: Command, reason: str) -> None:
        self.refusals.note(cmd.channel, reason)
        if cmd.name == "hotlist_set" and self.publisher is not None:
            result = {"v": 1, "ts": round(self.clock.time(), 3), "bytes": len(cmd.payload), "ok": False,
                      "reason": reason}
            self.publisher.publish_event(self.publisher.topics.hotlist_result, result, qos=1)

    def _ack(self, cmd: Command) -> None:
        assert self.publisher is not None
        if self.ack_pub is None:
            self._refuse(cmd, "mqtt.app_ack is off")
            return
        try:
            hit_id = verify_ack(self.ack_pub, self.cfg.device_id, cmd.payload)
        except UntrustedInput as e:
            self._refuse(cmd, str(e))
            return
        if not self.publisher.app_acked(hit_id, self.outbox):
            log.debug("ack for hit %s, which is not waiting for one (a duplicate)", hit_id)

    def _list_key(self, cmd: Command) -> None:
        try:
            got = self.services.install_list_key(cmd.payload)
        except UntrustedInput as e:
            self._refuse(cmd, str(e))
            return
        if got.get("unchanged"):
            return
        log.info("list key from headquarters accepted (issued %s)", got.get("issued"))
        self._audit("hotlist.key", {"issued": got.get("issued"), "loaded": got.get("hotlist_loaded")})
        self.pipeline.matcher = self.services.matcher
        if self.publisher is not None:
            self.publisher.publish_retained(self.publisher.topics.info, self.info())

    def _hotlist_set(self, cmd: Command) -> None:
        assert self.publisher is not None
        try:
            installed = self.services.install_hotlist(cmd.payload)
        except AlprdError as e:
            self._refuse(cmd, str(e) if isinstance(e, HotListError) else f"{type(e).__name__}: {e}")
            return
        log.info("hotlist/set: version %s accepted", installed.get("version"))
        self.pipeline.matcher = self.services.matcher
        self.publisher.publish_retained(self.publisher.topics.info, self.info())
        result = {"v": 1, "ts": round(self.clock.time(), 3), "bytes": len(cmd.payload), "ok": True,
                  **installed}
        self.publisher.publish_event(self.publisher.topics.hotlist_result, result, qos=1)

    def metrics(self) -> dict[str, Any]:
        stats = self.source.stats
        hot = self.services.hotlist_info()
        issued = hot.get("issued_ts")
        storage = getattr(getattr(self.cfg, "storage", None), "dir", None)
        try:
            depth: int | None = self.services.outbox_depth()
        except StoreError:
            depth = None
        return {
            "v": 1,
            "id": str(uuid.uuid4()),
            "ts": round(self.clock.time(), 3),
            "frames_in": stats.frames_in,
            "frames_processed": self.pipeline.processed,
            "frames_skipped_motion": self.pipeline.skipped,
            "frames_dropped": stats.dropped,
            "camera_reconnects": stats.reconnects,
            "reads": self.pipeline.reads,
            "hits": self.hits,
            "passes": self.passes,
            "ms": self.pipeline.timer.summary(),
            "open_tracks": self.pipeline.tracker.open_count,
            # sources hold only the newest frame, so the queues are the outbox, RAM hits and paho's in-flight
            "outbox_depth": depth,
            "ram_hits": len(self.outbox),
            "ram_hits_dropped": self.outbox.dropped,
            "summaries_dropped": self.summaries_dropped,
            "mqtt_inflight": self.publisher.inflight if self.publisher else 0,
            "mqtt_connected": self.publisher.connected if self.publisher else False,
            "threads": threading.active_count(),
            "rss_mb": rss_mb(),
            "cpu_temp_c": cpu_temp_c(),
            "disk_free_mb": disk_free_mb(Path(storage)) if storage else None,
            "hotlist_age_s": (
                round(self.clock.time() - float(issued), 1) if isinstance(issued, int | float) else None
            ),
            "refused": {**self.refusals.total,
                        **({"gpsd": self.locator.gpsd.refused} if self.locator.gpsd is not None else {})},
            "mqtt_too_large": sum(self.publisher.too_large.values()) if self.publisher else 0,
            "alarms": self.alarms,
        }

    def shutdown(self) -> int:
        self.handle(self.pipeline.flush())
        self._storage_check()
        self._summary(self.clock.time(), force=True)
        self.notifier.stopping()
        self._refusal_window()
        self._audit("stop", f"hits={self.hits}")
        if self.publisher is not None:
            # the final counters (a replayed file ends between two metrics intervals)
            self.publisher.publish_event(self.publisher.topics.metrics, self.metrics(), qos=1)
            self._storage_check()

            def empty() -> bool:
                try:
                    return not len(self.outbox) and self.services.outbox_depth() == 0
                except StoreError:
                    return False

            def commands(cmds: list[Command]) -> None:
                for cmd in cmds:  # acks above all: in app_ack mode they are what empties the outbox
                    self._command(cmd)

            if not self.publisher.drain(self.outbox, self.cfg.mqtt.drain_timeout_s, empty, commands):
                log.warning("outbox not empty after %.0f s: kept for the next start",
                            self.cfg.mqtt.drain_timeout_s)
            self.publisher.stop("stopped")
        if len(self.outbox):
            log.error("%d hit(s) lost: the disk refused them and the broker did not take them",
                      len(self.outbox))
        self.source.close()
        self.locator.close()
        self.services.close()
        if self.lock is not None:
            self.lock.release()
        return 0


# --- checks beyond the schema, and wiring ------------------------------------------------------------


def _lines_of(path: Path) -> dict[tuple[str | int, ...], int]:
    from .config import key_lines

    try:
        return key_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def preflight(cfg: Config, path: Path, keys: bool = True) -> list[str]:
    """What the schema cannot see: files that must exist, and key files that must load with a safe mode
    (`keys`; outside the service, systemd credentials are checked at the unit's LoadCredential= sources,
    as the service will get them). Each problem as `file:line key.path: message`."""
    from .keys import check_key_files, credential_source

    lines = _lines_of(path)
    problems: list[str] = []

    def add(key: str, msg: str) -> None:
        loc = tuple(key.split("."))
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)
        problems.append(f"{path}:{line} {key}: {msg}")

    def need_file(key: str, p: Path | None, what: str) -> None:
        if p is None:
            return
        p, via = credential_source(p)
        if not p.is_file():
            add(key, f"{what} {p} does not exist{via}")
        elif not os.access(p, os.R_OK):
            add(key, f"{what} {p} is not readable by this user{via}")

    src = cfg.source
    if src.kind == "video" and not Path(src.path).is_file():
        add("source.path", f"video file {src.path} does not exist")
    if src.kind == "images" and not Path(src.path).is_dir():
        add("source.path", f"image folder {src.path} does not exist")
    if not cfg.reader.models_dir.is_dir():
        add("reader.models_dir", f"model folder {cfg.reader.models_dir} does not exist")
    if cfg.mqtt.tls is not None:
        need_file("mqtt.tls.ca", cfg.mqtt.tls.ca, "CA certificate")
        need_file("mqtt.tls.cert", cfg.mqtt.tls.cert, "client certificate")
    # the secrets (list key, MQTT password, TLS client key) and the agency's public keys
    for k in check_key_files(cfg) if keys else ():
        if k.error:
            add(k.key, f"{k.error}{k.via}")
    return problems


@dataclass(frozen=True)
class PrivacySettings:
    """The privacy-core keys the daemon needs, read from their config sections (issue 3's names)."""

    storage_dir: Path
    bundle: Path
    list_key: Path
    signing_pub: Path
    lookalike_max: int = 1
    lookalike_classes: tuple[str, ...] | None = None
    summary_mode: str = "counts"
    summary_interval_s: float = 900.0
    token_bits: int = 16
    evidence_pub: Path | None = None
    evidence_ttl_s: float = 86400.0
    max_db_mb: int | None = None
    outbox_ttl_s: float | None = None
    list_id: str = "default"
    key_source: str = "file"
    device_key: Path | None = None
    """key_source hq: the device's X25519 key (None: storage_dir/device-x25519.key)."""


def privacy_settings(cfg: Config) -> PrivacySettings:
    hot, priv = cfg.hotlist, cfg.privacy
    return PrivacySettings(
        list_id=hot.list_id, key_source=hot.key_source, device_key=hot.device_key,
        storage_dir=cfg.storage.dir, bundle=hot.bundle, list_key=hot.list_key, signing_pub=hot.signing_pub,
        lookalike_max=hot.lookalike_max, lookalike_classes=hot.lookalike_classes,
        summary_mode=priv.summary_mode, summary_interval_s=priv.summary_interval_s,
        token_bits=priv.token_bits,
        evidence_pub=priv.evidence_pub, evidence_ttl_s=priv.evidence_ttl_s, max_db_mb=cfg.storage.max_db_mb,
        # An undeliverable hit is still ALPR data: it may not outlive the retention the policy names.
        outbox_ttl_s=cfg.policy.retention_days * 86400.0,
    )


def build(
    cfg: Config,
    stop: threading.Event,
    reader: Reader | None = None,
    notifier: Notifier | None = None,
) -> Daemon:
    """Wire the stages; raises AlprdError (model, key, hot list, camera) with a message saying what to do."""
    return assemble(cfg, privacy_settings(cfg), stop, reader, notifier)


def assemble(
    cfg: Config,
    ps: PrivacySettings,
    stop: threading.Event,
    reader: Reader | None = None,
    notifier: Notifier | None = None,
    store: Any = None,
) -> Daemon:
    """`build` with the privacy settings given; `store` replaces the SQLite store (tests of a full disk).

    The one-instance lock on storage.dir comes first: a second `alprd run` is refused in a moment,
    before any model is loaded (InstanceLockedError, exit 2).
    """
    from .store import InstanceLock

    try:
        ps.storage_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StoreError(f"storage.dir {ps.storage_dir}: {e.strerror}") from e
    lock = InstanceLock(ps.storage_dir)
    lock.acquire()
    try:
        return _assemble(cfg, ps, stop, reader, notifier, store, lock)
    except BaseException:
        lock.release()
        raise


def _assemble(
    cfg: Config,
    ps: PrivacySettings,
    stop: threading.Event,
    reader: Reader | None,
    notifier: Notifier | None,
    store: Any,
    lock: InstanceLock,
) -> Daemon:
    from .capture import make_source, open_with_retry
    from .keys import (
        DEVICE_SEAL_KEY_NAME,
        load_ack_pub,
        load_evidence_pub,
        load_list_key,
        load_or_create_device_seal_key,
        load_signing_pub,
    )
    from .services import PrivacyServices

    ack_pub = load_ack_pub(cfg.mqtt.ack_pub) if cfg.mqtt.enabled and cfg.mqtt.app_ack else None
    hq = ps.key_source == "hq"
    device_key = None
    if hq:
        path = ps.device_key or ps.storage_dir / DEVICE_SEAL_KEY_NAME
        device_key = load_or_create_device_seal_key(path, create=ps.device_key is None)
    if reader is None:
        from .read.reader import PlateReader

        reader = PlateReader(cfg.reader)  # loads, hash-checks and warms the models
    services = PrivacyServices(
        ps.storage_dir, cfg.device_id, ps.bundle,
        load_signing_pub(ps.signing_pub), None if hq else load_list_key(ps.list_key),
        summary_mode=ps.summary_mode, summary_interval_s=ps.summary_interval_s, token_bits=ps.token_bits,
        lookalike_max=ps.lookalike_max, lookalike_classes=ps.lookalike_classes,
        evidence_pub=load_evidence_pub(ps.evidence_pub) if ps.evidence_pub else None,
        evidence_ttl_s=ps.evidence_ttl_s, max_db_bytes=ps.max_db_mb * 2**20 if ps.max_db_mb else None,
        outbox_ttl_s=ps.outbox_ttl_s, store=store, list_id=ps.list_id, device_seal_key=device_key,
    )
    if services.matcher is None and not hq:
        log.warning("no hot list installed yet: nothing can match until one arrives on hotlist/set")
    source = make_source(cfg.source, cfg.camera, max_pixels=cfg.reader.max_pixels)
    live = source_is_live(cfg)
    if not live:
        open_with_retry(source, 0.0, stop)  # a missing file or folder: exit before connecting anywhere
    publisher = None
    if cfg.mqtt.enabled:
        publisher = Publisher(cfg.mqtt, cfg.device_id, next_session(ps.storage_dir), list_key_topic=hq)
        publisher.start()
    if live:
        # MQTT is connecting meanwhile: a camera that stays missing must not end the process, or the
        # back office never learns why. The loop retries it with the source's reconnect backoff, and
        # the retained status carries the `camera` alarm until it opens.
        try:
            open_with_retry(source, cfg.source.open_timeout_s, stop)
        except CaptureError as e:
            log.error("%s; raising the camera alarm and retrying", e)
            source.stats.last_error = str(e)
    pipeline = Pipeline(
        reader, Tracker(cfg.tracking), MotionGate(cfg.motion), services.matcher, cfg.matching,
        None if cfg.reader.region == "auto" else cfg.reader.region,
    )
    return Daemon(cfg, source, pipeline, services, publisher, Locator(cfg.location), notifier,
                  ack_pub=ack_pub, lock=lock)


def source_is_live(cfg: Config) -> bool:
    return cfg.source.kind in ("picamera2", "opencv")
