"""The one extra thread: the TTL purge, which may delete many files and must not stall the loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ..errors import StoreError
from ..store import PurgeCounts

log = logging.getLogger(__name__)


class Purging(Protocol):
    def purge(self, now: float | None = None) -> PurgeCounts: ...


def purge(store: Purging) -> None:
    """Expired evidence and outbox rows, deleted (and audited by the store)."""
    counts = store.purge()
    if any(counts.as_dict().values()):
        log.info("purge: %s", counts.as_dict())


class Housekeeper:
    """Runs `work()` every `interval` seconds on one named thread (Frigate's cleanup idiom).

    A failure is logged and kept in `error` (the daemon raises its storage alarm) until a run succeeds.
    """

    NAME = "alprd-housekeeping"

    def __init__(self, work: Callable[[], None], interval: float) -> None:
        self._work = work
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.NAME, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._work()
                self.error = ""
            except (StoreError, OSError) as e:
                log.error("housekeeping failed: %s", e)
                self.error = str(e)[:200]
            self.runs += 1

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
