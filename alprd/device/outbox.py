"""The outbox: messages that must reach the back office, kept until they have.

`Outbox` is what the publisher drains (`pending`, `ack`). The daemon's is an `OverflowOutbox`: the
durable SQLite outbox (`alprd.store.Store`), with the hits the disk refused kept in RAM in front of
it. Those are offered to MQTT straight from memory (a stolen car cannot wait for disk space) and
moved into the durable outbox once the disk takes them again; whichever succeeds first forgets them.
The overflow outbox also holds the storage fault that raises the `storage` alarm, and clears it once
a write succeeds again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..clock import Clock
from ..errors import StoreError
from ..types import OutboxItem

log = logging.getLogger(__name__)

RAM_HITS_MAX = 1000
"""Hits kept in memory while the disk refuses them (~2 KB each); beyond this the oldest is dropped."""


class Outbox(Protocol):
    def pending(self, limit: int) -> list[OutboxItem]:
        """The oldest messages not yet acknowledged."""
        ...

    def ack(self, msg_id: str) -> None:
        """Forget a message: the broker (or the back office) has it."""


class DurableOutbox(Protocol):
    """What the overflow outbox needs from durable storage (`alprd.store.Store` provides it)."""

    def outbox_put(self, msg_id: str, topic: str, payload: bytes, kind: str) -> None: ...

    def outbox_pending(self, limit: int = 100) -> list[OutboxItem]: ...

    def outbox_ack(self, msg_id: str) -> None: ...

    def outbox_depth(self) -> int: ...

    def state_set(self, key: str, value: str) -> None: ...


class OverflowOutbox:
    """The durable outbox, with the hits the disk refused in RAM in front of it.

    An acknowledgement the full disk cannot record is remembered here, so the row is not resent in
    a loop. `len()` is the number of hits waiting in RAM.
    """

    def __init__(self, disk: DurableOutbox, clock: Clock, limit: int = RAM_HITS_MAX) -> None:
        self.disk = disk
        self.limit = limit
        self._clock = clock
        self.ram: dict[str, OutboxItem] = {}
        self.dropped = 0
        self.error = ""
        """Why storage is faulty (the `storage` alarm and the status' `storage_error`); "" when fine."""
        self._unforgotten: set[str] = set()
        self._read_error = ""

    # --- putting ----------------------------------------------------------------------------------

    def put_hit(self, hit_id: str, payload: bytes) -> None:
        """Durably, or (disk full or broken) in RAM, published from there meanwhile."""
        try:
            self.disk.outbox_put(hit_id, "hit", payload, "hit")
        except StoreError as e:
            self.fault(f"hit {hit_id} kept in RAM, outbox write failed", e)
            self._keep(hit_id, payload)

    def put_summary(self, summary_id: str, payload: bytes) -> bool:
        """Durably, or not at all: the space a full disk has left is for hits. True if stored."""
        try:
            self.disk.outbox_put(summary_id, "summary", payload, "summary")
        except StoreError as e:
            self.fault("summary dropped", e)
            return False
        return True

    def _keep(self, key: str, payload: bytes) -> None:
        self.ram[key] = OutboxItem(key, key, "hit", payload, topic="hit")
        while len(self.ram) > self.limit:
            oldest = next(iter(self.ram))
            del self.ram[oldest]
            self.dropped += 1
            log.error("hit %s dropped: %d hits already wait in memory for the disk", oldest, self.limit)

    # --- the Outbox the publisher drains ----------------------------------------------------------

    def pending(self, limit: int) -> list[OutboxItem]:
        items = list(self.ram.values())[:limit]
        if len(items) < limit:
            try:
                rows = self.disk.outbox_pending(limit - len(items) + len(self._unforgotten))
            except StoreError as e:
                # asked for several times a second: say it when it starts or changes, not each time
                (log.error if str(e) != self._read_error else log.debug)("outbox unreadable: %s", e)
                self._read_error = str(e)
                rows = []
            else:
                self._read_error = ""
            items += [r for r in rows if r.msg_id not in self._unforgotten and r.msg_id not in self.ram]
        return items[:limit]

    def ack(self, msg_id: str) -> None:
        self.ram.pop(msg_id, None)
        try:
            self.disk.outbox_ack(msg_id)
        except StoreError as e:
            log.error("delivered outbox row %s not forgotten yet: %s", msg_id, e)
            self._unforgotten.add(msg_id)
        else:
            self._unforgotten.discard(msg_id)

    def depth(self) -> int:
        """Durable rows waiting; raises StoreError while the database cannot be read."""
        return self.disk.outbox_depth()

    def __len__(self) -> int:
        return len(self.ram)

    # --- the storage fault ------------------------------------------------------------------------

    def fault(self, what: str, e: Exception) -> None:
        """A write failed: log it and raise the storage alarm until `check` clears it."""
        log.error("%s: %s", what, e)
        self.error = str(e)[:200]

    def check(self) -> None:
        """While the storage alarm is up: RAM hits into the outbox, else a probe write; clear on success."""
        if not self.error and not self.ram:
            return
        try:
            if not self._retry():
                return
            # a real durable write: it fails with StoreError for exactly as long as the disk is full
            self.disk.state_set("storage_probe", repr(self._clock.time()))
        except StoreError as e:
            self.error = str(e)[:200]
            return
        if self.error:
            log.warning("storage writable again: storage alarm cleared")
        self.error = ""

    def _retry(self) -> bool:
        """Move RAM hits into the durable outbox and forget delivered rows; True when nothing is left."""
        for key, item in list(self.ram.items()):
            try:
                self.disk.outbox_put(key, "hit", item.payload, "hit")
            except StoreError:
                return False
            self.ram.pop(key, None)
        for msg_id in list(self._unforgotten):
            try:
                self.disk.outbox_ack(msg_id)
            except StoreError:
                return False
            self._unforgotten.discard(msg_id)
        return True
