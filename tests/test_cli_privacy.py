"""`alprd keys|hotlist|evidence|audit` end to end on real files: exit codes, messages, audit entries."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from privacy_support import SAMPLE_CSV, Agency, device_dir, write_config

from alprd.cli import main
from alprd.privacy.evidence import open_text, seal_evidence
from alprd.privacy.keys import load_evidence_key, load_evidence_pub
from alprd.store import DB_NAME

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hq(tmp_path: Path) -> Path:
    assert main(["keys", "agency", "--out", str(tmp_path / "hq")]) == 0
    return tmp_path / "hq"


@pytest.fixture
def device(hq: Path, tmp_path: Path) -> Path:
    """A device config whose credentials are copies of what HQ hands out."""
    creds = device_dir(Agency(hq), tmp_path)
    return write_config(tmp_path, creds, tmp_path / "storage")


def _csv(tmp_path: Path, text: str = SAMPLE_CSV) -> Path:
    p = tmp_path / "list.csv"
    p.write_text(text)
    return p


def _pack(tmp_path: Path, hq: Path, version: int, name: str = "", csv: str = SAMPLE_CSV, *extra: str) -> Path:
    out = tmp_path / (name or f"v{version}.bundle")
    src = tmp_path / f"list{version}.csv"
    src.write_text(csv)
    args = ["hotlist", "pack", str(src), "--keys", str(hq), "--version", str(version), "--out", str(out)]
    assert main([*args, *extra]) == 0
    return out


def _audit_events(cfg_dir: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(cfg_dir / "storage" / DB_NAME)
    rows = conn.execute("SELECT event, actor, purpose FROM audit ORDER BY seq").fetchall()
    conn.close()
    return rows


def test_keys_agency_refuses_to_overwrite(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(p.name for p in hq.iterdir()) == sorted(
        ["signing.key", "signing.pub", "evidence.key", "evidence.pub", "list.key", "ack.key", "ack.pub"]
    )
    capsys.readouterr()
    assert main(["keys", "agency", "--out", str(hq)]) == 1
    assert "already exist" in capsys.readouterr().err


def test_pack_and_inspect_print_manifest_never_plates(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    bundle = _pack(tmp_path, hq, 3, "", SAMPLE_CSV, "--valid-for", "7d", "--list-id", "ncic")
    packed = json.loads(capsys.readouterr().out)
    assert packed["version"] == 3 and packed["entries"] == 4 and packed["list_id"] == "ncic"
    assert main(["hotlist", "inspect", str(bundle), "--keys", str(hq)]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["valid"] and info["version"] == 3 and info["wildcards"] == 1
    for plate in ("ABC1234", "XYZ789", "7?B2", "OLD111"):
        assert plate not in out


def test_inspect_refuses_tampering_with_the_reason(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _pack(tmp_path, hq, 1)
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0x40
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["hotlist", "inspect", str(bad), "--keys", str(hq)]) == 1
    assert "signature does not verify" in capsys.readouterr().err
    old = tmp_path / "old.bundle"
    old.write_bytes(Agency(hq).pack(SAMPLE_CSV, 2, issued=datetime(2020, 1, 1, tzinfo=UTC)))
    assert main(["hotlist", "inspect", str(old), "--keys", str(hq)]) == 1
    assert "expired" in capsys.readouterr().err


def test_pack_refuses_a_dirty_csv_and_writes_nothing(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _csv(tmp_path, "plate,reason,expires\nABC123,ok,\n,no plate,\nDEF456,bad date,tomorrow\n")
    out = tmp_path / "never.bundle"
    capsys.readouterr()
    code = main(["hotlist", "pack", str(src), "--keys", str(hq), "--version", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()  # bad input, as everywhere else
    assert f"{src}:3: plate is empty" in err and f"{src}:4: expires 'tomorrow'" in err


def test_pack_usage_errors_exit_2(hq: Path, tmp_path: Path) -> None:
    src = _csv(tmp_path)
    for bad in (["--version", "0"], ["--version", "x"], ["--version", "1", "--valid-for", "soon"]):
        with pytest.raises(SystemExit) as ei:
            main(["hotlist", "pack", str(src), "--keys", str(hq), "--out", str(tmp_path / "b"), *bad])
        assert ei.value.code == 2


def test_valid_for_needs_a_unit(hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _csv(tmp_path)
    args = ["hotlist", "pack", str(src), "--keys", str(hq), "--version", "1", "--out", str(tmp_path / "b")]
    with pytest.raises(SystemExit) as ei:
        main([*args, "--valid-for", "3"])
    assert ei.value.code == 2 and not (tmp_path / "b").exists()
    assert "'3' needs a unit: s, m, h or d" in capsys.readouterr().err
    for text, seconds in (("90s", 90), ("15m", 900), ("3h", 10800), ("7d", 604800), ("1.5h", 5400)):
        assert main([*args, "--valid-for", text]) == 0
        manifest = json.loads(capsys.readouterr().out)
        issued, expires = (datetime.fromisoformat(manifest[k]) for k in ("issued", "expires"))
        assert (expires - issued).total_seconds() == seconds


def test_install_rollback_replay_and_audit(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = _pack(tmp_path, hq, 1), _pack(tmp_path, hq, 2)
    capsys.readouterr()
    assert main(["hotlist", "install", str(v2), "--config", str(device), "--actor", "sgt.a"]) == 0
    assert json.loads(capsys.readouterr().out)["installed"] == 2
    for old in (v2, v1):
        assert main(["hotlist", "install", str(old), "--config", str(device), "--actor", "sgt.a"]) == 1
        assert "rollback or replay refused" in capsys.readouterr().err
    assert [e[:2] for e in _audit_events(tmp_path)] == [
        ("hotlist.accept", "sgt.a"),
        ("hotlist.reject", "sgt.a"),
        ("hotlist.reject", "sgt.a"),
    ]
    assert main(["hotlist", "inspect", str(v2), "--config", str(device)]) == 0


def test_install_refuses_a_loose_list_key(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = _pack(tmp_path, hq, 1)
    os.chmod(tmp_path / "credentials" / "list.key", 0o644)
    capsys.readouterr()
    assert main(["hotlist", "install", str(v1), "--config", str(device)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_config_without_policy_is_refused(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "nopolicy.yaml"
    cfg.write_text(f"storage:\n  dir: {tmp_path / 's'}\n")
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(cfg)]) == 2
    assert "policy: required" in capsys.readouterr().err


def test_query_on_a_fresh_config_creates_nothing(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "never" / "storage"
    cfg = write_config(tmp_path, device_dir(Agency(hq), tmp_path), storage)
    capsys.readouterr()
    assert main(["hotlist", "query", "ABC1234", "--purpose", "a test", "--config", str(cfg)]) == 1
    assert "no hot list is installed" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_query_needs_a_purpose_and_is_audited_sealed(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hotlist", "install", str(_pack(tmp_path, hq, 1)), "--config", str(device)]) == 0
    with pytest.raises(SystemExit) as ei:
        main(["hotlist", "query", "ABC1234", "--config", str(device)])
    assert ei.value.code == 2
    assert main(["hotlist", "query", "ABC1234", "--purpose", "  ", "--config", str(device)]) == 2
    capsys.readouterr()
    code = main(
        [
            "hotlist",
            "query",
            "a8c-1234",
            "--state",
            "ca",
            "--purpose",
            "dispatch call 4411",
            "--config",
            str(device),
            "--actor",
            "officer.b",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "A8C1234"
    (m,) = result["matches"]
    assert m["kind"] == "lookalike" and m["entry_plate"] == "ABC1234" and m["reason"] == "stolen vehicle"
    events = _audit_events(tmp_path)
    assert events[-1] == ("query", "officer.b", "dispatch call 4411")
    db = b"".join(p.read_bytes() for p in (tmp_path / "storage").glob(DB_NAME + "*"))
    assert b"A8C1234" not in db and b"ABC1234" not in db
    conn = sqlite3.connect(tmp_path / "storage" / DB_NAME)
    (obj,) = conn.execute("SELECT object FROM audit WHERE event = 'query'").fetchone()
    conn.close()
    sealed = json.loads(obj)["query_sealed"]
    assert open_text(load_evidence_key(hq / "evidence.key"), sealed) == "A8C1234|CA"


def test_evidence_open(hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = seal_evidence(load_evidence_pub(hq / "evidence.pub"), b"CROP", b"FRAME", {"hit_id": "h9"})
    f = tmp_path / "h9.sealed"
    f.write_bytes(blob)
    capsys.readouterr()
    assert (
        main(["evidence", "open", str(f), "--key", str(hq / "evidence.key"), "--out", str(tmp_path / "o")])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["meta"] == {"hit_id": "h9"}
    assert (tmp_path / "o" / "crop.jpg").read_bytes() == b"CROP"
    assert (tmp_path / "o" / "frame.jpg").read_bytes() == b"FRAME"
    # the device's keys do not open it
    other = tmp_path / "devkey"
    assert main(["keys", "agency", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["evidence", "open", str(f), "--key", str(other / "evidence.key")]) == 1
    assert "matching evidence.key" in capsys.readouterr().err
    # the public key by mistake: it needs the private one (no advice to chmod a public key)
    assert main(["evidence", "open", str(f), "--key", str(hq / "evidence.pub")]) == 1
    err = capsys.readouterr().err
    assert "is a public key" in err and "needs the private key, evidence.key" in err and "chmod" not in err


def test_audit_verify_and_checkpoint(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for v in (1, 2, 3):
        assert main(["hotlist", "install", str(_pack(tmp_path, hq, v)), "--config", str(device)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(device)]) == 0
    assert "audit chain ok: 3 entries" in capsys.readouterr().out
    cp = tmp_path / "cp.json"
    assert main(["audit", "checkpoint", "--config", str(device), "--out", str(cp)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert main(["audit", "verify", "--config", str(device), "--checkpoint", str(cp)]) == 0
    capsys.readouterr()

    # truncation is invisible to the chain alone, but not to a published checkpoint
    conn = sqlite3.connect(tmp_path / "storage" / DB_NAME)
    with conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
    conn.close()
    assert main(["audit", "verify", "--config", str(device)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(device), "--checkpoint", str(cp)]) == 1
    assert "truncated" in capsys.readouterr().out

    conn = sqlite3.connect(tmp_path / "storage" / DB_NAME)
    with conn:
        conn.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 2")
    conn.close()
    assert main(["audit", "verify", "--config", str(device)]) == 1
    assert "BROKEN at entry 2" in capsys.readouterr().out


def test_audit_verify_fails_naming_the_quarantine_when_the_database_cannot_be_read(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: corrupt the audit table's root page. Verify used to quarantine the file, start a
    fresh one and print "audit chain ok: 1 entries" with exit 0."""
    for v in (1, 2, 3):
        assert main(["hotlist", "install", str(_pack(tmp_path, hq, v)), "--config", str(device)]) == 0
    db = tmp_path / "storage" / DB_NAME
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit'").fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size : root * page_size] = os.urandom(page_size)
    db.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(device)]) == 1
    out = capsys.readouterr().out
    (moved,) = (tmp_path / "storage" / "quarantine").glob(f"{DB_NAME}.*[0-9a-f]")
    assert "NOT VERIFIED" in out and str(moved) in out and "ok" not in out
    # the next run finds a chain that starts at the quarantine: still not a success, and it says where
    # the older entries are and which file (by SHA-256) they are in
    assert main(["audit", "verify", "--config", str(device)]) == 1
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and str(moved) in out
    import hashlib

    assert hashlib.sha256(moved.read_bytes()).hexdigest() in out


