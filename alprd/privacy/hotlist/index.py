"""The decrypted hot list in RAM, and matching a read against it.

The list lives only in RAM, in a compact columnar form (one bytes object plus a few arrays): about
50 bytes per entry, so a million entries fit a Pi's budget. Look-alike matching folds every
character to its class representative (O, D, Q -> 0 ...), so an exact *or* look-alike candidate is one
lookup of the folded plate in a sorted array; substitutions are then counted against the entry.
Wildcard entries (`*`, `?`) are few and kept aside, indexed by one short literal run each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...clock import Clock, SystemClock
from ...errors import HotListError
from ...types import Match
from .bundle import PLAINTEXT_HEAD, PLAINTEXT_MAGIC, Manifest, verify_bundle
from .csv import ALNUM, MAX_PLATE_CHARS, normalize_plate, wildcard_keys

DEFAULT_LOOKALIKE_CLASSES = ("0ODQ", "1IL", "2Z", "5S", "8B", "6G")
ASSUMED_CHAR_CONFIDENCE = 0.9
"""Per-character confidence assumed when a read carries none (or a count that does not fit its text)."""
LOOKALIKE_ERROR_SHARE = 0.9
"""Share of a misread character that lands on one of its look-alikes rather than on any other symbol."""
CONF_FLOOR, CONF_CEIL = 0.01, 0.999
"""Recognisers are over-confident: no character is ever taken as certain, so p_not_entry is never 0."""
_M64 = (1 << 64) - 1
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
_FINAL = 0xFF51AFD7ED558CCD


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
            if len(cls) < 2 or any(c not in ALNUM for c in cls):
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


def _confidences(text: str, norm: str, chars: tuple[float, ...]) -> Sequence[float]:
    """One confidence per character of the normalised read (assumed when the read carries none)."""
    if len(chars) == len(norm):
        return chars
    if len(chars) == len(text) and chars:
        return [c for ch, c in zip(text, chars, strict=True) if ch.upper() in ALNUM]
    return [ASSUMED_CHAR_CONFIDENCE] * len(norm)


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
        if len(plaintext) < PLAINTEXT_HEAD.size:
            raise HotListError("decrypted list is truncated")
        magic, _salt, n, width = PLAINTEXT_HEAD.unpack_from(plaintext)
        if magic != PLAINTEXT_MAGIC or width < 1 or width > MAX_PLATE_CHARS or n != manifest.entries:
            raise HotListError("decrypted list has an unknown layout or the wrong entry count")
        self._n = n
        self._w = width
        self._plates_at = PLAINTEXT_HEAD.size
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

        fold_map = {c: c for c in ALNUM}
        size_map = dict.fromkeys(ALNUM, 2)  # a character in no class: any substitution counts as 1 of 1
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
    def plaintext(self) -> bytes:
        """The decrypted list the index was built on (what a delta update applies to)."""
        return self._pt

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

    def info(self) -> dict[str, object]:
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
        kind, keys = wildcard_keys(folded, symbols)
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
            self._indexed_candidates(nb, fb, cands)
        if self._wild_any:
            self._wild_candidates(norm, fb, cands)
        if not cands:
            return []
        t = self._when(now)
        if t >= self._expires_ts:
            return []  # a stale list must not put officers on a car
        conf = _confidences(text, norm, chars)
        read_state = (state or "").upper()
        found = []
        for eid, plate, subs, lit in cands:
            m = self._make(eid, plate, norm, conf, subs, lit, read_state, t)
            if m is not None:
                found.append(m)
        if len(found) > 1:
            found.sort(key=_rank)
        return found

    def _indexed_candidates(
        self, nb: bytes, fb: bytes, out: list[tuple[int, str, list[int], list[int] | None]]
    ) -> None:
        """Entries whose folded plate is `fb`: one bucket of the hash index (exact, look-alike and the
        fillings of `?` entries)."""
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
                out.append((eid, pb.decode("ascii"), subs, literal))

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
