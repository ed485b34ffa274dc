"""Hot list: CSV abuse, bundle tampering, nonces, matching (look-alikes, wildcards, state, expiry), install.

Real crypto, real files, real SQLite, an injected clock; the crash tests SIGKILL a real subprocess.
"""

from __future__ import annotations

import fnmatch
import json
import re
import signal
import struct
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_support import SAMPLE_CSV, T0, Agency, FakeClock, make_agency

from alprd.errors import HotListError
from alprd.privacy.hotlist import (
    DEFAULT_LOOKALIKE_CLASSES,
    MAGIC,
    CsvError,
    Entry,
    HotList,
    HotListInstaller,
    Lookalike,
    encode_entries,
    encrypt_payload,
    load_bundle,
    new_nonce_material,
    normalize_plate,
    parse_csv,
    read_manifest_unverified,
    verify_bundle,
)
from alprd.privacy.hotlist.index import _glob_align
from alprd.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def agency(tmp_path: Path) -> Agency:
    return make_agency(tmp_path)


def _hl(agency: Agency, csv_text: str, lookalike: Lookalike | None = None, version: int = 1) -> HotList:
    bundle = agency.pack(csv_text, version)
    return load_bundle(bundle, agency.signing_key.public_key(), agency.list_key, T0, lookalike, FakeClock())


# --- CSV ---------------------------------------------------------------------------------------------


def test_csv_is_parsed_and_normalised() -> None:
    data = b"Plate,Reason,State,Priority,Expires\nabc-123,stolen,ca,7,2026-12-31\n x y z 9 ,amber,,,\n"
    a, b = parse_csv(data)
    assert a == Entry("ABC123", "stolen", "CA", "", 7, datetime(2027, 1, 1, tzinfo=UTC))
    assert b.plate == "XYZ9" and b.priority == 50 and b.expires is None and b.state == ""


def test_csv_expires_accepts_times_and_offsets() -> None:
    (e,) = parse_csv(b"plate,reason,expires\nABC123,x,2026-12-31T18:00:00+02:00\n")
    assert e.expires == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)


def _problems(data: bytes) -> list[str]:
    with pytest.raises(CsvError) as ei:
        parse_csv(data, "list.csv")
    return ei.value.problems


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        (b"plate,reason\nABC123\n", 2, "1 fields, the header has 2"),
        (b"plate,reason\n,stolen\n", 2, "plate is empty"),
        (b"plate,reason\nABC123,\n", 2, "reason is empty"),
        (b"plate,reason,expires\nABC123,x,31/12/2026\n", 2, "not an ISO date"),
        (b"plate,reason,expires\nABC123,x,2026-02-30\n", 2, "not an ISO date"),
        (b"plate,reason,priority\nABC123,x,101\n", 2, "from 0 (highest) to 100"),
        (b"plate,reason,priority\nABC123,x,-1\n", 2, "from 0 (highest) to 100"),
        (b"plate,reason\nAB\x00C,x\n", 2, "NUL byte"),
        (b"plate,reason\nok1,x\nAB\xffC,x\n", 3, "not UTF-8"),
        (b"\xef\xbb\xbfplate,reason\nABC,x\n", 1, "byte-order mark"),
        (b"plate,reason\nABC123,x\n" + b"A" * (10 * 1024 * 1024) + b",x\n", 3, "bytes long"),
        (b"plate,reason,colour\nABC,x,red\n", 1, "unknown column 'colour'"),
        (b"plate,note\nABC,x\n", 1, "no 'reason' column"),
        (b"reason\nx\n", 1, "no 'plate' column"),
        (b"ABC123,stolen\n", 1, "unknown column"),
        (b"plate,reason\nA*1,x\n", 2, "fewer than 3 fixed characters"),
        (b"plate,reason\n*,x\n", 2, "fewer than 3 fixed characters"),
        (b"plate,reason\nA*C*E,x\n", 2, "too vague"),
        (b"plate,reason\n*A??B??C*,x\n", 2, "too vague"),
        (b"plate,reason\nM\xc3\x9cNCHEN1,x\n", 2, "other than A-Z"),
        (b"plate,reason\nABC123,a\tb\n", 2, "control characters"),
        (b"plate,reason\n" + b"A" * 17 + b",x\n", 2, "at most 16"),
        (b"plate,reason,state\nABC,x,C A!\n", 2, "state"),
        (b'plate,reason\n"ABC,x\n', 2, "quoting"),
        (b"", 1, "empty file"),
    ],
)
def test_csv_abuse_is_reported_by_line(data: bytes, line: int, words: str) -> None:
    problems = _problems(data)
    assert any(p.startswith(f"list.csv:{line}:") and words in p for p in problems), problems


