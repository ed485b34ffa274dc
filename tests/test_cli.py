"""The `alprd` command line as a whole: every argument explained, options' errors in one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from alprd.cli import build_parser, main

Parsers = list[tuple[str, argparse.ArgumentParser]]


def _parsers(parser: argparse.ArgumentParser, path: str = "alprd") -> Parsers:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{path} {name}")
    return out


def test_every_positional_argument_has_help_and_every_group_a_description() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            positional = not action.option_strings and not isinstance(action, argparse._SubParsersAction)
            if positional and not action.help:
                missing.append(f"{path} {action.metavar or action.dest}")
        groups = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if groups and path != "alprd" and not parser.description:
            missing.append(f"{path}: no description")
    assert not missing, missing


def test_keys_help_says_what_it_makes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["keys", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "signing.key" in out and "list.key" in out and "evidence.key" in out


@pytest.mark.parametrize("command", ["read", "bench"])
def test_a_reader_option_out_of_range_is_one_line_exit_2(command: str, tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,plate\n")
    target = str(tmp_path / "photo.jpg") if command == "read" else str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "alprd", command, "--detector-size", "500", target],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [f"alprd {command}: --detector-size 500: input should be a multiple of 32"], lines


def test_threads_sets_every_models_threads_the_detectors_included(tmp_path: Path) -> None:
    """`--threads 1` is one onnxruntime thread for each model: the issue's speed figures are of
    one thread, and the detectors, by default given every core, would otherwise take two or more."""
    from alprd.cli.reader import reader_config
    from alprd.read.reader import PlateReader

    parser = build_parser()
    default = reader_config(parser.parse_args(["bench", str(tmp_path)]))
    assert (default.threads, default.detector_threads) == (1, None)  # reader.threads' and the CPUs
    cfg = reader_config(parser.parse_args(["bench", str(tmp_path), "--threads", "1"]))
    assert (cfg.threads, cfg.detector_threads) == (1, 1)
    reader = PlateReader(cfg)
    assert reader.fallback is not None
    sessions = [reader.detector._session, reader.fallback._session, reader.lines.session,
                reader.recognizer.session]
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 1, 1, 1]
