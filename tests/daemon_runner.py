"""Runs the daemon as its own process for the kill tests: `python daemon_runner.py CONFIG`.

The reader is scripted (every frame shows one listed plate), so these tests exercise process death,
the Last Will and the outbox, not the models; the real-model end-to-end test uses `alprd run`.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from alprd.config import load_config
from alprd.device.daemon import build
from alprd.device.systemd import install_signal_handlers
from alprd.types import Box, Candidate, Image, Looks, PhotoResult, Read


class OnePlateReader:
    def __init__(self) -> None:
        self.model_hashes = {"scripted": "0" * 64}

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        r = Read("7ABC123", 0.95, (0.95,) * 7, (Candidate("7ABC123", 0.95),), Box(10, 10, 80, 40), 0.9, "us")
        return PhotoResult((r,), ms=1.0)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    cfg = load_config(Path(sys.argv[1]))
    stop = threading.Event()
    install_signal_handlers(stop)
    daemon = build(cfg, stop, reader=OnePlateReader())
    return daemon.run(stop)


if __name__ == "__main__":
    sys.exit(main())
