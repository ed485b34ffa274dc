"""Tamper-evident audit chain: each entry carries the SHA-256 of the previous one and an HMAC.

Entry: `{seq, ts, actor, event, object, purpose, prev, mac}`; `prev` is the SHA-256 of the previous
entry's canonical JSON (mac included), `mac` an HMAC-SHA256 of this entry without `mac`, keyed from
the device key. Editing, deleting or reordering entries breaks the chain at that index.

Limits, stated plainly: the MAC key lives on the device, so someone holding the SD card could rewrite
the whole chain consistently. Signed checkpoints (`alprd audit checkpoint`), published off the device,
pin the head hash at a moment in time; a rewritten or truncated chain no longer reaches them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Value = object
"""What an entry's object may be: anything JSON can hold (a dict, as the daemon writes them)."""

GENESIS = "0" * 64
EVENTS = frozenset(
    {
        "start",
        "stop",
        "config",
        "hotlist.accept",
        "hotlist.reject",
        "query",
        "hit",
        "purge",
        "key.rotate",
        "clock.jump",
        "storage.quarantine",
        "evidence.open",
        "refused",
        "hotlist.key",
    }
)
"""The events the privacy core writes or expects; others are accepted but should be added here."""


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    event: str
    object: Value
    purpose: str
    prev: str
    mac: str

    def body(self) -> dict[str, Value]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "event": self.event,
            "object": self.object,
            "purpose": self.purpose,
            "prev": self.prev,
        }

    def as_dict(self) -> dict[str, Value]:
        return {**self.body(), "mac": self.mac}

    def digest(self) -> str:
        """What the next entry's `prev` must be."""
        return hashlib.sha256(canonical(self.as_dict())).hexdigest()


def mac_key(device_key: Ed25519PrivateKey) -> bytes:
    raw = device_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"alprd/audit-mac/v1").derive(raw)


def compute_mac(key: bytes, body: Mapping[str, object]) -> str:
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def make_entry(
    key: bytes, prev: AuditEntry | None, ts: str, actor: str, event: str, obj: object, purpose: str
) -> AuditEntry:
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.digest()
    body = {
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "event": event,
        "object": obj,
        "purpose": purpose,
        "prev": prev_hash,
    }
    return AuditEntry(seq, ts, actor, event, obj, purpose, prev_hash, compute_mac(key, body))


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int
    head: str
    """Digest of the last good entry (GENESIS for an empty chain)."""
    broken_index: int | None = None
    """1-based index (the expected `seq`) of the first entry that does not verify."""
    reason: str = ""


def verify_chain(entries: Iterable[AuditEntry], key: bytes | None) -> VerifyResult:
    """Walk the chain in storage order; `key` None checks only the hash links (an outside auditor)."""
    prev_hash = GENESIS
    count = 0
    for index, e in enumerate(entries, 1):
        if e.seq != index:
            why = "an entry was deleted" if e.seq > index else "entries were reordered or duplicated"
            return VerifyResult(
                False, count, prev_hash, index, f"expected seq {index}, found {e.seq} ({why})"
            )
        if e.prev != prev_hash:
            return VerifyResult(
                False,
                count,
                prev_hash,
                index,
                "prev does not match the previous entry (an entry before it was edited, removed or moved)",
            )
        if key is not None and not hmac.compare_digest(e.mac, compute_mac(key, e.body())):
            return VerifyResult(False, count, prev_hash, index, "MAC does not match: the entry was edited")
        prev_hash = e.digest()
        count = index
    return VerifyResult(True, count, prev_hash)


def make_checkpoint(
    device_key: Ed25519PrivateKey, device_id: str, count: int, head: str, ts: str
) -> dict[str, object]:
    """A statement `device D had `count` audit entries with head hash H at ts`, signed by the device."""
    pub = device_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = {
        "v": 1,
        "device_id": device_id,
        "count": count,
        "head": head,
        "ts": ts,
        "device_pub": base64.b64encode(pub).decode("ascii"),
    }
    sig = device_key.sign(b"alprd/audit-checkpoint/v1|" + canonical(body))
    return {**body, "sig": base64.b64encode(sig).decode("ascii")}


def verify_checkpoint(cp: Mapping[str, object], expected_pub: bytes | None = None) -> bool:
    """Signature check (and, if given, that it was made by `expected_pub`)."""
    try:
        body = {k: cp[k] for k in ("v", "device_id", "count", "head", "ts", "device_pub")}
        pub_b64, sig_b64 = cp["device_pub"], cp["sig"]
        if not isinstance(pub_b64, str) or not isinstance(sig_b64, str):
            return False
        pub_raw = base64.b64decode(pub_b64, validate=True)
        sig = base64.b64decode(sig_b64, validate=True)
        if expected_pub is not None and pub_raw != expected_pub:
            return False
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(
            sig, b"alprd/audit-checkpoint/v1|" + canonical(body)
        )
    except (KeyError, ValueError, TypeError, InvalidSignature):
        return False
    return True
