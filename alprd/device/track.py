"""Per-vehicle consolidation: reads of one plate across frames become one pass (a `Track`).

Reads join an open track when their box overlaps the track's predicted box and the texts are
similar, or when the texts are nearly equal (a fast mover jumps further than its box). A track
closes when unseen for `close_after_frames` frames, at a scene change, or after `max_track_s`.
Its text is voted per character, each read weighted by its own per-character confidences.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from ..config import TrackingConfig
from ..types import Box, Candidate, Frame, Image, Read, Track

MAX_CANDIDATES = 10


def similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / longer length (1.0 = equal; empty strings are unlike anything)."""
    if not a or not b:
        return 1.0 if a == b and a else 0.0
    return 1.0 - Levenshtein.distance(a, b) / max(len(a), len(b))


@dataclass
class _Seen:
    read: Read
    ts: float
    seq: int
    tick: int
    """The frame's place in the camera's stream, dropped frames counted: the time axis of the
    pass's geometry (capture times say when the loop got round to a frame, not when it was shot,
    for a file read faster than real time)."""


@dataclass
class _OpenTrack:
    track_id: int
    camera: str
    width: int
    height: int
    seen: list[_Seen] = field(default_factory=list)
    best: Read | None = None
    best_image: Image | None = None
    missed: int = 0

    @property
    def last_box(self) -> Box:
        return self.seen[-1].read.box

    def predicted_box(self, tick: int) -> Box:
        """Where the plate should be at the camera's frame `tick` (dropped frames counted), moving
        as it did between its last two reads."""
        last = self.seen[-1]
        if len(self.seen) < 2:
            return last.read.box
        prev = self.seen[-2]
        steps = max(1, last.tick - prev.tick)
        ahead = max(1, tick - last.tick)
        dx = (last.read.box.x - prev.read.box.x) / steps * ahead
        dy = (last.read.box.y - prev.read.box.y) / steps * ahead
        b = last.read.box
        return Box(round(b.x + dx), round(b.y + dy), b.w, b.h)

    def text(self) -> str:
        return self.seen[-1].read.text

    def add(self, read: Read, frame: Frame, tick: int, keep_image: bool) -> None:
        self.seen.append(_Seen(read, frame.ts, frame.seq, tick))
        self.missed = 0
        if self.best is None or read.confidence > self.best.confidence:
            self.best = read
            if keep_image:
                self.best_image = frame.image


def vote(reads: list[Read]) -> tuple[str, tuple[float, ...], float, int]:
    """Confidence-weighted character vote: text, per-character confidence, overall confidence, agreeing.

    Reads of the most supported length vote position by position with their own character
    confidences; a character's confidence is its share of the votes times its mean confidence.
    """
    usable = [r for r in reads if r.text]
    if not usable:
        return "", (), 0.0, 0
    weight_by_len: dict[int, float] = defaultdict(float)
    for r in usable:
        weight_by_len[len(r.text)] += r.confidence if r.confidence > 0 else 1e-6
    length = max(weight_by_len, key=lambda n: (weight_by_len[n], n))
    same = [r for r in usable if len(r.text) == length]
    chars: list[str] = []
    confs: list[float] = []
    for i in range(length):
        votes: dict[str, list[float]] = defaultdict(list)
        for r in same:
            c = r.chars[i] if i < len(r.chars) else r.confidence
            votes[r.text[i]].append(max(c, 1e-6))
        total = sum(sum(v) for v in votes.values())
        winner = max(votes, key=lambda ch: (sum(votes[ch]), ch))
        w = votes[winner]
        chars.append(winner)
        confs.append((sum(w) / total) * (sum(w) / len(w)))
    text = "".join(chars)
    confidence = math.exp(sum(math.log(max(c, 1e-9)) for c in confs) / len(confs))
    agreeing = sum(1 for r in usable if r.text == text)
    return text, tuple(round(c, 4) for c in confs), round(confidence, 4), agreeing


def _candidates(text: str, confidence: float, reads: list[Read]) -> tuple[Candidate, ...]:
    score: dict[str, float] = defaultdict(float)
    for r in reads:
        for c in r.candidates or (Candidate(r.text, r.confidence),):
            if c.text:
                score[c.text] += c.confidence / len(reads)
    score.pop(text, None)
    rest = sorted(score.items(), key=lambda kv: -kv[1])[: MAX_CANDIDATES - 1]
    return (Candidate(text, confidence), *(Candidate(t, round(s, 4)) for t, s in rest))


GROWTH = 1.3
"""A plate whose height grows (or shrinks) by this factor over its pass is approaching (receding):
the detector's box height wobbles by about a tenth from frame to frame, a car crossing the picture
keeps its distance, and one that drives towards a camera doubles its plate's size in a few metres."""
SIDEWAYS = 0.75
"""A plate whose centre moves this many plate heights across the picture is going left or right (the
demo's plates come in at the side, where a box cut by the edge moves at half the car's speed).
Heights, not widths: a plate entering at the picture's side is cut in width, never in height, and
a plate's height is the same share of it in every region (widths differ: US 2:1, EU 4.7:1)."""
CLEAR = 1.25
"""The stronger of the two movements must be this many times the other (each measured in its own
threshold) to name a direction: a car turning towards the camera does both."""
MIN_DIRECTION_READS = 3


