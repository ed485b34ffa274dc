"""SQLite store: durable outbox, evidence TTL on wall + monotonic clocks, quarantine, full disk, threads."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from privacy_support import FakeClock, make_agency

from alprd.errors import StoreError
from alprd.privacy.evidence import seal_evidence
from alprd.privacy.keys import load_evidence_pub
from alprd.store import DB_NAME, Store

ROOT = Path(__file__).resolve().parent.parent
TTL = 3600.0


@pytest.fixture
def sealed(tmp_path: Path) -> bytes:
    agency = make_agency(tmp_path)
    return seal_evidence(load_evidence_pub(agency.dir / "evidence.pub"), b"crop", b"frame", {"hit_id": "x"})


def _store(tmp_path: Path, clock: FakeClock, **kw: object) -> Store:
    kw.setdefault("evidence_ttl_s", TTL)
    kw.setdefault("boot_id", "boot-a")
    return Store(tmp_path / "storage", clock, **kw)  # type: ignore[arg-type]


def _events(store: Store) -> list[str]:
    return [e.event for e in store.audit_entries()]


# --- outbox --------------------------------------------------------------------------------------


def test_outbox_is_idempotent_and_oldest_first(tmp_path: Path) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock)
    for i in range(5):
        store.outbox_put(f"m{i}", "alprd/d/hit", f"payload {i}".encode(), "hit")
        clock.advance(1)
    store.outbox_put("m1", "alprd/d/hit", b"a duplicate", "hit")
    assert store.outbox_depth() == 5
    items = store.outbox_pending(limit=3)
    assert [i.msg_id for i in items] == ["m0", "m1", "m2"]
    assert items[1].payload == b"payload 1" and items[1].kind == "hit" and items[1].topic == "alprd/d/hit"
    assert items[1].created == pytest.approx(clock.time() - 4)
    store.outbox_ack("m0")
    store.outbox_ack("m0")
    assert [i.msg_id for i in store.outbox_pending()] == ["m1", "m2", "m3", "m4"]
    store.close()
    assert stat.S_IMODE((tmp_path / "storage" / DB_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "storage").stat().st_mode) == 0o700


_PUT_FOREVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from alprd.store import Store
    store = Store(Path(sys.argv[1]))
    for i in range(100000):
        store.outbox_put(f"m{i}", "t", b"x" * 200, "hit")
        print(i, flush=True)
""")


def test_outbox_put_survives_sigkill_once_returned(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUT_FOREVER, str(storage)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    confirmed = -1
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    store = Store(storage, FakeClock())
    assert store.quarantined is None
    ids = {i.msg_id for i in store.outbox_pending(limit=100000)}
    assert {f"m{i}" for i in range(confirmed + 1)} <= ids
    store.close()


def test_full_disk_raises_store_error_and_store_keeps_working(tmp_path: Path) -> None:
    store = _store(tmp_path, FakeClock(), max_db_bytes=256 * 1024)
    with pytest.raises(StoreError, match="storage is full"):
        for i in range(1000):
            store.outbox_put(f"m{i}", "t", os.urandom(8192), "hit")
    depth = store.outbox_depth()
    assert 0 < depth < 1000
    for item in store.outbox_pending(limit=10):
        store.outbox_ack(item.msg_id)
    store.outbox_put("after", "t", b"small", "hit")  # room again after acknowledgements
    assert store.outbox_depth() == depth - 10 + 1
    store.close()


def test_concurrent_threads_share_one_store(tmp_path: Path) -> None:
    store = _store(tmp_path, FakeClock())
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                store.outbox_put(f"t{t}-{i}", "t", b"p", "hit")
                store.audit("alprd", "hit", {"hit_id": f"t{t}-{i}"}, "test")
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), name=f"w{t}") for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert store.outbox_depth() == 200
    result = store.verify_audit()
    assert result.ok and result.count == 200
    store.close()


# --- evidence and retention -----------------------------------------------------------------------


