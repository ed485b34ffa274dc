"""Signed back-office acknowledgements (`mqtt.app_ack`).

With `app_ack` on, a hit leaves the outbox only when the back office confirms it on
`<prefix>/<device>/ack`. Anyone who may read the hit topic knows the hit ids, so an unsigned ack
would let any such client drop every undelivered hit; an ack is therefore
`{"hit_id": ..., "sig": base64(Ed25519("alprd-ack/1|" + device_id + "|" + hit_id))}`, signed with
headquarters' `ack.key` (from `alprd keys agency`) and checked against `ack.pub` on the device. The
device id in the signed text keeps an ack for one device from acking a hit id on another.

Headquarters acknowledges a hit's *evidence* the same way, with its own signed text so that a hit
ack seen on the topic cannot be turned into one: `{"hit_id": ..., "evidence": true, "sig":
base64(Ed25519("alprd-evidence-ack/1|" + device_id + "|" + hit_id))}`. The device then deletes the
sealed evidence (it need not keep what headquarters already holds).
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..untrusted import UntrustedInput, loads

ACK_DOMAIN = "alprd-ack/1|"
EVIDENCE_ACK_DOMAIN = "alprd-evidence-ack/1|"
MAX_ACK_BYTES = 1024
"""A signed ack is about 150 bytes; larger payloads are refused unread."""


def ack_text(device_id: str, hit_id: str, evidence: bool = False) -> bytes:
    return f"{EVIDENCE_ACK_DOMAIN if evidence else ACK_DOMAIN}{device_id}|{hit_id}".encode()


def make_ack(key: Ed25519PrivateKey, device_id: str, hit_id: str, *, evidence: bool = False) -> bytes:
    """The payload the back office publishes on `<prefix>/<device_id>/ack` for hit `hit_id` (with
    `evidence`: for the hit's evidence)."""
    sig = base64.b64encode(key.sign(ack_text(device_id, hit_id, evidence))).decode("ascii")
    body: dict[str, object] = {"hit_id": hit_id, "sig": sig}
    if evidence:
        body["evidence"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def verify_ack(pub: Ed25519PublicKey, device_id: str, payload: bytes) -> str:
    """The hit id a valid hit ack confirms; raises UntrustedInput for anything else (an evidence ack
    included)."""
    hit_id, evidence = read_ack(pub, device_id, payload)
    if evidence:
        raise UntrustedInput("an evidence ack, not a hit ack")
    return hit_id


def read_ack(pub: Ed25519PublicKey, device_id: str, payload: bytes) -> tuple[str, bool]:
    """(hit id, whether it acknowledges the evidence) of a valid ack; raises UntrustedInput otherwise."""
    body = loads(payload, MAX_ACK_BYTES, max_depth=1)
    if not isinstance(body, dict):
        raise UntrustedInput("not a JSON object")
    hit_id, sig, evidence = body.get("hit_id"), body.get("sig"), body.get("evidence", False)
    if not isinstance(hit_id, str) or not hit_id or len(hit_id) > 80:
        raise UntrustedInput("no hit_id")
    if not isinstance(evidence, bool):
        raise UntrustedInput("evidence is not true or false")
    if not isinstance(sig, str):
        raise UntrustedInput("unsigned (no sig)")
    try:
        pub.verify(base64.b64decode(sig, validate=True), ack_text(device_id, hit_id, evidence))
    except (InvalidSignature, binascii.Error, ValueError):
        raise UntrustedInput("signature does not verify with ack.pub") from None
    return hit_id, evidence
