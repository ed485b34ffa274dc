"""The database's schema, as numbered migrations recorded in `PRAGMA user_version`.

A database holds the schema of the version it records; `migrate` brings an older one forward in one
transaction, and refuses one written by a newer alprd rather than guess at its tables. To change the
schema, append a migration: never edit one that has shipped (devices already ran it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import StoreError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first schema. Databases made before user_version was kept hold exactly these tables
    # and report version 0, so `IF NOT EXISTS` lets them take this step too.
    (
        """
        CREATE TABLE IF NOT EXISTS outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            msg_id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            kind TEXT NOT NULL,
            created REAL NOT NULL,
            created_mono REAL NOT NULL,
            boot TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS evidence (
            hit_id TEXT PRIMARY KEY,
            file TEXT NOT NULL,
            created REAL NOT NULL,
            created_mono REAL NOT NULL,
            boot TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS audit (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            object TEXT NOT NULL,
            purpose TEXT NOT NULL,
            prev TEXT NOT NULL,
            mac TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema of an open (autocommit) connection to SCHEMA_VERSION.

    Two processes may open one database at once (the daemon and `alprd audit verify`): the version
    is read again inside the write transaction, so only one of them migrates.
    """
    if schema_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = schema_version(conn)
        if have > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {have}, newer than this alprd knows ({SCHEMA_VERSION}): it "
                "was written by a newer alprd; run that version, or move the file aside to start afresh"
            )
        for version in range(have + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