def test_every_bad_row_is_reported_not_just_the_first() -> None:
    data = b"plate,reason,priority\nGOOD1,ok,1\n,missing plate,2\nABC,ok,high\nDEF,ok,3\nGHI\n"
    problems = _problems(data)
    assert [p.split(":")[1] for p in problems] == ["3", "4", "6"]


def test_ten_megabyte_line_does_not_stop_the_report() -> None:
    data = b"plate,reason\n" + b"Z" * (10 * 1024 * 1024) + b"\nABC\n"
    problems = _problems(data)
    assert [p.split(":")[1] for p in problems] == ["2", "3"]


# --- bundles -----------------------------------------------------------------------------------------


def test_bundle_roundtrip_and_manifest(agency: Agency) -> None:
    bundle = agency.pack(SAMPLE_CSV, 7)
    assert bundle.startswith(MAGIC)
    m, pt = verify_bundle(bundle, agency.signing_key.public_key(), agency.list_key, T0)
    assert (m.version, m.entries, m.list_id) == (7, 4, "default")
    assert m.expires - m.issued == timedelta(hours=24)
    public = json.dumps(m.public())
    for plate in ("ABC1234", "XYZ789", "OLD111"):
        assert plate not in public
        assert plate.encode() not in bundle  # encrypted at rest
    hl = HotList(m, pt)
    assert len(hl) == 4 and hl.wildcard_count == 1


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _manifest_span(bundle: bytes) -> tuple[int, int]:
    (mlen,) = struct.unpack_from(">I", bundle, len(MAGIC))
    return len(MAGIC) + 4, len(MAGIC) + 4 + mlen


def test_tampered_ciphertext_manifest_signature_are_refused(agency: Agency) -> None:
    bundle = agency.pack(SAMPLE_CSV, 1)
    pub, key = agency.signing_key.public_key(), agency.list_key
    m0, m1 = _manifest_span(bundle)
    cases = {
        "ciphertext": _flip(bundle, m1 + 8 + 20),
        "manifest": bundle[:m0] + bundle[m0:m1].replace(b'"version":1', b'"version":9') + bundle[m1:],
        "signature": _flip(bundle, len(bundle) - 5),
    }
    for what, bad in cases.items():
        with pytest.raises(HotListError, match="signature does not verify"):
            verify_bundle(bad, pub, key, T0)
        assert what


def test_ciphertext_tampered_and_re_signed_still_fails_authentication(agency: Agency) -> None:
    """Defence in depth: even a validly signed bundle must decrypt and match its manifest."""
    bundle = agency.pack(SAMPLE_CSV, 1)
    _, m1 = _manifest_span(bundle)
    body = _flip(bundle[:-64], m1 + 8 + 3)
    forged = body + agency.signing_key.sign(body)
    with pytest.raises(HotListError, match="does not decrypt"):
        verify_bundle(forged, agency.signing_key.public_key(), agency.list_key, T0)


def test_wrong_keys_are_refused(agency: Agency, tmp_path: Path) -> None:
    bundle = agency.pack(SAMPLE_CSV, 1)
    other = make_agency(tmp_path / "other")
    with pytest.raises(HotListError, match="signature does not verify"):
        verify_bundle(bundle, other.signing_key.public_key(), agency.list_key, T0)
    with pytest.raises(HotListError, match=r"wrong list\.key"):
        verify_bundle(bundle, agency.signing_key.public_key(), other.list_key, T0)


def test_framing_abuse_is_refused(agency: Agency) -> None:
    bundle = agency.pack(SAMPLE_CSV, 1)
    pub, key = agency.signing_key.public_key(), agency.list_key
    for bad, words in [
        (b"", "bad magic"),
        (b"NOTALPRD" + bundle[8:], "bad magic"),
        (bundle[:-1], "truncated or extended"),
        (bundle + b"\0", "truncated or extended"),
        (bundle[:20], "truncated"),
    ]:
        with pytest.raises(HotListError, match=words):
            verify_bundle(bad, pub, key, T0)


