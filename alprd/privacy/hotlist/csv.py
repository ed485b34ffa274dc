"""Hot-list CSV: the rows headquarters writes, validated; every bad row reported as `file:line: message`.

A plate is A-Z and 0-9 after normalising; a pattern may hold `*` (any run) and `?` (one character),
and must be specific enough to index (`wildcard_kind`, shared with the in-RAM index). Nothing is
packed until the whole file is clean.
"""

from __future__ import annotations

import codecs
import csv
import gc
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple, Protocol

from ...errors import HotListError

COLUMNS = ("plate", "reason", "state", "plate_type", "priority", "expires", "source", "case_number", "note")
REQUIRED_COLUMNS = ("plate", "reason")
NCIC_COLUMNS = {
    "LIC": "plate", "LIS": "state", "LIT": "plate_type", "NIC": "case_number", "OCA": "note", "ORI": "source",
    "MKE": "reason", "EXP": "expires",
}
"""`alprd hotlist pack --columns ncic`: NCIC vehicle-file field codes -> our columns. EXP is YYYYMMDD."""
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

ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_PATTERN_CHARS = ALNUM | {"*", "?"}
_STATE_RE = re.compile(r"^[A-Z0-9-]{1,10}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_KEEP_NONALNUM = re.compile(r"[^0-9A-Za-z]")


def normalize_plate(text: str) -> str:
    """Uppercase and drop everything but ASCII letters and digits (`"ab-12 c"` -> `"AB12C"`)."""
    if text.isascii() and text.isalnum():
        return text.upper()
    return (
        _KEEP_NONALNUM.sub("", text).upper()
        if text.isascii()
        else "".join(c for c in text.upper() if c in ALNUM)
    )


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
    """ISO date (2026-12-31 or 20261231, as NCIC's EXP) or date-time. A date alone means the end of
    that day (UTC); naive times are UTC."""
    v = value.strip()
    if len(v) == 10 or (len(v) == 8 and v.isdigit()):
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
        if sum(c in ALNUM for c in plate) < MIN_WILDCARD_LITERALS:
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
    """How a wildcard entry is indexed (see `wildcard_keys`); "vague" ones are refused at pack time."""
    return wildcard_keys(pattern, "")[0]


def wildcard_keys(pattern: str, symbols: str) -> tuple[str, list[str]]:
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
    return _parse(data, name, None)[0]


def parse_ncic_csv(data: bytes, name: str = "<csv>") -> tuple[list[Entry], list[str]]:
    """A CSV whose header holds NCIC field codes (`NCIC_COLUMNS`): the entries, and the header's
    other columns, which are ignored rather than refused (an NCIC extract carries many: VIN, VMA ...)."""
    return _parse(data, name, NCIC_COLUMNS)


def _parse(data: bytes, name: str, rename: Mapping[str, str] | None) -> tuple[list[Entry], list[str]]:
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
    ignored: list[str] = []
    header = _read_header(reader, add, rename, ignored)
    entries: list[Entry] = []
    if header is not None and len(problems) == before:
        cols = {h: i for i, h in enumerate(header) if h in COLUMNS}
        parse_row = _RowParser(cols, add, check_controls, len(header))
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
        first = "LIC,MKE" if rename else "plate,reason"
        problems.append(f"{name}:1: empty file; the first line must be a header with {first}")
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        if more:
            shown.append(f"{name}: ... and {more} more problems")
        raise CsvError(f"{name}: {len(problems)} problem(s); nothing was packed\n" + "\n".join(shown), shown)
    return entries, ignored


def split_expired(entries: Iterable[Entry], now: datetime) -> tuple[list[Entry], list[Entry]]:
    """(entries still valid at `now`, entries already expired): an expired entry never matches, and
    packing it would only put a plate on every device for nothing."""
    kept: list[Entry] = []
    expired: list[Entry] = []
    for e in entries:
        (expired if e.expires is not None and e.expires <= now else kept).append(e)
    return kept, expired


class _Rows(Protocol):
    """A `csv.reader`: rows, and the line it has read up to."""

    line_num: int

    def __iter__(self) -> _Rows: ...

    def __next__(self) -> list[str]: ...


def _read_rows(
    reader: _Rows,
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


def _read_header(
    reader: _Rows,
    add: Callable[[int, str], None],
    rename: Mapping[str, str] | None = None,
    ignored: list[str] | None = None,
) -> list[str] | None:
    """The first non-blank row, checked, as our column names; None if there is none. With `rename`
    (field code -> column), its codes are the known columns and every other one goes to `ignored`
    (named as written) and reads as ""."""
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
        return _check_header(row, line, add, rename, ignored)


def _check_header(
    row: list[str],
    line: int,
    add: Callable[[int, str], None],
    rename: Mapping[str, str] | None,
    ignored: list[str] | None,
) -> list[str]:
    if rename is None:
        header = [h.strip().lower() for h in row]
    else:
        header = [rename.get(h.strip().upper(), "") for h in row]
        if ignored is not None:
            ignored += [h.strip() for h, ours in zip(row, header, strict=True) if not ours]
    spelled = {ours: code for code, ours in (rename or {}).items()}
    seen: set[str] = set()
    for h in header:
        if not h and rename is not None:
            continue
        if h not in COLUMNS:
            add(line, f"unknown column {h!r} (known: {', '.join(COLUMNS)})")
        elif h in seen:
            add(line, f"column {spelled.get(h, h)!r} appears twice")
        seen.add(h)
    for req in REQUIRED_COLUMNS:
        if req not in seen:
            named = f"{spelled[req]!r} ({req})" if req in spelled else repr(req)
            add(line, f"header has no {named} column (the first line must be the header)")
    return header


class _RowParser:
    """Validates rows; caches repeated values (reasons, states, dates) so a million rows stay cheap."""

    def __init__(
        self, cols: dict[str, int], add: Callable[[int, str], None], check_controls: bool, width: int
    ) -> None:
        # absent columns read the empty cell appended to every row, after the header's last column
        self.width = width
        self.get = operator.itemgetter(*(cols.get(c, self.width) for c in COLUMNS))
        self.cols = cols
        self.add = add
        self.check_controls = check_controls
        self.shared: dict[str, str] = {}
        self.dates: dict[str, datetime] = {}
        self.states: dict[str, str] = {}
        self.priorities = {str(i): i for i in range(101)}

    def _has_controls(self, row: list[str], line: int) -> bool:
        bad = [name for name, i in self.cols.items() if _CONTROL_RE.search(row[i])]
        if bad:
            self.add(line, f"{', '.join(bad)}: control characters are not allowed")
        return bool(bad)

    def _new_expires(self, exp: str, line: int) -> datetime | None:
        """A date not seen before in this file, parsed and remembered; None (and a problem) if invalid."""
        try:
            expires = self.dates[exp] = _parse_expires(exp)
        except ValueError:
            self.add(line, f"expires {exp!r} is not an ISO date or date-time (2026-12-31, 20261231, "
                     "2026-12-31T18:00Z)")
            return None
        return expires

    def _uncommon_priority(self, prio: str, line: int) -> int | None:
        """A priority not written as a plain 0-100 ("007"), or a problem (None)."""
        if prio.isascii() and prio.isdigit() and int(prio) <= 100:
            return int(prio)
        self.add(line, f"priority {prio!r} is not a whole number from 0 (highest) to 100")
        return None

    def _short_enough(
        self, line: int, reason: str, plate_type: str, source: str, case: str, note: str
    ) -> bool:
        """Each free-text field within its limit (checked only when together they are long)."""
        ok = True
        for name, value in (
            ("reason", reason),
            ("plate_type", plate_type),
            ("source", source),
            ("case_number", case),
            ("note", note),
        ):
            if len(value) > MAX_FIELD_CHARS[name]:
                self.add(line, f"{name} is longer than {MAX_FIELD_CHARS[name]} characters")
                ok = False
        return ok

    def __call__(self, row: list[str], line: int) -> Entry | None:
        add = self.add
        if self.check_controls and self._has_controls(row, line):
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
            ok = self._short_enough(line, reason, plate_type, source, case, note) and ok
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
            if p is None:
                p = self._uncommon_priority(prio, line)
            if p is None:
                ok = False
            else:
                priority = p
        expires = None
        if exp:
            expires = self.dates.get(exp) or self._new_expires(exp, line)
            ok = expires is not None and ok
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
