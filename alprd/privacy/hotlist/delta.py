"""Delta updates: the entries that changed from list version b to v, signed and encrypted like a bundle.

A 1,000,000-entry bundle is 44 MB; twice a day to 5,000 devices that is 442 GB, where a delta of 1%
of the entries is 100 times less (docs/fleet.md). A delta is
`magic | manifest | AES-256-GCM ciphertext | Ed25519 signature`, framed, keyed and signed exactly as a
bundle (`bundle.py`), with its own magic and format name so that neither can pass for the other.

The public manifest names the list, the new version, the base version and counts, never a plate and
never a digest of a list's content (one could confirm a guessed list). The ciphertext holds the
removed and the added entries, a digest of the base list's content and one of the result's: the
device applies a delta only to exactly the list it was made from, and ends with exactly the list
headquarters meant, or refuses it. An entry is compared whole (its plate and every field), so a
changed entry is one removed and one added. The result's entries are kept in a canonical order
(sorted by their encoding), whatever order the base list had.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import HotListError
from ...types import iso_z
from ..keys import key_id
from .bundle import (
    NONCE_BYTES,
    PLAINTEXT_HEAD,
    PLAINTEXT_MAGIC,
    SALT_BYTES,
    SIG_BYTES,
    Manifest,
    _canonical,
    _subkey,
    encode_entries,
    new_nonce_material,
    verify_bundle,
)
from .csv import Entry

DELTA_FORMAT = "alprd-hotlist-delta/1"
DELTA_MAGIC = b"ALPRDHD1"
DELTA_PLAINTEXT_MAGIC = b"ALPRDDT1"
DIGEST_BYTES = 32
_DELTA_HEAD = struct.Struct(f"<8s{DIGEST_BYTES}s{DIGEST_BYTES}s16sII")
_LEN = struct.Struct("<I")


def is_delta(blob: bytes) -> bool:
    return blob[: len(DELTA_MAGIC)] == DELTA_MAGIC


# --- a list's entries as canonical byte strings -------------------------------------------------------
# One entry = its plate, 0x1e, its record (the bundle's UTF-8 fields joined by 0x1f). A plate is A-Z0-9*?
# only, so the first 0x1e ends it.


def entry_keys(plaintext: bytes) -> list[bytes]:
    """The entries of a decrypted list (bundle plaintext layout), each as one byte string."""
    if len(plaintext) < PLAINTEXT_HEAD.size:
        raise HotListError("decrypted list is truncated")
    magic, _salt, n, width = PLAINTEXT_HEAD.unpack_from(plaintext)
    if magic != PLAINTEXT_MAGIC or width < 1:
        raise HotListError("decrypted list has an unknown layout")
    plates_at = PLAINTEXT_HEAD.size
    off_at = plates_at + n * width
    rec_at = off_at + 4 * (n + 1)
    if len(plaintext) < rec_at:
        raise HotListError("decrypted list is truncated (offsets)")
    offsets = np.frombuffer(plaintext, dtype="<u4", count=n + 1, offset=off_at).tolist()
    if n and (offsets[0] != 0 or rec_at + offsets[-1] != len(plaintext)):
        raise HotListError("decrypted list has inconsistent record offsets")
    # numpy's fixed-width bytes drop the NUL padding as they become Python bytes: one C loop for
    # a million plates instead of a Python one
    plates = np.frombuffer(plaintext, dtype=f"S{width}", count=n, offset=plates_at).tolist()
    blob = plaintext[rec_at:]
    return [p + b"\x1e" + blob[a:b] for p, a, b in zip(plates, offsets, offsets[1:], strict=False)]


def content_digest(ordered: Sequence[bytes], salt: bytes) -> bytes:
    """SHA-256 of a list's content: a random salt, then its entries in canonical (sorted) order, NUL
    between them (no entry holds one: the CSV parser refuses control characters). Salted, and the
    salt travels only inside the ciphertext: an unsalted digest of a list would confirm a guess."""
    return hashlib.sha256(salt + b"\0" + b"\0".join(ordered)).digest()


def encode_keys(ordered: Sequence[bytes], salt: bytes) -> bytes:
    """The bundle plaintext of these entries (already in canonical order), with the given salt."""
    split = [k.partition(b"\x1e") for k in ordered]
    plates = [p for p, _, _ in split]
    records = [r for _, _, r in split]
    width = max((len(p) for p in plates), default=1)
    offsets = np.zeros(len(records) + 1, dtype="<u4")
    offsets[1:] = np.cumsum(np.fromiter(map(len, records), dtype=np.int64, count=len(records)))
    head = PLAINTEXT_HEAD.pack(PLAINTEXT_MAGIC, salt, len(ordered), width)
    return b"".join((head, b"".join(p.ljust(width, b"\0") for p in plates), offsets.tobytes(), *records))


def _pack_keys(keys: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(k)) + k for k in keys)


def _unpack_keys(data: memoryview, at: int, count: int) -> tuple[list[bytes], int]:
    out = []
    for _ in range(count):
        if at + 4 > len(data):
            raise HotListError("delta is truncated (entries)")
        (n,) = _LEN.unpack_from(data, at)
        at += 4
        if at + n > len(data) or n < 2:
            raise HotListError("delta is truncated (entries)")
        out.append(bytes(data[at : at + n]))
        at += n
    return out, at


# --- the delta ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeltaManifest:
    list_id: str
    version: int
    base_version: int
    issued: datetime
    expires: datetime
    entries: int
    removed: int
    added: int
    key_id: str
    salt: bytes
    nonce: bytes
    raw: bytes = field(repr=False, default=b"")

    def public(self) -> dict[str, object]:
        """What the audit records: no plates, no digests of content."""
        return {"format": DELTA_FORMAT, "list_id": self.list_id, "version": self.version,
                "base_version": self.base_version, "issued": iso_z(self.issued),
                "expires": iso_z(self.expires), "entries": self.entries, "removed": self.removed,
                "added": self.added, "key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class DeltaBody:
    base_digest: bytes
    result_digest: bytes
    result_salt: bytes
    removed: list[bytes]
    added: list[bytes]


def pack_delta(
    base_bundle: bytes,
    new_entries: Sequence[Entry],
    *,
    list_key: bytes,
    signing_key: Ed25519PrivateKey,
    version: int,
    issued: datetime,
    valid_for: timedelta,
) -> bytes:
    """The delta from the list in `base_bundle` (made with the same keys) to `new_entries`, as version
    `version` of the same list id. Headquarters keeps the bundle of every version it sent."""
    base, base_pt = verify_bundle(base_bundle, signing_key.public_key(), list_key, issued, check_expiry=False)
    if version <= base.version:
        raise HotListError(f"version {version} must be above the base bundle's {base.version}")
    if valid_for <= timedelta(0):
        raise HotListError("valid-for must be positive")
    old = sorted(entry_keys(base_pt))
    new = sorted(entry_keys(encode_entries(new_entries)))  # through the encoding the devices hold
    old_c, new_c = Counter(old), Counter(new)
    removed, added = sorted((old_c - new_c).elements()), sorted((new_c - old_c).elements())
    salt_for_result = os.urandom(16)  # the result's plaintext salt, and the content digests' salt
    plaintext = b"".join((
        _DELTA_HEAD.pack(DELTA_PLAINTEXT_MAGIC, content_digest(old, salt_for_result),
                         content_digest(new, salt_for_result), salt_for_result, len(removed), len(added)),
        _pack_keys(removed), _pack_keys(added)))
    salt, nonce = new_nonce_material()
    mbytes = _canonical({
        "format": DELTA_FORMAT, "cipher": "AES-256-GCM", "kdf": "HKDF-SHA256", "salt": salt.hex(),
        "nonce": nonce.hex(), "key_id": key_id(list_key), "list_id": base.list_id, "version": version,
        "base_version": base.version, "issued": iso_z(issued), "expires": iso_z(issued + valid_for),
        "entries": len(new), "removed": len(removed), "added": len(added),
    })
    header = DELTA_MAGIC + struct.pack(">I", len(mbytes)) + mbytes
    ciphertext = AESGCM(_subkey(list_key, salt)).encrypt(nonce, plaintext, header)
    body = header + struct.pack(">Q", len(ciphertext)) + ciphertext
    return body + signing_key.sign(body)


def _split(blob: bytes) -> tuple[memoryview, memoryview, memoryview, memoryview]:
    view = memoryview(blob)
    if len(view) < len(DELTA_MAGIC) + 4 or bytes(view[: len(DELTA_MAGIC)]) != DELTA_MAGIC:
        raise HotListError("not an alprd hot-list delta (bad magic)")
    (mlen,) = struct.unpack_from(">I", view, len(DELTA_MAGIC))
    mend = len(DELTA_MAGIC) + 4 + mlen
    if mlen > 1 << 16 or len(view) < mend + 8:
        raise HotListError("delta is truncated (manifest)")
    (clen,) = struct.unpack_from(">Q", view, mend)
    cend = mend + 8 + clen
    if len(view) != cend + SIG_BYTES:
        raise HotListError(f"delta is {len(view)} bytes but its framing says {cend + SIG_BYTES}")
    return view[:mend], view[len(DELTA_MAGIC) + 4 : mend], view[mend + 8 : cend], view[:cend]


def _parse_manifest(raw: bytes) -> DeltaManifest:
    try:
        m = json.loads(raw)
        if m.get("format") != DELTA_FORMAT:
            raise HotListError(
                f"unsupported delta format {m.get('format')!r}; this alprd reads {DELTA_FORMAT}")
        if m.get("cipher") != "AES-256-GCM" or m.get("kdf") != "HKDF-SHA256":
            raise HotListError("unsupported cipher or KDF in the delta manifest")
        ints = {k: m[k] for k in ("version", "base_version", "entries", "removed", "added")}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
            raise HotListError("delta manifest counts and versions must be non-negative integers")
        if not 1 <= ints["base_version"] < ints["version"]:
            raise HotListError("delta manifest versions must satisfy 1 <= base_version < version")
        salt, nonce = bytes.fromhex(m["salt"]), bytes.fromhex(m["nonce"])
        if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
            raise HotListError("delta manifest salt or nonce has the wrong length")
        issued, expires = datetime.fromisoformat(m["issued"]), datetime.fromisoformat(m["expires"])
        if issued.tzinfo is None or expires.tzinfo is None:
            raise HotListError("delta manifest times must carry a time zone")
        return DeltaManifest(list_id=str(m["list_id"]), issued=issued, expires=expires,
                             key_id=str(m["key_id"]), salt=salt, nonce=nonce, raw=raw, **ints)
    except HotListError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, MemoryError) as e:
        raise HotListError(f"delta manifest is malformed ({type(e).__name__}: {str(e)[:200]})") from None


def read_delta_manifest_unverified(blob: bytes) -> DeltaManifest:
    """The manifest, checking framing only. Never trust it for a decision that loosens security."""
    return _parse_manifest(bytes(_split(blob)[1]))


def verify_delta(
    blob: bytes, signing_pub: Ed25519PublicKey, list_key: bytes, now: datetime, *, check_expiry: bool = True
) -> tuple[DeltaManifest, DeltaBody]:
    """Signature, format, expiry, key and ciphertext of a delta; raises HotListError."""
    header, mraw, ciphertext, body = _split(blob)
    try:
        signing_pub.verify(bytes(blob[-SIG_BYTES:]), body)
    except InvalidSignature:
        raise HotListError("delta signature does not verify with signing.pub: forged or damaged") from None
    manifest = _parse_manifest(bytes(mraw))
    if check_expiry and now >= manifest.expires:
        raise HotListError(f"delta expired at {iso_z(manifest.expires)} (now {iso_z(now)})")
    if manifest.key_id != key_id(list_key):
        raise HotListError(f"delta is encrypted for list key {manifest.key_id}, not this device's")
    try:
        pt = AESGCM(_subkey(list_key, manifest.salt)).decrypt(manifest.nonce, ciphertext, header)
    except InvalidTag:
        raise HotListError("delta does not decrypt with list.key (damaged, or wrong list.key)") from None
    if len(pt) < _DELTA_HEAD.size:
        raise HotListError("delta is truncated")
    magic, base_digest, result_digest, result_salt, n_removed, n_added = _DELTA_HEAD.unpack_from(pt)
    if magic != DELTA_PLAINTEXT_MAGIC or (n_removed, n_added) != (manifest.removed, manifest.added):
        raise HotListError("delta content does not match its manifest")
    view = memoryview(pt)
    removed, at = _unpack_keys(view, _DELTA_HEAD.size, n_removed)
    added, at = _unpack_keys(view, at, n_added)
    if at != len(pt):
        raise HotListError("delta has trailing bytes")
    return manifest, DeltaBody(base_digest, result_digest, result_salt, removed, added)


def apply_delta(base_plaintext: bytes, manifest: DeltaManifest, body: DeltaBody) -> bytes:
    """The result list's plaintext (bundle layout); raises HotListError unless the base is exactly the
    list the delta was made from and the result exactly the one it was made for."""
    base = sorted(entry_keys(base_plaintext))
    if content_digest(base, body.result_salt) != body.base_digest:
        raise HotListError(
            f"the active list is not the version-{manifest.base_version} list this delta was made "
            "from: send the full bundle")
    counts = Counter(base)
    counts.subtract(body.removed)
    if any(c < 0 for c in counts.values()):
        raise HotListError("delta removes an entry the list does not hold")
    counts.update(body.added)
    result = sorted(counts.elements())
    if len(result) != manifest.entries or content_digest(result, body.result_salt) != body.result_digest:
        raise HotListError("the list after the delta is not the one headquarters signed for")
    return encode_keys(result, body.result_salt)


def result_manifest(delta: DeltaManifest, plaintext: bytes) -> Manifest:
    """The manifest the active list carries after a delta (for `HotList`, `info` and the audit)."""
    return Manifest(list_id=delta.list_id, version=delta.version, issued=delta.issued, expires=delta.expires,
                    entries=delta.entries, sha256=hashlib.sha256(plaintext).hexdigest(), key_id=delta.key_id,
                    salt=delta.salt, nonce=delta.nonce, raw=delta.raw)
