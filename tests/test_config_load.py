"""load_config: every problem names file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from alprd.config import parse_config
from alprd.errors import ConfigError


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    text = "device_id: a\nreader:\n  threads: 1\nreader:\n  threads: 2\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, Path("cfg.yaml"))
    assert e.value.problems == ["cfg.yaml:4 reader: given twice (first on line 2); merge the two"]


def test_bad_value_names_line_and_key() -> None:
    text = "policy: {purpose: p, custodian: c, retention_days: 1, sharing: none}\nreader:\n  threads: 0\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, Path("cfg.yaml"))
    assert any(p.startswith("cfg.yaml:3 reader.threads: ") for p in e.value.problems), e.value.problems


@pytest.mark.parametrize(("text", "line", "says"), [
    # found at the end of the file, which PyYAML marks one line past the text
    ("a: 1\nb: [\n", 2, "while parsing a flow node: expected the node content"),
    ("a: 1\nb: [", 2, "while parsing a flow node: expected the node content"),
    ("a: 1\nb: \"abc\nc: 2\n\n", 2, "while scanning a quoted scalar: found unexpected end of stream"),
    # found where it is, with where the unfinished part began
    ("a: 1\nb: [1, 2\nc: 3\n", 3, "while parsing a flow sequence (line 2): expected ',' or ']'"),
    ("a: 1\nb: c: d\ne: 2\n", 2, "mapping values are not allowed here"),
    ("reader:\n  threads: 1\n region: us\n", 3, "while parsing a block mapping (line 1)"),
])
def test_yaml_syntax_error_names_its_line(text: str, line: int, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, Path("cfg.yaml"))
    assert str(e.value).startswith(f"cfg.yaml:{line} (yaml): {says}"), str(e.value)
