"""What each event leaves behind. A hit: sealed evidence, a message in the outbox, an audit entry (never
the plate). A pass: one more count (or keyed token) in the window's summary, nothing else. The summary
itself goes out once per window.

Storage faults are never fatal here: they are handed to the outbox's storage alarm, a hit the disk
refuses waits in RAM, and a summary is dropped rather than take the space hits need.
"""

from __future__ import annotations

import logging
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
from ..types import Event, Hit
from .outbox import OverflowOutbox

log = logging.getLogger(__name__)

EVIDENCE_FRAME_WIDTH = 960
"""Hit evidence keeps the plate crop at full resolution and the frame downscaled to this width."""


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
    """Plate crop + downscaled frame, sealed to headquarters' key before touching disk."""

    def __init__(self, evidence_pub: X25519PublicKey, store: EvidenceStore) -> None:
        self._pub = evidence_pub
        self._store = store

    def seal(self, hit: Hit) -> str | None:
        """The hit id the evidence is stored under; None when the pass kept no frame."""
        image = hit.track.image
        if image is None:
            return None
        h, w = image.shape[:2]
        box = hit.track.box.pad(0.1, 0.2).clamp(w, h)
        crop = image[box.y : box.y + box.h, box.x : box.x + box.w] if box.area else image[:1, :1]
        scale = min(1.0, EVIDENCE_FRAME_WIDTH / max(1, w))
        small = image
        if scale < 1:
            small = np.asarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        meta = {"hit_id": hit.hit_id, "ts": hit.track.last_ts, "box": hit.track.box.as_list(),
                "plate": hit.track.text, "camera": hit.track.camera}
        sealed = seal_evidence(self._pub, encode_jpeg(np.ascontiguousarray(crop)), encode_jpeg(small), meta)
        self._store.put_evidence(hit.hit_id, sealed)
        return hit.hit_id


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
        evidence = None
        try:
            evidence = self.evidence.seal(hit)
        except (StoreError, OSError) as e:
            self.outbox.fault(f"evidence for hit {hit.hit_id} not stored", e)
        body = HitBody.of(hit, self.device_id, self.location(hit.track.camera), evidence)
        self.summarizer.add(hit.track.text, None, hit.track.confidence, True)
        self.outbox.put_hit(hit.hit_id, body.encode())
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
