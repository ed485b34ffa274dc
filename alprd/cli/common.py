"""What several CLI commands share: loading the config the way every command reports it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import Config, load_config
from ..errors import ConfigError
from ..exits import Exit


def fail(msg: str, code: int = Exit.FAILURE) -> int:
    """`alprd: msg` on stderr; the exit status."""
    print(f"alprd: {msg}", file=sys.stderr)
    return code


def print_problems(e: ConfigError) -> int:
    """Each `file:line key.path: message` on stderr; the exit status for a bad config."""
    for problem in e.problems:
        print(problem, file=sys.stderr)
    return Exit.USAGE


def config_or_exit(path: Path) -> Config | int:
    """The loaded config, or the exit status after its problems were printed."""
    try:
        return load_config(path)
    except ConfigError as e:
        return print_problems(e)
