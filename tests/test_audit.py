"""Audit chain: edits, deletions and reorders are found at the right index; checkpoints; two writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from privacy_support import FakeClock

from alprd.privacy.audit import GENESIS, verify_chain, verify_checkpoint
from alprd.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent
N = 12


def _chain(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    store = Store(storage, FakeClock())
    events = ["start", "config", "hotlist.accept", "hit", "query", "purge", "clock.jump", "stop"]
    for i in range(N):
        store.audit("alprd" if i % 3 else "operator", events[i % len(events)], {"i": i}, f"purpose {i}")
    store.close()
    return storage


def _sql(storage: Path, *statements: str) -> None:
    conn = sqlite3.connect(storage / DB_NAME)
    with conn:
        for s in statements:
            conn.execute(s)
    conn.close()


def _verify(storage: Path) -> tuple[bool, int | None, str]:
    store = Store(storage, FakeClock())
    r = store.verify_audit()
    store.close()
    return r.ok, r.broken_index, r.reason


def test_intact_chain_verifies_with_count_and_head(tmp_path: Path) -> None:
    storage = _chain(tmp_path)
    store = Store(storage, FakeClock())
    entries = store.audit_entries()
    r = store.verify_audit()
    assert r.ok and r.count == N and r.head == entries[-1].digest()
    assert entries[0].prev == GENESIS and entries[0].seq == 1
    assert set(entries[0].as_dict()) == {"seq", "ts", "actor", "event", "object", "purpose", "prev", "mac"}
    assert verify_chain(entries, None).ok  # an outside auditor without the MAC key
    store.close()


@pytest.mark.parametrize("k", [1, 5, N])
@pytest.mark.parametrize("column", ["object", "actor", "purpose", "ts", "event"])
def test_edited_entry_is_found_at_its_index(tmp_path: Path, k: int, column: str) -> None:
    storage = _chain(tmp_path)
    value = '{"i":999}' if column == "object" else "tampered"
    _sql(storage, f"UPDATE audit SET {column} = '{value}' WHERE seq = {k}")
    ok, index, reason = _verify(storage)
    assert not ok and index == k and "edited" in reason


@pytest.mark.parametrize("k", [1, 6, N - 1])
def test_deleted_entry_is_found_at_its_index(tmp_path: Path, k: int) -> None:
    storage = _chain(tmp_path)
    _sql(storage, f"DELETE FROM audit WHERE seq = {k}")
    ok, index, reason = _verify(storage)
    assert not ok and index == k and "deleted" in reason


@pytest.mark.parametrize("k", [1, 4, N - 1])
def test_reordered_entries_are_found_at_the_first_moved_index(tmp_path: Path, k: int) -> None:
    storage = _chain(tmp_path)
    cols = "ts, actor, event, object, purpose, prev, mac"
    # swap the contents of entries k and k+1 but keep the seq numbers in order
    _sql(
        storage,
        f"CREATE TEMP TABLE a AS SELECT {cols} FROM audit WHERE seq = {k}",
        f"CREATE TEMP TABLE b AS SELECT {cols} FROM audit WHERE seq = {k + 1}",
        f"UPDATE audit SET ({cols}) = (SELECT {cols} FROM b) WHERE seq = {k}",
        f"UPDATE audit SET ({cols}) = (SELECT {cols} FROM a) WHERE seq = {k + 1}",
    )
    ok, index, _ = _verify(storage)
    assert not ok and index == k


def test_renumbered_reorder_is_found(tmp_path: Path) -> None:
    storage = _chain(tmp_path)
    _sql(
        storage,
        "UPDATE audit SET seq = 100 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = 100",
    )
    ok, index, _ = _verify(storage)
    assert not ok and index == 3


def test_without_mac_key_an_edit_shows_at_the_next_link(tmp_path: Path) -> None:
    storage = _chain(tmp_path)
    _sql(storage, "UPDATE audit SET purpose = 'x' WHERE seq = 5")
    store = Store(storage, FakeClock())
    r = verify_chain(store.audit_entries(), None)
    store.close()
    assert not r.ok and r.broken_index == 6


def test_checkpoint_is_signed_by_the_device(tmp_path: Path) -> None:
    storage = _chain(tmp_path)
    store = Store(storage, FakeClock(), device_id="pole-7")
    cp = store.checkpoint()
    assert cp["count"] == N and cp["device_id"] == "pole-7" and cp["head"] == store.verify_audit().head
    assert verify_checkpoint(cp, store.device_public_bytes())
    assert not verify_checkpoint({**cp, "count": N - 1})
    assert not verify_checkpoint(cp, b"\x00" * 32)
    other = Store(tmp_path / "other", FakeClock())
    assert not verify_checkpoint(cp, other.device_public_bytes())
    other.close()
    store.close()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from alprd.store import Store
    store = Store(Path(sys.argv[1]))
    for i in range(40):
        store.audit(sys.argv[2], "query", {"i": i}, "two writers")
    store.close()
""")


def test_two_processes_append_to_one_valid_chain(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    Store(storage, FakeClock()).close()  # device key and schema exist before the race
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(storage), name], cwd=ROOT)
        for name in ("daemon", "cli")
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    store = Store(storage, FakeClock())
    r = store.verify_audit()
    assert r.ok and r.count == 80
    assert {e.actor for e in store.audit_entries()} == {"daemon", "cli"}
    store.close()
