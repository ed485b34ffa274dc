"""The bundle: a hot list packed for devices, encrypted to `list.key` and signed by `signing.key`.

A bundle is `magic | manifest | AES-256-GCM ciphertext | Ed25519 signature`. The manifest (JSON) is the
ciphertext's associated data and the signature covers everything before it, so neither can be swapped.
Every pack draws a fresh 256-bit HKDF salt (a fresh AES key) *and* a fresh 96-bit nonce, so a (key,
nonce) pair never repeats even if a random source were to repeat one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ...errors import HotListError
from ...types import iso_z
from ..keys import key_id
from .csv import Entry

FORMAT = "alprd-hotlist/1"
MAGIC = b"ALPRDHL1"
PLAINTEXT_MAGIC = b"ALPRDPT1"
SIG_BYTES = 64
NONCE_BYTES = 12
SALT_BYTES = 32
HKDF_INFO = b"alprd/hotlist/v1|aes-256-gcm"


# --- plaintext encoding ----------------------------------------------------------------------------
# PLAINTEXT_MAGIC | salt(16) | u32 n | u32 width | plates (n x width, NUL-padded) | u32 offsets (n+1)
# | records (UTF-8; fields joined by 0x1f: state, plate_type, priority, expires epoch s, reason,
#   source, case_number, note). The salt keeps the manifest's SHA-256 of the plaintext from confirming
# a guessed list.

PLAINTEXT_HEAD = struct.Struct("<8s16sII")


def encode_entries(entries: Sequence[Entry]) -> bytes:
    width = max((len(e.plate) for e in entries), default=1)
    plates = "".join([e.plate.ljust(width, "\0") for e in entries]).encode("ascii")
    exp_text: dict[datetime, str] = {}
    for e in entries:
        if e.expires is not None and e.expires not in exp_text:
            exp_text[e.expires] = str(int(e.expires.timestamp()))
    records = [
        "\x1f".join(
            (
                e.state,
                e.plate_type,
                str(e.priority),
                "" if e.expires is None else exp_text[e.expires],
                e.reason,
                e.source,
                e.case_number,
                e.note,
            )
        )
        for e in entries
    ]
    blob = "".join(records).encode("utf-8")
    if len(blob) == sum(map(len, records)):  # ASCII: characters are bytes
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    else:
        lengths = np.fromiter((len(r.encode("utf-8")) for r in records), dtype=np.int64, count=len(records))
    if len(blob) >= 1 << 32:
        raise HotListError("hot list too large (records exceed 4 GiB)")
    offsets = np.zeros(len(records) + 1, dtype="<u4")
    offsets[1:] = np.cumsum(lengths)
    head = PLAINTEXT_HEAD.pack(PLAINTEXT_MAGIC, os.urandom(16), len(entries), width)
    return b"".join((head, plates, offsets.tobytes(), blob))


@dataclass(frozen=True, slots=True)
class Manifest:
    list_id: str
    version: int
    issued: datetime
    expires: datetime
    entries: int
    sha256: str
    key_id: str
    salt: bytes
    nonce: bytes
    raw: bytes = field(repr=False, default=b"")

    def public(self) -> dict[str, object]:
        """What `inspect` prints and the audit records: no plates, no secrets."""
        return {
            "format": FORMAT,
            "list_id": self.list_id,
            "version": self.version,
            "issued": iso_z(self.issued),
            "expires": iso_z(self.expires),
            "entries": self.entries,
            "sha256": self.sha256,
            "key_id": self.key_id,
        }


def _canonical(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _subkey(list_key: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(list_key)


def new_nonce_material() -> tuple[bytes, bytes]:
    """A fresh (HKDF salt, AES-GCM nonce) pair from the OS CSPRNG; `pack_bundle` takes one per bundle."""
    return os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)


def encrypt_payload(list_key: bytes, plaintext: bytes, fields: Mapping[str, object]) -> tuple[bytes, bytes]:
    """Seal `plaintext` under a fresh per-bundle key and nonce; returns (header, ciphertext).

    The header (magic, length, manifest) is the AEAD associated data.
    """
    salt, nonce = new_nonce_material()
    manifest = dict(fields)
    manifest.update(
        format=FORMAT,
        cipher="AES-256-GCM",
        kdf="HKDF-SHA256",
        salt=salt.hex(),
        nonce=nonce.hex(),
        key_id=key_id(list_key),
        sha256=hashlib.sha256(plaintext).hexdigest(),
    )
    mbytes = _canonical(manifest)
    header = MAGIC + struct.pack(">I", len(mbytes)) + mbytes
    ciphertext = AESGCM(_subkey(list_key, salt)).encrypt(nonce, plaintext, header)
    return header, ciphertext


def pack_bundle(
    entries: Sequence[Entry],
    *,
    list_key: bytes,
    signing_key: Ed25519PrivateKey,
    version: int,
    issued: datetime,
    valid_for: timedelta,
    list_id: str = "default",
) -> bytes:
    if version < 1:
        raise HotListError("version must be a positive integer that grows with every new list")
    if valid_for <= timedelta(0):
        raise HotListError("valid-for must be positive")
    plaintext = encode_entries(entries)
    header, ciphertext = encrypt_payload(
        list_key,
        plaintext,
        {
            "list_id": list_id,
            "version": version,
            "issued": iso_z(issued),
            "expires": iso_z(issued + valid_for),
            "entries": len(entries),
        },
    )
    body = header + struct.pack(">Q", len(ciphertext)) + ciphertext
    return body + signing_key.sign(body)


def _split(bundle: bytes) -> tuple[memoryview, memoryview, memoryview, memoryview]:
    """(header, manifest json, ciphertext, signed body) of a bundle, checking only its framing."""
    view = memoryview(bundle)
    if len(view) < len(MAGIC) + 4 or bytes(view[: len(MAGIC)]) != MAGIC:
        raise HotListError("not an alprd hot-list bundle (bad magic); was it made by `alprd hotlist pack`?")
    (mlen,) = struct.unpack_from(">I", view, len(MAGIC))
    mend = len(MAGIC) + 4 + mlen
    if mlen > 1 << 16 or len(view) < mend + 8:
        raise HotListError("bundle is truncated (manifest)")
    (clen,) = struct.unpack_from(">Q", view, mend)
    cend = mend + 8 + clen
    if len(view) != cend + SIG_BYTES:
        raise HotListError(
            f"bundle is {len(view)} bytes but its framing says {cend + SIG_BYTES}: truncated or extended"
        )
    return view[:mend], view[len(MAGIC) + 4 : mend], view[mend + 8 : cend], view[:cend]


def _parse_manifest(raw: bytes) -> Manifest:
    try:
        m = json.loads(raw)
        if m.get("format") != FORMAT:
            raise HotListError(f"unsupported bundle format {m.get('format')!r}; this alprd reads {FORMAT}")
        if m.get("cipher") != "AES-256-GCM" or m.get("kdf") != "HKDF-SHA256":
            raise HotListError("unsupported cipher or KDF in the manifest")
        version = m["version"]
        entries = m["entries"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise HotListError("manifest version is not a positive integer")
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 0:
            raise HotListError("manifest entry count is not a non-negative integer")
        salt = bytes.fromhex(m["salt"])
        nonce = bytes.fromhex(m["nonce"])
        if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
            raise HotListError("manifest salt or nonce has the wrong length")
        issued = datetime.fromisoformat(m["issued"])
        expires = datetime.fromisoformat(m["expires"])
        if issued.tzinfo is None or expires.tzinfo is None:
            raise HotListError("manifest times must carry a time zone")
        return Manifest(
            list_id=str(m["list_id"]),
            version=version,
            issued=issued,
            expires=expires,
            entries=entries,
            sha256=str(m["sha256"]),
            key_id=str(m["key_id"]),
            salt=salt,
            nonce=nonce,
            raw=raw,
        )
    except HotListError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, MemoryError) as e:
        raise HotListError(f"manifest is malformed ({type(e).__name__}: {str(e)[:200]})") from None


def read_manifest_unverified(bundle: bytes) -> Manifest:
    """The manifest, checking framing only. Never trust it for a decision that loosens security."""
    _, mraw, _, _ = _split(bundle)
    return _parse_manifest(bytes(mraw))


def verify_bundle(
    bundle: bytes,
    signing_pub: Ed25519PublicKey,
    list_key: bytes,
    now: datetime,
    *,
    check_expiry: bool = True,
) -> tuple[Manifest, bytes]:
    """Check signature, format, expiry and ciphertext; returns (manifest, plaintext). Raises HotListError."""
    header, mraw, ciphertext, body = _split(bundle)
    try:
        signing_pub.verify(bytes(bundle[-SIG_BYTES:]), body)
    except InvalidSignature:
        raise HotListError(
            "signature does not verify with signing.pub: the bundle was forged or damaged, "
            "or signed by another agency key"
        ) from None
    manifest = _parse_manifest(bytes(mraw))
    if check_expiry and now >= manifest.expires:
        raise HotListError(
            f"bundle expired at {iso_z(manifest.expires)} (now {iso_z(now)}); ask for a fresh list"
        )
    ours = key_id(list_key)
    if manifest.key_id != ours:
        raise HotListError(
            f"bundle is encrypted for list key {manifest.key_id}, this device holds {ours}: wrong list.key"
        )
    try:
        plaintext = AESGCM(_subkey(list_key, manifest.salt)).decrypt(manifest.nonce, ciphertext, header)
    except InvalidTag:
        raise HotListError("ciphertext does not decrypt with list.key (damaged, or wrong list.key)") from None
    if hashlib.sha256(plaintext).hexdigest() != manifest.sha256:
        raise HotListError("decrypted list does not match the manifest's SHA-256")
    return manifest, plaintext
