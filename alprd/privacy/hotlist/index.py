"""Encrypted, signed hot list: CSV parsing, bundle pack/verify, rollback-safe install, in-RAM matching.

A bundle is `magic | manifest | AES-256-GCM ciphertext | Ed25519 signature`. The manifest (JSON) is the
ciphertext's associated data and the signature covers everything before it, so neither can be swapped.
Every pack draws a fresh 256-bit HKDF salt (a fresh AES key) *and* a fresh 96-bit nonce, so a (key,
nonce) pair never repeats even if a random source were to repeat one of them.

The decrypted list lives only in RAM, in a compact columnar form (one bytes object plus a few arrays):
about 50 bytes per entry, so a million entries fit a Pi's budget. Look-alike matching folds every
character to its class representative (O, D, Q -> 0 ...), so an exact *or* look-alike candidate is one
lookup of the folded plate in a sorted array; substitutions are then counted against the entry.
Wildcard entries (`*`, `?`) are few and kept aside, indexed by one short literal run each.
"""

from __future__ import annotations

import codecs
import csv
import ctypes
import ctypes.util
import gc
import hashlib
import json
import logging
import math
import operator
import os
import re
import struct
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .clock import Clock, SystemClock
from .errors import HotListError, KeyFileError, StoreError
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
WILDCARD_GRAM = 4
MIN_WILDCARD_RUN = 3
MAX_EXPANDED_UNKNOWNS = 2
"""Wildcard entries are indexed by (up to) this many characters of their longest literal run."""
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
_FINAL = 0xFF51AFD7ED558CCD


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


class Entry(NamedTuple):
    """One hot-list row (a NamedTuple: a million of them are built at pack time)."""

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
    if "*" in plate or "?" in plate:
        if sum(c in _ALNUM for c in plate) < MIN_WILDCARD_LITERALS:
            return "", (
                f"wildcard plate {raw!r} has fewer than {MIN_WILDCARD_LITERALS} fixed characters; "
                "it would match a large share of all traffic"
            )
        if wildcard_kind(plate) == "vague":
            return "", (
                f"wildcard plate {raw!r} is too vague: give 3 fixed characters in a row, or start or end "
                "it with 4 characters holding at most one '?', or use only '?' (at most two)"
            )
    return plate, None


def wildcard_kind(pattern: str) -> str:
    """How a wildcard entry is indexed (see `_wildcard_keys`); "vague" ones are refused at pack time."""
    return _wildcard_keys(pattern, "")[0]


def _wildcard_keys(pattern: str, symbols: str) -> tuple[str, list[str]]:
    """(kind, index keys) of a wildcard pattern, in the folded alphabet `symbols`.

    In order of preference (a dict key costs ~80 bytes of RAM, an expanded key 12; a key that a random
    read hits often costs a pattern comparison on every such read):
    - "expand": no `*` and one `?`: its 27 fillings go into the main index (free at read time).
    - "run": a run of 4+ fixed characters; key = its first 4, found anywhere in the read.
    - "window": the first (`^`) or last (`$`) 3 or 4 characters, with at most one `?` among 4 (or
      none among 3), keyed by each filling: `7?B2*` is keyed by `^7xB2` for every x.
    - "run" of exactly 3 characters, anywhere (`*ABC*`).
    - "expand" for `?`-only patterns with two `?` (27^2 fillings).
    - "vague": none of these (`*A?B*`, `A?B?C*`): it would have to be tried against every read.
    """
    unknowns = pattern.count("?")
    if "*" not in pattern and unknowns <= 1:
        return "expand", []
    runs = [r for r in re.split(r"[*?]+", pattern) if r]
    longest = max(runs, key=len, default="")
    if len(longest) >= WILDCARD_GRAM:
        return "run", [longest[:WILDCARD_GRAM]]
    segments = pattern.split("*")
    for anchor, seg in (("^", segments[0]), ("$", segments[-1])):
        window = seg[:4] if anchor == "^" else seg[-4:]
        if len(window) == 4 and window.count("?") <= 1:
            return "window", sorted({anchor + window.replace("?", c) for c in symbols or "?"})
    for anchor, seg in (("^", segments[0]), ("$", segments[-1])):
        window = seg[:3] if anchor == "^" else seg[-3:]
        if len(window) == 3 and "?" not in window:
            return "window", [anchor + window]
    if len(longest) >= MIN_WILDCARD_RUN:
        return "run", [longest]
    if "*" not in pattern and unknowns <= MAX_EXPANDED_UNKNOWNS:
        return "expand", []
    return "vague", []


