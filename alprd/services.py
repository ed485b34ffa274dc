"""The daemon's side of the privacy core: durable outbox, hot-list install, summaries, evidence, audit.

`PrivacyServices` implements `daemon.Services` on top of the privacy-core modules (hot-list installer
and matcher from `alprd.hotlist`; storage from `alprd.store` once it provides an outbox). Until then
`OutboxDB` below keeps the outbox and the installer's state in one SQLite file (WAL, synchronous=FULL),
so a hit survives SIGKILL and power loss before it is published.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StoreError
from .publish import OutboxItem

log = logging.getLogger(__name__)


class OutboxDB:
    """Outbox + key/value state + a plain audit table in SQLite. One connection, the pipeline thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
                " kind TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL);"
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS audit_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL,"
                " actor TEXT, event TEXT, object TEXT, purpose TEXT);"
            )
            check = self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open the outbox database: {e}") from e
        if check is None or check[0] != "ok":
            raise StoreError(f"{path}: integrity check failed ({check}); move the file aside")

    # outbox
    def outbox_put(self, kind: str, key: str, payload: bytes) -> int:
        try:
            cur = self.db.execute(
                "INSERT INTO outbox (key, kind, payload, created) VALUES (?, ?, ?, ?)",
                (key, kind, payload, time.time()),
            )
        except sqlite3.Error as e:
            raise StoreError(f"outbox write failed: {e}") from e
        return int(cur.lastrowid or 0)

    def outbox_pending(self, limit: int) -> list[OutboxItem]:
        rows = self.db.execute("SELECT id, key, kind, payload FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [OutboxItem(int(i), str(k), str(kd), bytes(p)) for i, k, kd, p in rows]

    def outbox_ack(self, item_id: int) -> None:
        try:
            self.db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
        except sqlite3.Error as e:
            raise StoreError(f"outbox ack failed: {e}") from e

    def outbox_depth(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    # hot-list installer's StateStore
    def state_get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def commit_state(
        self, updates: Mapping[str, str], actor: str, event: str, obj: Any, purpose: str
    ) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for k, v in updates.items():
                self.db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (k, v))
            self._audit_row(actor, event, obj, purpose)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self.db.execute("ROLLBACK")
            raise StoreError(f"state commit failed: {e}") from e

    def audit(self, actor: str, event: str, obj: Any, purpose: str) -> None:
        try:
            self._audit_row(actor, event, obj, purpose)
        except sqlite3.Error as e:
            raise StoreError(f"audit write failed: {e}") from e

    def _audit_row(self, actor: str, event: str, obj: Any, purpose: str) -> None:
        self.db.execute(
            "INSERT INTO audit_log (ts, actor, event, object, purpose) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, event, json.dumps(obj, sort_keys=True, default=str), purpose),
        )

    def close(self) -> None:
        self.db.close()


class _OutboxView:
    """The publisher's view of the outbox."""

    def __init__(self, db: OutboxDB) -> None:
        self._db = db

    def pending(self, limit: int) -> list[OutboxItem]:
        return self._db.outbox_pending(limit)

    def ack(self, item_id: int) -> None:
        self._db.outbox_ack(item_id)


class CountsSummary:
    """`summary_mode: counts`: per-window pass/hit counts and a confidence histogram. No plate data."""

    BINS = (0.5, 0.7, 0.8, 0.9, 0.95, 1.01)

    def __init__(self, device_id: str, interval_s: float) -> None:
        self.device_id = device_id
        self.interval_s = interval_s
        self._start = time.time()
        self._reset()

    def _reset(self) -> None:
        self.passes = 0
        self.hits = 0
        self.unverified = 0
        self.hist = [0] * len(self.BINS)

    def add(self, confidence: float, hit: bool, verified: bool = True) -> None:
        if hit:
            self.hits += 1
            self.unverified += not verified
        else:
            self.passes += 1
        for i, edge in enumerate(self.BINS):
            if confidence < edge:
                self.hist[i] += 1
                break

    def flush(self, now: float) -> dict[str, Any] | None:
        if now - self._start < self.interval_s:
            return None
        end = min(now, time.time())
        body = {
            "v": 1, "summary_id": str(uuid.uuid4()), "device_id": self.device_id, "mode": "counts",
            "window_start": round(self._start, 3), "window_end": round(end, 3), "ts": round(end, 3),
            "passes": self.passes, "hits": self.hits, "unverified_hits": self.unverified,
            "confidence_histogram": {f"<{e:g}": n for e, n in zip(self.BINS, self.hist, strict=True)},
        }
        self._start = end
        self._reset()
        return body


class PrivacyServices:
    """`daemon.Services` over the hot-list installer, the outbox database and the summary."""

    def __init__(
        self,
        storage_dir: Path,
        device_id: str,
        bundle_path: Path,
        signing_pub: Any,
        list_key: bytes,
        summary_interval_s: float = 300.0,
        lookalike_max: int = 1,
        evidence_sealer: Any = None,
    ) -> None:
        from .hotlist import HotListInstaller, Lookalike

        self.db = OutboxDB(storage_dir / "outbox.sqlite3")
        self.outbox = _OutboxView(self.db)
        lookalike = Lookalike(max_substitutions=lookalike_max)
        self.installer = HotListInstaller(self.db, bundle_path, signing_pub, list_key, lookalike=lookalike)
        self.installer.load_installed()
        self.summary_counts = CountsSummary(device_id, summary_interval_s)
        self._sealer = evidence_sealer

    @property
    def matcher(self) -> Any:
        return self.installer.active

    def hotlist_info(self) -> dict[str, Any]:
        hl = self.installer.active
        if hl is None:
            return {"installed": False}
        info = hl.info()
        return {"installed": True, "version": hl.version, "entries": len(hl), "list_id": hl.list_id,
                "issued": info.get("issued"), "expires": info.get("expires")}

    def install_hotlist(self, bundle: bytes) -> dict[str, Any]:
        version = self.installer.install(bundle, actor="mqtt:hotlist/set")
        hl = self.installer.active
        return {"version": version, "entries": len(hl) if hl is not None else 0}

    def put(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self.db.outbox_put(kind, key, json.dumps(body, separators=(",", ":"), sort_keys=True).encode())

    def outbox_depth(self) -> int:
        return self.db.outbox_depth()

    def seal_evidence(self, hit: Any, frame_image: Any) -> str | None:
        if self._sealer is None or frame_image is None:
            return None
        return str(self._sealer(hit, frame_image))

    def note_pass(self, track: Any) -> None:
        self.summary_counts.add(track.confidence, hit=False)

    def note_hit(self, hit: Any) -> None:
        self.summary_counts.add(hit.track.confidence, hit=True, verified=hit.verified)

    def summary(self, now: float) -> dict[str, Any] | None:
        return self.summary_counts.flush(now)

    def housekeeping(self, now: float) -> None:
        return None

    def audit(self, event: str, obj: str = "") -> None:
        self.db.audit("alprd", event, {"detail": obj}, "daemon lifecycle")

    def close(self) -> None:
        self.db.close()

