"""Sealed boxes: hit evidence, queried plates and list keys, sealed to an X25519 public key.

Crop + frame JPEGs and their metadata are sealed to the agency's X25519 `evidence.pub` before they
touch disk (ephemeral X25519 + HKDF-SHA256 + AES-256-GCM, the ECIES/"sealed box" construction built
from `cryptography` primitives). The device keeps no key that opens them; headquarters opens them
with `alprd evidence open`. The same construction seals a queried plate for the audit log
(`seal_text`) and the hot-list key to one device (`alprd.privacy.listkey`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import EvidenceError

EVIDENCE_MAGIC = b"ALPRDEV1"
SEALED_TEXT_MAGIC = b"ALPRDST1"
LIST_KEY_MAGIC = b"ALPRDLK1"
_KEY_ID_BYTES = 8
_HEAD = struct.Struct(">8s8s32s12s")


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def recipient_id(pub: X25519PublicKey) -> bytes:
    return hashlib.sha256(b"alprd/evidence-key/v1|" + _raw(pub)).digest()[:_KEY_ID_BYTES]


def _derive(shared: bytes, eph_pub: bytes, recipient_pub: bytes, magic: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=b"alprd/seal/v1|" + magic
    ).derive(shared)


def _seal(recipient: X25519PublicKey, plaintext: bytes, magic: bytes) -> bytes:
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    key = _derive(eph.exchange(recipient), eph_pub, _raw(recipient), magic)
    nonce = os.urandom(12)
    head = _HEAD.pack(magic, recipient_id(recipient), eph_pub, nonce)
    return head + AESGCM(key).encrypt(nonce, plaintext, head)


def _open(key: X25519PrivateKey, blob: bytes, magic: bytes) -> bytes:
    if len(blob) < _HEAD.size + 16 or blob[:8] != magic:
        raise EvidenceError("not alprd sealed data (bad magic or too short)")
    got_magic, rid, eph_pub, nonce = _HEAD.unpack_from(blob)
    pub = key.public_key()
    if rid != recipient_id(pub):
        raise EvidenceError(
            f"sealed to key {rid.hex()}, this key is {recipient_id(pub).hex()}: use the matching evidence.key"
        )
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        sym = _derive(shared, eph_pub, _raw(pub), got_magic)
        return AESGCM(sym).decrypt(nonce, blob[_HEAD.size :], blob[: _HEAD.size])
    except (InvalidTag, ValueError):
        raise EvidenceError("sealed data does not open with this key (damaged or wrong key)") from None


def seal_evidence(
    evidence_pub: X25519PublicKey, crop_jpeg: bytes, frame_jpeg: bytes, meta: Mapping[str, object]
) -> bytes:
    """Seal a hit's evidence to headquarters' key; the result is what may be written to disk."""
    meta_b = json.dumps(dict(meta), sort_keys=True, separators=(",", ":")).encode("utf-8")
    plaintext = b"".join(
        (
            struct.pack(">I", len(meta_b)),
            meta_b,
            struct.pack(">I", len(crop_jpeg)),
            crop_jpeg,
            frame_jpeg,
        )
    )
    return _seal(evidence_pub, plaintext, EVIDENCE_MAGIC)


def open_evidence(evidence_key: X25519PrivateKey, blob: bytes) -> tuple[bytes, bytes, dict[str, object]]:
    """(crop_jpeg, frame_jpeg, meta) of sealed evidence; raises EvidenceError."""
    pt = _open(evidence_key, blob, EVIDENCE_MAGIC)
    try:
        (mlen,) = struct.unpack_from(">I", pt, 0)
        meta = json.loads(pt[4 : 4 + mlen])
        (clen,) = struct.unpack_from(">I", pt, 4 + mlen)
        crop_at = 8 + mlen
        if crop_at + clen > len(pt) or not isinstance(meta, dict):
            raise ValueError("lengths")
    except (struct.error, ValueError) as e:
        raise EvidenceError(f"evidence opened but its layout is broken ({e})") from None
    return pt[crop_at : crop_at + clen], pt[crop_at + clen :], meta


def seal_text(recipient: X25519PublicKey, text: str) -> str:
    """Seal a short text (e.g. a queried plate for the audit log) to `evidence.pub`; base64 out."""
    return base64.b64encode(_seal(recipient, text.encode("utf-8"), SEALED_TEXT_MAGIC)).decode("ascii")


def open_text(key: X25519PrivateKey, sealed: str) -> str:
    try:
        blob = base64.b64decode(sealed, validate=True)
    except ValueError:
        raise EvidenceError("sealed text is not base64") from None
    return _open(key, blob, SEALED_TEXT_MAGIC).decode("utf-8")


def seal_list_key_blob(device_pub: X25519PublicKey, list_key: bytes) -> bytes:
    """The hot-list key sealed to one device's X25519 key (hotlist.key_source hq; alprd.listkey)."""
    return _seal(device_pub, list_key, LIST_KEY_MAGIC)


def open_list_key_blob(device_key: X25519PrivateKey, blob: bytes) -> bytes:
    return _open(device_key, blob, LIST_KEY_MAGIC)
