"""hotlist.key_source hq: the list key reaches a device sealed to it and signed by headquarters."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from alprd.privacy.keys import (
    generate_agency_keys,
    load_list_key,
    load_or_create_device_seal_key,
    load_signing_key,
    load_signing_pub,
)
from alprd.privacy.listkey import open_for_device, seal_for_device
from alprd.untrusted import UntrustedInput


def test_sealed_list_key_opens_only_on_its_device_and_only_signed_by_headquarters(tmp_path: Path) -> None:
    generate_agency_keys(tmp_path)
    signing, pub = load_signing_key(tmp_path / "signing.key"), load_signing_pub(tmp_path / "signing.pub")
    list_key = load_list_key(tmp_path / "list.key")
    device = load_or_create_device_seal_key(tmp_path / "dev" / "device-x25519.key")
    msg = seal_for_device(signing, device.public_key(), "dev-1", list_key, issued=1000)
    assert list_key not in msg
    got = open_for_device(msg, device, pub, "dev-1")
    assert got.key == list_key and got.issued == 1000
    with pytest.raises(UntrustedInput, match="another device"):
        open_for_device(msg, device, pub, "dev-2")
    with pytest.raises(UntrustedInput, match="does not open"):
        open_for_device(msg, X25519PrivateKey.generate(), pub, "dev-1")
    forged = seal_for_device(Ed25519PrivateKey.generate(), device.public_key(), "dev-1", b"k" * 32)
    with pytest.raises(UntrustedInput, match="signature"):
        open_for_device(forged, device, pub, "dev-1")
    with pytest.raises(UntrustedInput, match="signature"):
        open_for_device(msg.replace(b'"issued":1000', b'"issued":2000'), device, pub, "dev-1")
    with pytest.raises(UntrustedInput):
        open_for_device(b"{" * 3000, device, pub, "dev-1")
