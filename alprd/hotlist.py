"""Encrypted, signed hot list: CSV parsing, bundle pack/verify, rollback-safe install, in-RAM matching.

A bundle is `magic | manifest | AES-256-GCM ciphertext | Ed25519 signature`. The manifest (JSON) is the
ciphertext's associated data and the signature covers everything before it, so neither can be swapped.
Every pack draws a fresh 256-bit HKDF salt (a fresh AES key) *and* a fresh 96-bit nonce, so a (key,
nonce) pair never repeats even if a random source were to repeat one of them.

The decrypted list lives only in RAM, in a compact columnar form (one bytes object plus a few arrays):
about 50 bytes per entry, so a million entries fit a Pi's budget. Look-alike matching folds every
character to its class representative (O, D, Q -> 0 ...), so an exact *or* look-alike candidate is one
lookup of the folded plate in a sorted array; substitutions are then counted against the entry.
Wildcard entries (`*`, `?`) are few and kept aside, indexed by one literal trigram each.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import hashlib
import json
import logging
import os
import re
import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .clock import Clock, SystemClock
from .errors import HotListError
from .keys import key_id, write_file_atomic

if TYPE_CHECKING:
    from .config import HotlistConfig

log = logging.getLogger(__name__)

FORMAT = "alprd-hotlist/1"
MAGIC = b"ALPRDHL1"
PLAINTEXT_MAGIC = b"ALPRDPT1"
SIG_BYTES = 64
NONCE_BYTES = 12
SALT_BYTES = 32
HKDF_INFO = b"alprd/hotlist/v1|aes-256-gcm"

COLUMNS = ("plate", "reason", "state", "plate_type", "priority", "expires", "source", "case_number", "note")
REQUIRED_COLUMNS = ("plate", "reason")
MAX_LINE_BYTES = 4096
MAX_PLATE_CHARS = 16
MIN_WILDCARD_LITERALS = 3
MAX_FIELD_CHARS = {"reason": 200, "plate_type": 40, "source": 200, "case_number": 100, "note": 500}
MAX_PROBLEMS = 50
DEFAULT_PRIORITY = 50

DEFAULT_LOOKALIKE_CLASSES = ("0ODQ", "1IL", "2Z", "5S", "8B", "6G")
ASSUMED_CHAR_CONFIDENCE = 0.9
"""Per-character confidence assumed when a read carries none (or a count that does not fit its text)."""
LOOKALIKE_ERROR_SHARE = 0.9
"""Share of a misread character that lands on one of its look-alikes rather than on any other symbol."""
CONF_FLOOR, CONF_CEIL = 0.01, 0.999
"""Recognisers are over-confident: no character is ever taken as certain, so p_not_entry is never 0."""

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_PATTERN_CHARS = _ALNUM | {"*", "?"}
_STATE_RE = re.compile(r"^[A-Z0-9-]{1,10}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_KEEP_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")
_M64 = (1 << 64) - 1
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


def normalize_plate(text: str) -> str:
    """Uppercase and drop everything but ASCII letters and digits (`"ab-12 c"` -> `"AB12C"`)."""
    if text.isascii() and text.isalnum():
        return text.upper()
    return (
        _KEEP_NON_ALNUM.sub("", text).upper()
        if text.isascii()
        else "".join(c for c in text.upper() if c in _ALNUM)
    )


# --- entries and CSV -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    plate: str
    """Normalised plate or pattern: A-Z, 0-9, `*` (any run), `?` (one character)."""
    reason: str
    state: str = ""
    plate_type: str = ""
    priority: int = DEFAULT_PRIORITY
    expires: datetime | None = None
    source: str = ""
    case_number: str = ""
    note: str = ""

    @property
    def is_wildcard(self) -> bool:
        return "*" in self.plate or "?" in self.plate


class CsvError(HotListError):
    """The CSV has bad rows; `problems` holds one `file:line: message` per problem."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def _parse_expires(value: str) -> datetime:
    """ISO date or date-time. A date alone means the end of that day (UTC); naive times are UTC."""
    v = value.strip()
    if len(v) == 10:
        d = date.fromisoformat(v)
        return datetime.combine(d + timedelta(days=1), time(0), tzinfo=UTC)
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _pattern_from(raw: str) -> tuple[str, str | None]:
    """Normalise a CSV plate cell; returns (pattern, problem)."""
    up = raw.upper()
    out: list[str] = []
    for c in up:
        if c in _PATTERN_CHARS:
            if c == "*" and out and out[-1] == "*":
                continue  # `**` means the same as `*`
            out.append(c)
        elif c.isalnum():
            return "", (
                f"plate {raw!r} has characters other than A-Z, 0-9, * and ? (the reader never outputs them)"
            )
    plate = "".join(out)
    if not plate:
        return "", "plate is empty"
    if len(plate) > MAX_PLATE_CHARS:
        return "", f"plate is {len(plate)} characters; at most {MAX_PLATE_CHARS}"
    if ("*" in plate or "?" in plate) and sum(c in _ALNUM for c in plate) < MIN_WILDCARD_LITERALS:
        return "", (
            f"wildcard plate {raw!r} has fewer than {MIN_WILDCARD_LITERALS} fixed characters; "
            "it would match a large share of all traffic"
        )
    return plate, None


