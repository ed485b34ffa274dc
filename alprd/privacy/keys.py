"""Key files: the agency's keys (made at headquarters) and the device's own audit key.

Headquarters keeps `signing.key` (Ed25519, signs hot-list bundles), `evidence.key` (X25519, opens
sealed hit evidence) and `ack.key` (Ed25519, signs back-office acks, `mqtt.app_ack`). A device
receives only `signing.pub`, `evidence.pub`, `ack.pub` and `list.key` (32 random bytes that encrypt
hot-list bundles; with `hotlist.key_source: hq` it never gets the file, see alprd.listkey).
Private files must not be readable by group or others: a looser mode is refused rather than
silently fixed, because it means the secret may already have leaked.

Asymmetric keys are PEM (PKCS#8 / SubjectPublicKeyInfo, readable by `openssl pkey`); `list.key` is the
raw 32 bytes, as systemd credentials carry it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import AlprdError, KeyFileError

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

LIST_KEY_BYTES = 32
AGENCY_FILES = (
    "signing.key", "signing.pub", "evidence.key", "evidence.pub", "list.key", "ack.key", "ack.pub",
)
ACK_FILES = ("ack.key", "ack.pub")
"""Added after the first release: a key folder holding all the others gets only these two."""
DEVICE_FILES = ("signing.pub", "evidence.pub", "ack.pub", "list.key")
PRIVATE_MODE = 0o600


def key_id(public_or_secret: bytes) -> str:
    """A short, non-secret fingerprint that tells keys apart in messages (SHA-256, 16 hex digits)."""
    return hashlib.sha256(b"alprd/key-id/v1|" + public_or_secret).hexdigest()[:16]


# --- writing -----------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a file that must not exist yet (keys are never silently overwritten)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_agency_keys(out: Path) -> list[Path]:
    """Make the agency's key set in `out` (created 0700 if missing); refuses to overwrite any key.

    A folder made before acks were signed (every file but `ack.key`/`ack.pub`) gets just those two:
    nothing is overwritten, and the devices' other keys stay valid.
    """
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = [name for name in AGENCY_FILES if (out / name).exists()]
    older = set(AGENCY_FILES) - set(ACK_FILES)
    upgrade = set(existing) == older
    if existing and not upgrade:
        raise KeyFileError(
            f"{out}: {', '.join(existing)} already exist; keys are never overwritten "
            "(move them away first, or choose another --out)"
        )
    pem = serialization.Encoding.PEM
    priv_fmt = serialization.PrivateFormat.PKCS8
    pub_fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    none = serialization.NoEncryption()
    ack = Ed25519PrivateKey.generate()
    files = {
        "ack.key": (ack.private_bytes(pem, priv_fmt, none), PRIVATE_MODE),
        "ack.pub": (ack.public_key().public_bytes(pem, pub_fmt), 0o644),
    }
    if not upgrade:
        signing = Ed25519PrivateKey.generate()
        evidence = X25519PrivateKey.generate()
        files = {
            "signing.key": (signing.private_bytes(pem, priv_fmt, none), PRIVATE_MODE),
            "signing.pub": (signing.public_key().public_bytes(pem, pub_fmt), 0o644),
            "evidence.key": (evidence.private_bytes(pem, priv_fmt, none), PRIVATE_MODE),
            "evidence.pub": (evidence.public_key().public_bytes(pem, pub_fmt), 0o644),
            "list.key": (os.urandom(LIST_KEY_BYTES), PRIVATE_MODE),
            **files,
        }
    written = []
    for name, (data, mode) in files.items():
        path = out / name
        _write_new(path, data, mode)
        written.append(path)
    _fsync_dir(out)
    return written


# --- reading -----------------------------------------------------------------------------------


def check_private_mode(path: Path) -> None:
    """Refuse a secret file that group or others could read or write (systemd credentials are 0400)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if loose:
        raise KeyFileError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others read this secret; "
            f"run `chmod 600 {path}` (and consider the key leaked if others could read it)"
        )


def _read(path: Path, private: bool) -> bytes:
    if private:
        check_private_mode(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror}") from None


def load_list_key(path: Path) -> bytes:
    data = _read(path, private=True)
    if len(data) != LIST_KEY_BYTES:
        raise KeyFileError(
            f"{path}: a list key is exactly {LIST_KEY_BYTES} raw bytes, this file has {len(data)}; "
            "copy list.key from `alprd keys agency` unchanged"
        )
    return data


def _load_private_pem(path: Path, needs: str) -> object:
    try:
        head = path.read_bytes()[:64]
    except OSError:
        head = b""  # _read says why
    if b"PUBLIC KEY" in head:
        # before the mode check: a public key is 0644 on purpose, the wrong file rather than a leak
        raise KeyFileError(f"{path} is a public key; {needs}")
    data = _read(path, private=True)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a PEM private key ({e})") from None


def _load_public_pem(path: Path) -> object:
    data = _read(path, private=False)
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a PEM public key ({e})") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private_pem(path, "signing needs the private key, signing.key")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key (signing.key)")
    return key


