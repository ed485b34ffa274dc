"""Signed back-office acknowledgements (`mqtt.app_ack`).

With `app_ack` on, a hit leaves the outbox only when the back office confirms it on
`<prefix>/<device>/ack`. Anyone who may read the hit topic knows the hit ids, so an unsigned ack
would let any such client drop every undelivered hit; an ack is therefore
`{"hit_id": ..., "sig": base64(Ed25519("alprd-ack/1|" + device_id + "|" + hit_id))}`, signed with
headquarters' `ack.key` (from `alprd keys agency`) and checked against `ack.pub` on the device. The
device id in the signed text keeps an ack for one device from acking a hit id on another.
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..untrusted import UntrustedInput, loads

ACK_DOMAIN = "alprd-ack/1|"
MAX_ACK_BYTES = 1024
"""A signed ack is about 150 bytes; larger payloads are refused unread."""


def ack_text(device_id: str, hit_id: str) -> bytes:
    return f"{ACK_DOMAIN}{device_id}|{hit_id}".encode()


def make_ack(key: Ed25519PrivateKey, device_id: str, hit_id: str) -> bytes:
    """The payload the back office publishes on `<prefix>/<device_id>/ack` for hit `hit_id`."""
    sig = base64.b64encode(key.sign(ack_text(device_id, hit_id))).decode("ascii")
    return json.dumps({"hit_id": hit_id, "sig": sig}, separators=(",", ":")).encode()


def verify_ack(pub: Ed25519PublicKey, device_id: str, payload: bytes) -> str:
    """The hit id a valid ack confirms; raises UntrustedInput for anything else."""
    body = loads(payload, MAX_ACK_BYTES, max_depth=1)
    if not isinstance(body, dict):
        raise UntrustedInput("not a JSON object")
    hit_id, sig = body.get("hit_id"), body.get("sig")
    if not isinstance(hit_id, str) or not hit_id or len(hit_id) > 80:
        raise UntrustedInput("no hit_id")
    if not isinstance(sig, str):
        raise UntrustedInput("unsigned (no sig)")
    try:
        pub.verify(base64.b64decode(sig, validate=True), ack_text(device_id, hit_id))
    except (InvalidSignature, binascii.Error, ValueError):
        raise UntrustedInput("signature does not verify with ack.pub") from None
    return hit_id