def test_expired_bundle_is_refused(agency: Agency) -> None:
    bundle = agency.pack(SAMPLE_CSV, 1, valid_for=timedelta(hours=1))
    pub, key = agency.signing_key.public_key(), agency.list_key
    verify_bundle(bundle, pub, key, T0 + timedelta(minutes=59))
    with pytest.raises(HotListError, match="expired"):
        verify_bundle(bundle, pub, key, T0 + timedelta(hours=1))


def test_no_nonce_reuse_over_100k_packs(agency: Agency) -> None:
    """10^5 draws of the (salt, nonce) path `pack_bundle` takes; 5,000 sealed payloads; 200 whole packs."""
    n = 100_000
    draws = [new_nonce_material() for _ in range(n)]
    assert len({s for s, _ in draws}) == n and len({nc for _, nc in draws}) == n
    assert len({len(s) for s, _ in draws}) == 1 and len(draws[0][0]) == 32 and len(draws[0][1]) == 12

    key = agency.list_key
    plaintext = encode_entries([Entry("ABC123", "x")])
    seen_nonce: set[str] = set()
    seen_ct: set[bytes] = set()
    for _ in range(5000):
        header, ct = encrypt_payload(key, plaintext, {"version": 1})
        m = json.loads(header[len(MAGIC) + 4 :])
        assert m["nonce"] not in seen_nonce
        seen_nonce.add(m["nonce"])
        seen_ct.add(ct)
    assert len(seen_ct) == 5000
    bundles = [agency.pack(SAMPLE_CSV, 1) for _ in range(200)]
    manifests = [read_manifest_unverified(b) for b in bundles]
    assert len({m.nonce for m in manifests}) == 200
    assert len({m.salt for m in manifests}) == 200
    assert len({m.sha256 for m in manifests}) == 200  # salted plaintext: identical lists hash differently


# --- matching ----------------------------------------------------------------------------------------


def test_exact_match_reports_entry_and_list_version(agency: Agency) -> None:
    hl = _hl(agency, SAMPLE_CSV, version=3)
    m = hl.match("abc 1234", (0.99,) * 7, "CA", T0)
    assert m is not None
    assert (m.kind, m.reason, m.priority, m.list_version, m.entry_plate) == (
        "exact",
        "stolen vehicle",
        10,
        3,
        "ABC1234",
    )
    assert (m.source, m.case_number, m.plate_type, m.state) == ("NCIC", "C-1", "passenger", "CA")
    assert 0.0 < m.p_not_entry < 0.1
    assert hl.match("ABC1235", (0.99,) * 7, None, T0) is None


def _class_pairs() -> list[tuple[str, str]]:
    return [(a, b) for cls in DEFAULT_LOOKALIKE_CLASSES for a in cls for b in cls if a != b]


def test_every_lookalike_class_pair_matches_with_one_substitution(agency: Agency) -> None:
    rows = ["plate,reason"] + [f"K{a}X7{a}M,class {a}" for a in sorted({a for a, _ in _class_pairs()})]
    hl = _hl(agency, "\n".join(rows) + "\n")
    for a, b in _class_pairs():
        entry = f"K{a}X7{a}M"
        found = {m.entry_plate: m for m in hl.match_all(f"K{b}X7{a}M", (0.9,) * 7, None, T0)}
        assert entry in found, (a, b)
        assert (found[entry].kind, found[entry].substitutions) == ("lookalike", 1), (a, b)
        assert f"K{b}X7{b}M" in found  # b's own entry, also one substitution away
        twice = {m.entry_plate for m in hl.match_all(f"K{b}X7{b}M", (0.9,) * 7, None, T0)}
        assert entry not in twice  # two substitutions > lookalike_max 1


