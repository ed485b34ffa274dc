"""How the device is doing: alarms, the retained status' detail, metrics, and the machine probes
(/proc, /sys) they read. Nothing here changes state: it reads the daemon's parts.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Protocol

from ..clock import Clock
from ..config import Config
from ..errors import StoreError
from ..payloads import CameraMetrics, MetricsBody, StatusDetail
from ..privacy.hotlist import HotList
from .capture import FrameSource
from .commands import Refusals
from .housekeeping import Housekeeper
from .location import Locator
from .outbox import OverflowOutbox
from .pipeline import Pipeline
from .publish import Publisher
from .record import Recorder
from .rules import CaptureGate

# --- machine probes ------------------------------------------------------------------------------


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


class Rate:
    """How fast a counter grew between two readings (frames per second between two metrics messages)."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def per_second(self, count: int, now: float) -> float:
        last, self._last = self._last, (now, count)
        if last is None or now <= last[0]:
            return 0.0
        return round(max(0, count - last[1]) / (now - last[0]), 2)


# --- what the daemon reports ---------------------------------------------------------------------------


class Quarantine(Protocol):
    @property
    def quarantined(self) -> Path | None:
        """Where a damaged database was moved at start-up (a fresh one replaced it), else None."""
        ...


class ActiveHotList(Protocol):
    @property
    def active(self) -> HotList | None: ...


class Parts(Protocol):
    """The daemon's parts that health reads (`alprd.device.daemon.Daemon` has them)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def sources(self) -> dict[str, FrameSource]: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def hotlist(self) -> ActiveHotList: ...
    @property
    def store(self) -> Quarantine: ...
    @property
    def outbox(self) -> OverflowOutbox: ...
    @property
    def housekeeper(self) -> Housekeeper: ...
    @property
    def publisher(self) -> Publisher | None: ...
    @property
    def recorder(self) -> Recorder: ...
    @property
    def refusals(self) -> Refusals: ...
    @property
    def locator(self) -> Locator: ...
    @property
    def insecure(self) -> list[tuple[str, str]]: ...
    @property
    def capture(self) -> CaptureGate: ...
    @property
    def fps(self) -> Rate: ...


def camera_ok(source: FrameSource) -> bool:
    return source.stats.connected or source.finished


def cameras_ok(d: Parts) -> bool:
    return all(camera_ok(s) for s in d.sources.values())


def alarms(d: Parts) -> list[str]:
    out = set()
    if d.outbox.error or d.housekeeper.error or len(d.outbox):
        out.add("storage")
    hl = d.hotlist.active
    if hl is None:
        out.add("no_hotlist")
    elif hl.stale(d.clock.time()):
        out.add("hotlist_expired")
    if not cameras_ok(d):
        out.add("camera")  # status.cameras says which
    if d.store.quarantined is not None:
        out.add("storage_quarantined")
    if d.insecure:
        out.add("insecure_transport")
    if d.publisher is not None and d.publisher.too_large:
        out.add("mqtt_message_too_large")
    return sorted(out)


def storage_alarm(d: Parts) -> bool:
    return bool(d.outbox.error or d.housekeeper.error or len(d.outbox))


def status_detail(d: Parts) -> StatusDetail:
    several = len(d.sources) > 1
    errors = [
        f"{name}: {s.stats.last_error}" if several else s.stats.last_error
        for name, s in d.sources.items() if s.stats.last_error and not s.stats.connected
    ]
    return StatusDetail(
        camera="ok" if cameras_ok(d) else "lost",
        alarms=tuple(alarms(d)),
        camera_error="; ".join(errors)[:200] or None,
        storage_error=(d.outbox.error or d.housekeeper.error) or None,
        suppressed=d.capture.suppressed,
        cameras={name: "ok" if camera_ok(s) else "lost" for name, s in d.sources.items()},
    )


def camera_metrics(d: Parts) -> dict[str, CameraMetrics]:
    out = {}
    for name, src in d.sources.items():
        lane = d.pipeline.lane(name)
        stats = src.stats
        out[name] = CameraMetrics(
            connected=stats.connected, frames_in=stats.frames_in, frames_processed=lane.processed,
            frames_skipped_motion=lane.skipped, frames_dropped=stats.dropped,
            frames_dropped_motion=lane.dropped_in_motion, read_share=lane.read_share(),
            reconnects=stats.reconnects, open_tracks=lane.tracker.open_count, stitched=lane.stitched,
        )
    return out


def metrics(d: Parts) -> MetricsBody:
    cams = camera_metrics(d)
    processed = sum(c.frames_processed for c in cams.values())
    dropped_motion = sum(c.frames_dropped_motion for c in cams.values())
    now = d.clock.time()
    hl = d.hotlist.active
    try:
        depth: int | None = d.outbox.depth()
    except StoreError:
        depth = None
    gpsd = d.locator.gpsd
    publisher = d.publisher
    return MetricsBody(
        ts=round(now, 3),
        frames_in=sum(c.frames_in for c in cams.values()),
        frames_processed=processed,
        frames_skipped_motion=sum(c.frames_skipped_motion for c in cams.values()),
        frames_dropped=sum(c.frames_dropped for c in cams.values()),
        frames_dropped_motion=dropped_motion,
        read_share=round(processed / (processed + dropped_motion), 4) if processed + dropped_motion else None,
        camera_reconnects=sum(c.reconnects for c in cams.values()),
        reads=d.pipeline.reads,
        hits=d.recorder.hits,
        passes=d.recorder.passes,
        noise=d.recorder.noise,
        ms=d.pipeline.timer.summary(),
        cameras=cams,
        open_tracks=d.pipeline.open_tracks,
        # sources hold only the newest frame, so the queues are the outbox, RAM hits and paho's in-flight
        outbox_depth=depth,
        ram_hits=len(d.outbox),
        ram_hits_dropped=d.outbox.dropped,
        summaries_dropped=d.recorder.summaries_dropped,
        mqtt_inflight=publisher.inflight if publisher else 0,
        mqtt_connected=publisher.connected if publisher else False,
        threads=threading.active_count(),
        rss_mb=rss_mb(),
        cpu_temp_c=cpu_temp_c(),
        disk_free_mb=disk_free_mb(d.cfg.storage.dir),
        hotlist_age_s=round(now - hl.manifest.issued.timestamp(), 1) if hl is not None else None,
        refused={**d.refusals.total, **({"gpsd": gpsd.refused} if gpsd is not None else {})},
        mqtt_too_large=sum(publisher.too_large.values()) if publisher else 0,
        alarms=tuple(alarms(d)),
        suppressed_s={k: round(v) for k, v in d.capture.seconds.items()},
        fps=d.fps.per_second(sum(c.frames_in for c in cams.values()), d.clock.monotonic()),
        hits_today=d.recorder.hits_today,
    )
