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


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(ConfigError, match=r"^cfg.yaml:3 \(yaml\): while parsing a flow node"):
        parse_config("a: 1\nb: [\n", Path("cfg.yaml"))