def test_only_sealed_evidence_is_stored_and_ack_deletes_it(tmp_path: Path, sealed: bytes) -> None:
    store = _store(tmp_path, FakeClock())
    with pytest.raises(StoreError, match="not sealed"):
        store.put_evidence("h1", b"\xff\xd8 a plain jpeg")
    with pytest.raises(StoreError, match="safe file name"):
        store.put_evidence("../escape", sealed)
    path = store.put_evidence("h1", sealed)
    assert path.read_bytes() == sealed and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.evidence_count() == 1
    assert store.ack_evidence("h1") is True
    assert not path.exists() and store.evidence_count() == 0
    assert store.ack_evidence("h1") is False
    counts = store.purge()
    assert counts.evidence_acked == 1 and counts.evidence_expired == 0
    purge = store.audit_entries()[-1]
    assert purge.event == "purge" and purge.object["evidence_acked"] == 1  # type: ignore[index]
    store.close()


def test_ttl_purge_on_a_steady_clock(tmp_path: Path, sealed: bytes) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock)
    path = store.put_evidence("h1", sealed)
    clock.advance(TTL - 1)
    assert store.purge().evidence_expired == 0 and path.exists()
    clock.advance(1)
    assert store.purge().evidence_expired == 1 and not path.exists()
    assert _events(store) == ["purge", "purge"]
    store.close()


@pytest.mark.parametrize("jump_h", [-2, +2])
def test_ttl_purge_with_clock_jumped_two_hours(tmp_path: Path, sealed: bytes, jump_h: int) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock)
    path = store.put_evidence("h1", sealed)
    store.purge()
    clock.jump_wall(jump_h * 3600)
    if jump_h > 0:
        # the wall clock says two hours passed: deleted early (never late), and the jump is audited
        assert store.purge().evidence_expired == 1 and not path.exists()
    else:
        # setting the clock back must not extend retention: the monotonic clock still expires it
        clock.advance(TTL - 1)
        assert store.purge().evidence_expired == 0 and path.exists()
        clock.advance(1)
        assert store.purge().evidence_expired == 1 and not path.exists()
    jumps = [e for e in store.audit_entries() if e.event == "clock.jump"]
    assert len(jumps) == 1 and jumps[0].object["delta_s"] == pytest.approx(jump_h * 3600)  # type: ignore[index]
    assert store.verify_audit().ok
    store.close()


def test_after_a_reboot_only_the_wall_clock_judges(tmp_path: Path, sealed: bytes) -> None:
    clock = FakeClock(mono=50_000.0)
    store = _store(tmp_path, clock)
    path = store.put_evidence("h1", sealed)
    store.close()
    rebooted = FakeClock(wall=clock.wall + 600, mono=5.0)  # monotonic restarts near 0 after boot
    store = _store(tmp_path, rebooted, boot_id="boot-b")
    assert store.purge().evidence_expired == 0 and path.exists()
    rebooted.advance(TTL - 600)
    assert store.purge().evidence_expired == 1 and not path.exists()
    store.close()


def test_outbox_rows_expire_after_retention(tmp_path: Path) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock, outbox_ttl_s=7 * 86400)
    store.outbox_put("old", "t", b"hit with a plate", "hit")
    clock.advance(6 * 86400)
    store.outbox_put("new", "t", b"hit", "hit")
    assert store.purge().outbox_expired == 0
    clock.advance(86400)
    assert store.purge().outbox_expired == 1
    assert [i.msg_id for i in store.outbox_pending()] == ["new"]
    store.close()


def test_orphan_evidence_files_are_removed(tmp_path: Path, sealed: bytes) -> None:
    store = _store(tmp_path, FakeClock())
    kept = store.put_evidence("kept", sealed)
    stray = store.evidence_dir / ".kept.sealed.123.tmp"
    stray.write_bytes(sealed)
    counts = store.purge()
    assert counts.orphans == 1 and not stray.exists() and kept.exists()
    store.close()


