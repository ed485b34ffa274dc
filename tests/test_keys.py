"""Key files: agency key generation, 0600 checks, device key on first start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from alprd.errors import KeyFileError
from alprd.privacy.keys import (
    AGENCY_FILES,
    generate_agency_keys,
    load_evidence_key,
    load_evidence_pub,
    load_list_key,
    load_or_create_device_key,
    load_signing_key,
    load_signing_pub,
)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_agency_keys_are_made_with_private_files_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # a careless umask must not loosen the private files
    try:
        written = generate_agency_keys(tmp_path / "hq")
    finally:
        os.umask(old)
    assert sorted(p.name for p in written) == sorted(AGENCY_FILES)
    d = tmp_path / "hq"
    for name in ("signing.key", "evidence.key", "list.key"):
        assert _mode(d / name) == 0o600, name
    for name in ("signing.pub", "evidence.pub"):
        assert _mode(d / name) == 0o644, name
    assert isinstance(load_signing_key(d / "signing.key"), Ed25519PrivateKey)
    assert isinstance(load_signing_pub(d / "signing.pub"), Ed25519PublicKey)
    assert isinstance(load_evidence_key(d / "evidence.key"), X25519PrivateKey)
    assert isinstance(load_evidence_pub(d / "evidence.pub"), X25519PublicKey)
    assert len(load_list_key(d / "list.key")) == 32


def test_agency_keys_are_never_overwritten(tmp_path: Path) -> None:
    generate_agency_keys(tmp_path)
    before = (tmp_path / "list.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exist"):
        generate_agency_keys(tmp_path)
    assert (tmp_path / "list.key").read_bytes() == before


@pytest.mark.parametrize("name", ["list.key", "signing.key", "evidence.key"])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o700 | 0o004])
def test_key_file_looser_than_0600_is_refused(tmp_path: Path, name: str, mode: int) -> None:
    generate_agency_keys(tmp_path)
    path = tmp_path / name
    os.chmod(path, mode)
    loader = {"list.key": load_list_key, "signing.key": load_signing_key, "evidence.key": load_evidence_key}
    with pytest.raises(KeyFileError, match="chmod 600"):
        loader[name](path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    generate_agency_keys(tmp_path)
    os.chmod(tmp_path / "list.key", mode)  # systemd credentials are 0400
    assert len(load_list_key(tmp_path / "list.key")) == 32


def test_wrong_key_material_is_refused_with_a_message(tmp_path: Path) -> None:
    generate_agency_keys(tmp_path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    os.chmod(short, 0o600)
    with pytest.raises(KeyFileError, match="exactly 32 raw bytes"):
        load_list_key(short)
    with pytest.raises(KeyFileError, match="expected an Ed25519 private key"):
        load_signing_key(tmp_path / "evidence.key")
    with pytest.raises(KeyFileError, match="expected an X25519 public key"):
        load_evidence_pub(tmp_path / "signing.pub")
    with pytest.raises(KeyFileError, match="not found"):
        load_list_key(tmp_path / "missing.key")


def test_device_key_is_created_once_0600_and_reused(tmp_path: Path) -> None:
    p = tmp_path / "device.key"
    k1 = load_or_create_device_key(p)
    assert _mode(p) == 0o600
    k2 = load_or_create_device_key(p)
    assert k1.public_key().public_bytes_raw() == k2.public_key().public_bytes_raw()
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_device_key(p)
