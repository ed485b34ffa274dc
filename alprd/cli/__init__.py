"""`alprd` command line: one module per verb group, each registering its own subcommands
(`register(subparsers)`); this file only wires them. Handlers return an exit code (`alprd.exits`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..exits import Exit
from . import daemon, policy, privacy, reader, selftest

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alprd",
        description="Privacy-first licence-plate reader: reads plates locally, publishes only hot-list hits.",
    )
    parser.add_argument("--version", action="version", version=f"alprd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (reader, privacy, daemon, policy, selftest):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return Exit.USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        return Exit.FAILURE
