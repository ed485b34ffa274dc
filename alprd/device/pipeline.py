"""One frame in, the events of the passes that closed out: motion gate -> reader -> tracker -> hot list.

`Pipeline.step(frame) -> list[Event]` does no I/O beyond the reader, so it is tested on real photos
with a scripted or real reader. It matches against whatever list the installer holds at that moment
(`hotlist.active`): a list installed over MQTT is used from the next frame, and nobody swaps the
pipeline's matcher from outside.

Each camera is a `Lane`: its own motion gate, its own passes, its own counters; the reader and the
hot list serve every lane. A lane also remembers the passes that closed in the last
`tracking.rehit_after_s` seconds, so that a car hidden for a moment, or parked and cut into
`max_track_s` pieces, is one car: one hit, one pass in the summary.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from ..clock import Clock, SystemClock
from ..config import MatchingConfig
from ..types import Box, Event, Frame, Hit, Image, Looks, Match, Pass, PhotoResult, Read, Track
from .motion import MotionGate
from .track import Tracker, similarity

CLOSER_AFTER_PASS_S = 1.0
"""No closer look in the second after a pass of the camera closed (`reader.closer_look: pass`): the
car that left takes its motion with it for a moment (the motion gate's hold frames, the street it
uncovers), and a closer look there reads an empty street. On the stream bench it ran there after
every car, a 110 ms read that dropped two or three frames each time."""

REPEAT_MEMORY_S = 86400.0
"""How long a lane remembers that it reported a listed plate, for `repeat` on a later hit."""


class Reader(Protocol):
    """What the pipeline needs from the plate reader (`alprd.read.reader.PlateReader`)."""

    model_hashes: dict[str, str]

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult: ...


class Matcher(Protocol):
    """A hot list in RAM (`alprd.privacy.hotlist.HotList`)."""

    def match(
        self, text: str, chars: tuple[float, ...] = (), state: str | None = None, now: datetime | None = None
    ) -> Match | None: ...


class ActiveList(Protocol):
    """Holds the list in use, if any (`alprd.privacy.hotlist.HotListInstaller`)."""

    @property
    def active(self) -> Matcher | None: ...


VehicleTest = Callable[[str, bool], bool]
"""Whether a closed pass can be a vehicle, from its text and whether one frame of a stream read it
once (`alprd.read.grammar.vehicle_like` for the region); a pass that cannot is counted as noise."""


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


@dataclass
class _Closed:
    """A pass a lane closed lately: what stitches the next piece of the same car to it. RAM only;
    an unlisted pass's text is forgotten `rehit_after_s` after the car was last seen."""

    text: str
    last_ts: float
    entry: str | None
    """The list entry it was reported as a hit for, if it was."""


@dataclass(eq=False)
class Lane:
    """One camera's part of the pipeline: its motion gate, its passes, its memory and its counters."""

    tracker: Tracker
    gate: MotionGate
    size: int | None = None
    """Long side fed to the first detectors for this camera (None: the reader's)."""
    frames: int = 0
    processed: int = 0
    skipped: int = 0
    reads: int = 0
    dropped: int = 0
    """Frames the source dropped, as the frames that followed said."""
    dropped_in_motion: int = 0
    """Of those, the ones dropped next to a frame the motion gate wanted: a car was in view."""
    stitched: int = 0
    """Passes joined to the pass before them (the same car seen again within rehit_after_s)."""
    closer_due: bool = True
    """The closer look may run before the next pass opens (closer_look: pass)."""
    last_closed_ts: float = -math.inf
    """When a pass of this camera last closed (frame time)."""
    empty_run: int = 0
    """Whole frames read in a row in which no plate read well (`Read.confident`)."""
    near_run: int = 0
    """Frames read by the near look alone since the whole frame was last read."""
    moving: bool = False
    stream: bool = True
    """The camera's frames are a stream (not a folder of unrelated photos, each its own scene)."""
    recent: list[_Closed] = field(default_factory=list)
    reported: dict[str, float] = field(default_factory=dict)
    """List entry -> when this camera last saw the car it reported a hit for."""

    def read_share(self) -> float | None:
        """Frames read among the frames a car was in view: the ones read plus the ones dropped."""
        moving = self.processed + self.dropped_in_motion
        return round(self.processed / moving, 4) if moving else None


