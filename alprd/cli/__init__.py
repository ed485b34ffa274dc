"""`alprd` command line: subcommands, POSIX exit codes (0 ok, 1 runtime failure, 2 usage/config).

Each area registers its own subcommands from its own module (`register(subparsers)`), so this file
only wires them; handlers return the exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alprd",
        description="Privacy-first licence-plate reader: reads plates locally, publishes only hot-list hits.",
    )
    parser.add_argument("--version", action="version", version=f"alprd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import cli_reader

    cli_reader.register(sub)
    for name in ("cli_privacy", "cli_daemon", "cli_selftest"):
        try:
            module = __import__(f"alprd.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"alprd.{name}":
                raise
            continue
        module.register(sub)
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
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
