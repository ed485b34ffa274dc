"""Tracking: reads of one vehicle across frames become one pass with a confidence-weighted vote."""

from __future__ import annotations

import csv
from pathlib import Path

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


# --- direction from the pass's geometry -------------------------------------------------------------


def boxes_pass(boxes: list[Box], dropped: int = 0) -> str | None:
    t = Tracker(TrackingConfig(close_after_frames=2, same_text_similarity=0.8))
    for i, b in enumerate(boxes):
        f = Frame(image=IMG, ts=100.0 + i / 10, mono=i / 10, seq=i + 1, dropped=dropped)
        t.update(f, [rd("7ABC123", b)])
    (tr,) = t.close_all()
    return tr.direction


def test_direction_from_the_boxes_of_a_pass() -> None:
    # a plate coming in at the left side: cut by the picture's edge, its box grows in width only
    entering = [Box(0, 384, w, 136) for w in (80, 130, 180, 224)]
    entering += [Box(16, 384, 264, 136), Box(64, 384, 256, 136)]
    assert boxes_pass(entering) == "right"
    assert boxes_pass([Box(1280 - b.x - b.w, b.y, b.w, b.h) for b in entering]) == "left"  # mirrored
    leaving = [Box(1280 - 16 - 264 + 48 * i, 384, 264, 136) for i in range(5)]
    assert boxes_pass([Box(b.x, b.y, min(b.w, 1280 - b.x), b.h) for b in leaving]) == "right"
    growing = [Box(600 - 4 * i, 300 + 10 * i, 60 + 8 * i, 30 + 4 * i) for i in range(8)]
    assert boxes_pass(growing) == "approaching"
    assert boxes_pass(growing[::-1]) == "receding"
    wobbling = [Box(600 + (3 if i % 2 else -3), 300, 90 + (6 if i % 3 else -5), 45 + (3 if i % 2 else -2))
                for i in range(10)]
    assert boxes_pass(wobbling) is None  # a car standing at a light
    assert boxes_pass(growing[:2]) is None  # too few reads to tell
    # a car growing and crossing alike (turning towards the camera) is not named
    sizes = [(int(60 * 1.12**i), int(30 * 1.12**i)) for i in range(6)]
    turning = [Box(330 + 13 * i - w // 2, 300, w, h) for i, (w, h) in enumerate(sizes)]
    assert boxes_pass(turning) is None


def test_direction_on_clips_of_known_motion(data_dir: Path) -> None:
    """Real photos seen from a camera the car drives towards, away from, and across, and standing
    still: each read by the daemon's reader, frame by frame."""
    from clips import MOTIONS, clip

    from alprd.config import ReaderConfig
    from alprd.read.imageio import read_image
    from alprd.read.reader import PlateReader

    reader = PlateReader(ReaderConfig(region="us"))
    rows = list(csv.DictReader((data_dir / "us" / "labels.csv").read_text().splitlines()))[3::25]
    opposite = {"approaching": "receding", "receding": "approaching", "left": "right", "right": "left"}
    got: dict[tuple[str, str], str | None] = {}
    for row in rows:
        image, _ = read_image(data_dir / "us" / row["file"])
        box = Box(*(int(row[k]) for k in "xywh"))
        for motion in MOTIONS:
            t = Tracker(TrackingConfig(close_after_frames=3))
            closed = []
            for i, view in enumerate(clip(image, box, motion)):
                f = Frame(image=view, ts=i / 10, mono=i / 10, seq=i + 1)
                closed += t.update(f, list(reader.read(view, "us").reads))
            closed += t.close_all()
            longest = max(closed, key=lambda c: c.reads, default=None)
            got[(row["plate"], motion)] = longest.direction if longest is not None else "no pass"
    wanted = {k: (None if k[1] == "still" else k[1]) for k in got}
    right = [k for k in got if got[k] == wanted[k]]
    assert len(right) >= 0.9 * len(got), {k: got[k] for k in got if k not in right}
    assert not [k for k in got if got[k] is not None and got[k] == opposite.get(k[1])], got


def test_an_open_pass_expects_its_plate_where_it_moves_dropped_frames_counted() -> None:
    """The near look reads where `expected` says: the plate's movement per camera frame, dropped
    frames counted (a frame read after two dropped ones is three frames further); a pass of
    unsure lettering (a grille's) is not looked for."""
    tracker = Tracker(TrackingConfig(close_after_frames=3))
    assert tracker.expected(fr(1)) == []
    tracker.update(fr(1), [rd("7ABC123", Box(100, 200, 80, 40)), rd("B8B8", Box(600, 300, 40, 40), 0.3)])
    assert tracker.expected(fr(2)) == [Box(100, 200, 80, 40)]  # one read: no movement known yet
    tracker.update(fr(2), [rd("7ABC123", Box(110, 202, 80, 40))])
    assert tracker.expected(fr(3)) == [Box(120, 204, 80, 40)]
    dropped = Frame(image=IMG, ts=100.3, mono=0.3, seq=3, dropped=2)
    assert tracker.expected(dropped) == [Box(140, 208, 80, 40)]
    tracker.update(dropped, [rd("7ABC123", Box(140, 208, 80, 40))])
    assert tracker.expected(fr(4)) == [Box(150, 210, 80, 40)]
    assert tracker.expected(fr(4, scene="next photo")) == []  # a new scene closes the pass
