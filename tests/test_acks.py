"""Signed acks: only ack.key makes an ack a device takes, for that device and that hit only."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alprd.privacy.acks import ack_text, make_ack, verify_ack
from alprd.privacy.keys import generate_agency_keys, load_ack_key, load_ack_pub
from alprd.untrusted import UntrustedInput


def test_agency_makes_ack_keys_and_the_format_is_the_documented_one(tmp_path: Path) -> None:
    generate_agency_keys(tmp_path)
    assert stat.S_IMODE((tmp_path / "ack.key").stat().st_mode) == 0o600
    key, pub = load_ack_key(tmp_path / "ack.key"), load_ack_pub(tmp_path / "ack.pub")
    body = json.loads(make_ack(key, "dev-1", "hit-42"))
    assert set(body) == {"hit_id", "sig"} and body["hit_id"] == "hit-42"
    pub.verify(base64.b64decode(body["sig"]), b"alprd-ack/1|dev-1|hit-42")  # raises if not
    assert ack_text("dev-1", "hit-42") == b"alprd-ack/1|dev-1|hit-42"
    assert verify_ack(pub, "dev-1", make_ack(key, "dev-1", "hit-42")) == "hit-42"


@pytest.mark.parametrize(("payload", "why"), [
    (b'{"hit_id": "h"}', "unsigned"),
    (b"h", "not JSON"),
    (b'["h"]', "not a JSON object"),
    (b'{"hit_id": "h", "sig": "!!!"}', "signature"),
    (b'{"hit_id": "h", "sig": "' + base64.b64encode(b"x" * 64) + b'"}', "signature"),
    (b'{"hit_id": 5, "sig": "AAAA"}', "no hit_id"),
    (b'{"hit_id": {"a": {"b": 1}}, "sig": "AAAA"}', "nested"),
    (b" " * 2000, "more than"),
])
def test_anything_but_a_valid_signature_is_refused(tmp_path: Path, payload: bytes, why: str) -> None:
    generate_agency_keys(tmp_path)
    with pytest.raises(UntrustedInput, match=why):
        verify_ack(load_ack_pub(tmp_path / "ack.pub"), "dev-1", payload)


def test_an_ack_is_bound_to_its_device_its_hit_and_the_agency_key(tmp_path: Path) -> None:
    generate_agency_keys(tmp_path)
    key, pub = load_ack_key(tmp_path / "ack.key"), load_ack_pub(tmp_path / "ack.pub")
    ack = make_ack(key, "dev-1", "hit-42")
    with pytest.raises(UntrustedInput):
        verify_ack(pub, "dev-2", ack)
    moved = json.dumps({**json.loads(ack), "hit_id": "hit-43"}).encode()
    with pytest.raises(UntrustedInput):
        verify_ack(pub, "dev-1", moved)
    with pytest.raises(UntrustedInput):
        verify_ack(pub, "dev-1", make_ack(Ed25519PrivateKey.generate(), "dev-1", "hit-42"))
