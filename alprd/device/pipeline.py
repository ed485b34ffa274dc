"""One frame in, the events of the passes that closed out: motion gate -> reader -> tracker -> hot list.

`Pipeline.step(frame) -> list[Event]` does no I/O beyond the reader, so it is tested on real photos
with a scripted or real reader. It matches against whatever list the installer holds at that moment
(`hotlist.active`): a list installed over MQTT is used from the next frame, and nobody swaps the
pipeline's matcher from outside.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from ..clock import Clock, SystemClock
from ..config import MatchingConfig
from ..types import Event, Frame, Hit, Image, Match, Pass, PhotoResult, Read, Track
from .motion import MotionGate
from .track import Tracker


class Reader(Protocol):
    """What the pipeline needs from the plate reader (`alprd.read.reader.PlateReader`)."""

    model_hashes: dict[str, str]

    def read(self, image: Image, region: str | None = None) -> PhotoResult: ...


class Matcher(Protocol):
    """A hot list in RAM (`alprd.privacy.hotlist.HotList`)."""

    def match(
        self, text: str, chars: tuple[float, ...] = (), state: str | None = None, now: datetime | None = None
    ) -> Match | None: ...


class ActiveList(Protocol):
    """Holds the list in use, if any (`alprd.privacy.hotlist.HotListInstaller`)."""

    @property
    def active(self) -> Matcher | None: ...


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
        hotlist: ActiveList,
        matching: MatchingConfig,
        region: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.tracker = tracker
        self.gate = gate
        self.hotlist = hotlist
        self.matching = matching
        self.region = region
        self.clock = clock or SystemClock()
        self.timer = StageTimer()
        self.frames = 0
        self.processed = 0
        self.skipped = 0
        self.reads = 0
        self._reported: set[int] = set()

    def step(self, frame: Frame) -> list[Event]:
        self.frames += 1
        t0 = time.perf_counter()
        reads: list[Read] = []
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

    def _match(self, t: Track) -> Match | None:
        matcher = self.hotlist.active
        if matcher is None or not t.text or t.confidence < self.matching.min_confidence:
            return None
        return matcher.match(t.text, t.chars, None, datetime.fromtimestamp(self.clock.time(), UTC))

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