def _check_bytes(data: bytes, name: str, problems: list[str]) -> list[str]:
    """Split into lines, reporting NUL bytes, over-long lines and non-UTF-8 by line number."""
    if data.startswith(codecs.BOM_UTF8):
        problems.append(f"{name}:1: file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" not in data:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            fast = text.split("\n")
            longest = max(map(len, fast), default=0)
            # pure ASCII: characters are bytes; otherwise a character is at most 4 bytes
            if longest <= MAX_LINE_BYTES + 1 and (len(data) == len(text) or 4 * longest <= MAX_LINE_BYTES):
                return fast
    raw_lines = data.split(b"\n")
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
    if b"\r" in data:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]

    def add(line: int, msg: str) -> None:
        problems.append(f"{name}:{line}: {msg}")

    # one pass over the whole text; rows are checked one by one only if it finds something
    check_controls = _CONTROL_RE.search("".join(lines)) is not None
    reader = csv.reader(lines, strict=True)
    before = len(problems)
    header = _read_header(reader, add)
    entries: list[Entry] = []
    if header is not None and len(problems) == before:
        cols = {h: i for i, h in enumerate(header)}
        parse_row = _RowParser(cols, add, check_controls)
        width = len(header)
        append = entries.append
        # a million new tuples would trigger the cyclic GC thousands of times; they hold no cycles
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            _read_rows(reader, parse_row, width, append, add)
        finally:
            if gc_was_on:
                gc.enable()
    if header is None and not problems:
        problems.append(f"{name}:1: empty file; the first line must be a header with plate,reason")
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        if more:
            shown.append(f"{name}: ... and {more} more problems")
        raise CsvError(f"{name}: {len(problems)} problem(s); nothing was packed\n" + "\n".join(shown), shown)
    return entries


def _read_rows(
    reader: Any,
    parse_row: _RowParser,
    width: int,
    append: Callable[[Entry], None],
    add: Callable[[int, str], None],
) -> None:
    start = reader.line_num + 1
    while True:
        try:
            for row in reader:
                line = start
                start = reader.line_num + 1
                if len(row) != width:
                    if row and (len(row) > 1 or row[0].strip()):
                        add(line, f"{len(row)} fields, the header has {width}")
                    continue
                entry = parse_row(row, line)
                if entry is not None:
                    append(entry)
            return
        except csv.Error as e:
            add(reader.line_num, f"bad CSV quoting ({e})")
            start = reader.line_num + 1


def _read_header(reader: Any, add: Callable[[int, str], None]) -> list[str] | None:
    """The first non-blank row, checked; None if there is none."""
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return None
        except csv.Error as e:
            add(reader.line_num, f"bad CSV quoting ({e})")
            start = reader.line_num + 1
            continue
        line = start
        start = reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        header = [h.strip().lower() for h in row]
        seen: set[str] = set()
        for h in header:
            if h not in COLUMNS:
                add(line, f"unknown column {h!r} (known: {', '.join(COLUMNS)})")
            elif h in seen:
                add(line, f"column {h!r} appears twice")
            seen.add(h)
        for req in REQUIRED_COLUMNS:
            if req not in seen:
                add(line, f"header has no {req!r} column (the first line must be the header)")
        return header


