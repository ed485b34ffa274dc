"""The process's exit codes, in one table (POSIX habit; systemd and scripts read them)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILURE = 1
    """A runtime failure: a file that cannot be read, a refused bundle, a check that failed."""
    USAGE = 2
    """Bad usage or configuration (argparse's own code): fix the command or the config."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT), as shells report it."""
