"""The long-running service: `build(cfg, stop)` wires the parts from the config, `Daemon.run(stop)` loops.

capture -> pipeline (motion gate, reader, tracker, hot list) -> recorder (evidence, outbox, summary,
audit) -> publisher; the publisher's commands go to the command registry. This module knows all the
parts and does nothing else: each one's work is in its own module.

Threads: this loop (the pipeline), paho's network thread and one housekeeping thread (the TTL
purge, which may delete many files and must not stall the loop); nothing else. One stop Event.
Several cameras are read by this one loop in turn, each time its newest frame: a camera never
waits in a queue behind another, it drops frames (counted per camera) when the CPU is short. The
second core goes to onnxruntime's own threads inside the detectors (`reader.detector_threads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..clock import Clock, SystemClock
from ..config import Config, config_hash
from ..errors import AlprdError, CaptureError, StoreError
from ..exits import Exit
from ..payloads import InfoBody, ListSummary, StatusDetail
from ..privacy.hotlist import HotListInstaller
from ..privacy.keys import (
    DEVICE_SEAL_KEY_NAME,
    load_evidence_pub,
    load_list_key,
    load_or_create_device_seal_key,
    load_signing_pub,
)
from ..privacy.listkey import ListKeyReceiver
from ..privacy.summaries import Summarizer
from ..read.grammar import vehicle_like
from ..store import InstanceLock, Store
from ..types import Command, Event, Frame
from . import health, homeassistant
from .capture import FrameSource, is_live, make_source, open_with_retry
from .commands import Commands, Refusals, ack_key, device_commands, load_installed
from .housekeeping import Housekeeper, purge
from .location import Locator
from .manifest import build_manifest, list_summary
from .motion import MotionGate
from .outbox import OverflowOutbox
from .pipeline import Pipeline, Reader
from .preflight import transport_warnings
from .publish import PahoPublisher, Publisher
from .record import EvidenceSealer, Recorder, lifecycle_audit
from .rules import CaptureGate
from .systemd import Notifier
from .track import Tracker

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Daemon:
    """The parts `build` wired, and the loop. `run(stop)` until `stop` is set or a finite source ends;
    then it drains the outbox, publishes `stopped` and closes every resource `build` opened."""

    cfg: Config
    sources: dict[str, FrameSource]
    """The cameras by name, read in this order, in turn."""
    pipeline: Pipeline
    hotlist: HotListInstaller
    store: Store
    outbox: OverflowOutbox
    recorder: Recorder
    refusals: Refusals
    commands: Commands
    publisher: Publisher | None
    locator: Locator
    notifier: Notifier
    resources: contextlib.ExitStack
    """What `build` opened (lock, store, camera, broker connection, gpsd), closed at the end."""
    clock: Clock = field(default_factory=SystemClock)
    capture: CaptureGate = field(default_factory=CaptureGate.off)
    """The capture rules, asked before each frame is read (`capture.schedule`, `capture.geofence`)."""

    HOUSEKEEPING_S = 5.0
    """How often the purge thread runs, and how often the loop sends summaries and status."""

    def __post_init__(self) -> None:
        self.housekeeper = Housekeeper(lambda: purge(self.store), self.HOUSEKEEPING_S)
        self.insecure = transport_warnings(self.cfg)
        for key, msg in self.insecure:
            log.warning("%s: %s", key, msg)
        self._status_sent: StatusDetail | None = None
        self.fps = health.Rate()
        self._ready = False
        self._next_retry = self._next_metrics = self._next_house = 0.0

    @property
    def source(self) -> FrameSource:
        """The first camera's source."""
        return next(iter(self.sources.values()))

    @source.setter
    def source(self, source: FrameSource) -> None:
        self.sources[next(iter(self.sources))] = source

    # --- what it says about itself ---------------------------------------------------------------

    @property
    def alarms(self) -> list[str]:
        return health.alarms(self)

    def info(self) -> dict[str, object]:
        """The retained `info` message, as JSON."""
        return self._info().as_dict()

    def metrics(self) -> dict[str, object]:
        """The `metrics` message, as JSON."""
        return health.metrics(self).as_dict()

    def _info(self) -> InfoBody:
        return info_body(self.cfg, self.pipeline.reader, self.hotlist)

    def announce(self) -> None:
        if self.publisher is not None:
            self.publisher.publish_retained(self._info())
            publish_manifest(self.publisher, self.cfg, self.pipeline.reader, self.hotlist, self.commands)
            if self.cfg.mqtt.homeassistant:
                homeassistant.announce(self.publisher, self.cfg)
        self._notify_ready()

    def _notify_ready(self) -> None:
        """READY=1 once the camera is open, or else once the broker has the status with the `camera`
        alarm: then the service is up and says what is wrong, and it keeps retrying the camera."""
        if self._ready:
            return
        if health.cameras_ok(self):
            status = "reading from " + ", ".join(f"{c.name} ({c.kind})" for c in self.cfg.cameras)
        elif (self.publisher is not None and self._status_sent is not None
              and "camera" in self._status_sent.alarms and self.publisher.status_delivered):
            status = "camera not available: camera alarm published, retrying"
        else:
            return
        self._ready = True
        self.notifier.ready(status)

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Loop until `stop` is set or a finite source ends; then drain and publish `stopped`."""
        self.announce()
        # Which configuration and models ran is part of the record an auditor reads back.
        self.recorder.audit("start", {
            "session": self.publisher.session if self.publisher else 0, "version": __version__,
            "config_hash": config_hash(self.cfg), "models": dict(self.pipeline.reader.model_hashes),
        })
        self.housekeeper.start()
        try:
            while not stop.is_set():
                live = [s for s in self.sources.values() if not s.finished]
                if not live:
                    log.info("every source finished: draining")
                    break
                for source in live:
                    # one camera's wait for its next frame must not hold the others up
                    frame = source.read(0.2 / len(live))
                    if frame is not None:
                        self.timer_add("capture", source.stats.decode_ms)
                        self.step(frame)
                    self.tick()
        finally:
            self.housekeeper.stop()
        return self.shutdown()

    def step(self, frame: Frame) -> None:
        """One frame through the pipeline; its events to the recorder, the frame to the summary's
        count of frames read."""
        read_before = self.pipeline.processed
        self.handle(self.capture.step(frame, self.pipeline))
        self.recorder.frames_read(self.pipeline.processed - read_before)

    def timer_add(self, stage: str, ms: float) -> None:
        self.pipeline.timer.add(stage, ms)

    def handle(self, events: list[Event]) -> None:
        self.recorder.handle(events)

    def tick(self) -> None:
        now = self.clock.monotonic()
        self.notifier.watchdog(now)
        self.locator.poll(now)
        self.capture.check()
        if len(self.outbox) and now >= self._next_retry:
            self._next_retry = now + 1.0
            self.outbox.check()
        if self.publisher is not None:
            self.commands.dispatch(self.publisher.commands())
            self.publisher.pump(self.outbox)
        if now >= self._next_house:
            self._next_house = now + self.HOUSEKEEPING_S
            self.outbox.check()
            self.recorder.summary(health.storage_alarm(self))
            if self.refusals.due():
                self._refusal_window()
            self._status()
        self._notify_ready()
        if now >= self._next_metrics:
            self._next_metrics = now + self.cfg.metrics.interval_s
            if self.publisher is not None:
                self.publisher.publish_event(health.metrics(self), qos=0)

    def _status(self) -> None:
        detail = health.status_detail(self)
        if detail != self._status_sent and self.publisher is not None:
            self._status_sent = detail
            self.publisher.set_status(detail)

    def _refusal_window(self) -> None:
        gpsd = self.locator.gpsd
        body = self.refusals.flush({"gpsd": gpsd.refused} if gpsd is not None else None)
        if body is not None:
            self.recorder.audit("refused", body)

    def shutdown(self) -> int:
        self.handle(self.pipeline.flush())
        self.outbox.check()
        self.recorder.summary(health.storage_alarm(self), force=True)
        self.notifier.stopping()
        self._refusal_window()
        self.recorder.audit("stop", f"hits={self.recorder.hits}")
        if self.publisher is not None:
            # the final counters (a replayed file ends between two metrics intervals)
            self.publisher.publish_event(health.metrics(self), qos=1)
            self.outbox.check()

            def empty() -> bool:
                try:
                    return not len(self.outbox) and self.outbox.depth() == 0
                except StoreError:
                    return False

            def commands(cmds: list[Command]) -> None:
                self.commands.dispatch(cmds)  # acks above all: in app_ack mode they empty the outbox

            if not self.publisher.drain(self.outbox, self.cfg.mqtt.drain_timeout_s, empty, commands):
                log.warning("outbox not empty after %.0f s: kept for the next start",
                            self.cfg.mqtt.drain_timeout_s)
            if self.cfg.mqtt.homeassistant:
                homeassistant.offline(self.publisher, self.cfg)
            self.publisher.stop("stopped")
        if len(self.outbox):
            log.error("%d hit(s) lost: the disk refused them and the broker did not take them",
                      len(self.outbox))
        self.resources.close()
        return Exit.OK


# --- wiring ----------------------------------------------------------------------------------------


def build(
    cfg: Config,
    stop: threading.Event,
    *,
    reader: Reader | None = None,
    notifier: Notifier | None = None,
    store: Store | None = None,
) -> Daemon:
    """Wire the parts; raises AlprdError (model, key, hot list, camera) with a message saying what to do.

    `reader` and `store` replace the plate reader and the SQLite store (tests: a scripted reader, a
    full disk). The one-instance lock on storage.dir comes first: a second `alprd run` is refused in
    a moment, before any model is loaded (InstanceLockedError, exit 2). Whatever is opened goes on
    one ExitStack: a failure halfway (a TLS error, a missing key) closes what was opened before it.
    """
    storage_dir = cfg.storage.dir
    try:
        storage_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StoreError(f"storage.dir {storage_dir}: {e.strerror}") from e
    with contextlib.ExitStack() as stack:
        stack.enter_context(InstanceLock(storage_dir))
        daemon = _assemble(cfg, stop, stack, reader, notifier, store)
        daemon.resources = stack.pop_all()  # from here on the daemon closes them, at the end of run()
    return daemon


def publish_manifest(
    publisher: Publisher, cfg: Config, reader: Reader, hotlist: HotListInstaller, commands: Commands
) -> None:
    """The retained compliance manifest: at start, and again whenever the hot list changes."""
    active = hotlist.active
    try:
        body = build_manifest(
            cfg, models=reader.model_hashes,
            hotlist=list_summary(None if active is None else active.manifest),
            channels={ch: limit.max_bytes for ch, limit in commands.inbound.items()},
            ack="ack" in commands.inbound)
    except (AlprdError, OSError) as e:  # a key file or the geofence gone since the start: say so, go on
        log.error("compliance manifest not published: %s", e)
        return
    publisher.publish_retained(body)


def info_body(cfg: Config, reader: Reader, hotlist: HotListInstaller) -> InfoBody:
    """The retained `info`: at start, and again whenever the hot list changes."""
    hl = hotlist.active
    listed = None if hl is None else ListSummary(
        list_id=hl.list_id, version=hl.version, entries=len(hl), expires=str(hl.info()["expires"]))
    return InfoBody.of(cfg, reader.model_hashes, listed)


def _assemble(
    cfg: Config,
    stop: threading.Event,
    stack: contextlib.ExitStack,
    reader: Reader | None,
    notifier: Notifier | None,
    store: Store | None,
) -> Daemon:
    clock = SystemClock()
    hq = cfg.hotlist.key_source == "hq"
    ack_pub = ack_key(cfg)
    device_key = None
    if hq:
        path = cfg.hotlist.device_key or cfg.storage.dir / DEVICE_SEAL_KEY_NAME
        device_key = load_or_create_device_seal_key(path, create=cfg.hotlist.device_key is None)
    if reader is None:
        from ..read.reader import PlateReader

        reader = PlateReader(cfg.reader)  # loads, hash-checks and warms the models
    signing_pub = load_signing_pub(cfg.hotlist.signing_pub)
    list_key = None if hq else load_list_key(cfg.hotlist.list_key)
    evidence_pub = load_evidence_pub(cfg.privacy.evidence_pub)
    if store is None:
        store = Store.from_config(cfg, clock, allow_unavailable=True)
    stack.enter_context(store)
    hotlist = HotListInstaller.from_config(cfg.hotlist, store, signing_pub, list_key, clock)
    if hq:
        log.warning("waiting for the list key from headquarters (hotlist.key_source: hq)")
    else:
        load_installed(hotlist)
        if hotlist.active is None:
            log.warning("no hot list installed yet: nothing can match until one arrives on hotlist/set")
    audit = lifecycle_audit(store)
    summarizer = Summarizer(cfg.privacy.summary_mode, cfg.privacy.token_bits, cfg.privacy.summary_interval_s,
                            clock, audit=audit)
    outbox = OverflowOutbox(store, clock)
    sources: dict[str, FrameSource] = {}
    for cam in cfg.cameras:
        sources[cam.name] = stack.enter_context(make_source(cam, cam.name, max_pixels=cfg.reader.max_pixels))
        if not is_live(cam):
            open_with_retry(sources[cam.name], 0.0, stop)  # a missing file or folder: exit before connecting
    pipeline = make_pipeline(cfg, reader, hotlist)
    refusals = Refusals(float(cfg.privacy.summary_interval_s), clock)
    publisher: PahoPublisher | None = None
    commands = Commands(refusals)
    if cfg.mqtt.enabled:
        publisher = stack.enter_context(PahoPublisher(cfg.mqtt, cfg.device_id, next_session(cfg.storage.dir)))
        mqtt = publisher

        def list_changed() -> None:
            mqtt.publish_retained(info_body(cfg, reader, hotlist))
            # `commands` is bound below, before anything calls this
            publish_manifest(mqtt, cfg, reader, hotlist, commands)

        commands = device_commands(
            cfg, refusals, hotlist, publisher, outbox, clock, list_changed=list_changed, audit=audit,
            ack_pub=ack_pub, evidence=store,
            list_keys=ListKeyReceiver(device_key, signing_pub, cfg.device_id) if device_key else None,
        )
        for channel, limit in commands.inbound.items():
            publisher.subscribe(channel, limit)
        publisher.start()
    for cam in cfg.cameras:
        if not is_live(cam):
            continue
        # MQTT is connecting meanwhile: a camera that stays missing must not end the process, or the
        # back office never learns why. The loop retries it with the source's reconnect backoff, and
        # the retained status carries the `camera` alarm until it opens.
        try:
            open_with_retry(sources[cam.name], cam.open_timeout_s, stop)
        except CaptureError as e:
            log.error("camera %s: %s; raising the camera alarm and retrying", cam.name, e)
            sources[cam.name].stats.last_error = str(e)
    locator = stack.enter_context(Locator(cfg.location))
    sealer = EvidenceSealer(evidence_pub, store, cfg.privacy.evidence_max_kb * 1024)
    headings = {c.name: c.heading_deg for c in cfg.cameras if c.heading_deg is not None}
    recorder = Recorder(cfg.device_id, outbox, summarizer, sealer, audit, locator.current, clock, headings)
    capture = CaptureGate.from_config(cfg.capture, locator.current, clock, audit)
    return Daemon(cfg, sources, pipeline, hotlist, store, outbox, recorder, refusals, commands, publisher,
                  locator, notifier or Notifier(), stack, clock, capture)


def make_pipeline(cfg: Config, reader: Reader, hotlist: HotListInstaller) -> Pipeline:
    """One lane per camera (its motion gate with its ROI, its tracker, its detector size); the
    reader, the hot list and the noise rule of the region are shared."""
    region = None if cfg.reader.region == "auto" else cfg.reader.region
    lanes = [
        (c.name, Tracker(cfg.tracking),
         MotionGate(cfg.motion.model_copy(update={"roi": c.roi or cfg.motion.roi})), c.detector_size)
        for c in cfg.cameras
    ]
    name, tracker, gate, size = lanes[0]
    pipeline = Pipeline(reader, tracker, gate, hotlist, cfg.matching, region, camera=name, size=size,
                        closer_look=cfg.reader.closer_look, full_read_every=cfg.reader.full_read_every,
                        empty_fallback_every=cfg.reader.empty_fallback_every,
                        vehicle=lambda text, once: vehicle_like(text, cfg.reader.region, once))
    for name, tracker, gate, size in lanes[1:]:
        pipeline.add_camera(name, tracker, gate, size)
    return pipeline


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
