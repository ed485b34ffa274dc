"""The compliance manifest: what the device does with what it sees, stated from its running config and
code, never written by hand (SB 34, Civil Code 1798.90.51: purpose, custodian, retention, sharing).

`build_manifest` is called by the daemon at start (published retained on `<prefix>/<device>/manifest`,
again when the hot list changes) and by `alprd policy manifest`, with what each knows: the daemon the
models it loaded, the list it uses and the command topics it routed; the command line the models the
config names, the installed bundle and the topics the same config routes. Topics and fields come from
the payload dataclasses (`alprd.payloads`), retention from the config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from .. import __version__
from ..config import Config, config_hash
from ..errors import AlprdError
from ..payloads import (
    EVIDENCE_FIELDS,
    EVIDENCE_TOPIC,
    PUBLISHED,
    CaptureRulesBody,
    FenceBody,
    InTopic,
    Kept,
    ListSummary,
    ManifestBody,
    NoList,
    OutTopic,
    PolicyBody,
)
from ..privacy.keys import (
    DEVICE_SEAL_KEY_NAME,
    credential_source,
    key_id,
    load_evidence_pub,
    load_list_key,
    load_or_create_device_key,
    load_or_create_device_seal_key,
    load_signing_pub,
    raw_public,
)
from ..schemas import body_fields, schema_file
from ..store import DEVICE_KEY_NAME
from ..types import iso_z
from . import homeassistant
from .rules import load_geofence

COMMANDS = {
    "hotlist/set": "a hot list from headquarters: signed, encrypted; refused unless newer and of this list",
    "ack": "headquarters' signed acknowledgements: a hit (mqtt.app_ack), or its evidence (then deleted)",
    "hotlist/key": "the list key, sealed to this device's key (hotlist.key_source hq); kept in RAM only",
}


class ListManifest(Protocol):
    """A hot list's manifest (`alprd.privacy.hotlist.Manifest`)."""

    @property
    def list_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def expires(self) -> datetime: ...


def list_summary(m: ListManifest | None) -> ListSummary | None:
    return None if m is None else ListSummary(list_id=m.list_id, version=m.version, entries=m.entries,
                                              expires=iso_z(m.expires))


