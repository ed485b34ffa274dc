"""Tracking: reads of one vehicle across frames become one pass with a confidence-weighted vote."""

from __future__ import annotations

import numpy as np

from alprd.config import TrackingConfig
from alprd.device.track import Tracker, similarity, vote
from alprd.types import Box, Candidate, Frame, Read

IMG = np.zeros((720, 1280, 3), np.uint8)


def rd(text: str, box: Box, conf: float = 0.9, chars: tuple[float, ...] | None = None) -> Read:
    c = chars if chars is not None else tuple(conf for _ in text)
    return Read(text, conf, c, (Candidate(text, conf),), box, 0.9, "us", True)


def fr(seq: int, scene: str = "") -> Frame:
    return Frame(image=IMG, ts=100.0 + seq / 10, mono=seq / 10, seq=seq, scene=scene)


def test_similarity() -> None:
    assert similarity("ABC123", "ABC123") == 1.0
    assert similarity("ABC123", "A8C123") == 1 - 1 / 6
    assert similarity("", "ABC") == 0.0
    assert similarity("ABC", "XYZ") == 0.0


def test_vote_weights_characters_by_confidence() -> None:
    reads = [
        rd("ABC123", Box(0, 0, 10, 5), 0.9, (0.9, 0.9, 0.9, 0.9, 0.9, 0.9)),
        rd("A8C123", Box(0, 0, 10, 5), 0.5, (0.9, 0.3, 0.9, 0.9, 0.9, 0.9)),
        rd("A8C123", Box(0, 0, 10, 5), 0.5, (0.9, 0.35, 0.9, 0.9, 0.9, 0.9)),
        rd("ABC1234", Box(0, 0, 10, 5), 0.2),
    ]
    text, chars, conf, agreeing = vote(reads)
    assert text == "ABC123"
    assert agreeing == 1
    assert len(chars) == 6 and chars[1] < chars[0]
    assert 0 < conf <= 1
    assert vote([]) == ("", (), 0.0, 0)


def test_one_pass_per_vehicle_moving_across_frames() -> None:
    t = Tracker(TrackingConfig(close_after_frames=3))
    closed = []
    # plate moves 30 px per frame; one misread in the middle
    texts = ["7ABC123", "7ABC123", "7A8C123", "7ABC123", "7ABC123"]
    for i, text in enumerate(texts):
        closed += t.update(fr(i + 1), [rd(text, Box(100 + 30 * i, 200, 80, 40))])
    assert closed == []
    for i in range(3):
        closed += t.update(fr(10 + i), [])
    assert len(closed) == 1
    tr = closed[0]
    assert tr.text == "7ABC123" and tr.reads == 5 and tr.agreeing_reads == 4
    assert tr.direction == "right"
    assert tr.candidates[0].text == "7ABC123"
    assert any(c.text == "7A8C123" for c in tr.candidates)
    assert tr.image is IMG


def test_two_vehicles_in_one_frame_stay_apart() -> None:
    t = Tracker(TrackingConfig(close_after_frames=2))
    for i in range(3):
        pair = [rd("ABC123", Box(10 + 5 * i, 10, 60, 30)), rd("XYZ789", Box(600 - 5 * i, 10, 60, 30))]
        t.update(fr(i + 1), pair)
    closed = t.update(fr(4), []) + t.update(fr(5), [])
    assert sorted(c.text for c in closed) == ["ABC123", "XYZ789"]
    assert all(c.reads == 3 for c in closed)


def test_fast_mover_joined_by_text_and_new_scene_closes_all() -> None:
    t = Tracker(TrackingConfig(close_after_frames=5))
    t.update(fr(1, "a.jpg"), [rd("ABC123", Box(0, 0, 40, 20))])
    t.update(fr(2, "a.jpg"), [rd("ABC123", Box(500, 300, 40, 20))])  # no overlap, same text
    closed = t.update(fr(3, "b.jpg"), [rd("QQQ999", Box(0, 0, 40, 20))])
    assert [(c.text, c.reads) for c in closed] == [("ABC123", 2)]
    assert [c.text for c in t.close_all()] == ["QQQ999"]


def test_long_pass_is_cut_and_empty_reads_ignored() -> None:
    t = Tracker(TrackingConfig(max_track_s=1.0))
    closed = []
    for i in range(25):  # 2.5 s of a parked car at 10 fps
        closed += t.update(fr(i), [rd("PARK01", Box(10, 10, 50, 20)), rd("", Box(300, 10, 50, 20))])
    assert len(closed) == 2 and all(c.text == "PARK01" for c in closed)
