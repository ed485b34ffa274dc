"""The outbox: messages that must reach the back office, kept until they have.

`Outbox` is what the publisher drains (`pending`, `ack`). The daemon's is an `OverflowOutbox`: the
durable SQLite outbox (`alprd.store.Store`), with the hits the disk refused kept in RAM in front of
it. Those are offered to MQTT straight from memory (a stolen car cannot wait for disk space) and
moved into the durable outbox once the disk takes them again; whichever succeeds first forgets them.
The overflow outbox also holds the storage fault that raises the `storage` alarm, and clears it once
a write succeeds again.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Protocol

from ..clock import Clock
from ..errors import StoreError
from ..payloads import EVIDENCE_TOPIC, evidence_channel
from ..types import OutboxItem

log = logging.getLogger(__name__)

RAM_HITS_MAX = 1000
"""Hits kept in memory while the disk refuses them (~2 KB each); beyond this the oldest is dropped."""
EVIDENCE_CACHE = 16
"""Sealed evidence files held in RAM while the broker has not acknowledged them (each at most
`privacy.evidence_max_kb`)."""


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

    def evidence_path(self, hit_id: str) -> Path | None: ...


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
        self._evidence: dict[str, bytes] = {}

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

    def put_evidence(self, hit_id: str) -> bool:
        """A hit's sealed evidence (already stored), to be published on `evidence/<hit_id>`; durably or
        not at all (it stays on disk until its TTL: the RAM is for hits). True if queued.

        The row names the evidence file rather than holding a second copy of up to
        `privacy.evidence_max_kb`: a small disk fills with evidence twice as fast otherwise."""
        channel = evidence_channel(hit_id)
        try:
            self.disk.outbox_put(channel, channel, b"", EVIDENCE_TOPIC)
        except StoreError as e:
            self.fault(f"evidence of hit {hit_id} not queued", e)
            return False
        return True

    def _with_evidence(self, item: OutboxItem) -> OutboxItem | None:
        """An evidence row with the sealed bytes read in; None (and the row forgotten) when the
        evidence is gone already (acknowledged, or past its TTL)."""
        if item.kind != EVIDENCE_TOPIC or item.payload:
            return item
        data = self._evidence.get(item.msg_id)
        if data is None:
            path = self.disk.evidence_path(item.msg_id.removeprefix(EVIDENCE_TOPIC + "/"))
            try:
                data = path.read_bytes() if path is not None else None
            except OSError as e:
                log.error("evidence file %s unreadable: %s", path, e.strerror)
            if not data:
                self.ack(item.msg_id)
                return None
            # the publisher asks again for what it sent until the broker acks it: read each file once
            while len(self._evidence) >= EVIDENCE_CACHE:
                del self._evidence[next(iter(self._evidence))]
            self._evidence[item.msg_id] = data
        return dataclasses.replace(item, payload=data)

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
            fresh = [r for r in rows if r.msg_id not in self._unforgotten and r.msg_id not in self.ram]
            try:
                items += [i for i in map(self._with_evidence, fresh) if i is not None]
            except StoreError as e:
                log.error("outbox unreadable: %s", e)
        return items[:limit]

    def ack(self, msg_id: str) -> None:
        self.ram.pop(msg_id, None)
        self._evidence.pop(msg_id, None)
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
