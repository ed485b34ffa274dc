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


# --- hostile YAML: every one a `file:line` message, none a traceback or a hang (issue 24) ----------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a: " + "[" * 5000, 1, "nested deeper than 16 levels"),
    ("".join("  " * i + f"k{i}:\n" for i in range(2000)), 16, "nested deeper than 16 levels"),
    ("device_id: " + "9" * 5000, 1, "cannot read this value (Exceeds the limit (4300 digits)"),
    ("a: &a [*a]\n", 1, "aliases (*name) are not allowed"),
    (LAUGHS, 2, "aliases (*name) are not allowed"),
    ("policy:\n  retention_days: 2026-13-45\n", 2, "cannot read this value (month must be in 1..12)"),
])
def test_hostile_yaml_is_a_config_error_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, Path("cfg.yaml"))
    (problem,) = e.value.problems
    assert problem.startswith(f"cfg.yaml:{line} (yaml): ") and message in problem, problem


def test_billion_laughs_is_refused_by_check_config_at_once(tmp_path: Path) -> None:
    """Main spent 8.8 GB and never finished; a subprocess with a timeout shows a hang as a failure."""
    import subprocess
    import sys

    cfg = tmp_path / "laughs.yaml"
    cfg.write_text(LAUGHS)
    out = subprocess.run([sys.executable, "-m", "alprd", "check-config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{cfg}:2 (yaml): aliases (*name) are not allowed" in out.stderr


def test_a_huge_file_is_not_read_as_a_config(tmp_path: Path) -> None:
    from alprd.config import MAX_CONFIG_BYTES, load_config

    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match=r"big\.yaml:1 \(file\): larger than"):
        load_config(big)


def test_a_huge_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config("device_id: " + "x" * 100_000 + "\n", Path("cfg.yaml"))
    problem = next(p for p in e.value.problems if "device_id" in p)
    assert len(problem) < 200 and problem.endswith("...)")