def _sha256_file(path: Path) -> str:
    """The geofence file as loaded (a fence is places, never a plate)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published(cfg: Config, extra: Mapping[str, OutTopic] | None = None) -> tuple[OutTopic, ...]:
    """Every topic the device publishes on, with the fields of its body; none with MQTT off."""
    if not cfg.mqtt.enabled:
        return ()
    base = f"{cfg.mqtt.topic_prefix.rstrip('/')}/{cfg.device_id}"
    out = [
        OutTopic(name=f"{base}/{body.topic}", about=body.ABOUT, qos=body.QOS, retained=body.RETAINED,
                 format="json", schema=f"docs/payloads/{schema_file(body)}", fields=body_fields(body))
        for body in PUBLISHED
    ]
    out.append(OutTopic(
        name=f"{base}/{EVIDENCE_TOPIC}/+", qos=1, retained=False, format="sealed", schema=None,
        about="a hit's evidence (plate crop and frame), sealed to headquarters' evidence.pub; the last "
        "level is the hit id", fields=EVIDENCE_FIELDS,
    ))
    return (*out, *(extra or {}).values())


def subscribed(cfg: Config, channels: Mapping[str, int]) -> tuple[InTopic, ...]:
    base = f"{cfg.mqtt.topic_prefix.rstrip('/')}/{cfg.device_id}"
    return tuple(InTopic(name=f"{base}/{ch}", about=COMMANDS.get(ch, ch), max_bytes=limit)
                 for ch, limit in channels.items())


def stored(cfg: Config) -> tuple[Kept, ...]:
    """What stays on the device, where, and for how long at most."""
    retention = cfg.policy.retention_days * 86400
    state = str(cfg.storage.dir)
    return (
        Kept(what="hits and summaries not yet delivered (with mqtt.app_ack: not yet acknowledged), and "
             "which evidence is still to be sent", where=f"{state}/alprd.db (outbox)",
             until="delivered, or policy.retention_days", max_s=retention),
        Kept(what="each hit's evidence, sealed to evidence.pub (the device cannot open it)",
             where=f"{state}/evidence/", until="headquarters' evidence ack, or privacy.evidence_ttl_s",
             max_s=cfg.privacy.evidence_ttl_s),
        Kept(what="the audit chain: hit ids, list versions, installs, queries (sealed), capture rule "
             "changes, purges; never a plate in clear", where=f"{state}/alprd.db (audit)",
             until="kept: checkpoint it off the device", max_s=None),
        Kept(what="the current window's pass counts (or keyed tokens under a RAM-only key)", where="RAM",
             until="the window closes, then as a summary in the outbox",
             max_s=cfg.privacy.summary_interval_s),
        Kept(what="the hot list, encrypted; decrypted only in RAM", where=str(cfg.hotlist.bundle),
             until="replaced by a newer list", max_s=None),
        Kept(what="plates that match no list entry", where="nowhere", until="never stored", max_s=0),
    )


def capture_rules(cfg: Config) -> CaptureRulesBody:
    fence = cfg.capture.geofence
    return CaptureRulesBody(
        schedule=None if cfg.capture.schedule is None else cfg.capture.schedule.model_dump(mode="json"),
        geofence=None if fence is None else FenceBody(
            file=str(fence.file), mode=fence.mode, sha256=_sha256_file(fence.file),
            polygons=len(load_geofence(fence.file))),
    )


def _key_files(cfg: Config, ack: bool) -> Iterator[tuple[str, Path, str]]:
    yield "hotlist.signing_pub", cfg.hotlist.signing_pub, "signing"
    yield "privacy.evidence_pub", cfg.privacy.evidence_pub, "evidence"
    if ack:
        yield "mqtt.ack_pub", cfg.mqtt.ack_pub, "signing"
    if cfg.hotlist.key_source == "file":
        yield "hotlist.list_key", cfg.hotlist.list_key, "list"
    else:
        yield "hotlist.device_key", cfg.hotlist.device_key or cfg.storage.dir / DEVICE_SEAL_KEY_NAME, "seal"
    yield "storage.device_key", cfg.storage.dir / DEVICE_KEY_NAME, "device"


def key_fingerprints(cfg: Config, ack: bool) -> dict[str, str]:
    """`key_id` of each key file in use (the list key's is the one its bundles name); a file that is
    not there (a device key not made yet) is left out."""
    out: dict[str, str] = {}
    for name, configured, kind in _key_files(cfg, ack):
        path, _ = credential_source(configured)
        if not path.is_file():
            continue
        if kind == "list":
            out[name] = key_id(load_list_key(path))
        elif kind == "seal":
            out[name] = key_id(raw_public(load_or_create_device_seal_key(path, create=False).public_key()))
        elif kind == "device":
            out[name] = key_id(raw_public(load_or_create_device_key(path).public_key()))
        else:
            pub = load_evidence_pub(path) if kind == "evidence" else load_signing_pub(path)
            out[name] = key_id(raw_public(pub))
    return out


def build_manifest(
    cfg: Config,
    *,
    models: Mapping[str, str],
    hotlist: ListSummary | None,
    channels: Mapping[str, int],
    ack: bool,
) -> ManifestBody:
    """Raises AlprdError (KeyFileError, ConfigError) when a key or the geofence does not load.

    `models`: name -> SHA-256; `hotlist`: the list in use (or installed); `channels`: the command
    topics taken, with their size limits; `ack`: whether an ack key is in use."""
    p = cfg.policy
    try:
        keys = key_fingerprints(cfg, ack)
    except OSError as e:
        raise AlprdError(f"a key file could not be read: {e}") from None
    return ManifestBody(
        device_id=cfg.device_id, version=__version__, config=config_hash(cfg),
        policy=PolicyBody(purpose=p.purpose, custodian=p.custodian, retention_days=p.retention_days,
                          sharing=p.sharing),
        published=published(cfg, homeassistant.topics(cfg)),
        subscribed=subscribed(cfg, channels) if cfg.mqtt.enabled else (),
        stored=stored(cfg), capture=capture_rules(cfg), keys=keys, models=dict(models),
        hotlist=hotlist if hotlist is not None else NoList(),
    )
