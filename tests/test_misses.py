from __future__ import annotations

import pytest

from alprd.read.misses import CLASSES, count_misses, miss_class


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