def test_lookalike_max_and_non_lookalike_substitutions(agency: Agency) -> None:
    csv_text = "plate,reason\nB0S5ZZ1,x\n"
    assert _hl(agency, csv_text, Lookalike(max_substitutions=2)).match("80552Z1", (), None, T0) is None
    m = _hl(agency, csv_text, Lookalike(max_substitutions=2)).match("8OS5ZZ1", (), None, T0)
    assert m is not None and m.substitutions == 2
    assert _hl(agency, csv_text, Lookalike(max_substitutions=0)).match("8OS5ZZ1", (), None, T0) is None
    hl = _hl(agency, csv_text)
    assert hl.match("B0S5ZZ7", (), None, T0) is None  # 1 vs 7 is not a look-alike pair
    assert hl.match("B0S5ZZ", (), None, T0) is None  # a missing character is not a substitution


def test_custom_lookalike_classes(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason\nUV4A,x\n", Lookalike(classes=("UV", "4A")))
    m = hl.match("VV4A", (), None, T0)
    assert m is not None and m.kind == "lookalike"
    assert hl.match("UV4A", (), None, T0) is not None
    with pytest.raises(HotListError, match="two look-alike classes"):
        Lookalike(classes=("UV", "VW"))


@pytest.mark.parametrize(
    ("pattern", "hits", "misses"),
    [
        ("7?B2*", ["7XB2", "7AB2QQQ", "7AB2Q"], ["7B2", "8AB2", "7AAB2"]),
        ("*ABC", ["ABC", "XYZABC", "1ABC"], ["ABCX", "AB"]),
        ("ABC*", ["ABC", "ABC123"], ["XABC"]),
        ("A?C*E12", ["AXCE12", "ABCZZE12"], ["ABCE1", "XBCE12", "AXC12"]),
        ("*7?B2", ["7AB2", "XX7QB2"], ["7AB2X", "7ABB2"]),
        ("7?B2*", ["7XB2", "7AB2QQQ"], ["7B2", "8AB2"]),
        ("??X1Y", ["ABX1Y", "99X1Y"], ["AX1Y", "ABCX1Y"]),
        ("K?M7*Q", ["KAM7Q", "KAM7ZZQ"], ["KM7Q"]),
    ],
)
def test_wildcards(agency: Agency, pattern: str, hits: list[str], misses: list[str]) -> None:
    hl = _hl(agency, f"plate,reason\n{pattern},partial\n")
    for read in hits:
        m = hl.match(read, (), None, T0)
        assert m is not None and m.kind == "wildcard" and m.entry_plate == pattern, read
    for read in misses:
        assert hl.match(read, (), None, T0) is None, read


def test_wildcard_literals_tolerate_lookalikes(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason\nAB0*,partial\n")
    m = hl.match("A8019", (0.9,) * 5, None, T0)
    assert m is not None and m.kind == "wildcard" and m.substitutions == 1
    exact = hl.match("AB019", (0.9,) * 5, None, T0)
    assert exact is not None and exact.substitutions == 0 and exact.p_not_entry < m.p_not_entry


def test_state_is_compared_only_when_both_sides_know_it(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason,state\nABC1234,x,CA\nXYZ999,y,\n")
    assert hl.match("ABC1234", (), "CA", T0) is not None
    assert hl.match("ABC1234", (), "ca", T0) is not None
    assert hl.match("ABC1234", (), "NV", T0) is None
    assert hl.match("ABC1234", (), None, T0) is not None
    assert hl.match("XYZ999", (), "NV", T0) is not None


def test_expired_entries_and_stale_lists_never_match(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason,expires\nABC123,x,2026-11-25T13:00:00Z\nDEF456,y,\n")
    assert hl.match("ABC123", (), None, T0) is not None
    assert hl.match("ABC123", (), None, T0 + timedelta(hours=1)) is None
    assert hl.match("ABC123", (), None, (T0 + timedelta(hours=2)).timestamp()) is None
    assert hl.match("DEF456", (), None, T0 + timedelta(hours=23)) is not None
    assert not hl.stale(T0 + timedelta(hours=23))
    assert hl.match("DEF456", (), None, T0 + timedelta(hours=24)) is None  # the bundle itself expired
    assert hl.stale(T0 + timedelta(hours=24))


def test_p_not_entry_follows_confidence_and_substitutions(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason\nABC1234,x\n")
    sure = hl.match("ABC1234", (0.999,) * 7, None, T0)
    unsure = hl.match("ABC1234", (0.7,) * 7, None, T0)
    look = hl.match("A8C1234", (0.999,) * 7, None, T0)
    look_unsure_char = hl.match("A8C1234", (0.999, 0.3, 0.999, 0.999, 0.999, 0.999, 0.999), None, T0)
    assert sure and unsure and look and look_unsure_char
    assert 0.0 < sure.p_not_entry < 0.01
    assert sure.p_not_entry < unsure.p_not_entry < 1.0
    assert look.p_not_entry > 0.99  # the reader was sure it saw an 8
    assert look_unsure_char.p_not_entry < look.p_not_entry  # ... less so when that 8 was shaky
    no_conf = hl.match("ABC1234", (), None, T0)
    assert no_conf is not None and 0 < no_conf.p_not_entry < 1


def test_best_match_prefers_exact_then_priority(agency: Agency) -> None:
    hl = _hl(
        agency, "plate,reason,priority\nA8C123,look,0\nABC123,exact,90\nABC12?,wild,0\nABC123,exact-hi,5\n"
    )
    found = hl.match_all("ABC123", (), None, T0)
    assert [m.reason for m in found] == ["exact-hi", "exact", "look", "wild"]
    m = hl.match("ABC123", (), None, T0)
    assert m is not None and m.reason == "exact-hi"


def test_normalize_plate() -> None:
    assert normalize_plate(" ab-12 c.") == "AB12C"
    assert normalize_plate("ÄB1") == "B1"
    assert normalize_plate("") == ""


# --- install -----------------------------------------------------------------------------------------


def _installer(agency: Agency, storage: Path, clock: FakeClock) -> tuple[Store, HotListInstaller]:
    store = Store(storage, clock)
    inst = HotListInstaller(
        store, storage / "hotlist.bundle", agency.signing_key.public_key(), agency.list_key, clock
    )
    return store, inst


def _events(store: Store) -> list[tuple[str, object]]:
    return [(e.event, e.object) for e in store.audit_entries()]


def test_install_accepts_newer_refuses_rollback_replay_and_keeps_old_list(
    agency: Agency, tmp_path: Path
) -> None:
    clock = FakeClock()
    storage = tmp_path / "storage"
    store, inst = _installer(agency, storage, clock)
    v2 = agency.pack(SAMPLE_CSV, 2)
    v1 = agency.pack("plate,reason\nROLL1,old list\n", 1)
    v3_forged = _flip(agency.pack("plate,reason\nNEW333,x\n", 3), 40)
    v4_expired = agency.pack("plate,reason\nNEW444,x\n", 4, valid_for=timedelta(minutes=1))
    assert inst.install(v2) == 2
    active = inst.active
    assert active is not None and active.version == 2
    for bad, words in [(v1, "rollback or replay"), (v2, "rollback or replay"), (v3_forged, "signature")]:
        with pytest.raises(HotListError, match=words):
            inst.install(bad)
        assert inst.active is active  # the previous list stays active
    clock.advance(120)
    with pytest.raises(HotListError, match="expired"):
        inst.install(v4_expired)
    assert inst.active is active
    events = _events(store)
    assert [e for e, _ in events] == ["hotlist.accept"] + ["hotlist.reject"] * 4
    store.close()

    # across a restart: state comes back from disk
    store2, inst2 = _installer(agency, storage, clock)
    loaded = inst2.load_installed()
    assert loaded is not None and loaded.version == 2 and loaded.match("ABC1234", (), None, clock.now())
    for bad in (v1, v2):
        with pytest.raises(HotListError, match="rollback or replay"):
            inst2.install(bad)
    assert inst2.install(agency.pack("plate,reason\nNEW555,x\n", 5, issued=clock.now())) == 5
    store2.close()


def test_decrypted_list_is_only_in_ram(agency: Agency, tmp_path: Path) -> None:
    clock = FakeClock()
    store, inst = _installer(agency, tmp_path / "s", clock)
    inst.install(agency.pack(SAMPLE_CSV, 1))
    inst.install(agency.pack("plate,reason\nQQQ999,x\n", 2))
    store.close()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file())
    for plate in (b"ABC1234", b"XYZ789", b"QQQ999", b"stolen vehicle"):
        assert plate not in blob


def test_rolled_back_bundle_file_is_refused_at_start(agency: Agency, tmp_path: Path) -> None:
    clock = FakeClock()
    storage = tmp_path / "s"
    store, inst = _installer(agency, storage, clock)
    v1 = agency.pack(SAMPLE_CSV, 1)
    inst.install(v1)
    inst.install(agency.pack(SAMPLE_CSV, 2))
    (storage / "hotlist.bundle").write_bytes(v1)  # someone with the SD card swaps the old file back
    store.close()
    store, inst = _installer(agency, storage, clock)
    with pytest.raises(HotListError, match="rolled back"):
        inst.load_installed()
    assert _events(store)[-1][0] == "hotlist.reject"
    store.close()


_CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from alprd.privacy.hotlist import HotListInstaller
    from alprd.privacy.keys import load_list_key, load_signing_pub
    from alprd.store import Store

    agency, storage, bundle, stage = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

    def hook(at):
        if at == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    class CrashingInstaller(HotListInstaller):
        # dies between the install's steps: decrypted, bundle file written, version committed
        def _write_bundle(self, data):
            hook("decrypted")
            super()._write_bundle(data)
            hook("bundle_written")

        def _commit(self, manifest, actor, recovered=False):
            super()._commit(manifest, actor, recovered)
            hook("committed")

    store = Store(storage)
    inst = CrashingInstaller(store, storage / "hotlist.bundle", load_signing_pub(agency / "signing.pub"),
                             load_list_key(agency / "list.key"))
    inst.load_installed()
    inst.install(bundle.read_bytes())
    print("survived")
""")


@pytest.mark.parametrize("stage", ["decrypted", "bundle_written", "committed"])
def test_sigkill_during_install_keeps_a_consistent_list(agency: Agency, tmp_path: Path, stage: str) -> None:
    now = datetime.now(UTC)
    storage = tmp_path / "s"
    store = Store(storage)
    inst = HotListInstaller(
        store, storage / "hotlist.bundle", agency.signing_key.public_key(), agency.list_key
    )
    inst.install(agency.pack(SAMPLE_CSV, 1, issued=now))
    store.close()
    new = tmp_path / "v2.bundle"
    new.write_bytes(agency.pack("plate,reason\nNEW222,x\n", 2, issued=now))
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(agency.dir), str(storage), str(new), stage],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "survived" not in proc.stdout

    store = Store(storage)
    inst = HotListInstaller(
        store, storage / "hotlist.bundle", agency.signing_key.public_key(), agency.list_key
    )
    loaded = inst.load_installed()
    assert store.verify_audit().ok
    assert loaded is not None
    if stage == "decrypted":
        # nothing was committed: the old list is active and the new bundle is still acceptable once
        assert loaded.version == 1 and loaded.match("ABC1234", (), None) is not None
        assert inst.install(new.read_bytes()) == 2
    else:
        # the file was replaced: the install completes at start (audited), never half-way
        assert loaded.version == 2 and loaded.match("NEW222", (), None) is not None
        assert store.state_get("hotlist.version") == "2"
        accepts = [e for e in store.audit_entries() if e.event == "hotlist.accept"]
        assert [a.object["version"] for a in accepts] == [1, 2]  # type: ignore[index]
    with pytest.raises(HotListError, match="rollback or replay"):
        inst.install(new.read_bytes())
    store.close()


def test_tiny_plaintext_layout_errors_are_refused(agency: Agency) -> None:
    """A decrypted body with a broken layout (a buggy packer) is refused, not crashed on."""
    from alprd.privacy.hotlist import pack_bundle

    bundle = pack_bundle(
        [],
        list_key=agency.list_key,
        signing_key=Ed25519PrivateKey.generate(),
        version=1,
        issued=T0,
        valid_for=timedelta(hours=1),
    )
    m = read_manifest_unverified(bundle)
    with pytest.raises(HotListError):
        HotList(m, b"ALPRDPT1" + b"\0" * 8)


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.text(alphabet="AB0?*", min_size=1, max_size=8),
    text=st.text(alphabet="AB0", min_size=0, max_size=9),
)
def test_glob_alignment_agrees_with_fnmatch(pattern: str, text: str) -> None:
    pattern = re.sub(r"\*+", "*", pattern)
    lit = _glob_align(pattern, text)
    assert (lit is not None) == fnmatch.fnmatchcase(text, pattern)
    if lit is not None:
        literals = [c for c in pattern if c not in "*?"]
        assert len(lit) == len(literals) and lit == sorted(set(lit))
        assert all(text[j] == c for j, c in zip(lit, literals, strict=True))


def test_p_not_entry_survives_odd_confidences(agency: Agency) -> None:
    hl = _hl(agency, "plate,reason\nABC1234,x\n")
    for chars in ((float("nan"),) * 7, (1.5,) * 7, (-1.0,) * 7, (0.9,) * 3):
        m = hl.match("ABC1234", chars, None, T0)
        assert m is not None and 0.0 < m.p_not_entry <= 1.0, chars  # never NaN, never certain


# --- list ids (issue 24): another list's bundle is refused whatever its version ----------------------


def test_a_bundle_of_another_list_is_refused_whatever_its_version(agency: Agency, tmp_path: Path) -> None:
    """The attack: a validly signed `regionA` v100 replaced `default` v5, stopped the device hitting on
    its own list and then made it refuse the real v6 as "not newer than 100"."""
    clock = FakeClock()
    store, inst = _installer(agency, tmp_path / "s", clock)
    assert inst.list_id == "default"
    assert inst.install(agency.pack(SAMPLE_CSV, 5)) == 5
    active = inst.active
    with pytest.raises(HotListError, match=r"of list 'regionA' \(version 100\); this device runs list "
                                           r"'default' \(hotlist.list_id\)"):
        inst.install(agency.pack("plate,reason\nRGA100,x\n", 100, list_id="regionA"))
    assert inst.active is active and inst.accepted_version() == 5  # its floor did not move
    assert inst.install(agency.pack(SAMPLE_CSV, 6)) == 6
    store.close()


def test_each_list_id_keeps_its_own_rollback_floor(agency: Agency, tmp_path: Path) -> None:
    clock = FakeClock()
    storage = tmp_path / "s"
    store = Store(storage, clock)
    pub, key = agency.signing_key.public_key(), agency.list_key

    def installer(list_id: str) -> HotListInstaller:
        return HotListInstaller(store, storage / "hotlist.bundle", pub, key, clock, list_id=list_id)

    a = installer("regionA")
    assert a.install(agency.pack(SAMPLE_CSV, 9, list_id="regionA")) == 9
    b = installer("regionB")  # the operator moves the device to another list
    assert b.accepted_version() == 0
    assert b.install(agency.pack(SAMPLE_CSV, 2, list_id="regionB")) == 2
    with pytest.raises(HotListError, match="installed bundle is of list 'regionB'"):
        installer("regionA").load_installed()  # the file on disk is B's: A cannot use it
    a = installer("regionA")  # and back: A's floor is still 9, so its v8 is a rollback
    with pytest.raises(HotListError, match="not newer than the accepted version 9"):
        a.install(agency.pack(SAMPLE_CSV, 8, list_id="regionA"))
    assert a.install(agency.pack(SAMPLE_CSV, 10, list_id="regionA")) == 10
    store.close()


def test_a_device_from_before_list_ids_keeps_its_floor(agency: Agency, tmp_path: Path) -> None:
    clock = FakeClock()
    storage = tmp_path / "s"
    store = Store(storage, clock)
    # what the previous release recorded: one version, next to the id of the list it belonged to
    store.state_set("hotlist.version", "41")
    store.state_set("hotlist.list_id", "default")
    inst = HotListInstaller(store, storage / "hotlist.bundle", agency.signing_key.public_key(),
                            agency.list_key, clock)
    assert inst.accepted_version() == 41
    with pytest.raises(HotListError, match="rollback"):
        inst.install(agency.pack(SAMPLE_CSV, 41))
    store.close()


CSV_PIECES = ['"', ",", "\n", "\r", "plate", "reason", "ABC123", "*", "?", "\x00", "\xff", "'", "\\",
              "2026-13-45", "9" * 50, "expires", "priority"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.lists(st.sampled_from(CSV_PIECES), max_size=80).map(
    lambda p: "".join(p).encode("utf-8")))
def test_fuzzed_csv_gives_entries_or_csv_error_never_a_traceback(data: bytes) -> None:
    try:
        parse_csv(data, "fuzz.csv")
    except CsvError as e:
        assert e.problems and all(p.startswith("fuzz.csv") for p in e.problems)