# --- integrity ---------------------------------------------------------------------------------------


def test_garbage_database_is_quarantined_not_crashed_on(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o700)
    (storage / DB_NAME).write_bytes(b"this is not a database" * 500)
    store = Store(storage, FakeClock())
    assert store.quarantined is not None and store.quarantined.exists()
    assert store.quarantined.parent.name == "quarantine"
    assert _events(store) == ["storage.quarantine"]
    store.outbox_put("m", "t", b"p", "hit")
    assert store.outbox_depth() == 1 and store.verify_audit().ok
    store.close()
    again = Store(storage, FakeClock())  # the fresh database is healthy: no second quarantine
    assert again.quarantined is None and again.outbox_depth() == 1
    again.close()


def test_corrupted_pages_fail_integrity_check_and_are_quarantined(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    store = Store(storage, FakeClock())
    for i in range(150):
        store.outbox_put(f"m{i}", "t", os.urandom(600), "hit")
        store.audit("alprd", "hit", {"i": i}, "test")
    store.close()
    db = storage / DB_NAME
    with sqlite3.connect(db) as conn:  # fold the WAL into the main file, as a clean shutdown would
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(2, len(data) // page, 3):
        data[p * page + 8 : p * page + 200] = os.urandom(192)
    db.write_bytes(bytes(data))
    store = Store(storage, FakeClock())
    assert store.quarantined is not None
    assert store.outbox_depth() == 0 and store.verify_audit().ok
    store.close()


def test_state_and_audit_commit_together(tmp_path: Path) -> None:
    store = _store(tmp_path, FakeClock())
    assert store.state_get("k") is None
    store.state_set("k", "1")
    store.commit_state({"k": "2", "j": "x"}, "alprd", "hotlist.accept", {"version": 2}, "test")
    assert store.state_get("k") == "2" and store.state_get("j") == "x"
    assert _events(store) == ["hotlist.accept"]
    store.close()


def test_a_locked_database_is_an_error_not_a_quarantine(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    Store(storage, FakeClock()).close()
    holder = sqlite3.connect(storage / DB_NAME, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            Store(storage, FakeClock(), busy_timeout_s=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not (storage / "quarantine").exists()
    store = Store(storage, FakeClock())
    assert store.quarantined is None
    store.close()


def test_every_purge_that_deletes_is_audited_idle_ones_hourly(tmp_path: Path, sealed: bytes) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock)
    for _ in range(10):
        store.purge()
        clock.advance(5)
    assert _events(store) == ["purge"]  # one heartbeat, not ten
    store.put_evidence("h1", sealed)
    clock.advance(TTL)
    assert store.purge().evidence_expired == 1
    clock.advance(3600)
    store.purge()
    entries = store.audit_entries()
    assert [e.event for e in entries] == ["purge", "purge", "purge"]
    assert entries[1].object["evidence_expired"] == 1  # type: ignore[index]
    store.close()


# --- issue 24: what a quarantine leaves, delivered hits, one instance, a start on a full disk --------


def test_the_fresh_chain_starts_by_naming_the_quarantined_file_and_its_sha256(tmp_path: Path) -> None:
    import hashlib

    storage = tmp_path / "storage"
    storage.mkdir(mode=0o700)
    (storage / DB_NAME).write_bytes(b"this is not a database" * 500)
    store = Store(storage, FakeClock())
    try:
        assert store.quarantined is not None
        first = store.audit_entries()[0]
        assert first.event == "storage.quarantine" and first.seq == 1
        assert first.object["file"] == store.quarantined.name  # type: ignore[index]
        assert first.object["sha256"] == hashlib.sha256(store.quarantined.read_bytes()).hexdigest()  # type: ignore[index]
    finally:
        store.close()


def test_a_delivered_hit_leaves_no_copy_in_the_database_or_its_wal(tmp_path: Path) -> None:
    clock = FakeClock()
    store = _store(tmp_path, clock)
    plate = b"7DELIV3RED"
    try:
        for i in range(20):
            store.outbox_put(f"h{i}", "hit", b'{"plate":"' + plate + b'","n":%d}' % i, "hit")
            store.audit("alprd", "hit", {"hit_id": f"h{i}"}, "test")
        files = [tmp_path / "storage" / n for n in (DB_NAME, DB_NAME + "-wal")]
        assert any(plate in f.read_bytes() for f in files if f.exists())  # queued: it is there
        for i in range(20):
            store.outbox_ack(f"h{i}")
            clock.advance(0.1)
        store.purge()  # a delivery within a second of the last checkpoint is folded in here
        # while the store is still open (a running daemon): neither file holds the plate any more
        for f in files:
            assert not f.exists() or plate not in f.read_bytes(), f
    finally:
        store.close()


def test_one_instance_lock_names_the_holder_and_dies_with_it(tmp_path: Path) -> None:
    from alprd.errors import InstanceLockedError
    from alprd.store import InstanceLock

    storage = tmp_path / "storage"
    storage.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from alprd.store import InstanceLock
            InstanceLock(Path({str(storage)!r})).acquire()
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLockedError, match=rf"PID {holder.pid}\b.*{storage}"):
            InstanceLock(storage).acquire()
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait(10)
        with InstanceLock(storage):
            assert (storage / "alprd.lock").read_text().strip() == str(os.getpid())
            with pytest.raises(InstanceLockedError):  # in one process too: one lock per open
                InstanceLock(storage).acquire()
        with InstanceLock(storage):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_store_that_cannot_open_on_a_full_disk_starts_closed_and_opens_when_space_returns(
    tmp_path: Path,
) -> None:
    import time

    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()[:100]}); CI runs as root")
    try:
        storage = mount / "state"
        with Store(storage, FakeClock()) as store:
            store.outbox_put("h0", "hit", b"x", "hit")
        filler = mount / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with pytest.raises(StoreError):  # what `alprd audit verify` and the other commands get
            Store(storage, FakeClock())
        store = Store(storage, FakeClock(), allow_unavailable=True)
        try:
            assert store.unavailable
            with pytest.raises(StoreError, match="storage is full"):
                store.outbox_depth()
            filler.unlink()
            time.sleep(1.1)  # reopening is tried at most once a second
            assert store.outbox_depth() == 1 and store.unavailable == ""
        finally:
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# --- schema migrations (PRAGMA user_version) -------------------------------------------------------


def test_a_new_database_records_its_schema_version(tmp_path: Path) -> None:
    from alprd.store import SCHEMA_VERSION

    _store(tmp_path, FakeClock()).close()
    with sqlite3.connect(tmp_path / "storage" / DB_NAME) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1


def test_a_database_from_before_versions_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    from alprd.store.schema import MIGRATIONS

    folder = tmp_path / "storage"
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as c:  # as alprd wrote it before it kept a version
        for statement in MIGRATIONS[0]:
            c.execute(statement)
        c.execute("INSERT INTO outbox(msg_id, topic, payload, kind, created, created_mono, boot) "
                  "VALUES ('old', 'hit', x'7b7d', 'hit', 1.0, 1.0, 'b')")
        assert c.execute("PRAGMA user_version").fetchone()[0] == 0
    store = _store(tmp_path, FakeClock())
    try:
        assert [i.msg_id for i in store.outbox_pending()] == ["old"] and store.quarantined is None
    finally:
        store.close()
    with sqlite3.connect(folder / DB_NAME) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_database_from_a_newer_alprd_is_refused_not_quarantined(tmp_path: Path) -> None:
    _store(tmp_path, FakeClock()).close()
    db = tmp_path / "storage" / DB_NAME
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this alprd knows"):
        _store(tmp_path, FakeClock())
    assert db.exists() and not (tmp_path / "storage" / "quarantine").exists()