class _RowParser:
    """Validates rows; caches repeated values (reasons, states, dates) so a million rows stay cheap."""

    def __init__(self, cols: dict[str, int], add: Callable[[int, str], None], check_controls: bool) -> None:
        # absent columns read the empty cell appended to every row
        self.width = max(cols.values()) + 1
        self.get = operator.itemgetter(*(cols.get(c, self.width) for c in COLUMNS))
        self.cols = cols
        self.add = add
        self.check_controls = check_controls
        self.shared: dict[str, str] = {}
        self.dates: dict[str, datetime] = {}
        self.states: dict[str, str] = {}
        self.priorities = {str(i): i for i in range(101)}

    def __call__(self, row: list[str], line: int) -> Entry | None:
        add = self.add
        if self.check_controls:
            bad = [name for name, i in self.cols.items() if _CONTROL_RE.search(row[i])]
            if bad:
                add(line, f"{', '.join(bad)}: control characters are not allowed")
                return None
        row.append("")
        raw_plate, reason, state, plate_type, prio, exp, source, case, note = map(str.strip, self.get(row))
        ok = True
        up = raw_plate.upper()
        if up.isascii() and up.isalnum() and len(up) <= MAX_PLATE_CHARS:
            plate = up
        else:
            plate, problem = _pattern_from(raw_plate)
            if problem:
                add(line, problem)
                ok = False
        if not reason:
            add(line, "reason is empty (say why the plate is listed)")
            ok = False
        if len(reason) + len(plate_type) + len(source) + len(case) + len(note) > 40:
            for name, value in (
                ("reason", reason),
                ("plate_type", plate_type),
                ("source", source),
                ("case_number", case),
                ("note", note),
            ):
                if len(value) > MAX_FIELD_CHARS[name]:
                    add(line, f"{name} is longer than {MAX_FIELD_CHARS[name]} characters")
                    ok = False
        if state:
            known = self.states.get(state)
            if known is not None:
                state = known
            elif _STATE_RE.match(state.upper()):
                state = self.states[state] = state.upper()
            else:
                add(line, f"state {state.upper()!r} is not 1-10 letters, digits or '-'")
                ok = False
        priority = DEFAULT_PRIORITY
        if prio:
            p = self.priorities.get(prio)
            if p is None and prio.isascii() and prio.isdigit() and int(prio) <= 100:
                p = int(prio)  # "007"
            if p is None:
                add(line, f"priority {prio!r} is not a whole number from 0 (highest) to 100")
                ok = False
            else:
                priority = p
        expires = None
        if exp:
            expires = self.dates.get(exp)
            if expires is None:
                try:
                    expires = self.dates[exp] = _parse_expires(exp)
                except ValueError:
                    add(
                        line,
                        f"expires {exp!r} is not an ISO date or date-time (2026-12-31, 2026-12-31T18:00Z)",
                    )
                    ok = False
        if not ok:
            return None
        sh = self.shared
        return Entry(
            plate,
            sh.setdefault(reason, reason),
            state,
            sh.setdefault(plate_type, plate_type),
            priority,
            expires,
            sh.setdefault(source, source),
            case,
            sh.setdefault(note, note),
        )


# --- plaintext encoding ----------------------------------------------------------------------------
# PLAINTEXT_MAGIC | salt(16) | u32 n | u32 width | plates (n x width, NUL-padded) | u32 offsets (n+1)
# | records (UTF-8; fields joined by 0x1f: state, plate_type, priority, expires epoch s, reason,
#   source, case_number, note). The salt keeps the manifest's SHA-256 of the plaintext from confirming
# a guessed list.

_PT_HEAD = struct.Struct("<8s16sII")


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
    head = _PT_HEAD.pack(PLAINTEXT_MAGIC, os.urandom(16), len(entries), width)
    return b"".join((head, plates, offsets.tobytes(), blob))


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
    if len(folded) <= 8:
        return (x * _FINAL) & _M64
    k = x & _M64
    x >>= 64
    j = 0
    while x:
        k ^= ((x & _M64) * _MIX[j]) & _M64
        x >>= 64
        j += 1
    return (k * _FINAL) & _M64  # odd multiplier: a bijection that spreads the top bits for bucketing