def load_signing_pub(path: Path) -> Ed25519PublicKey:
    key = _load_public_pem(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key (signing.pub)")
    return key


def load_ack_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private_pem(path, "signing acks needs the private key, ack.key (at headquarters)")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key (ack.key)")
    return key


def load_ack_pub(path: Path) -> Ed25519PublicKey:
    key = _load_public_pem(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"{path}: expected an Ed25519 public key (ack.pub from `alprd keys agency`)"
        )
    return key


def load_evidence_key(path: Path) -> X25519PrivateKey:
    key = _load_private_pem(path, "opening evidence needs the private key, evidence.key (at headquarters)")
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path}: expected an X25519 private key (evidence.key)")
    return key


def load_evidence_pub(path: Path) -> X25519PublicKey:
    key = _load_public_pem(path)
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(f"{path}: expected an X25519 public key (evidence.pub)")
    return key


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_or_create_device_key(path: Path) -> Ed25519PrivateKey:
    """The device's own Ed25519 key (audit MAC and checkpoints), made on first start, 0600."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            _write_new(path, data, PRIVATE_MODE)
            _fsync_dir(path.parent)
            log.info("created device key %s", path)
            return key
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create the device key: {e.strerror}") from None
    return load_signing_key(path)


DEVICE_SEAL_KEY_NAME = "device-x25519.key"
"""hotlist.key_source hq: the device key headquarters seals the list key to (in storage.dir)."""


def load_or_create_device_seal_key(path: Path, create: bool = True) -> X25519PrivateKey:
    """The device's X25519 key for `hotlist.key_source: hq`, made on first use, 0600."""
    if create and not path.exists():
        key = X25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_new(path, data, PRIVATE_MODE)
            _fsync_dir(path.parent)
            log.info("created device key %s", path)
            return key
        except FileExistsError:
            pass
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create the device key: {e.strerror}") from None
    loaded = _load_private_pem(path, "hotlist.device_key is the device's private X25519 key")
    if not isinstance(loaded, X25519PrivateKey):
        raise KeyFileError(f"{path}: expected an X25519 private key (hotlist.device_key)")
    return loaded


def public_pem(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_file(path: Path) -> bytes:
    """A secret that is not one of ours (MQTT password, TLS client key): mode checked, bytes returned."""
    return _read(path, private=True)


# --- the key files a config names (check-config and selftest) ------------------------------------

CREDENTIALS = Path("/run/credentials/alprd.service")
"""systemd's $CREDENTIALS_DIRECTORY for alprd.service: exists only while the service runs."""

UNIT_PATHS = (Path("/etc/systemd/system/alprd.service"),)
"""Where the installed unit is looked up for LoadCredential= sources (see `credential_source`)."""


def credential_source(path: Path, units: tuple[Path, ...] = UNIT_PATHS) -> tuple[Path, str]:
    """Outside the service, a path under /run/credentials/alprd.service does not exist yet: the file to
    check is the one the installed unit's `LoadCredential=NAME:SOURCE` line feeds it from. Returns that
    file and a note for messages ("" when `path` itself is the file to check)."""
    if path.parent != CREDENTIALS or "CREDENTIALS_DIRECTORY" in os.environ or path.exists():
        return path, ""
    read: list[str] = []
    for unit in units:
        try:
            lines = unit.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        read.append(str(unit))
        for line in lines:
            key, _, value = line.strip().partition("=")
            name, _, source = value.partition(":")
            if key == "LoadCredential" and name == path.name and source:
                return Path(source), f" (LoadCredential source in {unit})"
    why = (f"{', '.join(read)} has no LoadCredential={path.name}:... line" if read
           else f"no installed unit ({', '.join(map(str, units)) or 'none given'}) names its source")
    return path, f" (a systemd credential, present only inside the running service; {why})"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    key: str
    """The config key that names the file, e.g. `hotlist.list_key`."""
    path: Path
    """The file checked (the LoadCredential= source outside the service)."""
    private: bool
    error: str = ""
    via: str = ""


def check_key_files(cfg: Config, units: tuple[Path, ...] = UNIT_PATHS) -> Iterator[KeyCheck]:
    """Load every key file `cfg` names, as the daemon will: existence, format, and for secrets the mode
    (0600 or stricter). One result per file, in config order."""
    hq = cfg.hotlist.key_source == "hq"  # no list key on the device: it arrives over MQTT
    loaders: list[tuple[str, Path | None, Callable[[Path], object], bool]] = [
        ("hotlist.list_key", None if hq else cfg.hotlist.list_key, load_list_key, True),
        ("hotlist.signing_pub", cfg.hotlist.signing_pub, load_signing_pub, False),
        ("privacy.evidence_pub", cfg.privacy.evidence_pub, load_evidence_pub, False),
        ("mqtt.password_file", cfg.mqtt.password_file, load_private_file, True),
        # without app_ack it is optional (evidence acks): checked when it is there
        ("mqtt.ack_pub", cfg.mqtt.ack_pub if cfg.mqtt.app_ack or credential_source(
            cfg.mqtt.ack_pub, units)[0].is_file() else None, load_ack_pub, False),
    ]
    if cfg.mqtt.tls is not None:
        loaders.append(("mqtt.tls.key", cfg.mqtt.tls.key, load_private_file, True))
    for key, configured, load, private in loaders:
        if configured is None:
            continue
        path, via = credential_source(configured, units)
        try:
            load(path)
        except AlprdError as e:
            yield KeyCheck(key, path, private, str(e), via)
            continue
        yield KeyCheck(key, path, private, "", via)
