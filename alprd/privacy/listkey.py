"""The hot-list key off the SD card (`hotlist.key_source: hq`).

With `key_source: file` the 32-byte `list.key` lies on the device (a systemd credential, optionally
TPM-sealed with `LoadCredentialEncrypted=`), beside the encrypted bundle: whoever copies the card
copies both. With `hq`, the device has only its own X25519 key (`alprd keys device`); headquarters
seals the list key to it and publishes the result retained on `<prefix>/<device>/hotlist/key`:

    {"v": 1, "device_id": D, "issued": T, "sealed": base64(seal(device_pub, list_key)), "sig": base64(S)}

S = Ed25519(signing.key, "alprd-list-key/1|" + D + "|" + T + "|" + sealed). The device checks S with
`signing.pub` (no one else can hand it a list key), opens the seal and keeps the key only in RAM;
an older `issued` than the key it holds is refused (a replayed message cannot swap an old key in).
A card copied off a powered-down device then holds the bundle and the device key, not the list key:
reading the list needs the broker too, whose credentials headquarters revokes when a device is lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import EvidenceError
from ..untrusted import UntrustedInput, loads
from .evidence import open_list_key_blob, seal_list_key_blob
from .keys import LIST_KEY_BYTES

DOMAIN = "alprd-list-key/1|"
MAX_MESSAGE_BYTES = 4096


def _signed_text(device_id: str, issued: int, sealed: str) -> bytes:
    return f"{DOMAIN}{device_id}|{issued}|{sealed}".encode()


def seal_for_device(
    signing_key: Ed25519PrivateKey,
    device_pub: X25519PublicKey,
    device_id: str,
    list_key: bytes,
    issued: int | None = None,
) -> bytes:
    """At headquarters: the retained payload for `<prefix>/<device_id>/hotlist/key`."""
    when = int(time.time()) if issued is None else int(issued)
    sealed = base64.b64encode(seal_list_key_blob(device_pub, list_key)).decode("ascii")
    sig = base64.b64encode(signing_key.sign(_signed_text(device_id, when, sealed))).decode("ascii")
    body = {"v": 1, "device_id": device_id, "issued": when, "sealed": sealed, "sig": sig}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class ListKey:
    key: bytes
    issued: int


def open_for_device(
    payload: bytes, device_key: X25519PrivateKey, signing_pub: Ed25519PublicKey, device_id: str
) -> ListKey:
    """On the device: check and open a list-key message; raises UntrustedInput with the reason."""
    body = loads(payload, MAX_MESSAGE_BYTES, max_depth=1)
    if not isinstance(body, dict) or body.get("v") != 1:
        raise UntrustedInput("not a version-1 list-key message")
    issued, sealed, sig = body.get("issued"), body.get("sealed"), body.get("sig")
    if body.get("device_id") != device_id:
        raise UntrustedInput("sealed for another device")
    if not isinstance(issued, int) or isinstance(issued, bool) or not isinstance(sealed, str):
        raise UntrustedInput("issued or sealed missing")
    if not isinstance(sig, str):
        raise UntrustedInput("unsigned (no sig)")
    try:
        signing_pub.verify(base64.b64decode(sig, validate=True), _signed_text(device_id, issued, sealed))
    except (InvalidSignature, binascii.Error, ValueError):
        raise UntrustedInput("signature does not verify with signing.pub") from None
    try:
        key = open_list_key_blob(device_key, base64.b64decode(sealed, validate=True))
    except (EvidenceError, binascii.Error, ValueError):
        raise UntrustedInput("does not open with this device's key (sealed to another device key?)") from None
    if len(key) != LIST_KEY_BYTES:
        raise UntrustedInput(f"the sealed list key is {len(key)} bytes, not {LIST_KEY_BYTES}")
    return ListKey(key, issued)


class ListKeyReceiver:
    """The device's side: checks list-key messages and holds the key's `issued` time, so that an older
    message than the key held (a replay) cannot swap an old key in. The key itself goes to the
    installer, in RAM only."""

    def __init__(self, device_key: X25519PrivateKey, signing_pub: Ed25519PublicKey, device_id: str) -> None:
        self._device_key = device_key
        self._signing_pub = signing_pub
        self._device_id = device_id
        self.issued: int | None = None

    def accept(self, payload: bytes) -> ListKey | None:
        """The new key; None for the retained copy of the key already held (every reconnect brings it).
        Raises UntrustedInput with the reason for anything else."""
        got = open_for_device(payload, self._device_key, self._signing_pub, self._device_id)
        if self.issued is not None and got.issued <= self.issued:
            if got.issued == self.issued:
                return None
            raise UntrustedInput(f"issued {got.issued}, older than the key held ({self.issued})")
        self.issued = got.issued
        return got
