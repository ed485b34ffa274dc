"""Outside bytes: size and nesting are bounded before parsing; nothing but UntrustedInput escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alprd.untrusted import MAX_DEPTH, UntrustedInput, loads, too_deep


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert not too_deep(b'{"a": [1, {"b": 2}]}', 3) and too_deep(b'{"a": [1, {"b": [2]}]}', 3)
    assert not too_deep(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[["}', 3)
    assert not too_deep(b'["\\"[[[[[[[[[["]', 3)  # an escaped quote does not end the string
    assert too_deep(b"[" * 40, 16) and not too_deep(b"[]" * 40, 1)


@pytest.mark.parametrize("payload", [
    b"[" * 4000, b"{" * 5000, b'{"a":' * 3000, b"[" * 17 + b"]" * 17, b"\xff\xfe", b"", b"nul",
])
def test_deep_or_broken_input_is_refused_with_untrusted_input(payload: bytes) -> None:
    with pytest.raises(UntrustedInput):
        loads(payload, 1 << 20)


def test_size_is_checked_before_anything_else() -> None:
    with pytest.raises(UntrustedInput, match="more than the 10"):
        loads(b"[" * 11, 10)
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, 1 << 20) is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet="[]{}\",:\\ 1a", max_size=300).map(str.encode))
def test_fuzzed_bytes_give_a_value_or_untrusted_input(data: bytes) -> None:
    try:
        value = loads(data, 1 << 16, max_depth=4)
    except UntrustedInput:
        return
    assert json.loads(data) == value or value != value  # NaN is not equal to itself
