"""On-device storage: one SQLite file (WAL, synchronous=FULL) under `storage.dir`.

Tables: `outbox` (messages until the broker acknowledges them), `evidence` (index of sealed evidence
files under `evidence/`), `audit` (the hash chain, see alprd.privacy.audit) and `state` (hot-list
version...); `alprd.store.schema` creates them and migrates older databases (`PRAGMA user_version`).
A returned write has been fsync'd: it survives SIGKILL and power loss. Deleted rows are zeroed
(`secure_delete`) because outbox rows hold hit messages.

Retention is judged on the wall clock *and* the monotonic clock: an item is expired when either says
it is older than its TTL, so setting the clock back cannot keep evidence longer. (The monotonic clock
restarts at boot, so it is only compared within the boot that wrote the row.)

A database that fails `PRAGMA integrity_check` (or is not a database at all) is moved to
`quarantine/` and a fresh one is started: the service keeps running, `quarantined` raises the alarm,
and the fresh chain's first entry names the quarantined file and its SHA-256.
Every SQLite or file-system failure, including a full disk, surfaces as StoreError. The daemon opens
its store with `allow_unavailable`: on a disk too full for SQLite even to open its WAL, the store
starts closed, every call raises StoreError ("storage is full") and it reopens once space returns.

Delivered hits: deleted rows are zeroed in the database (`secure_delete`), and the WAL, which still
holds the pages as they were written, is checkpointed and truncated after deliveries, so the files
under storage.dir keep no copy of a delivered hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from ..clock import Clock, SystemClock
from ..errors import KeyFileError, StoreError
from ..payloads import evidence_channel
from ..privacy import audit as audit_chain
from ..privacy.evidence import EVIDENCE_MAGIC
from ..privacy.keys import load_or_create_device_key, write_file_atomic
from ..types import OutboxItem
from .schema import migrate

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

DB_NAME = "alprd.db"
DEVICE_KEY_NAME = "device.key"
CLOCK_JUMP_S = 60.0
NO_SPACE_BYTES = 1 << 20
"""Below this much free space (for this user) an open that fails is taken as 'disk full'."""
WAL_CHECKPOINT_S = 1.0
"""Deliveries within this long share one WAL checkpoint (each one fsyncs)."""
_HIT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")



_CORRUPT_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


class _Corrupt(Exception):
    """The database opened but failed `PRAGMA integrity_check`."""


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    evidence_acked: int = 0
    """Evidence deleted because headquarters acknowledged it (since the previous purge)."""
    evidence_expired: int = 0
    outbox_expired: int = 0
    orphans: int = 0
    """Evidence files with no index row (a crash mid-write, or a quarantined database)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def current_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"process-{uuid.uuid4()}"  # unknown boot: monotonic ages are never trusted across runs


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """Thread-safe (one connection, one lock); several processes may open the same directory."""

    def __init__(
        self,
        dir: Path,
        clock: Clock | None = None,
        *,
        evidence_ttl_s: float = 86400.0,
        outbox_ttl_s: float | None = None,
        max_db_bytes: int | None = None,
        boot_id: str | None = None,
        device_id: str = "alprd",
        busy_timeout_s: float = 10.0,
        purge_audit_every_s: float = 3600.0,
        allow_unavailable: bool = False,
    ) -> None:
        self.dir = Path(dir)
        self.clock = clock or SystemClock()
        self.evidence_ttl_s = float(evidence_ttl_s)
        self.outbox_ttl_s = outbox_ttl_s
        self.max_db_bytes = max_db_bytes
        self.boot_id = boot_id or current_boot_id()
        self.device_id = device_id
        self.busy_timeout_s = float(busy_timeout_s)
        self.purge_audit_every_s = float(purge_audit_every_s)
        self._last_purge_audit: float | None = None
        self.db_path = self.dir / DB_NAME
        self.evidence_dir = self.dir / "evidence"
        self.quarantined: Path | None = None
        self.unavailable = ""
        """Why the database could not be opened (a full disk at start); "" once it is open."""
        self._lock = threading.RLock()
        self._acked = 0
        self._last_tick: tuple[float, float] | None = None
        self._reopen_at = 0.0
        self._checkpoint_at = 0.0
        self._wal_dirty = False
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.evidence_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.dir}: cannot create storage directory: {e.strerror}") from None
        try:
            self.device_key = load_or_create_device_key(self.dir / DEVICE_KEY_NAME)
        except KeyFileError as e:
            raise StoreError(str(e)) from None
        self._mac_key = audit_chain.mac_key(self.device_key)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open_checked()
        except StoreError as e:
            if not (allow_unavailable and self._no_space()):
                raise
            self.unavailable = str(e)
            self._reopen_at = time.monotonic() + 1.0
            log.error("storage %s cannot be opened, the disk is full (%s): running without it until "
                      "space returns", self.db_path, e)

    @classmethod
    def from_config(
        cls, cfg: Config, clock: Clock | None = None, *, allow_unavailable: bool = False
    ) -> Store:
        """The store as the config describes it (the daemon and the CLI open it the same way).

        An undeliverable hit is still ALPR data: outbox rows live at most `policy.retention_days`."""
        return cls(
            cfg.storage.dir,
            clock,
            evidence_ttl_s=cfg.privacy.evidence_ttl_s,
            outbox_ttl_s=cfg.policy.retention_days * 86400.0,
            max_db_bytes=cfg.storage.max_db_mb * 1024 * 1024,
            device_id=cfg.device_id,
            allow_unavailable=allow_unavailable,
        )

    def device_public_bytes(self) -> bytes:
        """Raw Ed25519 public key of this device (checkpoints are signed with it)."""
        return self.device_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def audit_mac_key(self) -> bytes:
        return self._mac_key

    # -- opening ----------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"could not switch to WAL (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                raise _Corrupt("integrity_check: " + "; ".join(map(str, result[:5])))
            migrate(conn, self.db_path)
            if self.max_db_bytes:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(16, int(self.max_db_bytes) // int(page))}")
        except BaseException:
            conn.close()
            raise
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o600)
        return conn

    def _no_space(self) -> bool:
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < NO_SPACE_BYTES

    def _connection(self, what: str) -> sqlite3.Connection:
        """The open connection; while the disk is full at start, a reopen at most once a second."""
        if self._conn is not None:
            return self._conn
        now = time.monotonic()
        if now >= self._reopen_at:
            self._reopen_at = now + 1.0
            try:
                self._conn = self._open_checked()
            except StoreError as e:
                self.unavailable = str(e)
            else:
                log.warning("storage %s opened: there is space again", self.db_path)
                self.unavailable = ""
                return self._conn
        raise StoreError(
            f"{what}: storage is full: {self.db_path} cannot be opened ({self.unavailable}); "
            f"free space under {self.dir}"
        )

    def _open_checked(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except _Corrupt as e:
            problem = str(e)
        except sqlite3.Error as e:
            # Only damage is quarantined: a busy, locked or unreadable database is not corrupt, and
            # moving it aside would throw away the outbox and the audit chain.
            if getattr(e, "sqlite_errorname", "") not in _CORRUPT_CODES:
                raise self._error("open", e) from None
            problem = str(e)
        moved = self._quarantine()
        log.error(
            "storage %s failed its check (%s); moved to %s, starting a fresh database",
            self.db_path,
            problem,
            moved,
        )
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise StoreError(f"{self.db_path}: fresh database cannot be created either: {e}") from None
        self.quarantined = moved
        self._conn = conn
        # The fresh chain starts by naming what it replaces: an auditor can match the file kept in
        # quarantine/ (or a copy taken off the device) to this entry.
        self.audit(
            "alprd", "storage.quarantine",
            {"file": moved.name, "sha256": _file_sha256(moved), "problem": problem[:200]},
            "storage integrity",
        )
        return conn

    def _quarantine(self) -> Path:
        qdir = self.dir / "quarantine"
        stamp = datetime.fromtimestamp(self.clock.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
        target = qdir / f"{DB_NAME}.{stamp}.{uuid.uuid4().hex[:8]}"
        try:
            qdir.mkdir(mode=0o700, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                src = self.db_path.with_name(DB_NAME + suffix)
                if src.exists():
                    os.replace(src, target.with_name(target.name + suffix))
        except OSError as e:
            raise StoreError(f"{self.db_path}: corrupt and cannot be moved aside: {e.strerror}") from None
        return target

    @contextlib.contextmanager
    def _tx(self, what: str, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection(what)
            try:
                conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    # SQLite rolls some failures (SQLITE_FULL) back by itself; keep the original error
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise self._error(what, e) from None

    def _error(self, what: str, e: sqlite3.Error) -> StoreError:
        code = getattr(e, "sqlite_errorname", "")
        if code == "SQLITE_FULL" or "full" in str(e).lower():
            return StoreError(
                f"{what}: storage is full ({e}); free space under {self.dir} or shorten retention"
            )
        return StoreError(f"{what}: {e} ({self.db_path})")

    def _read(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._connection(what).execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._error(what, e) from None

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self._conn is not None:
                self._checkpoint_wal(force=True)
                self._conn.close()

    def _checkpoint_wal(self, force: bool = False) -> None:
        """Fold the WAL into the database and truncate it, if a delivery left copies in it."""
        if not self._wal_dirty or self._conn is None:
            return
        now = time.monotonic()
        if not force and now < self._checkpoint_at:
            return
        self._checkpoint_at = now + WAL_CHECKPOINT_S
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            log.debug("WAL checkpoint failed: %s", e)  # retried after the next delivery or purge
            return
        if not busy:  # a reader (an `alprd audit verify`) kept it from finishing: try again later
            self._wal_dirty = False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- outbox -----------------------------------------------------------------------------------

    def outbox_put(self, msg_id: str, topic: str, payload: bytes, kind: str) -> None:
        """Queue a message durably; a second put with the same msg_id is a no-op."""
        with self._tx("outbox_put") as c:
            c.execute(
                "INSERT OR IGNORE INTO outbox(msg_id, topic, payload, kind, created, created_mono, boot) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    msg_id,
                    topic,
                    bytes(payload),
                    kind,
                    self.clock.time(),
                    self.clock.monotonic(),
                    self.boot_id,
                ),
            )

    def outbox_pending(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._read(
            "outbox_pending",
            "SELECT msg_id, topic, payload, kind, created, seq FROM outbox ORDER BY seq LIMIT ?",
            (int(limit),),
        )
        return [OutboxItem(r[0], r[0], r[3], bytes(r[2]), topic=r[1], created=r[4], seq=r[5]) for r in rows]

    def outbox_ack(self, msg_id: str) -> None:
        with self._tx("outbox_ack") as c:
            c.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,))
        with self._lock:
            # the WAL still holds the row as it was inserted (8-10 copies of a plate were found)
            self._wal_dirty = True
            self._checkpoint_wal()

    def outbox_depth(self) -> int:
        return int(self._read("outbox_depth", "SELECT COUNT(*) FROM outbox")[0][0])

    # -- evidence ---------------------------------------------------------------------------------

    def put_evidence(self, hit_id: str, sealed: bytes) -> Path:
        """Store sealed evidence (refuses anything that is not sealed) and index it for the TTL purge."""
        if not _HIT_ID_RE.match(hit_id):
            raise StoreError(f"hit id {hit_id!r} is not a safe file name")
        if not sealed.startswith(EVIDENCE_MAGIC):
            raise StoreError("refusing to store evidence that is not sealed (privacy.seal_evidence first)")
        path = self.evidence_dir / f"{hit_id}.sealed"
        # The index row goes first: a crash then leaves a row whose file is missing (purged at TTL),
        # never a file that nothing will ever delete.
        with self._tx("put_evidence") as c:
            c.execute(
                "INSERT OR REPLACE INTO evidence(hit_id, file, created, created_mono, boot) "
                "VALUES (?, ?, ?, ?, ?)",
                (hit_id, path.name, self.clock.time(), self.clock.monotonic(), self.boot_id),
            )
        try:
            write_file_atomic(path, sealed, 0o600)
        except OSError as e:
            with contextlib.suppress(StoreError), self._tx("put_evidence undo") as c:
                c.execute("DELETE FROM evidence WHERE hit_id = ?", (hit_id,))
            raise StoreError(f"{path}: cannot write evidence: {e.strerror}") from None
        return path

    def evidence_path(self, hit_id: str) -> Path | None:
        rows = self._read("evidence_path", "SELECT file FROM evidence WHERE hit_id = ?", (hit_id,))
        return self.evidence_dir / rows[0][0] if rows else None

    def evidence_count(self) -> int:
        return int(self._read("evidence_count", "SELECT COUNT(*) FROM evidence")[0][0])

    def ack_evidence(self, hit_id: str) -> bool:
        """Headquarters has the evidence: delete it now. Returns whether there was any."""
        with self._tx("ack_evidence") as c:
            row = c.execute("SELECT file FROM evidence WHERE hit_id = ?", (hit_id,)).fetchone()
            if row is None:
                return False
            self._unlink(self.evidence_dir / row[0])
            c.execute("DELETE FROM evidence WHERE hit_id = ?", (hit_id,))
            c.execute("DELETE FROM outbox WHERE msg_id = ?", (evidence_channel(hit_id),))
        self._acked += 1
        return True

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"{path}: cannot delete: {e.strerror}") from None

    # -- retention --------------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> PurgeCounts:
        """Delete expired evidence (and outbox rows past `outbox_ttl_s`); audited with the counts
        (runs that deleted nothing: at most once per `purge_audit_every_s`).

        `now` overrides the wall clock (the monotonic clock still comes from `clock`).
        """
        wall = self.clock.time() if now is None else float(now)
        mono = self.clock.monotonic()
        self._check_clock(wall, mono)
        cond = "(? - created >= ?) OR (boot = ? AND ? - created_mono >= ?)"
        ev_args = (wall, self.evidence_ttl_s, self.boot_id, mono, self.evidence_ttl_s)
        expired = outbox_expired = 0
        with self._tx("purge") as c:
            rows = c.execute(f"SELECT hit_id, file FROM evidence WHERE {cond}", ev_args).fetchall()
            for hit_id, name in rows:
                self._unlink(self.evidence_dir / name)
                c.execute("DELETE FROM evidence WHERE hit_id = ?", (hit_id,))
                # undelivered, it dies with its TTL too
                c.execute("DELETE FROM outbox WHERE msg_id = ?", (evidence_channel(hit_id),))
            expired = len(rows)
            if self.outbox_ttl_s is not None:
                ob_args = (wall, float(self.outbox_ttl_s), self.boot_id, mono, float(self.outbox_ttl_s))
                outbox_expired = c.execute(f"DELETE FROM outbox WHERE {cond}", ob_args).rowcount
            known = {r[0] for r in c.execute("SELECT file FROM evidence").fetchall()}
        orphans = 0
        try:
            names = [p for p in self.evidence_dir.iterdir() if p.name not in known]
        except OSError as e:
            raise StoreError(f"{self.evidence_dir}: cannot list: {e.strerror}") from None
        for p in names:
            self._unlink(p)
            orphans += 1
        counts = PurgeCounts(self._acked, expired, outbox_expired, orphans)
        self._acked = 0
        with self._lock:
            if outbox_expired:
                self._wal_dirty = True
            self._checkpoint_wal(force=True)  # deliveries within a second of the last checkpoint
        # Every run that deleted something is audited; empty runs (the housekeeping thread calls this
        # every few seconds) at most once per `purge_audit_every_s`, so the chain records that
        # retention kept running without growing by thousands of entries a day.
        last = self._last_purge_audit
        if any(counts.as_dict().values()) or last is None or mono - last >= self.purge_audit_every_s:
            self.audit("alprd", "purge", counts.as_dict(), "retention")
            self._last_purge_audit = mono
        return counts

    def _check_clock(self, wall: float, mono: float) -> None:
        last = self._last_tick
        self._last_tick = (wall, mono)
        if last is None:
            return
        drift = (wall - last[0]) - (mono - last[1])
        if abs(drift) >= CLOCK_JUMP_S:
            log.warning("wall clock jumped by %+.0f s", drift)
            self.audit("alprd", "clock.jump", {"delta_s": round(drift, 3)}, "retention integrity")

    # -- state ------------------------------------------------------------------------------------

    def state_get(self, key: str) -> str | None:
        rows = self._read("state_get", "SELECT value FROM state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def state_set(self, key: str, value: str) -> None:
        with self._tx("state_set") as c:
            c.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, value))

    def commit_state(
        self, updates: Mapping[str, str], actor: str, event: str, obj: object, purpose: str
    ) -> None:
        """Write state and its audit entry in one transaction: both or neither survive a crash."""
        with self._tx("commit_state") as c:
            for k, v in updates.items():
                c.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (k, v))
            self._append(c, actor, event, obj, purpose)

    # -- audit ------------------------------------------------------------------------------------

    def audit(self, actor: str, event: str, obj: object, purpose: str = "") -> None:
        """Append an entry to the audit chain (never put a plate in clear in `obj`)."""
        with self._tx("audit") as c:
            self._append(c, actor, event, obj, purpose)

    def _append(self, c: sqlite3.Connection, actor: str, event: str, obj: object, purpose: str) -> None:
        row = c.execute(
            "SELECT seq, ts, actor, event, object, purpose, prev, mac FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        prev = self._entry(row) if row is not None else None
        e = audit_chain.make_entry(self._mac_key, prev, _iso(self.clock.time()), actor, event, obj, purpose)
        c.execute(
            "INSERT INTO audit(seq, ts, actor, event, object, purpose, prev, mac) VALUES (?,?,?,?,?,?,?,?)",
            (
                e.seq,
                e.ts,
                e.actor,
                e.event,
                audit_chain.canonical(e.object).decode("utf-8"),
                e.purpose,
                e.prev,
                e.mac,
            ),
        )

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> audit_chain.AuditEntry:
        try:
            obj = json.loads(row[4])
        except (TypeError, ValueError):
            obj = row[4]  # stays as text so verification reports the broken entry
        return audit_chain.AuditEntry(int(row[0]), row[1], row[2], row[3], obj, row[5], row[6], row[7])

    def audit_entries(self) -> list[audit_chain.AuditEntry]:
        rows = self._read(
            "audit_entries",
            "SELECT seq, ts, actor, event, object, purpose, prev, mac FROM audit ORDER BY seq",
        )
        return [self._entry(r) for r in rows]

    def verify_audit(self) -> audit_chain.VerifyResult:
        return audit_chain.verify_chain(self.audit_entries(), self._mac_key)

    def checkpoint(self) -> dict[str, object]:
        """A signed statement of the chain's current length and head hash, for publication."""
        result = self.verify_audit()
        if not result.ok:
            raise StoreError(f"audit chain is broken at entry {result.broken_index}: {result.reason}")
        return audit_chain.make_checkpoint(
            self.device_key, self.device_id, result.count, result.head, _iso(self.clock.time())
        )


def _file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def write_checkpoint(path: Path, checkpoint: Mapping[str, object]) -> None:
    write_file_atomic(path, json.dumps(checkpoint, sort_keys=True, indent=1).encode() + b"\n", 0o644)
