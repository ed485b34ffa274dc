"""`alprd policy manifest`: the compliance manifest of a device, from its config and the code.

It is what the daemon publishes retained on `<prefix>/<device>/manifest` at start (`--json` prints
that body), computed here without starting anything: the models the config names (from their
contracts), the installed hot list's manifest, and the command topics the config takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import AlprdError, HotListError
from ..exits import Exit
from ..payloads import ListSummary, ManifestBody
from .common import config_or_exit, fail


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pol = sub.add_parser(
        "policy", help="the compliance manifest (SB 34) of a device",
        description="What a device does with what it sees, generated from its config and the code: the "
        "policy elements, what leaves it and what stays, capture rules, keys, models, hot list.",
    )
    psub = pol.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = psub.add_parser("manifest", help="print the compliance manifest of the device a config describes")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--json", action="store_true",
                   help="print the JSON the daemon publishes retained on <prefix>/<device>/manifest")
    p.set_defaults(handler=cmd_policy_manifest)


def cmd_policy_manifest(args: argparse.Namespace) -> int:
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    from ..device.commands import command_channels
    from ..device.manifest import build_manifest, list_summary
    from ..privacy.hotlist import read_manifest_unverified
    from ..privacy.keys import credential_source
    from ..read.reader import configured_models

    # as the daemon decides it (commands.ack_key), with the file the service will be given
    ack = cfg.mqtt.enabled and (cfg.mqtt.app_ack or credential_source(cfg.mqtt.ack_pub)[0].is_file())
    hotlist: ListSummary | None = None
    try:
        if cfg.hotlist.bundle.is_file():
            hotlist = list_summary(read_manifest_unverified(cfg.hotlist.bundle.read_bytes()))
        body = build_manifest(
            cfg, models=configured_models(cfg.reader), hotlist=hotlist,
            channels={ch: limit.max_bytes for ch, limit in command_channels(cfg, ack).items()}, ack=ack)
    except HotListError as e:
        return fail(f"{cfg.hotlist.bundle}: {e}")
    except AlprdError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{e.filename}: {e.strerror}")
    if args.json:
        print(json.dumps(body.as_dict(), indent=1, sort_keys=True))
    else:
        sys.stdout.write(text(body))
    return Exit.OK


def text(m: ManifestBody) -> str:
    """The manifest for a person to read."""
    p = m.policy
    out = [
        f"Compliance manifest of {m.device_id} (alprd {m.version}), config {m.config}",
        "",
        "Policy (California SB 34, Civil Code 1798.90.51)",
        f"  purpose:   {p.purpose}",
        f"  custodian: {p.custodian}",
        f"  retention: {p.retention_days} days at most on the device",
        f"  sharing:   {p.sharing}",
        "",
        "What leaves the device (MQTT)" if m.published else "What leaves the device: nothing (MQTT is off)",
    ]
    for t in m.published:
        how = f"qos {t.qos}{', retained' if t.retained else ''}, {t.format}"
        out += [f"  {t.name} ({how}): {t.about}"]
        if t.fields:
            out += [f"    fields: {', '.join(t.fields)}"]
        if t.schema:
            out += [f"    schema: {t.schema}"]
    if m.subscribed:
        out += ["", "What it takes in"]
        out += [f"  {t.name} (at most {t.max_bytes} bytes): {t.about}" for t in m.subscribed]
    out += ["", "What stays on the device"]
    for k in m.stored:
        most = "" if k.max_s is None else f" (at most {k.max_s} s)"
        out += [f"  {k.what}", f"    where: {k.where}; until: {k.until}{most}"]
    out += ["", "Capture rules"]
    sched, fence = m.capture.schedule, m.capture.geofence
    if sched is None:
        out += ["  schedule: none (any time)"]
    else:
        out += [f"  schedule ({sched['timezone']}):"]
        windows = sched.get("windows")
        for w in windows if isinstance(windows, list) else []:
            out += [f"    {', '.join(w['days'])} {w['start']}-{w['end']}"]
    if fence is None:
        out += ["  geofence: none (anywhere)"]
    else:
        where = "only inside" if fence.mode == "allow" else "never inside"
        out += [f"  geofence ({fence.mode}): capture {where} the {fence.polygons} polygon(s) of {fence.file}",
                f"    sha256 {fence.sha256}"]
    out += ["", "Keys in use (fingerprints)"] + [f"  {k}: {v}" for k, v in m.keys.items()]
    out += ["", "Models (SHA-256)"] + [f"  {k}: {v}" for k, v in m.models.items()]
    h = m.hotlist
    out += ["", f"Hot list: {h.list_id} version {h.version}, {h.entries} entries, expires {h.expires}"
            if isinstance(h, ListSummary) else "Hot list: none installed"]
    return "\n".join(out) + "\n"
