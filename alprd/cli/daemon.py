"""`alprd run`, `alprd check-config`, `alprd demo`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .config import load_config
from .errors import AlprdError, ConfigError, InstanceLockedError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
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
    from .demo import parse_broker

    try:
        parse_broker(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    from .config import key_lines
    from .daemon import preflight, transport_warnings

    problems = preflight(cfg, args.config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_USAGE
    warnings = transport_warnings(cfg)
    if warnings:
        # a warning, not an error: a closed network may be a deliberate choice; the status says it too
        lines = key_lines(args.config.read_text(encoding="utf-8"))
        for key, msg in warnings:
            loc = tuple(key.split("."))
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)
            print(f"{args.config}:{line} {key}: warning: {msg}", file=sys.stderr)
    print(f"{args.config}: ok")
    return EXIT_OK


def install_signal_handlers(stop: threading.Event) -> None:
    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def no_core_dumps() -> None:
    """A core dump would hold the decrypted hot list: none, also outside systemd (LimitCORE=0 there)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as e:
        log.warning("cannot turn core dumps off: %s", e)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    from .daemon import build

    no_core_dumps()
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        daemon = build(cfg, stop)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except InstanceLockedError as e:
        print(f"alprd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AlprdError as e:
        print(f"alprd: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return daemon.run(stop)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return run_demo(broker=args.broker, keep=args.keep, frames=args.frames)
    except AlprdError as e:
        print(f"alprd demo: {e}", file=sys.stderr)
        return EXIT_FAILURE
