"""Hot-list delta updates (issue 22, docs/fleet.md): signed, versioned, rollback-proof like bundles,
and applied only to exactly the list they were made from. Real SQLite store, real keys."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from privacy_support import T0, Agency, FakeClock, make_agency

from alprd.errors import HotListError
from alprd.privacy.hotlist import HotListInstaller, entries_from_rows, is_delta, pack_delta
from alprd.privacy.hotlist.delta import read_delta_manifest_unverified
from alprd.store import Store

ALNUM = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@pytest.fixture
def agency(tmp_path: Path) -> Agency:
    return make_agency(tmp_path)


def rows(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"plate": "".join(rng.choices(ALNUM, k=7)), "reason": rng.choice(["stolen", "amber alert"]),
             "state": rng.choice(["CA", "NV", ""]), "case_number": f"C-{i}"} for i in range(n)]


def delta(agency: Agency, base: bytes, new_rows: list[dict[str, str]], version: int, **kw: object) -> bytes:
    return pack_delta(base, entries_from_rows(new_rows), list_key=agency.list_key,
                      signing_key=agency.signing_key, version=version, issued=T0,
                      valid_for=kw.pop("valid_for", timedelta(hours=24)))  # type: ignore[arg-type]


def installer(agency: Agency, storage: Path, clock: FakeClock) -> tuple[Store, HotListInstaller]:
    store = Store(storage, clock)
    return store, HotListInstaller(store, storage / "hotlist.bundle", agency.signing_key.public_key(),
                                   agency.list_key, clock)


def listed(inst: HotListInstaller, plate: str) -> bool:
    active = inst.active
    assert active is not None
    return any(m.entry_plate == plate for m in active.match_all(plate, (0.99,) * len(plate)))


def test_a_delta_is_small_updates_the_list_and_survives_a_restart(agency: Agency, tmp_path: Path) -> None:
    v1_rows = rows(2000)
    v2_rows = v1_rows[20:] + rows(20, seed=2)  # 1% out, 1% in
    v2_rows[100] = {**v2_rows[100], "reason": "changed"}  # a changed entry: one out, one in
    full_v1 = agency.pack(entries_from_rows(v1_rows), 1)
    d2 = delta(agency, full_v1, v2_rows, 2)
    assert is_delta(d2) and not is_delta(full_v1)
    assert len(d2) * 20 < len(full_v1), (len(d2), len(full_v1))
    m = read_delta_manifest_unverified(d2)
    assert (m.base_version, m.version, m.removed, m.added, m.entries) == (1, 2, 21, 21, 2000)
    assert v1_rows[0]["plate"].encode() not in d2  # encrypted: no plate in clear

    clock = FakeClock()
    storage = tmp_path / "dev"
    store, inst = installer(agency, storage, clock)
    assert inst.install(full_v1) == 1
    assert listed(inst, v1_rows[0]["plate"])
    assert inst.install(d2) == 2
    active = inst.active
    assert active is not None and active.version == 2 and len(active) == 2000
    assert not listed(inst, v1_rows[0]["plate"]) and listed(inst, v2_rows[-1]["plate"])
    events = [(e.event, e.object) for e in store.audit_entries()]
    accepted = [o for ev, o in events if ev == "hotlist.accept"]
    assert accepted[-1]["format"] == "alprd-hotlist-delta/1" and accepted[-1]["base_version"] == 1  # type: ignore[index]
    store.close()

    store, again = installer(agency, storage, clock)  # a restart replays bundle + delta, checked again
    loaded = again.load_installed()
    assert loaded is not None and loaded.version == 2 and len(loaded) == 2000
    assert listed(again, v2_rows[-1]["plate"]) and not listed(again, v1_rows[0]["plate"])
    assert loaded.plaintext == active.plaintext
    # a second delta on top, from headquarters' full bundle of version 2
    v3_rows = v2_rows[:-5]
    d3 = delta(agency, agency.pack(entries_from_rows(v2_rows), 2), v3_rows, 3)
    assert again.install(d3) == 3 and len(again.active or []) == 1995
    # a full bundle clears the chain; the start after it loads the bundle alone
    assert again.install(agency.pack(entries_from_rows(rows(10, seed=9)), 4)) == 4
    assert not list(again.delta_dir.glob("*.delta"))
    store.close()
    store, third = installer(agency, storage, clock)
    loaded = third.load_installed()
    assert loaded is not None and loaded.version == 4 and len(loaded) == 10
    store.close()


def test_replayed_wrong_base_tampered_and_foreign_deltas_are_refused(agency: Agency, tmp_path: Path) -> None:
    v1_rows = rows(300)
    full_v1 = agency.pack(entries_from_rows(v1_rows), 1)
    d2 = delta(agency, full_v1, v1_rows[5:], 2)
    full_v2 = agency.pack(entries_from_rows(v1_rows[5:]), 2)
    d3 = delta(agency, full_v2, v1_rows[10:], 3)
    clock = FakeClock()
    store, inst = installer(agency, tmp_path / "dev", clock)
    with pytest.raises(HotListError, match="send the full bundle"):
        inst.install(d2)  # nothing installed to apply it to
    assert inst.install(full_v1) == 1
    with pytest.raises(HotListError, match="updates version 2; this device has version 1"):
        inst.install(d3)  # skips a version
    tampered = bytearray(d2)
    tampered[len(tampered) // 2] ^= 1
    with pytest.raises(HotListError, match="signature"):
        inst.install(bytes(tampered))
    # same version number, other content: headquarters' version 1 is not the device's
    other_v1 = agency.pack(entries_from_rows(rows(300, seed=7)), 1)
    with pytest.raises(HotListError, match="not the version-1 list this delta was made from"):
        inst.install(delta(agency, other_v1, v1_rows, 2))
    assert inst.install(d2) == 2
    with pytest.raises(HotListError, match="rollback or replay refused"):
        inst.install(d2)
    with pytest.raises(HotListError, match="rollback or replay refused"):
        inst.install(full_v1)  # the delta raised the floor that full bundles obey too
    foreign = HotListInstaller(store, tmp_path / "dev" / "hotlist.bundle", agency.signing_key.public_key(),
                               agency.list_key, clock, list_id="regionB")
    with pytest.raises(HotListError, match="list 'default'"):
        foreign.install(d3)
    expired = delta(agency, full_v2, v1_rows[10:], 3, valid_for=timedelta(seconds=1))
    clock.advance(60)
    with pytest.raises(HotListError, match="expired"):
        inst.install(expired)
    active = inst.active
    assert active is not None and active.version == 2 and len(active) == 295  # untouched by refusals
    refusals = [o for e in store.audit_entries() if e.event == "hotlist.reject" for o in [e.object]]
    assert len(refusals) >= 6
    store.close()


def test_a_stored_delta_that_was_altered_refuses_the_list_at_start(agency: Agency, tmp_path: Path) -> None:
    v1_rows = rows(50)
    full_v1 = agency.pack(entries_from_rows(v1_rows), 1)
    clock = FakeClock()
    storage = tmp_path / "dev"
    store, inst = installer(agency, storage, clock)
    inst.install(full_v1)
    inst.install(delta(agency, full_v1, v1_rows[1:], 2))
    store.close()
    (stored,) = (storage / "hotlist.bundle.d").glob("*.delta")
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    store, again = installer(agency, storage, clock)
    with pytest.raises(HotListError, match="signature"):
        again.load_installed()  # not quietly version 1: that would be a rollback
    assert again.active is None
    store.close()


def test_cli_packs_a_delta_headquarters_side_and_prints_no_plate(
    agency: Agency, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from alprd.cli import main

    v1 = tmp_path / "v1.bundle"
    v1.write_bytes(agency.pack("plate,reason\nABC1234,stolen\nXYZ789,amber alert\n", 1))
    csv = tmp_path / "v2.csv"
    csv.write_text("plate,reason\nABC1234,stolen\nNEW5555,stolen\n")
    out = tmp_path / "v2.delta"
    assert main(["hotlist", "delta", str(v1), str(csv), "--keys", str(agency.dir), "--version", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NEW5555" not in printed and "XYZ789" not in printed
    assert {k: json.loads(printed)[k] for k in ("base_version", "version", "removed", "added")} == {
        "base_version": 1, "version": 2, "removed": 1, "added": 1}
    assert is_delta(out.read_bytes())
    assert main(["hotlist", "delta", str(v1), str(csv), "--keys", str(agency.dir), "--version", "1",
                 "--out", str(tmp_path / "no.delta")]) != 0  # not above the base
    assert not (tmp_path / "no.delta").exists()
