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


@dataclass
class _OpenTrack:
    track_id: int
    camera: str
    seen: list[_Seen] = field(default_factory=list)
    best: Read | None = None
    best_image: Image | None = None
    missed: int = 0

    @property
    def last_box(self) -> Box:
        return self.seen[-1].read.box

    def predicted_box(self, seq: int) -> Box:
        """Where the plate should be at frame `seq`, moving as it did between its last two reads."""
        last = self.seen[-1]
        if len(self.seen) < 2:
            return last.read.box
        prev = self.seen[-2]
        steps = max(1, last.seq - prev.seq)
        ahead = max(1, seq - last.seq)
        dx = (last.read.box.x - prev.read.box.x) / steps * ahead
        dy = (last.read.box.y - prev.read.box.y) / steps * ahead
        b = last.read.box
        return Box(round(b.x + dx), round(b.y + dy), b.w, b.h)

    def text(self) -> str:
        return self.seen[-1].read.text

    def add(self, read: Read, frame: Frame, keep_image: bool) -> None:
        self.seen.append(_Seen(read, frame.ts, frame.seq))
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


def _direction(seen: list[_Seen]) -> str:
    if len(seen) < 2:
        return "unknown"
    a, b = seen[0].read.box, seen[-1].read.box
    growth = (b.w * b.h) / max(1, a.w * a.h)
    dx = (b.x + b.w / 2) - (a.x + a.w / 2)
    if growth > 1.2:
        return "approaching"
    if growth < 1 / 1.2:
        return "receding"
    if abs(dx) > max(a.w, b.w) / 2:
        return "right" if dx > 0 else "left"
    return "unknown"


class Tracker:
    def __init__(self, cfg: TrackingConfig, keep_images: bool = True) -> None:
        self.cfg = cfg
        self.keep_images = keep_images
        self._open: list[_OpenTrack] = []
        self._next_id = 1
        self._scene: str | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    def update(self, frame: Frame, reads: list[Read] | tuple[Read, ...]) -> list[Track]:
        """Feed one frame's reads (empty when the frame was not read); returns the tracks that closed."""
        closed: list[Track] = []
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
                iou = t.predicted_box(frame.seq).iou(read.box)
                sim = similarity(t.text(), read.text)
                joined = (iou >= self.cfg.min_iou and sim >= self.cfg.min_text_similarity) or (
                    sim >= self.cfg.same_text_similarity
                )
                if joined and iou + sim > best_score:
                    best, best_score = t, iou + sim
            if best is None:
                best = _OpenTrack(self._next_id, frame.camera)
                self._next_id += 1
                self._open.append(best)
            else:
                unmatched.remove(best)
            best.add(read, frame, self.keep_images)
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
            direction=_direction(t.seen),
        )
