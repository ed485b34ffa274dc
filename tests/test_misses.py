from __future__ import annotations

import pytest

from alprd.read.misses import CLASSES, count_misses, exact_interval, miss_class


@pytest.mark.parametrize(("read", "label", "cls"), [
    ("", "HH9G5W", "no_read"),
    ("HH9G5", "HH9G5W", "dropped_last"),
    ("HC1368", "EHC1368", "dropped_first"),
    ("CUJ79", "CJUJ79", "dropped_middle"),
    ("AA", "AAA", "dropped_last"),  # a repeated letter: the last place is named
    ("D4RRC20", "4RRC20", "extra_first"),
    ("627WWIP", "627WWI", "extra_last"),
    ("5EVL554", "5FVL554", "lookalike"),
    ("4CRM944", "4CBM944", "lookalike"),
    ("ITM1I5", "1TM115", "lookalike"),  # every difference a look-alike pair
    ("4CXM944", "4CBM944", "substitution"),
    ("4CXM9X4", "4CBM944", "other"),
    ("10DTM59", "10DTM", "other"),
    ("THISAREA", "7ABC123", "other"),
])
def test_miss_classes(read: str, label: str, cls: str) -> None:
    assert miss_class(read, label) == cls


def test_count_skips_hits_and_unlabelled_and_takes_the_closest_label() -> None:
    pairs = [("7ABC123", {"7ABC123"}), ("", set()), ("7ABC12", {"XYZ999", "7ABC123"}), ("", {"A1"})]
    counts = count_misses(pairs)
    assert counts == {"no_read": 1, "dropped_last": 1}
    assert list(counts) == [c for c in CLASSES if c in counts]


@pytest.mark.parametrize(("hits", "n", "low", "high"), [
    (5, 10, 0.2366, 0.7634),  # Wilson's textbook case
    (0, 10, 0.0, 0.2775),  # no hit: the upper end is z^2 / (n + z^2), not 0
    (10, 10, 0.7225, 1.0),
    (89, 96, 0.8571, 0.9642),  # 92.7% on the 96 us-ucsd photos
])
def test_exact_interval_is_wilsons(hits: int, n: int, low: float, high: float) -> None:
    lo, hi = exact_interval(hits, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert lo <= hits / n <= hi


def test_exact_interval_narrows_with_more_photos_and_refuses_nonsense() -> None:
    small, large = exact_interval(9, 10), exact_interval(900, 1000)
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    for hits, n in ((1, 0), (-1, 10), (11, 10)):
        with pytest.raises(ValueError):
            exact_interval(hits, n)
