"""Two-row plates: motorcycles' and the square plates of cars in Europe and Brazil print one
number over two rows (`1A2` over `3456`, `AB12` over `CDE`, `ABC` over `1D23`). Two rows of a box
are read as one number where they lie one under the other alike (`stacked`) and their reads
join into an issued format that neither makes alone (`grammar.joins`)."""

from __future__ import annotations

from ..types import Candidate
from . import grammar
from .lines import TextLine
from .recognize import Recognition, chars_for

STACK_HEIGHT = 0.7
"""Rows at least this share of each other's height, one right under the other and over each
other's middle, are two rows of one plate (`stacked`): a two-row plate prints both in one
size, while a state name or a slogan over a serial is smaller (the reader's `SMALL_ROW`)."""
STACK_GAP = (0.5, 1.6)
"""Bounds of the distance between stacked rows' centres, in the taller row's heights: rows that
touch or overlap are one row split, rows further apart are a plate's serial and a caption."""
STACK_ANGLE = 10.0
"""Degrees the two rows' angles may differ: rows of one plate slant alike."""


def stacked(top: TextLine, bottom: TextLine) -> bool:
    """Whether `bottom` is the second row of a two-row plate whose first is `top`."""
    tall = max(top.h, bottom.h)
    return (min(top.h, bottom.h) >= STACK_HEIGHT * tall
            and STACK_GAP[0] * tall <= bottom.cy - top.cy <= STACK_GAP[1] * tall
            and abs(top.cx - bottom.cx) <= max(top.w, bottom.w) / 2
            and abs(top.angle - bottom.angle) <= STACK_ANGLE)


PAIR_READS = 4
"""Each row's most probable reads tried in pairs for the join: a row of a two-row plate is too
short for its look-alikes to be told apart alone (`0ET` over `7316` is `OET7316`), while the
joined number's format tells them (the grammar chooses among the recognizer's reads)."""


def two_rows(rows: list[tuple[TextLine, Recognition, Candidate]], region: str
             ) -> tuple[float, Candidate, tuple[float, ...], float] | None:
    """Two rows of a box read as one two-row plate (`stacked`, `grammar.joins`): score, the
    joined read (its probability the product of the rows'; the most probable pair of the rows'
    reads that joins), per-character confidences, row height; None where they are not one."""
    (top, top_rec, _), (bottom, bottom_rec, _) = sorted(rows, key=lambda r: r[0].cy)
    if not stacked(top, bottom):
        return None
    pairs = [(a.confidence * b.confidence, a, b) for a in top_rec.candidates[:PAIR_READS]
             for b in bottom_rec.candidates[:PAIR_READS] if grammar.joins(a.text, b.text, region)]
    if not pairs:
        return None
    p, a, b = max(pairs, key=lambda t: t[0])
    joined = Candidate(a.text + b.text, p)
    chars = chars_for(a.text, top_rec) + chars_for(b.text, bottom_rec)
    return joined.confidence * grammar.likeness(joined.text), joined, chars, max(top.h, bottom.h)