def direction(seen: list[_Seen], width: int, height: int) -> str | None:
    """approaching / receding from the plate's size, left / right from its movement across the
    picture, None when the pass cannot tell (too few reads, or both movements alike).

    Least-squares slopes over the whole pass, not its first and last box, so that one box of a
    jittery detector does not decide. A box cut by the top or bottom of the picture says nothing
    about the plate's size; one cut at the side still moves the way the car does, but is no measure
    of its size either (a plate coming in at the side is boxed in pieces, shorter than the plate,
    then whole): with fewer than MIN_DIRECTION_READS boxes cut by no side, the size is taken as
    constant."""
    if len(seen) < MIN_DIRECTION_READS:
        return None
    t = [float(s.tick - seen[0].tick) for s in seen]
    span = t[-1] - t[0]
    whole = [(ti, s.read.box) for ti, s in zip(t, seen, strict=True)
             if s.read.box.y > 0 and s.read.box.y + s.read.box.h < height and s.read.box.h > 0]
    if span <= 0 or len(whole) < MIN_DIRECTION_READS:
        return None
    sized = [(ti, b) for ti, b in whole if b.x > 0 and b.x + b.w < width]
    growth = (_slope([a for a, _ in sized], [math.log(b.h) for _, b in sized]) * span
              if len(sized) >= MIN_DIRECTION_READS else 0.0)
    plate_h = sorted(b.h for _, b in whole)[len(whole) // 2]
    across = _slope(t, [s.read.box.x + s.read.box.w / 2 for s in seen]) * span / plate_h
    size_score = abs(growth) / math.log(GROWTH)
    side_score = abs(across) / SIDEWAYS
    if max(size_score, side_score) < 1:
        return None
    if size_score >= CLEAR * side_score:
        return "approaching" if growth > 0 else "receding"
    if side_score >= CLEAR * size_score:
        return "right" if across > 0 else "left"
    return None


def _slope(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    var = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / var if var > 0 else 0.0


class Tracker:
    def __init__(self, cfg: TrackingConfig, keep_images: bool = True) -> None:
        self.cfg = cfg
        self.keep_images = keep_images
        self._open: list[_OpenTrack] = []
        self._next_id = 1
        self._scene: str | None = None
        self._tick = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def update(self, frame: Frame, reads: list[Read] | tuple[Read, ...]) -> list[Track]:
        """Feed one frame's reads (empty when the frame was not read); returns the tracks that closed."""
        closed: list[Track] = []
        self._tick += 1 + frame.dropped
        if self._scene is not None and frame.scene != self._scene:
            closed.extend(self.close_all())
        self._scene = frame.scene
        unmatched = list(self._open)
        for read in sorted(reads, key=lambda r: -r.confidence):
            if not read.text:
                continue
            best: _OpenTrack | None = None
            best_score = 0.0
            for t in unmatched:
                iou = t.predicted_box(self._tick).iou(read.box)
                sim = similarity(t.text(), read.text)
                joined = (iou >= self.cfg.min_iou and sim >= self.cfg.min_text_similarity) or (
                    sim >= self.cfg.same_text_similarity
                )
                if joined and iou + sim > best_score:
                    best, best_score = t, iou + sim
            if best is None:
                h, w = frame.image.shape[:2]
                best = _OpenTrack(self._next_id, frame.camera, w, h)
                self._next_id += 1
                self._open.append(best)
            else:
                unmatched.remove(best)
            best.add(read, frame, self._tick, self.keep_images)
        still: list[_OpenTrack] = []
        for t in self._open:
            if t in unmatched:
                t.missed += 1
            too_long = t.seen[-1].ts - t.seen[0].ts >= self.cfg.max_track_s
            if t.missed >= self.cfg.close_after_frames or too_long:
                closed.append(self._close(t))
            else:
                still.append(t)
        self._open = still
        return closed

    def expected(self, frame: Frame) -> list[Box]:
        """Where each open pass of a plate expects it in `frame`, the next frame to be fed to
        `update`: the passes whose best read is confident (`Read.confident`). Lettering on a sign, a
        grille or a truck also opens passes; looked for near, each would be read again at every
        frame and stay open for as long as it is in view, at the cost of a plate's read each."""
        if self._scene is not None and frame.scene != self._scene:
            return []  # a new scene closes them
        tick = self._tick + 1 + frame.dropped
        return [t.predicted_box(tick) for t in self._open
                if t.best is not None and t.best.confident]

    def just_read(self) -> list[Track]:
        """The open passes that the latest frame added a read to, as they stand now (not closed)."""
        return [self._close(t) for t in self._open if t.missed == 0]

    def close_all(self) -> list[Track]:
        """Close every open track (end of stream, scene change, shutdown)."""
        closed = [self._close(t) for t in self._open]
        self._open = []
        return closed

    def _close(self, t: _OpenTrack) -> Track:
        reads = [s.read for s in t.seen]
        text, chars, confidence, agreeing = vote(reads)
        best = t.best or reads[0]
        with_text = [r for r in reads if r.text == text]
        return Track(
            track_id=t.track_id,
            text=text,
            confidence=confidence,
            chars=chars,
            candidates=_candidates(text, confidence, reads),
            reads=len(reads),
            agreeing_reads=agreeing,
            box=best.box,
            first_ts=t.seen[0].ts,
            last_ts=t.seen[-1].ts,
            camera=t.camera,
            region=best.region,
            grammar_ok=any(r.grammar_ok for r in with_text) if with_text else best.grammar_ok,
            image=t.best_image,
            direction=direction(t.seen, t.width, t.height),
        )