def test_keys_agency_adds_ack_keys_to_an_older_key_folder_only(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ack.key", "ack.pub"):
        (hq / name).unlink()
    before = {p.name: p.read_bytes() for p in hq.iterdir()}
    assert main(["keys", "agency", "--out", str(hq)]) == 0
    assert sorted(capsys.readouterr().out.split()) == [str(hq / "ack.key"), str(hq / "ack.pub")]
    assert all((hq / n).read_bytes() == b for n, b in before.items())  # nothing else was touched
    (hq / "ack.key").unlink()
    (hq / "signing.key").unlink()  # a half folder is no upgrade: refused as before
    assert main(["keys", "agency", "--out", str(hq)]) == 1
    assert not (hq / "signing.key").exists() and not (hq / "ack.key").exists()


def test_keys_device_and_seal_list_key_give_the_retained_message_for_hq_mode(
    hq: Path, device: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alprd.privacy.keys import load_list_key, load_or_create_device_seal_key, load_signing_pub
    from alprd.privacy.listkey import open_for_device

    pub = tmp_path / "device.pub"
    capsys.readouterr()
    assert main(["keys", "device", "--config", str(device), "--out", str(pub)]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PUBLIC KEY-----")
    key_file = tmp_path / "storage" / "device-x25519.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert main(["keys", "device", "--config", str(device)]) == 0  # the same key again, not a new one
    assert capsys.readouterr().out == pub.read_text()
    out = tmp_path / "key.msg"
    assert main(["keys", "seal-list-key", "--keys", str(hq), "--device-pub", str(pub),
                 "--device-id", "test-01", "--out", str(out)]) == 0
    got = open_for_device(out.read_bytes(), load_or_create_device_seal_key(key_file),
                          load_signing_pub(hq / "signing.pub"), "test-01")
    assert got.key == load_list_key(hq / "list.key")
    assert load_list_key(hq / "list.key") not in out.read_bytes()
    assert main(["keys", "seal-list-key", "--keys", str(hq), "--device-pub", str(pub),
                 "--device-id", "no/such", "--out", str(out)]) == 2


def test_cli_runs_as_a_process(hq: Path, device: Path, tmp_path: Path) -> None:
    bundle = _pack(tmp_path, hq, 1)
    proc = subprocess.run(
        [sys.executable, "-m", "alprd", "hotlist", "install", str(bundle), "--config", str(device)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["installed"] == 1