class Pipeline:
    """One frame in, the events of the passes that closed out. No I/O beyond the reader.

    Built with the first camera's tracker and gate; `add_camera` adds the others. With one camera
    and `camera=None`, every frame goes to it whatever camera it names (tests, old configs)."""

    def __init__(
        self,
        reader: Reader,
        tracker: Tracker,
        gate: MotionGate,
        hotlist: ActiveList,
        matching: MatchingConfig,
        region: str | None = None,
        clock: Clock | None = None,
        *,
        camera: str | None = None,
        size: int | None = None,
        closer_look: Literal["frame", "pass"] = "frame",
        full_read_every: int = 1,
        empty_fallback_every: int = 1,
        vehicle: VehicleTest | None = None,
    ) -> None:
        self.reader = reader
        self.hotlist = hotlist
        self.matching = matching
        self.region = region
        self.clock = clock or SystemClock()
        self.closer_look = closer_look
        self.full_read_every = full_read_every
        self.empty_fallback_every = empty_fallback_every
        self.vehicle = vehicle
        self.timer = StageTimer()
        self.lanes: dict[str, Lane] = {}
        self._default: Lane | None = None
        first = Lane(tracker, gate, size)
        if camera is None:
            self._default = first
            self.lanes[""] = first
        else:
            self.lanes[camera] = first
        self._reported: dict[int, _Closed] = {}
        """Open passes already judged (hit, or stitched to the car's earlier pass), by track id."""

    def add_camera(self, camera: str, tracker: Tracker, gate: MotionGate, size: int | None = None) -> Lane:
        if camera in self.lanes:
            raise ValueError(f"camera {camera!r} is already in the pipeline")
        lane = self.lanes[camera] = Lane(tracker, gate, size)
        return lane

    # --- totals over the cameras (metrics) -----------------------------------------------------------

    @property
    def frames(self) -> int:
        return sum(lane.frames for lane in self.lanes.values())

    @property
    def processed(self) -> int:
        return sum(lane.processed for lane in self.lanes.values())

    @property
    def skipped(self) -> int:
        return sum(lane.skipped for lane in self.lanes.values())

    @property
    def reads(self) -> int:
        return sum(lane.reads for lane in self.lanes.values())

    @property
    def open_tracks(self) -> int:
        return sum(lane.tracker.open_count for lane in self.lanes.values())

    @property
    def tracker(self) -> Tracker:
        """The first camera's tracker."""
        return next(iter(self.lanes.values())).tracker

    @property
    def gate(self) -> MotionGate:
        """The first camera's motion gate."""
        return next(iter(self.lanes.values())).gate

    def lane(self, camera: str) -> Lane:
        lane = self.lanes.get(camera, self._default)
        if lane is None:
            raise KeyError(f"a frame of camera {camera!r}, which is not in the pipeline")
        return lane

    # --- one frame -------------------------------------------------------------------------------------

    def step(self, frame: Frame) -> list[Event]:
        lane = self.lane(frame.camera)
        lane.frames += 1
        lane.stream = not frame.scene
        t0 = time.perf_counter()
        reads: list[Read] = []
        moving = lane.gate.wants(frame)
        t1 = time.perf_counter()
        self.timer.add("motion", (t1 - t0) * 1000)
        lane.dropped += frame.dropped
        if frame.dropped and (moving or lane.moving):
            lane.dropped_in_motion += frame.dropped
        lane.moving = moving
        if moving:
            lane.processed += 1
            reads = self._read(lane, frame)
        else:
            lane.skipped += 1
            lane.closer_due = True  # the motion stopped: the next car may get a closer look
        t2 = time.perf_counter()
        was_open = lane.tracker.open_count
        closed = lane.tracker.update(frame, reads)
        if closed:
            lane.last_closed_ts = frame.ts
        if lane.tracker.open_count > was_open - len(closed):
            lane.closer_due = True  # a pass opened: its car was read without looking closer
        events = self._decide(lane, closed, frame.ts)
        if reads:
            events += self._early(lane)
        self.timer.add("track_match", (time.perf_counter() - t2) * 1000)
        self.timer.add("step", (time.perf_counter() - t0) * 1000)
        return events

    def _read(self, lane: Lane, frame: Frame) -> list[Read]:
        # On an empty street the accurate detector reads every empty_fallback_every-th frame; the
        # closer look once per pass is that detector at a larger size, rationed with it (at a car's
        # first frame it cost 70-120 ms where the near look read the car at the next frame).
        fallback = lane.empty_run % self.empty_fallback_every == 0
        # Passes that read well are looked for near; the others (lettering, a plate too far to
        # read) do not keep the closer look from the frame.
        expected = lane.tracker.expected(frame)
        closer = self.closer_look == "frame" or (
            fallback and lane.closer_due and not expected
            and frame.ts - lane.last_closed_ts >= CLOSER_AFTER_PASS_S
        )
        h, w = frame.image.shape[:2]
        # Only the region of interest is read: the detectors' input shrinks with it (a lane that is
        # a third of the picture costs a third), or sees its plates bigger at the same cost.
        roi = lane.gate.roi_box(w, h)
        image = frame.image[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w] if roi.area < w * h else frame.image
        # While a pass is open, the reader looks where its plate should be first (ROI pixels); every
        # full_read_every-th frame the first detector reads the whole frame too, for a car entering
        # beside it.
        near: tuple[Box, ...] = ()
        if self.full_read_every > 1:
            near = tuple(Box(b.x - roi.x, b.y - roi.y, b.w, b.h) for b in expected)
        periodic = lane.near_run + 1 >= self.full_read_every
        looks = Looks(size=lane.size, closer=closer, fallback=fallback, near=near, whole=periodic)
        result = self.reader.read(image, self.region, looks)
        whole = not near or "detect" in result.stage_ms
        lane.near_run = 0 if whole else lane.near_run + 1
        if whole:
            # A street where the detectors find only what reads as nothing (blur, lettering, a
            # car too far) is rationed as an empty one: a plate that reads well resets the count.
            lane.empty_run = 0 if any(r.confident for r in result.reads) else lane.empty_run + 1
        if "closer" in result.stage_ms:
            lane.closer_due = False
        reads = [r if image is frame.image else
                 dataclasses.replace(r, box=Box(r.box.x + roi.x, r.box.y + roi.y, r.box.w, r.box.h))
                 for r in result.reads]
        reads = [r for r in reads if lane.gate.inside(r.box, w, h)]
        lane.reads += len(reads)
        for stage, ms in result.stage_ms.items():
            self.timer.add(stage, ms)
        self.timer.add("read", result.ms)
        return reads

    def flush(self) -> list[Event]:
        """Close every open pass (end of a finite source, shutdown)."""
        events: list[Event] = []
        for lane in self.lanes.values():
            events += self._decide(lane, lane.tracker.close_all(), None)
        return events

    # --- what a pass is --------------------------------------------------------------------------------

    def _match(self, t: Track) -> Match | None:
        matcher = self.hotlist.active
        if matcher is None or not t.text or t.confidence < self.matching.min_confidence:
            return None
        return matcher.match(t.text, t.chars, None, datetime.fromtimestamp(self.clock.time(), UTC))

    def _early(self, lane: Lane) -> list[Event]:
        """A pass whose vote is already backed by enough agreeing reads and matches is a hit now:
        a listed car stopped at a light in front of the camera must not wait for its pass to close."""
        events: list[Event] = []
        for t in lane.tracker.just_read():
            if t.track_id in self._reported or t.agreeing_reads < self.matching.min_agreeing_reads:
                continue
            m = self._match(t)
            if m is not None:
                hit, self._reported[t.track_id] = self._hit(lane, t, m, True)
                events += hit
        return events

    def _decide(self, lane: Lane, tracks: Iterable[Track], now: float | None) -> list[Event]:
        events: list[Event] = []
        for t in tracks:
            record = self._reported.pop(t.track_id, None)
            if record is not None:
                # judged while it was open (hit, or stitched to the car's earlier pass): one event
                # per pass; the car was seen until now
                record.last_ts = max(record.last_ts, t.last_ts)
                continue
            if not t.text:
                continue
            m = self._match(t)
            if m is not None:
                events += self._hit(lane, t, m, t.agreeing_reads >= self.matching.min_agreeing_reads)[0]
            elif self.vehicle is not None and not self.vehicle(t.text, t.reads < 2 and lane.stream):
                events.append(Pass(t, noise=True))
            elif (before := self._earlier(lane, t, None)) is not None:
                lane.stitched += 1  # the car was counted when its earlier pass closed
                before.last_ts = max(before.last_ts, t.last_ts)
            else:
                lane.recent.append(_Closed(t.text, t.last_ts, None))
                events.append(Pass(t))
        if now is not None:
            self._forget(lane, now)
        return events

    def _hit(self, lane: Lane, t: Track, m: Match, verified: bool) -> tuple[list[Event], _Closed]:
        """The hit of a pass, unless the camera saw the same listed car less than rehit_after_s
        ago; and the record of the car that the next piece of it will be stitched to."""
        entry = m.entry_plate
        before = self._earlier(lane, t, entry)
        if before is not None and before.entry in (entry, None):
            before.last_ts = max(before.last_ts, t.last_ts)
            lane.reported[entry] = before.last_ts
            if before.entry == entry:
                lane.stitched += 1
                return [], before
            before.entry = entry  # its earlier piece did not match (misread): this is its hit
            return [Hit(t, m, verified)], before
        repeat = entry in lane.reported
        lane.reported[entry] = t.last_ts
        record = _Closed(t.text, t.last_ts, entry)
        lane.recent.append(record)
        return [Hit(t, m, verified, repeat=repeat)], record

    def _earlier(self, lane: Lane, t: Track, entry: str | None) -> _Closed | None:
        """The pass of this car that the lane closed (or reported) less than rehit_after_s before
        `t` began: the same list entry, or text as similar as the tracker's fast-mover rule."""
        window = lane.tracker.cfg.rehit_after_s
        same = lane.tracker.cfg.same_text_similarity
        for c in reversed(lane.recent):
            if t.first_ts - c.last_ts > window:
                continue
            if (entry is not None and c.entry == entry) or similarity(c.text, t.text) >= same:
                return c
        return None

    def _forget(self, lane: Lane, now: float) -> None:
        window = lane.tracker.cfg.rehit_after_s
        lane.recent = [c for c in lane.recent if now - c.last_ts <= window]
        for entry in [e for e, ts in lane.reported.items() if now - ts > REPEAT_MEMORY_S]:
            del lane.reported[entry]
