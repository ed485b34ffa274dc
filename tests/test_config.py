"""Config: check-config exit codes and messages; fuzzed YAML never produces a traceback."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_load import LAUGHS

from alprd.cli import main
from alprd.config import parse_config
from alprd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "alprd.example.yaml"


def test_example_config_is_valid_and_documents_daemon_keys() -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    text = EXAMPLE.read_text()
    for key in ("source:", "kind:", "fps:", "loop:", "topic_prefix:", "min_agreeing_reads:", "gpsd:",
                "interval_s:", "app_ack:", "protocol:", "policy:"):
        assert key in text


def test_check_config_lists_every_error_with_file_line_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "device_id: ok\n"
        "source:\n  kind: video\n  fps: -1\n"
        "mqtt:\n  port: 70000\n  protocl: '5'\n"
        "matching:\n  min_agreeing_reads: 0\n"
    )
    out = subprocess.run([sys.executable, "-m", "alprd", "check-config", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert f"{bad}:4 source.fps:" in out.stderr
    assert f"{bad}:6 mqtt.port:" in out.stderr
    assert f"{bad}:7 mqtt.protocl: unknown key" in out.stderr
    assert f"{bad}:9 matching.min_agreeing_reads:" in out.stderr
    assert "Traceback" not in out.stderr and len(lines) >= 4


def test_check_config_missing_files_and_missing_policy(tmp_path: Path) -> None:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["source"] = {"kind": "video", "path": str(tmp_path / "nope.mp4")}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(p)]) == 2
    del cfg["policy"]
    p.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(p)]) == 2
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2


KEYS = ["source", "mqtt", "matching", "location", "metrics", "motion", "tracking", "kind", "fps", "loop",
        "path", "port", "host", "protocol", "lat", "lon", "gpsd", "roi", "tls", "policy", "storage"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4),
), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_fuzzed_config_gives_config_error_never_a_traceback(data: dict[str, object]) -> None:
    text = yaml.safe_dump(data)
    try:
        parse_config(text, Path("fuzz.yaml"))
    except ConfigError as e:
        assert e.problems and all(p.startswith("fuzz.yaml:") for p in e.problems)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_yaml_text_never_a_traceback(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, Path("fuzz.yaml"))


PIECES = ["&a ", "&b ", "*a", "*b", "<<: ", "[", "]", "{", "}", ": ", ",", "\n", "  ", "- ", "a", "b",
          "device_id", "mqtt", "port", "9" * 60, "2026-13-45", "!!binary ", "!!python/object ", "'", '"',
          "? ", "|\n", "~", "1e999", "\t", "#"]


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.sampled_from(PIECES), max_size=120).map("".join))
def test_fuzzed_yaml_with_anchors_aliases_and_nesting_never_a_traceback(text: str) -> None:
    # billion laughs, recursive aliases, deep flow nesting and unbuildable values, mixed at random
    with contextlib.suppress(ConfigError):
        parse_config(text + "\n" + LAUGHS if "*a" in text else text, Path("fuzz.yaml"))
