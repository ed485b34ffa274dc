"""The daemon's side of the privacy core: durable outbox, hot-list install, summaries, evidence, audit.

`PrivacyServices` implements `daemon.Services` with the privacy-core modules: `store.Store` (SQLite
outbox, sealed evidence with TTL, audit chain), `hotlist.HotListInstaller` (verify + activate, rollback
refused), `privacy.Summarizer` (counts or ratcheted tokens) and `privacy.seal_evidence`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .clock import Clock, SystemClock
from .errors import HotListError, StoreError
from .publish import OutboxItem

log = logging.getLogger(__name__)

EVIDENCE_FRAME_WIDTH = 960
"""Hit evidence keeps the plate crop at full resolution and the frame downscaled to this width."""


class _OutboxView:
    """The publisher's view of the store's outbox."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def pending(self, limit: int) -> list[OutboxItem]:
        return [OutboxItem(i.msg_id, i.msg_id, i.kind, i.payload) for i in self._store.outbox_pending(limit)]

    def ack(self, item_id: str) -> None:
        self._store.outbox_ack(item_id)


def _jpeg(image: Any, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(buf.tobytes()) if ok else b""


class PrivacyServices:
    """`daemon.Services` over Store, HotListInstaller, Summarizer and sealed evidence."""

    def __init__(
        self,
        storage_dir: Path,
        device_id: str,
        bundle_path: Path,
        signing_pub: Any,
        list_key: bytes | None,
        *,
        summary_mode: str = "counts",
        summary_interval_s: float = 900.0,
        token_bits: int = 16,
        lookalike_max: int = 1,
        lookalike_classes: tuple[str, ...] | None = None,
        evidence_pub: Any = None,
        evidence_ttl_s: float = 86400.0,
        max_db_bytes: int | None = None,
        outbox_ttl_s: float | None = None,
        clock: Clock | None = None,
        store: Any = None,
        list_id: str = "default",
        device_seal_key: Any = None,
    ) -> None:
        from .hotlist import HotListInstaller, Lookalike
        from .privacy import Summarizer
        from .store import Store

        self.clock = clock or SystemClock()
        self.store = store if store is not None else Store(
            storage_dir, self.clock, evidence_ttl_s=evidence_ttl_s, max_db_bytes=max_db_bytes,
            outbox_ttl_s=outbox_ttl_s, device_id=device_id, allow_unavailable=True,
        )
        self.device_id = device_id
        self._signing_pub = signing_pub
        self._device_seal_key = device_seal_key
        self._list_key_issued: int | None = None
        self.outbox = _OutboxView(self.store)
        lookalike = (
            Lookalike(classes=lookalike_classes, max_substitutions=lookalike_max)
            if lookalike_classes else Lookalike(max_substitutions=lookalike_max)
        )
        self.installer = HotListInstaller(self.store, bundle_path, signing_pub, list_key, self.clock,
                                          lookalike, actor="alprd", list_id=list_id)
        self.hotlist_error = ""
        if list_key is None:
            self.hotlist_error = "waiting for the list key from headquarters (hotlist.key_source: hq)"
            log.warning("%s", self.hotlist_error)
        else:
            self._load_installed()
        self.summarizer = Summarizer(summary_mode, token_bits, summary_interval_s, self.clock)  # type: ignore[arg-type]
        self._evidence_pub = evidence_pub

    def _load_installed(self) -> None:
        try:
            self.installer.load_installed()
        except HotListError as e:
            # degrade, never crash-loop: run without a list (alarm in status) until a good one arrives
            self.hotlist_error = str(e)
            log.error("installed hot list not usable: %s", e)
        else:
            self.hotlist_error = ""

    @property
    def matcher(self) -> Any:
        return self.installer.active

    def install_list_key(self, payload: bytes) -> dict[str, Any]:
        """A list-key message from hotlist/key (key_source hq); raises UntrustedInput if refused.

        The key is held in RAM only; the installed bundle is loaded with it at once.
        """
        from .listkey import open_for_device
        from .untrusted import UntrustedInput

        if self._device_seal_key is None:
            raise UntrustedInput("hotlist.key_source is file: this device takes no list key over MQTT")
        got = open_for_device(payload, self._device_seal_key, self._signing_pub, self.device_id)
        if self._list_key_issued is not None and got.issued <= self._list_key_issued:
            if got.issued == self._list_key_issued:
                return {"unchanged": True, "issued": got.issued}  # the retained copy after a reconnect
            raise UntrustedInput(f"issued {got.issued}, older than the key held ({self._list_key_issued})")
        self._list_key_issued = got.issued
        self.installer.set_list_key(got.key)
        self._load_installed()
        return {"unchanged": False, "issued": got.issued, "hotlist_loaded": self.installer.active is not None}

    def hotlist_info(self) -> dict[str, Any]:
        hl = self.installer.active
        if hl is None:
            return {"installed": False, "error": self.hotlist_error or None}
        info = hl.info()
        expires = hl.expires.timestamp()
        return {
            "installed": True, "list_id": hl.list_id, "version": hl.version, "entries": len(hl),
            "issued": info.get("issued"), "expires": info.get("expires"),
            "issued_ts": hl.manifest.issued.timestamp(),
            "expired": self.clock.time() >= expires,
        }

    def install_hotlist(self, bundle: bytes) -> dict[str, Any]:
        # refusals are counted per window by the daemon: one audit row per junk message filled disks
        version = self.installer.install(bundle, actor="mqtt:hotlist/set", audit_refusal=False)
        self.hotlist_error = ""
        hl = self.installer.active
        return {"version": version, "entries": len(hl) if hl is not None else 0}

    def put(self, kind: str, key: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        self.store.outbox_put(key, kind, payload, kind)

    def outbox_depth(self) -> int:
        return int(self.store.outbox_depth())

    def seal_evidence(self, hit: Any, frame_image: Any) -> str | None:
        """Plate crop + downscaled frame, sealed to headquarters' key before touching disk."""
        if self._evidence_pub is None or frame_image is None:
            return None
        from .privacy import seal_evidence

        h, w = frame_image.shape[:2]
        box = hit.track.box.pad(0.1, 0.2).clamp(w, h)
        crop = frame_image[box.y : box.y + box.h, box.x : box.x + box.w] if box.area else frame_image[:1, :1]
        scale = min(1.0, EVIDENCE_FRAME_WIDTH / max(1, w))
        small = frame_image
        if scale < 1:
            small = cv2.resize(frame_image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        meta = {"hit_id": hit.hit_id, "ts": hit.track.last_ts, "box": hit.track.box.as_list(),
                "plate": hit.track.text, "camera": hit.track.camera}
        sealed = seal_evidence(self._evidence_pub, _jpeg(np.ascontiguousarray(crop)), _jpeg(small), meta)
        self.store.put_evidence(hit.hit_id, sealed)
        return str(hit.hit_id)

    def note_pass(self, track: Any) -> None:
        self.summarizer.add(track.text, None, track.confidence, False)

    def note_hit(self, hit: Any) -> None:
        self.summarizer.add(hit.track.text, None, hit.track.confidence, True)

    def summary(self, now: float) -> dict[str, Any] | None:
        if now != float("inf") and not self.summarizer.due():
            return None
        body = dict(self.summarizer.flush())
        if self.summarizer.mode == "tokens":  # ratcheted even when a clock step withheld the tokens
            # The token key was just ratcheted and the old one forgotten: an auditor can check that
            # rotation happened on schedule (the key itself never leaves memory). A full disk must
            # not turn a done rotation into an error: the daemon's storage alarm reports the disk.
            try:
                self.audit("summary.key_rotated",
                           {"epoch": body.get("epoch"), "next_epoch": self.summarizer.epoch})
            except StoreError as e:
                log.error("audit entry summary.key_rotated not written: %s", e)
        return body

    def housekeeping(self, now: float) -> None:
        counts = self.store.purge()
        if any(counts.as_dict().values()):
            log.info("purge: %s", counts.as_dict())

    def probe_storage(self) -> None:
        # a real durable write: it fails with StoreError for exactly as long as the disk is full
        self.store.state_set("storage_probe", repr(self.clock.time()))

    def audit(self, event: str, obj: str | dict[str, Any] = "") -> None:
        body = obj if isinstance(obj, dict) else {"detail": obj}
        self.store.audit("alprd", event, body, "daemon lifecycle")

    @property
    def quarantined(self) -> Path | None:
        return self.store.quarantined

    def close(self) -> None:
        self.store.close()