def _check_bytes(data: bytes, name: str, problems: list[str]) -> list[str]:
    """Split into lines, reporting NUL bytes, over-long lines and non-UTF-8 by line number."""
    if data.startswith(codecs.BOM_UTF8):
        problems.append(f"{name}:1: file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")
        data = data[len(codecs.BOM_UTF8) :]
    raw_lines = data.split(b"\n")
    clean = b"\x00" not in data and max(map(len, raw_lines), default=0) <= MAX_LINE_BYTES + 1
    if clean:
        try:
            return data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            pass
    lines: list[str] = []
    for i, raw in enumerate(raw_lines, 1):
        if len(raw) > MAX_LINE_BYTES + 1:
            problems.append(f"{name}:{i}: line is {len(raw)} bytes long; at most {MAX_LINE_BYTES}")
            lines.append("")
            continue
        if b"\x00" in raw:
            col = raw.index(0) + 1
            problems.append(f"{name}:{i}: NUL byte at column {col}; is this really a CSV text file?")
            lines.append("")
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            problems.append(f"{name}:{i}: not UTF-8 ({e.reason} at column {e.start + 1}); re-save as UTF-8")
            lines.append("")
    return lines


def parse_csv(data: bytes, name: str = "<csv>") -> list[Entry]:
    """Parse a hot-list CSV (header required). Raises CsvError listing every bad row by line number."""
    problems: list[str] = []
    lines = _check_bytes(data, name, problems)
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]

    def add(line: int, msg: str) -> None:
        problems.append(f"{name}:{line}: {msg}")

    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    cols: dict[str, int] = {}
    entries: list[Entry] = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            add(reader.line_num, f"bad CSV quoting ({e})")
            start = reader.line_num + 1
            continue
        line = start
        start = reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            before = len(problems)
            header = [h.strip().lower() for h in row]
            for i, h in enumerate(header):
                if h not in COLUMNS:
                    add(line, f"unknown column {h!r} (known: {', '.join(COLUMNS)})")
                elif h in cols:
                    add(line, f"column {h!r} appears twice")
                else:
                    cols[h] = i
            for req in REQUIRED_COLUMNS:
                if req not in cols:
                    add(line, f"header has no {req!r} column (the first line must be the header)")
            if len(problems) > before:
                break  # rows cannot be checked against a broken header
            continue
        if len(row) != len(header):
            add(line, f"{len(row)} fields, the header has {len(header)}")
            continue
        entry = _row_entry(row, cols, line, add)
        if entry is not None:
            entries.append(entry)
    if header is None and not problems:
        problems.append(f"{name}:1: empty file; the first line must be a header with plate,reason")
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        if more:
            shown.append(f"{name}: ... and {more} more problems")
        raise CsvError(f"{name}: {len(problems)} problem(s); nothing was packed\n" + "\n".join(shown), shown)
    return entries


