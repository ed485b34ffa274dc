"""What may leave the device about non-hits, and how hit evidence is sealed before it touches disk.

Summaries. `counts` mode (default) reports per-window read/hit counts and a confidence histogram: no
per-plate data at all. `tokens` mode adds `Trunc_b(HMAC-SHA256(K_e, "alprd/v1|" + state + "|" + plate))`
per non-hit pass, so the back office can count distinct vehicles in a window. `K_0` is random at start
and lives only in RAM; every flush ratchets it with HKDF and discards the old key, so a device seized
later cannot recompute earlier tokens, and tokens never link across windows or restarts. An unkeyed
hash of a plate is never used anywhere: a GPU enumerates every 7-character plate in seconds.

Evidence. Crop + frame JPEGs and their metadata are sealed to the agency's X25519 `evidence.pub`
(ephemeral X25519 + HKDF-SHA256 + AES-256-GCM, the ECIES/"sealed box" construction built from
`cryptography` primitives). The device keeps no key that opens them; headquarters opens them with
`alprd evidence open`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Mapping
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .clock import Clock, SystemClock
from .errors import EvidenceError

SummaryMode = Literal["counts", "tokens"]
TOKEN_BITS = (16, 18, 64)
TOKEN_DOMAIN = b"alprd/v1|"
RATCHET_INFO = b"alprd/v1|token-ratchet"
CONFIDENCE_BINS = 10
CLOCK_TOLERANCE_S = 1.0
"""Wall-clock slew within a window that is not taken as the clock being set back."""

EVIDENCE_MAGIC = b"ALPRDEV1"
SEALED_TEXT_MAGIC = b"ALPRDST1"
LIST_KEY_MAGIC = b"ALPRDLK1"
_KEY_ID_BYTES = 8
_HEAD = struct.Struct(">8s8s32s12s")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def _normalize(text: str) -> str:
    return _NON_ALNUM.sub("", text).upper()


# --- summaries -----------------------------------------------------------------------------------


class Summarizer:
    """Per-window statistics of closed passes; `flush()` returns the JSON-able summary of the window."""

    def __init__(
        self,
        mode: SummaryMode = "counts",
        token_bits: int = 16,
        interval_s: float = 900.0,
        clock: Clock | None = None,
    ) -> None:
        if mode not in ("counts", "tokens"):
            raise ValueError(f"summary mode must be counts or tokens, not {mode!r}")
        if token_bits not in TOKEN_BITS:
            raise ValueError(f"token_bits must be one of {TOKEN_BITS}")
        self.mode: SummaryMode = mode
        self.token_bits = token_bits
        self.interval_s = float(interval_s)
        self._clock = clock or SystemClock()
        self.epoch = 0
        self._key = bytearray(os.urandom(32)) if mode == "tokens" else bytearray()
        self._floor: float | None = None
        """The end of the last window that went out: a later window must start after it."""
        self._reset()

    def _reset(self) -> None:
        self._start = self._clock.time()
        self._start_mono = self._clock.monotonic()
        self._reads = 0
        self._hits = 0
        self._hist = [0] * CONFIDENCE_BINS
        self._tokens: dict[int, int] = {}

    def token(self, plate: str, state: str | None) -> str:
        """The current epoch's token for a plate (hex, `token_bits` wide)."""
        if self.mode != "tokens":
            raise ValueError("tokens are only computed in tokens mode")
        return self._fmt(self._token_int(_normalize(plate), (state or "").upper()))

    def _token_int(self, plate: str, state: str) -> int:
        msg = TOKEN_DOMAIN + state.encode("utf-8") + b"|" + plate.encode("utf-8")
        digest = hmac.new(bytes(self._key), msg, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") >> (64 - self.token_bits)

    def _fmt(self, value: int) -> str:
        return f"{value:0{-(-self.token_bits // 4)}x}"

    def add(self, read_text: str, state: str | None, confidence: float, hit: bool) -> None:
        """Count one closed pass. In tokens mode a non-hit's token is taken now; the text is not kept."""
        self._reads += 1
        c = min(max(float(confidence), 0.0), 1.0)
        self._hist[min(int(c * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)] += 1
        if hit:
            self._hits += 1
        elif self.mode == "tokens" and not (self._floor is not None and self._clock.time() < self._floor):
            plate = _normalize(read_text)
            if plate:
                t = self._token_int(plate, (state or "").upper())
                self._tokens[t] = self._tokens.get(t, 0) + 1

    def due(self) -> bool:
        return self._clock.monotonic() - self._start_mono >= self.interval_s

    def flush(self) -> dict[str, Any]:
        """Close the window: the summary, then (tokens mode) ratchet the key and forget the old one.

        A wall clock set back (2 h once gave two windows of tokens over the same hours, one ending
        before it started) must not make windows overlap: the window's start is then taken from the
        monotonic clock, and tokens are withheld (counts only) until the wall clock passes the end of
        the last window that went out, so no two token sets ever claim the same time.
        """
        end = self._clock.time()
        lasted = max(0.0, self._clock.monotonic() - self._start_mono)
        wall = end - self._start
        stepped = wall < 0.0 or wall < lasted - CLOCK_TOLERANCE_S
        start = end - lasted if stepped else self._start
        if self._floor is not None and start < self._floor - CLOCK_TOLERANCE_S:
            stepped = True
        tokens = self.mode == "tokens" and not stepped
        out: dict[str, Any] = {
            "v": 1,
            "mode": "tokens" if tokens else "counts",
            "epoch": self.epoch,
            "start": round(start, 3),
            "end": round(end, 3),
            "reads": self._reads,
            "hits": self._hits,
            "confidence_hist": list(self._hist),
        }
        if tokens:
            out["token_bits"] = self.token_bits
            out["tokens"] = {self._fmt(t): n for t, n in sorted(self._tokens.items())}
        elif self.mode == "tokens":
            out["tokens_withheld"] = "the wall clock went back; tokens resume once it passes the last window"
        if self.mode == "tokens":
            self._ratchet()
        self._floor = end if self._floor is None else max(self._floor, end)
        self.epoch += 1
        self._reset()
        return out

    def _ratchet(self) -> None:
        new = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=RATCHET_INFO).derive(
            bytes(self._key)
        )
        # Overwrite in place: the old key must not linger in this object (CPython may still hold the
        # transient copy passed to HKDF until it is collected; that is as far as Python lets us go).
        for i in range(len(self._key)):
            self._key[i] = 0
        self._key = bytearray(new)


# --- sealing ---------------------------------------------------------------------------------------


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
    evidence_pub: X25519PublicKey, crop_jpeg: bytes, frame_jpeg: bytes, meta: Mapping[str, Any]
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


def open_evidence(evidence_key: X25519PrivateKey, blob: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
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
