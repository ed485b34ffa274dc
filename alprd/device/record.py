"""What each event leaves behind. A hit: sealed evidence, a message in the outbox, an audit entry (never
the plate). A pass: one more count (or keyed token) in the window's summary, nothing else. The summary
itself goes out once per window.

Storage faults are never fatal here: they are handed to the outbox's storage alarm, a hit the disk
refuses waits in RAM, and a summary is dropped rather than take the space hits need.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..clock import Clock
from ..errors import StoreError
from ..payloads import HitBody, Location, SummaryBody
from ..privacy.evidence import seal_evidence
from ..privacy.summaries import AuditFn, Summarizer
from ..read.imageio import encode_jpeg
from ..types import Event, Hit, Image
from .outbox import OverflowOutbox

log = logging.getLogger(__name__)

EVIDENCE_FRAME_STEPS = ((960, 85), (640, 75), (480, 60), (320, 50), (0, 0))
"""Hit evidence keeps the plate crop at full resolution and the frame downscaled to the first of these
(width, JPEG quality) that fits `privacy.evidence_max_kb`; (0, 0): the crop alone."""


class AuditStore(Protocol):
    def audit(self, actor: str, event: str, obj: object, purpose: str = "") -> None: ...


class EvidenceStore(Protocol):
    def put_evidence(self, hit_id: str, sealed: bytes) -> Path: ...


def lifecycle_audit(store: AuditStore) -> AuditFn:
    """The daemon's entries in the audit chain (actor `alprd`); raises StoreError when the disk refuses."""

    def audit(event: str, obj: dict[str, object]) -> None:
        store.audit("alprd", event, obj, "daemon lifecycle")

    return audit


