"""`alprd run`, `alprd check-config`, `alprd demo`."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from ..errors import AlprdError, ConfigError, InstanceLockedError
from ..exits import Exit
from .common import config_or_exit, fail, print_problems


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon (camera -> plates -> hot list -> MQTT)")
    p.add_argument("--config", "-c", required=True, type=Path, help="YAML config (config/alprd.example.yaml)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file; exit 0, or 2 listing every error")
    p.add_argument("config", type=Path, metavar="CFG", help="YAML config (config/alprd.example.yaml)")
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic drive-by clip with an embedded MQTT broker",
    )
    p.add_argument("--broker", metavar="HOST:PORT", type=_broker,
                   help="use this MQTT broker (MQTT 5), not an embedded one")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the demo's files (keys, storage) in DIR")
    p.add_argument("--frames", type=int, default=0, help="clip length in frames (0 = full script)")
    p.set_defaults(handler=cmd_demo)


def _broker(text: str) -> str:
    from ..demo import parse_broker

    try:
        parse_broker(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    from ..config import key_lines
    from ..device.preflight import line_of, preflight, transport_warnings

    problems = preflight(cfg, args.config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return Exit.USAGE
    warnings = transport_warnings(cfg)
    if warnings:
        # a warning, not an error: a closed network may be a deliberate choice; the status says it too
        lines = key_lines(args.config.read_text(encoding="utf-8"))
        for key, msg in warnings:
            print(f"{args.config}:{line_of(key, lines)} {key}: warning: {msg}", file=sys.stderr)
    print(f"{args.config}: ok")
    return Exit.OK


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    from ..device.daemon import build
    from ..device.systemd import install_signal_handlers, no_core_dumps

    no_core_dumps()
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        daemon = build(cfg, stop)
    except ConfigError as e:
        return print_problems(e)
    except InstanceLockedError as e:
        return fail(str(e), Exit.USAGE)
    except AlprdError as e:
        return fail(str(e))
    return daemon.run(stop)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    try:
        return run_demo(broker=args.broker, keep=args.keep, frames=args.frames)
    except AlprdError as e:
        print(f"alprd demo: {e}", file=sys.stderr)
        return Exit.FAILURE