def _row_entry(
    row: list[str], cols: dict[str, int], line: int, add: Callable[[int, str], None]
) -> Entry | None:
    def get(name: str) -> str:
        i = cols.get(name)
        return row[i].strip() if i is not None else ""

    ok = True
    for name, i in cols.items():
        if _CONTROL_RE.search(row[i]):
            add(line, f"{name}: control characters are not allowed")
            ok = False
    if not ok:
        return None
    plate, problem = _pattern_from(get("plate"))
    if problem:
        add(line, problem)
        ok = False
    reason = get("reason")
    if not reason:
        add(line, "reason is empty (say why the plate is listed)")
        ok = False
    for name, limit in MAX_FIELD_CHARS.items():
        if len(get(name)) > limit:
            add(line, f"{name} is longer than {limit} characters")
            ok = False
    state = get("state").upper()
    if state and not _STATE_RE.match(state):
        add(line, f"state {state!r} is not 1-10 letters, digits or '-'")
        ok = False
    priority = DEFAULT_PRIORITY
    if p := get("priority"):
        if not p.isdigit() or not 0 <= int(p) <= 100:
            add(line, f"priority {p!r} is not a whole number from 0 (highest) to 100")
            ok = False
        else:
            priority = int(p)
    expires = None
    if e := get("expires"):
        try:
            expires = _parse_expires(e)
        except ValueError:
            add(line, f"expires {e!r} is not an ISO date or date-time (e.g. 2026-12-31 or 2026-12-31T18:00Z)")
            ok = False
    if not ok:
        return None
    return Entry(
        plate,
        reason,
        state,
        get("plate_type"),
        priority,
        expires,
        get("source"),
        get("case_number"),
        get("note"),
    )


# --- plaintext encoding ----------------------------------------------------------------------------
# PLAINTEXT_MAGIC | salt(16) | u32 n | u32 width | plates (n x width, NUL-padded) | u32 offsets (n+1)
# | records (UTF-8; fields joined by 0x1f: state, plate_type, priority, expires epoch s, reason,
#   source, case_number, note). The salt keeps the manifest's SHA-256 of the plaintext from confirming
# a guessed list.

_PT_HEAD = struct.Struct("<8s16sII")


def encode_entries(entries: Sequence[Entry]) -> bytes:
    width = max((len(e.plate) for e in entries), default=1)
    plates = b"".join(e.plate.encode("ascii").ljust(width, b"\0") for e in entries)
    records = []
    offsets = array("I", [0])
    pos = 0
    for e in entries:
        exp = "" if e.expires is None else str(int(e.expires.timestamp()))
        rec = "\x1f".join(
            (e.state, e.plate_type, str(e.priority), exp, e.reason, e.source, e.case_number, e.note)
        ).encode("utf-8")
        records.append(rec)
        pos += len(rec)
        offsets.append(pos)
    if pos >= 1 << 32:
        raise HotListError("hot list too large (records exceed 4 GiB)")
    if offsets.itemsize != 4:  # pragma: no cover - every CPython platform we target has 32-bit "I"
        raise HotListError("unsupported platform: array 'I' is not 32 bits")
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian host
        offsets.byteswap()
    head = _PT_HEAD.pack(PLAINTEXT_MAGIC, os.urandom(16), len(entries), width)
    return b"".join((head, plates, offsets.tobytes(), *records))


# --- bundle ----------------------------------------------------------------------------------------


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

    def public(self) -> dict[str, Any]:
        """What `inspect` prints and the audit records: no plates, no secrets."""
        return {
            "format": FORMAT,
            "list_id": self.list_id,
            "version": self.version,
            "issued": _iso(self.issued),
            "expires": _iso(self.expires),
            "entries": self.entries,
            "sha256": self.sha256,
            "key_id": self.key_id,
        }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _subkey(list_key: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(list_key)


def new_nonce_material() -> tuple[bytes, bytes]:
    """A fresh (HKDF salt, AES-GCM nonce) pair from the OS CSPRNG; `pack_bundle` takes one per bundle."""
    return os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)


