"""Config: check-config exit codes and messages; fuzzed YAML never produces a traceback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_load import LAUGHS

from alprd.cli import main
from alprd.config import parse_config
from alprd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "alprd.example.yaml"
UNIT = Path("/etc/systemd/system/alprd.service")


def with_keys(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The example config with its key files made here (agency keys), not systemd credentials."""
    from alprd.privacy.keys import generate_agency_keys

    keys = tmp_path / "keys"
    generate_agency_keys(keys)
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["hotlist"].update(list_key=str(keys / "list.key"), signing_pub=str(keys / "signing.pub"))
    cfg["privacy"]["evidence_pub"] = str(keys / "evidence.pub")
    return cfg, keys


def test_example_config_is_valid_and_documents_daemon_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = with_keys(tmp_path)
    p = tmp_path / "alprd.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(p)]) == 0
    if "CREDENTIALS_DIRECTORY" not in os.environ and not UNIT.exists():
        # Off the device, the example's systemd credentials exist nowhere: check-config says so (as
        # `run` would fail), naming each key on its line in the example.
        capsys.readouterr()
        assert main(["check-config", str(EXAMPLE)]) == 2
        err = capsys.readouterr().err.splitlines()
        text_lines = EXAMPLE.read_text().splitlines()
        assert [line.split()[1] for line in err] == [
            "hotlist.list_key:", "hotlist.signing_pub:", "privacy.evidence_pub:"
        ], err
        for line in err:
            where, key = line.split()[:2]
            number = int(where.rsplit(":", 1)[1])
            assert text_lines[number - 1].lstrip().startswith(key.rstrip(":").split(".")[1] + ":"), line
            assert "present only inside the running service" in line
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


def test_check_config_checks_every_key_file_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, keys = with_keys(tmp_path)
    (keys / "mqtt-password").write_text("secret\n")
    os.chmod(keys / "mqtt-password", 0o600)
    cfg["mqtt"].update(username="device", password_file=str(keys / "mqtt-password"))
    p = tmp_path / "alprd.yaml"

    def check(config: dict[str, Any]) -> tuple[int, list[str]]:
        p.write_text(yaml.safe_dump(config, sort_keys=False))
        capsys.readouterr()
        rc = main(["check-config", str(p)])
        return rc, capsys.readouterr().err.splitlines()

    def line_of(key: str) -> int:
        return next(i for i, text in enumerate(p.read_text().splitlines(), 1) if text.strip().startswith(key))

    assert check(cfg) == (0, [])
    # what the user hit: a list.key others can read, and key files that are not there
    os.chmod(keys / "list.key", 0o644)
    (keys / "signing.pub").unlink()
    cfg["privacy"]["evidence_pub"] = str(tmp_path / "absent.pub")
    os.chmod(keys / "mqtt-password", 0o640)
    rc, err = check(cfg)
    assert rc == 2
    assert len(err) == 4, err
    expected = [("list_key", "hotlist.list_key", "chmod 600"),
                ("signing_pub", "hotlist.signing_pub", "not found"),
                ("evidence_pub", "privacy.evidence_pub", "absent.pub"),
                ("password_file", "mqtt.password_file", "0640")]
    for line, (key, dotted, says) in zip(err, expected, strict=True):
        assert line.startswith(f"{p}:{line_of(key + ':')} {dotted}: ") and says in line, line
    # a key file that is there but is not a key
    os.chmod(keys / "list.key", 0o600)
    (keys / "list.key").write_bytes(b"short")
    rc, err = check({**cfg, "mqtt": {**cfg["mqtt"], "password_file": None, "username": None},
                     "privacy": {**cfg["privacy"], "evidence_pub": str(keys / "evidence.pub")}})
    assert rc == 2 and len(err) == 2 and "exactly 32 raw bytes" in err[0] and "signing_pub" in err[1]


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