def _array_keys(folded: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    n, width = folded.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = folded
    w = padded.view("<u8")
    keys = w[:, 0].copy()
    for j in range(1, words):
        keys ^= w[:, j] * np.uint64(_MIX[j - 1])
    keys *= np.uint64(_FINAL)
    return keys


def release_memory() -> None:
    """Hand freed heap pages back to the OS.

    Building the index frees tens of MB of temporaries; glibc keeps such pages mapped (we measured
    ~60 MB more RSS for a million entries without this). Best effort: a no-op without glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Wild(NamedTuple):
    eid: int
    pattern: str
    folded: str
    min_len: int
    star: bool


def _seg_at(seg: str, text: str, k: int) -> bool:
    """Does `seg` (`?` = any one character) match `text` at offset k?"""
    if "?" not in seg:
        return text.startswith(seg, k)
    return all(c == "?" or text[k + i] == c for i, c in enumerate(seg))


def _seg_find(seg: str, text: str, lo: int, hi: int) -> int:
    """Leftmost k in [lo, hi - len(seg)] where `seg` matches, or -1."""
    if "?" not in seg:
        return text.find(seg, lo, hi)
    for k in range(lo, hi - len(seg) + 1):
        if _seg_at(seg, text, k):
            return k
    return -1


def _glob_align(pattern: str, text: str) -> list[int] | None:
    """Positions in `text` of `pattern`'s literal characters for one full match, or None.

    `*` is any run, `?` one character. The first and last segments are anchored; the ones between
    are taken leftmost, which finds a match whenever one exists (each `*` absorbs the rest).
    """
    n = len(text)
    segs = pattern.split("*")
    first = segs[0]
    if len(segs) == 1:
        if len(first) != n or not _seg_at(first, text, 0):
            return None
        return [i for i, c in enumerate(first) if c != "?"]
    last = segs[-1]
    tail = n - len(last)
    if len(first) > tail or not _seg_at(first, text, 0) or not _seg_at(last, text, tail):
        return None
    lit = [i for i, c in enumerate(first) if c != "?"]
    pos = len(first)
    for seg in segs[1:-1]:
        if not seg:
            continue
        k = _seg_find(seg, text, pos, tail)
        if k < 0:
            return None
        lit.extend(k + i for i, c in enumerate(seg) if c != "?")
        pos = k + len(seg)
    lit.extend(tail + i for i, c in enumerate(last) if c != "?")
    return lit


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
        if sys.byteorder == "little":  # read the offsets in place: no copy of 4 bytes per entry
            self._off: Sequence[int] = memoryview(plaintext)[off_at : off_at + 4 * (n + 1)].cast("I")
        else:  # pragma: no cover - no big-endian target
            self._off = array("I", offsets.astype(np.uint32).tobytes())

        fold_map = {c: c for c in _ALNUM}
        size_map = dict.fromkeys(_ALNUM, 2)  # a character in no class: any substitution counts as 1 of 1
        for cls in self.lookalike.classes:
            for c in cls:
                fold_map[c] = cls[0]
                size_map[c] = len(cls)
        self._fold = str.maketrans({c: r for c, r in fold_map.items() if c != r})
        src = "".join(c for c, r in fold_map.items() if c != r)
        self._fold_b = bytes.maketrans(src.encode(), src.translate(self._fold).encode())
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
        self._wild_grams: dict[bytes, list[_Wild]] = {}
        self._wild_scan: list[_Wild] = []
        expand: list[int] = []
        symbols = "".join(sorted(set(fold_map.values())))
        wild_ids = np.flatnonzero(wild)
        # one `?` and no `*` (the usual partial plate): expanded below, without per-entry Python work
        single = (plates[wild_ids] == ord("?")).sum(axis=1) == 1
        single &= ~(plates[wild_ids] == ord("*")).any(axis=1)
        self._wild_count = len(wild_ids)
        for eid in wild_ids[~single].tolist():
            if self._index_wildcard(eid, symbols) == "expand":
                expand.append(eid)
        # A `?` among a few fixed characters has no run to index by; instead every filling of its
        # `?`s (27 or 27^2 folded symbols) goes into the main index, so it costs a read nothing.
        codes = np.frombuffer(symbols.encode("ascii"), dtype=np.uint8)
        rows = [lut[plates[fixed]]]
        eids = [fixed.astype(np.uint32)]
        ones = wild_ids[single]
        if len(ones):
            block = np.repeat(lut[plates[ones]], len(codes), axis=0)
            qpos = np.argmax(plates[ones] == ord("?"), axis=1)
            block[np.arange(len(block)), np.repeat(qpos, len(codes))] = np.tile(codes, len(ones))
            rows.append(block)
            eids.append(np.repeat(ones.astype(np.uint32), len(codes)))
        for eid in expand:
            row = lut[plates[eid]]
            qpos = np.flatnonzero(row == ord("?"))
            fill = np.array(np.meshgrid(*([codes] * len(qpos)), indexing="ij")).reshape(len(qpos), -1).T
            block = np.repeat(row[None, :], len(fill), axis=0)
            block[:, qpos] = fill
            rows.append(block)
            eids.append(np.full(len(block), eid, dtype=np.uint32))
        keys = _array_keys(np.concatenate(rows) if len(rows) > 1 else rows[0])
        all_eids = np.concatenate(eids) if len(eids) > 1 else eids[0]
        del rows, eids
        order = np.argsort(keys)
        sorted_keys = keys[order]
        # Direct bucket table on the top bits (about one key per bucket) instead of a 20-step bisect.
        bits = max(4, len(sorted_keys).bit_length() - 1)
        self._shift = 64 - bits
        top = sorted_keys >> np.uint64(self._shift)
        starts = np.zeros((1 << bits) + 1, dtype=np.int64)
        np.cumsum(np.bincount(top.astype(np.int64), minlength=1 << bits), out=starts[1:])
        self._starts = array("I", starts.astype(np.uint32).tobytes())
        self._keys = array("Q", sorted_keys.tobytes())
        self._order = array("I", all_eids[order].astype(np.uint32).tobytes())
        del keys, order, fixed, plates, all_eids, sorted_keys, top, starts
        # anchored keys live in their own dicts, without the marker: the read's own prefix and suffix
        # are then plain slices
        self._wild_pre = {g[1:]: v for g, v in self._wild_grams.items() if g[:1] == b"^"}
        self._wild_suf = {g[1:]: v for g, v in self._wild_grams.items() if g[:1] == b"$"}
        self._wild_grams = {g: v for g, v in self._wild_grams.items() if g[:1] not in (b"^", b"$")}
        self._wild_gram_lens = tuple(sorted({len(g) for g in self._wild_grams}, reverse=True))
        self._wild_any = bool(self._wild_grams or self._wild_pre or self._wild_suf or self._wild_scan)
        release_memory()
        self._expires_ts = manifest.expires.timestamp()

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
        return self._when(now) >= self._expires_ts

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

    def _index_wildcard(self, eid: int, symbols: str) -> str:
        pattern = self._plate(eid)
        folded = pattern.translate(self._fold)
        kind, keys = _wildcard_keys(folded, symbols)
        w = _Wild(eid, pattern, folded, len(pattern) - pattern.count("*"), "*" in pattern)
        for key in keys:
            self._wild_grams.setdefault(key.encode("ascii"), []).append(w)
        if kind == "vague":
            # Only a bundle from another packer can hold one: still matched, by a scan of every read.
            self._wild_scan.append(w)
        return kind

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
        nb = norm.encode("ascii")
        fb = nb.translate(self._fold_b)
        # Most reads match nothing: time, confidences and state are only looked at for a candidate.
        cands: list[tuple[int, str, list[int], list[int] | None]] = []
        if len(nb) <= self._w:
            key = _word_key(fb)
            keys = self._keys
            bucket = key >> self._shift
            i = self._starts[bucket]
            end = self._starts[bucket + 1]
            while i < end:
                if keys[i] != key:
                    i += 1
                    continue
                eid = self._order[i]
                i += 1
                a = self._plates_at + eid * self._w
                pb = self._pt[a : a + self._w].rstrip(b"\0")
                if len(pb) != len(nb):
                    continue  # a 64-bit key collision
                if 63 in pb:  # b"?": a filling of an expanded `?` entry
                    literal = [j for j, c in enumerate(pb) if c != 63]
                    if any(self._fold_b[pb[j]] != fb[j] for j in literal):
                        continue
                    subs = [j for j in literal if nb[j] != pb[j]]
                elif pb.translate(self._fold_b) != fb:
                    continue  # a 64-bit key collision
                else:
                    literal = None
                    subs = [] if nb == pb else [j for j in range(len(nb)) if nb[j] != pb[j]]
                if len(subs) <= self.lookalike.max_substitutions:
                    cands.append((eid, pb.decode("ascii"), subs, literal))
        if self._wild_any:
            self._wild_candidates(norm, fb, cands)
        if not cands:
            return []
        t = self._when(now)
        if t >= self._expires_ts:
            return []  # a stale list must not put officers on a car
        if len(chars) == len(norm):
            conf: Sequence[float] = chars
        elif len(chars) == len(text) and chars:
            conf = [c for ch, c in zip(text, chars, strict=True) if ch.upper() in _ALNUM]
        else:
            conf = [ASSUMED_CHAR_CONFIDENCE] * len(norm)
        read_state = (state or "").upper()
        found = []
        for eid, plate, subs, lit in cands:
            m = self._make(eid, plate, norm, conf, subs, lit, read_state, t)
            if m is not None:
                found.append(m)
        if len(found) > 1:
            found.sort(key=_rank)
        return found

    def _wild_candidates(
        self, norm: str, fb: bytes, out: list[tuple[int, str, list[int], list[int] | None]]
    ) -> None:
        n = len(fb)
        grams = self._wild_grams
        groups = [
            grams[x] for g in self._wild_gram_lens for a in range(n - g + 1) if (x := fb[a : a + g]) in grams
        ]
        pre, suf = self._wild_pre, self._wild_suf
        if pre:
            if (g4 := pre.get(fb[:4])) is not None:
                groups.append(g4)
            if (g3 := pre.get(fb[:3])) is not None:
                groups.append(g3)
        if suf:
            if (g4 := suf.get(fb[-4:])) is not None:
                groups.append(g4)
            if (g3 := suf.get(fb[-3:])) is not None:
                groups.append(g3)
        if self._wild_scan:
            groups.append(self._wild_scan)
        if not groups:
            return
        folded = fb.decode("ascii")
        n_max = self.lookalike.max_substitutions
        seen: set[int] = set()
        for group in groups:
            for w in group:
                if n < w.min_len or (n != w.min_len and not w.star) or w.eid in seen:
                    continue
                seen.add(w.eid)
                subs: list[int] = []
                literal = _glob_align(w.pattern, norm)
                if literal is None:
                    literal = _glob_align(w.folded, folded)
                    if literal is None:
                        continue
                    wanted = [c for c in w.pattern if c != "*" and c != "?"]
                    subs = [j for j, e in zip(literal, wanted, strict=True) if norm[j] != e]
                    if len(subs) > n_max:
                        continue
                out.append((w.eid, w.pattern, subs, literal))

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
        lo, hi = CONF_FLOOR, CONF_CEIL
        seen = conf if literal is None else [conf[j] for j in literal]  # wildcard positions count as 1
        p_entry = math.prod([lo if not c >= lo else (hi if c > hi else c) for c in seen])
        for j in subs:
            c = conf[j]
            c = lo if not c >= lo else (hi if c > hi else c)
            # P(true char is the entry's | the reader saw a look-alike) = its misread share spread over
            # the other members of the class (read and entry characters share the class)
            p_entry *= (1.0 - c) * LOOKALIKE_ERROR_SHARE / (self._class_size[norm[j]] - 1) / c
        kind = "wildcard" if literal is not None else ("lookalike" if subs else "exact")
        return Match(
            kind,
            reason,
            int(priority),
            self.manifest.version,
            round(1.0 - p_entry, 6),
            plate,
            norm,
            len(subs),
            state,
            plate_type,
            datetime.fromtimestamp(int(exp), UTC) if exp else None,
            source,
            case,
            note,
            self.manifest.list_id,
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
"""The version of the list last accepted, whose id is STATE_LIST_ID."""
STATE_SHA256 = "hotlist.sha256"
STATE_LIST_ID = "hotlist.list_id"
STATE_FLOOR = "hotlist.floor/"
"""+ list id: the highest version ever accepted of that list (its rollback floor)."""
DEFAULT_LIST_ID = "default"


class StateStore(Protocol):
    """What the installer needs from storage (alprd.store.Store provides it)."""

    def state_get(self, key: str) -> str | None: ...

    def commit_state(
        self, updates: Mapping[str, str], actor: str, event: str, obj: Any, purpose: str
    ) -> None: ...

    def audit(self, actor: str, event: str, obj: Any, purpose: str) -> None: ...


class HotListInstaller:
    """Accepts only newer, valid bundles of its own list; keeps the previous list active on refusal.

    A bundle of another list id is refused whatever its version (a validly signed `regionA` v100 must
    neither replace `default` v5 nor raise its rollback floor), and every list id keeps its own floor,
    so switching `hotlist.list_id` back and forth cannot be used to roll a list back. Acceptances are
    audited; refusals too, unless the caller counts them instead (`install(audit_refusal=False)`:
    the MQTT command topic, where one audit row per junk message would fill the disk).

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
        list_key: bytes | None,
        clock: Clock | None = None,
        lookalike: Lookalike | None = None,
        *,
        actor: str = "alprd",
        crash_hook: Callable[[str], None] | None = None,
        list_id: str = DEFAULT_LIST_ID,
    ) -> None:
        self._store = store
        self.bundle_path = bundle_path
        self._pub = signing_pub
        self._key = list_key
        self.list_id = list_id
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

        if section.key_source == "hq":
            raise KeyFileError(
                "hotlist.key_source is hq: the list key exists only in the running daemon's memory; "
                "install and query through the daemon (hotlist/set), or use a key_source: file config"
            )
        return cls(
            store,
            section.bundle,
            load_signing_pub(section.signing_pub),
            load_list_key(section.list_key),
            clock,
            Lookalike(tuple(section.lookalike_classes), section.lookalike_max),
            actor=actor,
            list_id=section.list_id,
        )

    def set_list_key(self, list_key: bytes) -> None:
        """The list key arrived (hotlist.key_source hq): bundles can be opened from now on."""
        with self._lock:
            self._key = list_key

    @property
    def has_list_key(self) -> bool:
        return self._key is not None

    def _need_key(self) -> bytes:
        if self._key is None:
            raise HotListError(
                "no list key yet (hotlist.key_source: hq): headquarters has not sent it on hotlist/key"
            )
        return self._key

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def _recorded_floor(self) -> int:
        """The highest version of this list id the store has recorded (raises StoreError)."""
        v = int(self._store.state_get(STATE_FLOOR + self.list_id) or 0)
        # before floors were kept per list, one version was recorded next to the id it belonged to
        legacy = self._store.state_get(STATE_VERSION)
        if legacy and (self._store.state_get(STATE_LIST_ID) or DEFAULT_LIST_ID) == self.list_id:
            v = max(v, int(legacy))
        return v

    def accepted_version(self) -> int:
        """The highest version of this list ever accepted: the recorded floor, or the installed file
        if it is of this list and newer."""
        v = self._recorded_floor()
        try:
            on_disk = read_manifest_unverified(self.bundle_path.read_bytes())
        except (OSError, HotListError):
            return v
        return max(v, on_disk.version) if on_disk.list_id == self.list_id else v

    def _check_list_id(self, manifest: Manifest, what: str) -> None:
        if manifest.list_id != self.list_id:
            raise HotListError(
                f"{what} is of list {manifest.list_id!r} (version {manifest.version}); this device runs "
                f"list {self.list_id!r} (hotlist.list_id): refused whatever its version"
            )

    def load_installed(self) -> HotList | None:
        """Load the installed bundle at start-up; completes an install interrupted before its commit.

        If the store cannot be read (a full disk at start), the list is loaded on its signature, list
        id and expiry alone: a stolen car must still hit while storage is down.
        """
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
                    data, self._pub, self._need_key(), self._now(), check_expiry=False
                )
                self._check_list_id(manifest, "the installed bundle")
                try:
                    recorded: int | None = self._recorded_floor()
                except StoreError as e:
                    log.error("hot-list rollback floor unreadable (%s): loading the installed list on its "
                              "signature, list id and expiry", e)
                    recorded = None
                if recorded is not None and manifest.version < recorded:
                    raise HotListError(
                        f"installed bundle has version {manifest.version}, older than the accepted "
                        f"{recorded}: the file was rolled back; refusing it"
                    )
                if recorded is not None and manifest.version > recorded:
                    self._commit(manifest, self._actor, recovered=True)
                if self._now() >= manifest.expires:
                    raise HotListError(
                        f"installed list expired at {_iso(manifest.expires)}; install a fresh bundle"
                    )
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
            except HotListError as e:
                self._audit_reject(self._actor, {"reason": str(e), "stage": "load"}, "hot-list load at start")
                raise
            self.active = hl
            return hl

    def _audit_reject(self, actor: str, obj: dict[str, Any], purpose: str) -> None:
        try:
            self._store.audit(actor, "hotlist.reject", obj, purpose)
        except StoreError as e:  # the refusal itself matters more than its record: report, go on
            log.error("hot-list refusal could not be audited: %s", e)

    def _commit(self, manifest: Manifest, actor: str, recovered: bool = False) -> None:
        obj = manifest.public()
        if recovered:
            obj["recovered"] = True
        self._store.commit_state(
            {
                STATE_VERSION: str(manifest.version),
                STATE_SHA256: manifest.sha256,
                STATE_LIST_ID: manifest.list_id,
                STATE_FLOOR + manifest.list_id: str(manifest.version),
            },
            actor,
            "hotlist.accept",
            obj,
            "hot-list update",
        )

    def install(self, bundle: bytes, actor: str | None = None, *, audit_refusal: bool = True) -> int:
        """Verify, decrypt and activate `bundle`; returns its version.

        Raises HotListError with the reason (the previous list stays active), or StoreError if the
        acceptance cannot be recorded after the file was replaced (then `load_installed` completes it).
        """
        who = actor or self._actor
        with self._lock:
            version: int | None = None
            try:
                manifest, plaintext = verify_bundle(bundle, self._pub, self._need_key(), self._now())
                version = manifest.version
                self._check_list_id(manifest, "the bundle")
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
                    self.bundle_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    write_file_atomic(self.bundle_path, bundle, 0o600)
                except OSError as e:
                    raise HotListError(f"{self.bundle_path}: cannot store the bundle: {e.strerror}") from None
                self._hook("bundle_written")
                self._commit(manifest, who)
                self._hook("committed")
            except HotListError as e:
                if audit_refusal:
                    obj: dict[str, Any] = {"reason": str(e)}
                    if version is not None:
                        obj["version"] = version
                    self._audit_reject(who, obj, "hot-list update")
                raise
            self.active = hl  # the previous list is freed here
            release_memory()
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