def encrypt_payload(list_key: bytes, plaintext: bytes, fields: Mapping[str, Any]) -> tuple[bytes, bytes]:
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
            "issued": _iso(issued),
            "expires": _iso(issued + valid_for),
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
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise HotListError(f"manifest is malformed ({type(e).__name__}: {e})") from None


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
            f"bundle expired at {_iso(manifest.expires)} (now {_iso(now)}); ask for a fresh list"
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


# --- matching --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    kind: str
    """"exact", "lookalike" or "wildcard"."""
    reason: str
    priority: int
    list_version: int
    p_not_entry: float
    """Estimated probability that the car is *not* this entry (from per-character confidences)."""
    entry_plate: str
    read_plate: str
    substitutions: int
    state: str
    plate_type: str
    expires: datetime | None
    source: str
    case_number: str
    note: str
    list_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "priority": self.priority,
            "list_id": self.list_id,
            "list_version": self.list_version,
            "p_not_entry": self.p_not_entry,
            "entry_plate": self.entry_plate,
            "read_plate": self.read_plate,
            "substitutions": self.substitutions,
            "state": self.state,
            "plate_type": self.plate_type,
            "expires": None if self.expires is None else _iso(self.expires),
            "source": self.source,
            "case_number": self.case_number,
            "note": self.note,
        }


_KIND_RANK = {"exact": 0, "lookalike": 1, "wildcard": 2}


def _rank(m: Match) -> tuple[int, int, int, float]:
    return (_KIND_RANK[m.kind], m.substitutions, m.priority, m.p_not_entry)


@dataclass(frozen=True, slots=True)
class Lookalike:
    """Look-alike classes (`{0 O D Q}` ...) and the most substitutions a match may need."""

    classes: tuple[str, ...] = DEFAULT_LOOKALIKE_CLASSES
    max_substitutions: int = 1

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for cls in self.classes:
            if len(cls) < 2 or any(c not in _ALNUM for c in cls):
                raise HotListError(f"look-alike class {cls!r} needs 2+ characters from A-Z and 0-9")
            dup = seen & set(cls)
            if dup:
                raise HotListError(f"character {sorted(dup)[0]!r} is in two look-alike classes")
            seen |= set(cls)
        if self.max_substitutions < 0:
            raise HotListError("max_substitutions must be >= 0")


def _word_key(folded: bytes) -> int:
    """64-bit key of a folded plate, identical to `_array_keys` for one row."""
    x = int.from_bytes(folded, "little")
    k = x & _M64
    x >>= 64
    j = 0
    while x:
        k ^= ((x & _M64) * _MIX[j]) & _M64
        x >>= 64
        j += 1
    return k