class EvidenceSealer:
    """Plate crop + downscaled frame, sealed to headquarters' key before touching disk, at most
    `max_bytes` sealed (it is published whole, and a broker's packet limit is often 256 KB or so)."""

    def __init__(
        self, evidence_pub: X25519PublicKey, store: EvidenceStore, max_bytes: int = 256 * 1024
    ) -> None:
        self._pub = evidence_pub
        self._store = store
        self.max_bytes = max_bytes

    def seal(self, hit: Hit) -> bytes | None:
        """The sealed evidence, stored under the hit id; None when the pass kept no frame or even the
        crop alone is over the size cap."""
        image = hit.track.image
        if image is None:
            return None
        h, w = image.shape[:2]
        box = hit.track.box.pad(0.1, 0.2).clamp(w, h)
        crop = image[box.y : box.y + box.h, box.x : box.x + box.w] if box.area else image[:1, :1]
        crop_jpeg = encode_jpeg(np.ascontiguousarray(crop))
        meta = {"hit_id": hit.hit_id, "ts": hit.track.last_ts, "box": hit.track.box.as_list(),
                "plate": hit.track.text, "camera": hit.track.camera}
        for width, quality in EVIDENCE_FRAME_STEPS:
            frame_jpeg = _frame_jpeg(image, width, quality) if width else b""
            sealed = seal_evidence(self._pub, crop_jpeg, frame_jpeg, meta)
            if len(sealed) <= self.max_bytes:
                self._store.put_evidence(hit.hit_id, sealed)
                return sealed
        log.warning("hit %s: even the plate crop alone is over privacy.evidence_max_kb (%d KB sealed): "
                    "no evidence kept", hit.hit_id, len(sealed) // 1024)
        return None


def _frame_jpeg(image: Image, width: int, quality: int) -> bytes:
    scale = min(1.0, width / max(1, image.shape[1]))
    small = image
    if scale < 1:
        small = np.asarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return encode_jpeg(small, quality)


class Recorder:
    """Turns events into outbox messages, evidence, summary counts and audit entries."""

    def __init__(
        self,
        device_id: str,
        outbox: OverflowOutbox,
        summarizer: Summarizer,
        evidence: EvidenceSealer,
        audit: AuditFn,
        location: Callable[[], Location | None],
        clock: Clock,
        headings: Mapping[str, float] | None = None,
    ) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.summarizer = summarizer
        self.evidence = evidence
        self._audit = audit
        self._location = location
        self._clock = clock
        self._headings = dict(headings or {})
        self.hits = 0
        self.passes = 0
        self.noise = 0
        self.summaries_dropped = 0
        self._day: tuple[int, int, int] | None = None
        self._day_hits = 0

    def _today(self) -> tuple[int, int, int]:
        t = time.localtime(self._clock.time())  # the device's own zone: what "today" means to its users
        return t.tm_year, t.tm_mon, t.tm_mday

    @property
    def hits_today(self) -> int:
        """Hits since local midnight (or since the start, if later)."""
        return self._day_hits if self._today() == self._day else 0

    def handle(self, events: Iterable[Event]) -> None:
        for ev in events:
            if isinstance(ev, Hit):
                self._hit(ev)
            elif ev.noise:
                self.noise += 1
                self.summarizer.add_noise()
            else:
                self.passes += 1
                self.summarizer.add(ev.track.text, None, ev.track.confidence, False)

    def frames_read(self, n: int) -> None:
        """Frames the reader read, for the summary's `reads`."""
        if n:
            self.summarizer.add_frames(n)

    def location(self, camera: str) -> Location | None:
        """Where the hit was seen, with `camera_heading`, the compass bearing the camera looks along,
        where it is known: its `heading_deg` on a pole, that angle added to the vehicle's heading
        from gpsd in a car."""
        loc = self._location()
        offset = self._headings.get(camera)
        if loc is None or offset is None:
            return loc
        if loc.get("source") == "gpsd":
            vehicle = loc.get("heading")
            if not isinstance(vehicle, int | float):
                return loc
            offset = (float(vehicle) + offset) % 360.0
        return {**loc, "camera_heading": round(offset, 1)}

    def _hit(self, hit: Hit) -> None:
        self.hits += 1
        today = self._today()
        self._day_hits = self._day_hits + 1 if today == self._day else 1
        self._day = today
        sealed = None
        try:
            sealed = self.evidence.seal(hit)
        except (StoreError, OSError) as e:
            self.outbox.fault(f"evidence for hit {hit.hit_id} not stored", e)
        evidence = hit.hit_id if sealed is not None else None
        body = HitBody.of(hit, self.device_id, self.location(hit.track.camera), evidence)
        self.summarizer.add(hit.track.text, None, hit.track.confidence, True)
        self.outbox.put_hit(hit.hit_id, body.encode())
        if sealed is not None:
            self.outbox.put_evidence(hit.hit_id)  # after the hit: it reaches the back office first
        # The chain records that a hit was made and against which list, not the plate.
        self.audit("hit", {"hit_id": hit.hit_id, "kind": hit.match.kind, "verified": hit.verified,
                           "list_version": hit.match.list_version, "evidence": evidence is not None})
        log.info("hit %s (%s, camera %s, verified=%s, repeat=%s)", hit.hit_id, hit.match.kind,
                 hit.track.camera, hit.verified, hit.repeat)

    def summary(self, storage_alarm: bool, *, force: bool = False) -> None:
        """The window's summary into the outbox, when one is due (`force`: now, at shutdown).

        While the storage alarm is up the window is still closed (its token key ratcheted) but the
        summary is dropped: the space left is for hits."""
        if not force and not self.summarizer.due():
            return
        window = self.summarizer.flush()
        if storage_alarm:
            self.summaries_dropped += 1
            log.warning("summary dropped: storage alarm (hits come first)")
            return
        body = SummaryBody.of(window, self.device_id, self._clock.time())
        if not self.outbox.put_summary(body.summary_id, body.encode()):
            self.summaries_dropped += 1

    def audit(self, event: str, obj: str | dict[str, object] = "") -> None:
        """Append to the tamper-evident audit chain (never a plate in clear); a refusal raises the
        storage alarm instead of an error."""
        try:
            self._audit(event, obj if isinstance(obj, dict) else {"detail": obj})
        except StoreError as e:
            self.outbox.fault(f"audit entry {event!r} not written", e)
