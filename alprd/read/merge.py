"""Where two looks at a frame read one place, which read stands: the accurate detector's over the
fast one's (`over`), the whole row of a close-up over its fragments (`whole_row`), a later look's
two-row plate over a first look's one row (`later_look`). The reader's looks are in `reader`."""

from __future__ import annotations

import dataclasses

from ..types import Detection, Read

OVERLAP = 0.3
"""Boxes of two passes that overlap this much (IoU) are the same plate."""


def over(
    better: list[Detection], better_reads: list[Read], reads: list[Read], detections: list[Detection]
) -> tuple[list[Read], list[Detection]]:
    """The accurate detector's detections and reads laid over the first one's: they stand, and the
    first one's stay only where the accurate one found nothing."""
    return (
        better_reads + [r for r in reads if all(r.box.iou(d.box) < OVERLAP for d in better)],
        better + [d for d in detections if all(d.box.iou(o.box) < OVERLAP for o in better)],
    )


def whole_row(whole: Read | None, reads: list[Read]) -> list[Read]:
    """In a close-up, the frame read as one plate (`_frame_as_plate`) replaces the reads whose text
    it contains and is shorter than: the same row, seen whole. Its confidence is the best such
    read's."""
    if whole is None or not whole.grammar_ok:
        return reads
    parts = [r for r in reads if r.text in whole.text and len(r.text) < len(whole.text)]
    if not parts:
        return reads
    best = max(parts, key=lambda r: r.confidence)
    kept = [r for r in reads if r not in parts]
    whole = dataclasses.replace(whole, confidence=best.confidence, detection_score=best.detection_score)
    return [whole, *kept]


def later_look(reads: list[Read], later: list[Read]) -> list[Read]:
    """`reads` with a later look's reads (taken because none of `reads` is confident) added where
    no earlier read is (`OVERLAP`). Where one is, the first look's read stands, unless the later
    read is a two-row plate read whole and confidently and no earlier read there is confident:
    the first look found one of its rows alone, or read across both (the rows of a two-row plate
    are short, and one row may fit a short format by itself). Any other later read of the same
    place stays out: the later looks (the frame padded, the frame read as a plate) read a plate
    the first looks boxed no better (one-row crops read an extra character from the frame)."""
    out = list(reads)
    for r in later:
        there = [o for o in out if r.box.iou(o.box) >= OVERLAP]
        if not there:
            out.append(r)
        elif r.rows == 2 and r.confident and not any(o.confident for o in there):
            out = [o for o in out if o not in there] + [r]
    return out