def _array_keys(folded: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    n, width = folded.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = folded
    w = padded.view("<u8")
    keys = w[:, 0].copy()
    for j in range(1, words):
        keys ^= w[:, j] * np.uint64(_MIX[j - 1])
    return keys


class HotList:
    """A decrypted hot list, held only in RAM. Build with `HotList.from_plaintext` or `load_bundle`."""

    def __init__(
        self,
        manifest: Manifest,
        plaintext: bytes,
        lookalike: Lookalike | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.manifest = manifest
        self.lookalike = lookalike or Lookalike()
        self._clock = clock or SystemClock()
        if len(plaintext) < _PT_HEAD.size:
            raise HotListError("decrypted list is truncated")
        magic, _salt, n, width = _PT_HEAD.unpack_from(plaintext)
        if magic != PLAINTEXT_MAGIC or width < 1 or width > MAX_PLATE_CHARS or n != manifest.entries:
            raise HotListError("decrypted list has an unknown layout or the wrong entry count")
        self._n = n
        self._w = width
        self._plates_at = _PT_HEAD.size
        off_at = self._plates_at + n * width
        self._rec_at = off_at + 4 * (n + 1)
        if len(plaintext) < self._rec_at:
            raise HotListError("decrypted list is truncated (offsets)")
        self._pt = plaintext
        offsets = np.frombuffer(plaintext, dtype="<u4", count=n + 1, offset=off_at)
        bad_order = bool(np.any(np.diff(offsets.astype(np.int64)) < 0))
        if n and (bad_order or self._rec_at + int(offsets[-1]) != len(plaintext)):
            raise HotListError("decrypted list has inconsistent record offsets")
        self._off = array("I", offsets.astype(np.uint32).tobytes())

        fold_map = {c: c for c in _ALNUM}
        size_map = dict.fromkeys(_ALNUM, 1)
        for cls in self.lookalike.classes:
            for c in cls:
                fold_map[c] = cls[0]
                size_map[c] = len(cls)
        self._fold = str.maketrans({c: r for c, r in fold_map.items() if c != r})
        self._class_size = size_map
        lut = np.arange(256, dtype=np.uint8)
        for c, r in fold_map.items():
            lut[ord(c)] = ord(r)

        plates = np.frombuffer(plaintext, dtype=np.uint8, count=n * width, offset=self._plates_at)
        plates = plates.reshape(n, width)
        wild = np.zeros(n, dtype=bool)
        for sym in (b"*", b"?"):
            wild |= (plates == sym[0]).any(axis=1)
        fixed = np.flatnonzero(~wild)
        keys = _array_keys(lut[plates[fixed]])
        order = np.argsort(keys, kind="stable")
        self._keys = array("Q", keys[order].tobytes())
        self._order = array("I", fixed[order].astype(np.uint32).tobytes())
        del keys, order, fixed, plates

        self._wild_grams: dict[str, list[int]] = {}
        self._wild_gram_lens: tuple[int, ...] = ()
        self._wild_re: dict[int, tuple[re.Pattern[str], re.Pattern[str]]] = {}
        self._wild_count = 0
        for eid in np.flatnonzero(wild).tolist():
            self._index_wildcard(int(eid))
        lens = {len(g) for g in self._wild_grams}
        self._wild_gram_lens = tuple(sorted(lens, reverse=True))

    # -- properties --

    def __len__(self) -> int:
        return int(self._n)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def list_id(self) -> str:
        return self.manifest.list_id

    @property
    def expires(self) -> datetime:
        return self.manifest.expires

    @property
    def wildcard_count(self) -> int:
        return self._wild_count

    def _when(self, now: datetime | float | None) -> float:
        if now is None:
            return self._clock.time()
        return now.timestamp() if isinstance(now, datetime) else float(now)

    def stale(self, now: datetime | float | None = None) -> bool:
        """True once the bundle itself has expired: a stale list must not put officers on a car."""
        return self._when(now) >= self.manifest.expires.timestamp()

    def info(self) -> dict[str, Any]:
        return {**self.manifest.public(), "wildcards": self._wild_count}

    # -- storage access --

    def _plate(self, eid: int) -> str:
        a = self._plates_at + eid * self._w
        return self._pt[a : a + self._w].rstrip(b"\0").decode("ascii")

    def _record(self, eid: int) -> list[str]:
        a = self._rec_at + self._off[eid]
        b = self._rec_at + self._off[eid + 1]
        return self._pt[a:b].decode("utf-8").split("\x1f")

    def _index_wildcard(self, eid: int) -> None:
        pattern = self._plate(eid)
        runs = [r for r in re.split(r"[*?]+", pattern) if r]
        longest = max(runs, key=len).translate(self._fold)
        gram = longest[:3]
        self._wild_grams.setdefault(gram, []).append(eid)
        self._wild_count += 1

    def _wild_regexes(self, eid: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
        cached = self._wild_re.get(eid)
        if cached is not None:
            return cached
        pattern = self._plate(eid)
        parts_exact = []
        parts_fold = []
        for tok in re.findall(r"\*|\?|[A-Z0-9]+", pattern):
            if tok == "*":
                parts_exact.append(".*?")
                parts_fold.append(".*?")
            elif tok == "?":
                parts_exact.append(".")
                parts_fold.append(".")
            else:
                parts_exact.append(f"({tok})")
                parts_fold.append(f"({tok.translate(self._fold)})")
        pair = (re.compile("".join(parts_exact)), re.compile("".join(parts_fold)))
        if len(self._wild_re) >= 4096:
            self._wild_re.clear()
        self._wild_re[eid] = pair
        return pair

    # -- matching --

    def match(
        self,
        text: str,
        chars: tuple[float, ...] = (),
        state: str | None = None,
        now: datetime | float | None = None,
    ) -> Match | None:
        """The best match of a read, or None. Expired entries and a stale list never match."""
        found = self.match_all(text, chars, state, now)
        return found[0] if found else None

    def match_all(
        self,
        text: str,
        chars: tuple[float, ...] = (),
        state: str | None = None,
        now: datetime | float | None = None,
    ) -> list[Match]:
        """Every entry the read matches, best first (exact, then look-alike, then wildcard)."""
        norm = normalize_plate(text)
        if not norm:
            return []
        t = self._when(now)
        if t >= self.manifest.expires.timestamp():
            return []
        if len(chars) == len(norm):
            conf: Sequence[float] = chars
        elif len(chars) == len(text) and chars:
            conf = [c for ch, c in zip(text, chars, strict=True) if ch.upper() in _ALNUM]
        else:
            conf = [ASSUMED_CHAR_CONFIDENCE] * len(norm)
        read_state = (state or "").upper()
        folded = norm.translate(self._fold)
        found: list[Match] = []
        if len(norm) <= self._w:
            key = _word_key(folded.encode("ascii"))
            keys = self._keys
            i = bisect.bisect_left(keys, key)
            n = len(keys)
            while i < n and keys[i] == key:
                eid = self._order[i]
                i += 1
                plate = self._plate(eid)
                if len(plate) != len(norm) or plate.translate(self._fold) != folded:
                    continue  # a 64-bit key collision
                subs = [j for j, (a, b) in enumerate(zip(norm, plate, strict=True)) if a != b]
                if len(subs) > self.lookalike.max_substitutions:
                    continue
                m = self._make(eid, plate, norm, conf, subs, None, read_state, t)
                if m is not None:
                    found.append(m)
        if self._wild_grams:
            found.extend(self._match_wild(norm, folded, conf, read_state, t))
        if len(found) > 1:
            found.sort(key=_rank)
        return found

    def _match_wild(
        self, norm: str, folded: str, conf: Sequence[float], read_state: str, t: float
    ) -> list[Match]:
        seen: set[int] = set()
        out: list[Match] = []
        grams = self._wild_grams
        for g in self._wild_gram_lens:
            for a in range(len(folded) - g + 1):
                hits = grams.get(folded[a : a + g])
                if not hits:
                    continue
                for eid in hits:
                    if eid in seen:
                        continue
                    seen.add(eid)
                    exact_re, fold_re = self._wild_regexes(eid)
                    mo = exact_re.fullmatch(norm) or fold_re.fullmatch(folded)
                    if mo is None:
                        continue
                    literal = [
                        j for gi in range(1, (mo.lastindex or 0) + 1) for j in range(mo.start(gi), mo.end(gi))
                    ]
                    subs = [j for j, e in zip(literal, self._literal_chars(eid), strict=True) if norm[j] != e]
                    if len(subs) > self.lookalike.max_substitutions:
                        continue
                    m = self._make(eid, self._plate(eid), norm, conf, subs, literal, read_state, t)
                    if m is not None:
                        out.append(m)
        return out

    def _literal_chars(self, eid: int) -> str:
        return "".join(c for c in self._plate(eid) if c in _ALNUM)

    def _make(
        self,
        eid: int,
        plate: str,
        norm: str,
        conf: Sequence[float],
        subs: list[int],
        literal: list[int] | None,
        read_state: str,
        t: float,
    ) -> Match | None:
        state, plate_type, priority, exp, reason, source, case, note = self._record(eid)
        if exp and t >= int(exp):
            return None
        if state and read_state and state != read_state:
            return None
        p_entry = 1.0
        positions = range(len(norm)) if literal is None else literal
        sub_set = set(subs)
        lit_iter = iter(self._literal_chars(eid)) if literal is not None else iter(plate)
        for j in positions:
            c = min(max(float(conf[j]), CONF_FLOOR), CONF_CEIL)
            e = next(lit_iter)
            if j in sub_set:
                p_entry *= (1.0 - c) * LOOKALIKE_ERROR_SHARE / max(self._class_size.get(e, 2) - 1, 1)
            else:
                p_entry *= c
        kind = "wildcard" if literal is not None else ("exact" if not subs else "lookalike")
        return Match(
            kind=kind,
            reason=reason,
            priority=int(priority),
            list_version=self.manifest.version,
            p_not_entry=round(1.0 - p_entry, 6),
            entry_plate=plate,
            read_plate=norm,
            substitutions=len(subs),
            state=state,
            plate_type=plate_type,
            expires=None if not exp else datetime.fromtimestamp(int(exp), UTC),
            source=source,
            case_number=case,
            note=note,
            list_id=self.manifest.list_id,
        )


def load_bundle(
    bundle: bytes,
    signing_pub: Ed25519PublicKey,
    list_key: bytes,
    now: datetime,
    lookalike: Lookalike | None = None,
    clock: Clock | None = None,
    *,
    check_expiry: bool = True,
) -> HotList:
    """Verify and decrypt a bundle into an in-RAM HotList."""
    manifest, plaintext = verify_bundle(bundle, signing_pub, list_key, now, check_expiry=check_expiry)
    return HotList(manifest, plaintext, lookalike, clock)


# --- install ---------------------------------------------------------------------------------------

STATE_VERSION = "hotlist.version"
STATE_SHA256 = "hotlist.sha256"
STATE_LIST_ID = "hotlist.list_id"


class StateStore(Protocol):
    """What the installer needs from storage (alprd.store.Store provides it)."""

    def state_get(self, key: str) -> str | None: ...

    def commit_state(
        self, updates: Mapping[str, str], actor: str, event: str, obj: Any, purpose: str
    ) -> None: ...

    def audit(self, actor: str, event: str, obj: Any, purpose: str) -> None: ...


class HotListInstaller:
    """Accepts only newer, valid bundles; keeps the previous list active on refusal; audits both.

    Commit order: the bundle file is replaced atomically (fsync'd), then the accepted version and the
    audit entry are committed in one SQLite transaction. A crash before the file replace leaves the old
    state; a crash between the two is completed at the next start (`load_installed`): a verified file
    newer than the recorded version can only come from an interrupted install.
    """

    def __init__(
        self,
        store: StateStore,
        bundle_path: Path,
        signing_pub: Ed25519PublicKey,
        list_key: bytes,
        clock: Clock | None = None,
        lookalike: Lookalike | None = None,
        *,
        actor: str = "alprd",
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self.bundle_path = bundle_path
        self._pub = signing_pub
        self._key = list_key
        self._clock = clock or SystemClock()
        self._lookalike = lookalike or Lookalike()
        self._actor = actor
        self._hook = crash_hook or (lambda stage: None)
        self._lock = threading.Lock()
        self.active: HotList | None = None

    @classmethod
    def from_config(
        cls, section: HotlistConfig, store: StateStore, clock: Clock | None = None, *, actor: str = "alprd"
    ) -> HotListInstaller:
        """Load the device's keys named by the `hotlist:` section (raises KeyFileError)."""
        from .keys import load_list_key, load_signing_pub

        return cls(
            store,
            section.bundle,
            load_signing_pub(section.signing_pub),
            load_list_key(section.list_key),
            clock,
            Lookalike(tuple(section.lookalike_classes), section.lookalike_max),
            actor=actor,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def accepted_version(self) -> int:
        """The highest version ever accepted: the recorded state, or the installed file if newer."""
        v = int(self._store.state_get(STATE_VERSION) or 0)
        try:
            on_disk = read_manifest_unverified(self.bundle_path.read_bytes()).version
        except (OSError, HotListError):
            on_disk = 0
        return max(v, on_disk)

    def load_installed(self) -> HotList | None:
        """Load the installed bundle at start-up; completes an install interrupted before its commit."""
        with self._lock:
            try:
                data = self.bundle_path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise HotListError(
                    f"{self.bundle_path}: cannot read the installed list: {e.strerror}"
                ) from None
            try:
                manifest, plaintext = verify_bundle(
                    data, self._pub, self._key, self._now(), check_expiry=False
                )
                recorded = int(self._store.state_get(STATE_VERSION) or 0)
                if manifest.version < recorded:
                    raise HotListError(
                        f"installed bundle has version {manifest.version}, older than the accepted "
                        f"{recorded}: the file was rolled back; refusing it"
                    )
                if manifest.version > recorded:
                    self._commit(manifest, self._actor, recovered=True)
                if self._now() >= manifest.expires:
                    raise HotListError(
                        f"installed list expired at {_iso(manifest.expires)}; install a fresh bundle"
                    )
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
            except HotListError as e:
                self._store.audit(
                    self._actor,
                    "hotlist.reject",
                    {"reason": str(e), "stage": "load"},
                    "hot-list load at start",
                )
                raise
            self.active = hl
            return hl

    def _commit(self, manifest: Manifest, actor: str, recovered: bool = False) -> None:
        obj = manifest.public()
        if recovered:
            obj["recovered"] = True
        self._store.commit_state(
            {
                STATE_VERSION: str(manifest.version),
                STATE_SHA256: manifest.sha256,
                STATE_LIST_ID: manifest.list_id,
            },
            actor,
            "hotlist.accept",
            obj,
            "hot-list update",
        )

    def install(self, bundle: bytes, actor: str | None = None) -> int:
        """Verify, decrypt and activate `bundle`; returns its version. Raises HotListError with the reason."""
        who = actor or self._actor
        with self._lock:
            version: int | None = None
            try:
                manifest, plaintext = verify_bundle(bundle, self._pub, self._key, self._now())
                version = manifest.version
                last = self.accepted_version()
                if manifest.version <= last:
                    raise HotListError(
                        f"version {manifest.version} is not newer than the accepted version {last}: "
                        "rollback or replay refused"
                    )
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
                del plaintext
                self._hook("decrypted")
                try:
                    write_file_atomic(self.bundle_path, bundle, 0o600)
                except OSError as e:
                    raise HotListError(f"{self.bundle_path}: cannot store the bundle: {e.strerror}") from None
                self._hook("bundle_written")
                self._commit(manifest, who)
                self._hook("committed")
            except HotListError as e:
                obj: dict[str, Any] = {"reason": str(e)}
                if version is not None:
                    obj["version"] = version
                self._store.audit(who, "hotlist.reject", obj, "hot-list update")
                raise
            self.active = hl
            log.info("hot list version %d accepted (%d entries)", manifest.version, len(hl))
            return manifest.version


def entries_from_rows(rows: Iterable[Mapping[str, str]]) -> list[Entry]:
    """Build entries from dict rows through the CSV validator (handy for tests and tools)."""
    lines = [",".join(COLUMNS)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c, "")
            cells.append('"' + v.replace('"', '""') + '"' if any(x in v for x in ',"') else v)
        lines.append(",".join(cells))
    return parse_csv(("\n".join(lines) + "\n").encode("utf-8"), "<rows>")
