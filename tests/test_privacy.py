"""Summaries (counts / ratcheted tokens) and sealed evidence, with real crypto and an injected clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from privacy_support import FakeClock, device_dir, make_agency

from alprd.errors import EvidenceError
from alprd.privacy import evidence as privacy
from alprd.privacy.evidence import (
    EVIDENCE_MAGIC,
    open_evidence,
    open_text,
    seal_evidence,
    seal_text,
)
from alprd.privacy.keys import load_evidence_key, load_evidence_pub, load_list_key, load_signing_pub
from alprd.privacy.summaries import Summarizer
from alprd.store import Store

PLATES = [("ABC1234", "CA"), ("7XYZ321", "NV"), ("KL55MN", ""), ("B0B8008", "TX")]


def _feed(s: Summarizer, hit_every: int = 0) -> None:
    for i, (plate, state) in enumerate(PLATES * 3):
        s.add(plate, state, 0.55 + 0.1 * (i % 4), hit=bool(hit_every) and i % hit_every == 0)


def _plate_derived_strings(plate: str, state: str) -> list[str]:
    out = [plate, plate.lower()]
    for msg in {plate, f"{state}|{plate}", f"alprd/v1|{state}|{plate}", f"{state}{plate}"}:
        for algo in ("sha256", "sha1", "md5"):
            d = hashlib.new(algo, msg.encode()).digest()
            out += [d.hex(), d.hex().upper(), base64.b64encode(d).decode(), d.hex()[:8]]
    return out


def test_counts_mode_emits_no_plate_derived_value() -> None:
    clock = FakeClock()
    s = Summarizer("counts", 16, 60, clock)
    _feed(s, hit_every=5)
    clock.advance(60)
    assert s.due()
    summary = s.flush().as_dict()
    text = json.dumps(summary)
    for plate, state in PLATES:
        for needle in _plate_derived_strings(plate, state):
            assert needle not in text, needle
    assert summary["passes"] == 12 and summary["hits"] == 3 and summary["noise"] == 0
    assert summary["reads"] == 0  # no frames were counted
    assert sum(summary["confidence_hist"]) == 12
    assert set(summary) == {"v", "mode", "epoch", "start", "end", "passes", "hits", "noise", "reads",
                            "confidence_hist"}
    assert not s.due()


def test_tokens_are_keyed_hmac_truncations() -> None:
    s = Summarizer("tokens", 64, 60, FakeClock())
    k0 = bytes(s._key)  # white box: the test checks the construction itself
    for plate, state in PLATES:
        mac = hmac.new(k0, f"alprd/v1|{state}|{plate}".encode(), hashlib.sha256).digest()
        assert s.token(plate, state) == mac[:8].hex()
    for bits, width in ((16, 4), (18, 5), (64, 16)):
        tok = Summarizer("tokens", bits, 60, FakeClock()).token("ABC1234", "CA")
        assert len(tok) == width and int(tok, 16) < 2**bits


def test_tokens_mode_counts_non_hits_only_and_leaks_no_unkeyed_hash() -> None:
    clock = FakeClock()
    s = Summarizer("tokens", 16, 60, clock)
    expected = {s.token(p, st) for p, st in PLATES}
    _feed(s, hit_every=4)  # every 4th pass is a hit: ABC1234 is always the hit
    summary = s.flush().as_dict()
    assert summary["token_bits"] == 16
    assert sum(summary["tokens"].values()) == 12 - 3
    assert set(summary["tokens"]) <= expected
    text = json.dumps(summary)
    for plate, state in PLATES:
        for needle in _plate_derived_strings(plate, state)[:-1]:
            assert needle not in text, needle


def test_tokens_differ_across_epochs_and_restarts() -> None:
    clock = FakeClock()
    a = Summarizer("tokens", 64, 60, clock)
    b = Summarizer("tokens", 64, 60, clock)  # a restart: a fresh random K_0
    plate, state = PLATES[0]
    epochs = []
    for _ in range(5):
        epochs.append(a.token(plate, state))
        a.add(plate, state, 0.9, hit=False)
        clock.advance(60)
        summary = a.flush().as_dict()
        assert list(summary["tokens"]) == [epochs[-1]]
    assert len(set(epochs)) == 5
    assert b.token(plate, state) not in epochs
    short = Summarizer("tokens", 16, 60, clock)
    many = set()
    for _ in range(20):
        many.add(tuple(short.token(p, st) for p, st in PLATES))
        short.flush()
    assert len(many) == 20


def test_past_tokens_cannot_be_recomputed_after_ratcheting() -> None:
    s = Summarizer("tokens", 64, 60, FakeClock())
    k0 = bytes(s._key)
    before = {s.token(p, st) for p, st in PLATES}
    s.flush()
    after = {s.token(p, st) for p, st in PLATES}
    assert not before & after
    # the old key is gone from the object: no attribute holds it, in any form
    for value in vars(s).values():
        if isinstance(value, bytes | bytearray):
            assert bytes(value) != k0 and k0 not in bytes(value)
    # and the ratchet only runs forward: nothing in the summarizer maps the new key back
    assert s.epoch == 1


def test_summarizer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="token_bits"):
        Summarizer("tokens", 32, 60, FakeClock())
    with pytest.raises(ValueError, match="mode"):
        Summarizer("plates", 16, 60, FakeClock())  # type: ignore[arg-type]


# --- evidence ------------------------------------------------------------------------------------


def test_evidence_roundtrip(tmp_path: Path) -> None:
    agency = make_agency(tmp_path)
    pub = load_evidence_pub(agency.dir / "evidence.pub")
    crop, frame = b"\xff\xd8crop-jpeg\xff\xd9", b"\xff\xd8frame" * 1000 + b"\xff\xd9"
    meta = {"hit_id": "h1", "plate": "ABC1234", "ts": 1.5}
    blob = seal_evidence(pub, crop, frame, meta)
    assert blob.startswith(EVIDENCE_MAGIC)
    assert b"ABC1234" not in blob and b"crop-jpeg" not in blob
    assert seal_evidence(pub, crop, frame, meta) != blob  # fresh ephemeral key every time
    got = open_evidence(load_evidence_key(agency.dir / "evidence.key"), blob)
    assert got == (crop, frame, meta)


def test_sealed_evidence_cannot_be_opened_with_any_key_on_the_device(tmp_path: Path) -> None:
    agency = make_agency(tmp_path)
    creds = device_dir(agency, tmp_path)
    store = Store(tmp_path / "storage", FakeClock())
    pub = load_evidence_pub(creds / "evidence.pub")
    blob = seal_evidence(pub, b"crop", b"frame", {"plate": "ABC1234"})
    store.put_evidence("hit-1", blob)
    # Every secret a device holds, tried as the X25519 private key (any 32 bytes are a valid one).
    device_secrets = {
        "list.key": load_list_key(creds / "list.key"),
        "device.key": store.device_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        ),
        "audit mac key": store.audit_mac_key(),
        "evidence.pub bytes": load_evidence_pub(creds / "evidence.pub").public_bytes_raw(),
        "signing.pub bytes": load_signing_pub(creds / "signing.pub").public_bytes_raw(),
    }
    for name, secret in device_secrets.items():
        key = X25519PrivateKey.from_private_bytes(secret)
        with pytest.raises(EvidenceError):
            open_evidence(key, blob)
        assert name
    # even forging the recipient id check away, the AEAD still refuses
    for secret in device_secrets.values():
        key = X25519PrivateKey.from_private_bytes(secret)
        with pytest.raises(EvidenceError):
            privacy._open(key, blob[:8] + privacy.recipient_id(key.public_key()) + blob[16:], EVIDENCE_MAGIC)
    store.close()


def test_damaged_evidence_is_refused(tmp_path: Path) -> None:
    agency = make_agency(tmp_path)
    pub = load_evidence_pub(agency.dir / "evidence.pub")
    key = load_evidence_key(agency.dir / "evidence.key")
    blob = bytearray(seal_evidence(pub, b"c", b"f", {}))
    blob[-3] ^= 1
    with pytest.raises(EvidenceError, match="does not open"):
        open_evidence(key, bytes(blob))
    with pytest.raises(EvidenceError, match="not alprd sealed"):
        open_evidence(key, b"JPEG....")


def test_sealed_text_roundtrip(tmp_path: Path) -> None:
    agency = make_agency(tmp_path)
    sealed = seal_text(load_evidence_pub(agency.dir / "evidence.pub"), "ABC1234|CA")
    assert "ABC1234" not in sealed
    assert open_text(load_evidence_key(agency.dir / "evidence.key"), sealed) == "ABC1234|CA"
    with pytest.raises(EvidenceError):
        open_evidence(load_evidence_key(agency.dir / "evidence.key"), base64.b64decode(sealed))


def test_a_clock_set_back_gives_counts_only_until_it_passes_the_last_window_never_start_after_end() -> None:
    """The attack: the wall clock stepped back 2 h; two windows went out with tokens over the same
    hours, one with start > end. Windows of 15 min, as the default."""
    clock = FakeClock()
    s = Summarizer("tokens", 16, 900, clock)
    windows = []

    def window(step_back_at: float | None = None) -> dict[str, object]:
        _feed(s)
        if step_back_at is not None:
            clock.advance(step_back_at)
            clock.jump_wall(-7200)
            clock.advance(900 - step_back_at)
        else:
            clock.advance(900)
        out = s.flush().as_dict()
        windows.append(out)
        return out

    first = window()
    assert first["mode"] == "tokens" and first["tokens"]
    stepped = window(step_back_at=300)  # the clock goes back 2 h in the middle of a window
    assert stepped["mode"] == "counts" and "tokens" not in stepped and stepped["passes"] == 12
    assert stepped["start"] <= stepped["end"]
    while clock.time() < float(first["end"]):  # type: ignore[arg-type]
        assert window()["mode"] == "counts"  # each still overlaps time a token window already covered
    resumed = window()
    assert resumed["mode"] == "tokens" and resumed["tokens"]
    assert all(w["start"] <= w["end"] for w in windows)  # type: ignore[operator]
    token_windows = [w for w in windows if w["mode"] == "tokens"]
    for a, b in itertools.pairwise(token_windows):
        assert b["start"] >= a["end"]  # type: ignore[operator]  # no two token sets claim the same time
    assert [w["epoch"] for w in windows] == list(range(len(windows)))  # the key was ratcheted every time
