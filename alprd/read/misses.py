"""Classes of misreads, counted by `alprd bench` and `training/eval_loso.py`.

A set's misses are looked at as counts of classes (a dropped last character, a look-alike glyph,
a character too many), not one photo at a time: a fix is aimed at a class of plates and tested on
another source, so no rule is written from one set's misses (issue 18).

`exact_interval` says how far one set's figure can be trusted: 96 photos read 92.7% could come
from a reader whose true rate lies anywhere between about 86% and 96%.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

LOOKALIKES = ("0ODQ", "1IL", "2Z", "5S", "8BR", "6G", "EF", "MWV")
"""Glyphs that fonts, wear, dirt and blur make alike: the pairs issue 18 counts on unseen plates
(E/F, B/R/8, S/5, Z/2, W/M/V, O/0, I/1) and the hot list's look-alike classes."""

CLASSES = (
    "no_read",
    "dropped_first", "dropped_last", "dropped_middle",
    "extra_first", "extra_last", "extra_middle",
    "lookalike", "substitution", "other",
)
"""From the most specific to the least: a read is counted in the first class it fits."""

_SAME = {a: frozenset(group) for group in LOOKALIKES for a in group}


def _alike(a: str, b: str) -> bool:
    return b in _SAME.get(a, frozenset())


def _position(i: int, n: int) -> str:
    return "first" if i == 0 else "last" if i == n - 1 else "middle"


def _one_removed(longer: str, shorter: str) -> str | None:
    """Where a character removed from `longer` leaves `shorter` (last place first), or None."""
    n = len(longer)
    for i in reversed(range(n)):
        if longer[:i] + longer[i + 1 :] == shorter:
            return _position(i, n)
    return None


def miss_class(read: str, label: str) -> str:
    """The class of `read` as a misread of `label` (`read != label`)."""
    if not read:
        return "no_read"
    if len(read) == len(label) - 1 and (where := _one_removed(label, read)):
        return f"dropped_{where}"
    if len(read) == len(label) + 1 and (where := _one_removed(read, label)):
        return f"extra_{where}"
    if len(read) == len(label):
        diff = [(a, b) for a, b in zip(read, label, strict=True) if a != b]
        if all(_alike(a, b) for a, b in diff):
            return "lookalike"
        if len(diff) == 1:
            return "substitution"
    return "other"


def count_misses(pairs: Iterable[tuple[str, set[str]]]) -> dict[str, int]:
    """Classes of the misses among (top read, labels of the image) pairs, in `CLASSES` order; a
    read of an image with several plates counts in the most specific class any label gives."""
    counts: Counter[str] = Counter()
    for read, labels in pairs:
        if read in labels or not labels:
            continue
        counts[min((miss_class(read, lab) for lab in labels), key=CLASSES.index)] += 1
    return {c: counts[c] for c in CLASSES if counts[c]}


Z95 = 1.96
"""The normal quantile of a two-sided 95% interval."""


def exact_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a rate of `hits` in `n`.

    Wilson rather than the normal approximation, p ± z·sqrt(p(1-p)/n): reads near 100% on a hundred
    photos are the common case, and there the normal interval collapses to a point at 100% or runs
    past it; Wilson's stays inside [0, 1] and is not empty at 0 or n hits."""
    if n <= 0 or not 0 <= hits <= n:
        raise ValueError(f"exact_interval: {hits} hits in {n}")
    p = hits / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)
