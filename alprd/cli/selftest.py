"""`alprd selftest`: check an installation (models, reader, and with a config its keys and storage)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..exits import Exit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "selftest",
        help="check this installation: models (SHA-256, one inference each), a full read of a rendered "
        "plate, and with --config the key files, storage and hot list; exit 0 OK, 1 FAIL",
    )
    p.add_argument("--config", "-c", type=Path, metavar="CFG", help="also check what this config names")
    p.add_argument("--models-dir", type=Path, metavar="DIR", help="models folder (default: the config's, "
                   "else the shipped models/)")
    p.add_argument("--photo", action="append", default=[], metavar="IMAGE",
                   help="also read this photo (e.g. a frame from this camera) with the loaded reader and "
                   "print its `alprd read` JSON line; repeatable")
    p.add_argument("--bench", nargs="?", type=int, const=20, default=0, metavar="N",
                   help="also time N reads (default 20) of a 1080p frame with a plate, one without, the "
                   "closer look, and each --photo, with the daemon's reader: this device's ms per read")
    p.set_defaults(handler=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    from ..selftest import FAIL, Check, run

    def emit(check: Check) -> None:
        print(check.line(), flush=True)

    def emit_json(obj: dict[str, object]) -> None:
        print(json.dumps(obj), flush=True)

    checks = run(args.config, args.models_dir, emit, args.photo, emit_json, bench=max(0, args.bench))
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        print(f"selftest: FAIL ({len(failed)} of {len(checks)} checks: {', '.join(c.name for c in failed)})")
        return Exit.FAILURE
    print(f"selftest: OK ({len(checks)} checks)")
    return Exit.OK
