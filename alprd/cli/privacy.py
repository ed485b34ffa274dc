"""`alprd keys|hotlist|evidence|audit`: the privacy core's command line.

Headquarters: `keys agency`, `hotlist pack`, `hotlist inspect --keys`, `evidence open`.
Device: `hotlist inspect --config`, `hotlist install`, `hotlist query`, `audit verify|checkpoint`.
Nothing here prints a hot-list plate, except `hotlist query` echoing the entry the operator asked about.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import EvidenceError, HotListError, KeyFileError, StoreError
from ..exits import Exit
from ..privacy.keys import (
    generate_agency_keys,
    load_evidence_key,
    load_evidence_pub,
    load_list_key,
    load_signing_key,
    load_signing_pub,
    write_file_atomic,
)
from .common import config_or_exit, fail

if TYPE_CHECKING:
    from ..privacy.hotlist import Entry, HotListInstaller
    from ..store import Store

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `24h`, `7d`. The unit is required: a bare 3 could mean 3 seconds or 3 days."""
    m = _DURATION.match(text)
    if not m:
        if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
            raise argparse.ArgumentTypeError(
                f"{text!r} needs a unit: s, m, h or d (e.g. {text.strip()}h or {text.strip()}d)"
            )
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m or 7d")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return timedelta(seconds=seconds)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return v


def _default_actor() -> str:
    # sudo keeps the real operator's name; the audit log must say who, not "root"
    return os.environ.get("SUDO_USER") or getpass.getuser()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys", help="make key files",
        description="Make the agency's key files at headquarters: signing.key/.pub (Ed25519, signs hot-list "
        "bundles), evidence.key/.pub (X25519, seals hit evidence) and list.key (encrypts hot lists). "
        "A device gets only signing.pub, evidence.pub and list.key.",
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("agency", help="make the agency's keys (at headquarters)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the new key files")
    p.set_defaults(handler=cmd_keys_agency)
    p = ksub.add_parser(
        "device", help="print this device's X25519 public key (made if missing; hotlist.key_source hq)"
    )
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write it here (give it to headquarters)")
    p.set_defaults(handler=cmd_keys_device)
    p = ksub.add_parser(
        "seal-list-key",
        help="seal list.key to one device (at headquarters); publish the output retained on "
        "<prefix>/<device>/hotlist/key",
    )
    p.add_argument("--keys", required=True, type=Path, metavar="DIR", help="folder from `alprd keys agency`")
    p.add_argument("--device-pub", required=True, type=Path, metavar="FILE", help="from `alprd keys device`")
    p.add_argument("--device-id", required=True, help="the device's device_id")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_keys_seal_list_key)

    hot = sub.add_parser(
        "hotlist", help="pack, inspect, install and query hot lists",
        description="Hot lists: pack a CSV into a signed, encrypted bundle (headquarters), inspect it, "
        "install it on a device, look a plate up (audited).",
    )
    hsub = hot.add_subparsers(dest="hotlist_command", metavar="ACTION", required=True)
    p = hsub.add_parser("pack", help="CSV -> signed, encrypted bundle (at headquarters)")
    p.add_argument("csv", type=Path, metavar="CSV",
                   help="the list: header row, plate and reason columns (README: CSV)")
    p.add_argument("--keys", required=True, type=Path, metavar="DIR", help="folder from `alprd keys agency`")
    p.add_argument("--version", required=True, type=_positive_int, help="list version; must grow every time")
    p.add_argument(
        "--valid-for",
        type=parse_duration,
        default=timedelta(hours=24),
        metavar="DURATION",
        help="how long devices may use the list, with a unit: 90m, 24h, 7d (default 24h)",
    )
    p.add_argument(
        "--list-id", default="default",
        help="name of the list (default: default); a device takes only bundles of its hotlist.list_id",
    )
    p.add_argument(
        "--columns", choices=("alprd", "ncic"), default="alprd",
        help="the CSV's header: alprd (plate, reason, ...; README: CSV) or ncic (LIC, LIS, LIT, NIC, OCA, "
        "ORI, MKE, EXP; other columns are ignored, entries already expired are left out)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="BUNDLE")
    p.set_defaults(handler=cmd_hotlist_pack)

    p = hsub.add_parser(
        "delta", help="what changed since an earlier bundle, signed and encrypted (at headquarters)",
        description="Pack only what changed since BASE (a bundle this headquarters sent) as version "
        "--version of the same list. A device applies it to exactly that list, on hotlist/set or "
        "`hotlist install` like a bundle, and refuses it otherwise (then send the full bundle).",
    )
    p.add_argument("base", type=Path, metavar="BASE", help="the bundle the devices hold now")
    p.add_argument("csv", type=Path, metavar="CSV", help="the whole new list")
    p.add_argument("--keys", required=True, type=Path, metavar="DIR", help="folder from `alprd keys agency`")
    p.add_argument("--version", required=True, type=_positive_int, help="the new version; above BASE's")
    p.add_argument("--valid-for", type=parse_duration, default=timedelta(hours=24), metavar="DURATION",
                   help="how long devices may use the list, with a unit: 90m, 24h, 7d (default 24h)")
    p.add_argument("--out", required=True, type=Path, metavar="DELTA")
    p.set_defaults(handler=cmd_hotlist_delta)

    p = hsub.add_parser("inspect", help="verify a bundle and print its manifest (never plates)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle from `alprd hotlist pack`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--keys", type=Path, metavar="DIR", help="agency key folder (signing.pub, list.key)")
    src.add_argument("--config", "-c", type=Path, metavar="CFG", help="device config (hotlist keys)")
    p.set_defaults(handler=cmd_hotlist_inspect)

    p = hsub.add_parser("install", help="install a bundle on this device (newer versions only)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle from `alprd hotlist pack`")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--actor", default=None, help="who installs (default: the login user)")
    p.set_defaults(handler=cmd_hotlist_install)

    p = hsub.add_parser("query", help="look a plate up in the installed list (audited; needs --purpose)")
    p.add_argument("plate", metavar="PLATE", help="the plate to look up (case, spaces, dashes do not matter)")
    p.add_argument("--purpose", required=True, help="why you are looking (recorded in the audit log)")
    p.add_argument("--state", default=None, help="the plate's state/region, if known")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--actor", default=None, help="who asks (default: the login user)")
    p.set_defaults(handler=cmd_hotlist_query)

    ev = sub.add_parser(
        "evidence", help="open sealed hit evidence (at headquarters)",
        description="Open the evidence a device sealed to evidence.pub for a hit; needs evidence.key.",
    )
    esub = ev.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    p = esub.add_parser("open", help="decrypt a .sealed evidence file")
    p.add_argument("file", type=Path, metavar="FILE", help="a .sealed evidence file from a device")
    p.add_argument("--key", required=True, type=Path, help="evidence.key, the private key (mode 0600)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write crop.jpg, frame.jpg, meta.json")
    p.set_defaults(handler=cmd_evidence_open)

    au = sub.add_parser(
        "audit", help="verify the audit chain or sign a checkpoint",
        description="The device's tamper-evident audit chain: verify it, or sign a checkpoint to keep "
        "off the device.",
    )
    asub = au.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", help="check the chain; exit 1 naming the first broken entry")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--checkpoint", type=Path, metavar="FILE", help="also check against a signed checkpoint")
    p.set_defaults(handler=cmd_audit_verify)
    p = asub.add_parser("checkpoint", help="print (and save) a checkpoint signed by the device key")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="CFG")
    p.add_argument("--out", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_audit_checkpoint)


# --- helpers -------------------------------------------------------------------------------------


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True))


def _now() -> datetime:
    return datetime.now(UTC)


def open_store(cfg: Config) -> Store:
    from ..store import Store

    return Store.from_config(cfg)


# --- keys ----------------------------------------------------------------------------------------


def cmd_keys_agency(args: argparse.Namespace) -> int:
    try:
        written = generate_agency_keys(args.out)
    except KeyFileError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    for p in written:
        print(p)
    print(
        "Give each device only signing.pub, evidence.pub, ack.pub and list.key (as systemd "
        "credentials); keep signing.key, evidence.key and ack.key at headquarters.",
        file=sys.stderr,
    )
    return Exit.OK


def cmd_keys_device(args: argparse.Namespace) -> int:
    from ..privacy.keys import DEVICE_SEAL_KEY_NAME, load_or_create_device_seal_key, public_pem

    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    given = cfg.hotlist.device_key
    path = given or cfg.storage.dir / DEVICE_SEAL_KEY_NAME
    try:
        pem = public_pem(load_or_create_device_seal_key(path, create=given is None).public_key())
        if args.out is not None:
            write_file_atomic(args.out, pem, 0o644)
    except KeyFileError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    sys.stdout.write(pem.decode("ascii"))
    return Exit.OK


def cmd_keys_seal_list_key(args: argparse.Namespace) -> int:
    from ..privacy.listkey import seal_for_device

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.device_id):
        return fail(f"--device-id {args.device_id!r} is not a device_id ([A-Za-z0-9_.-], 1-64)", Exit.USAGE)
    try:
        signing = load_signing_key(args.keys / "signing.key")
        list_key = load_list_key(args.keys / "list.key")
        device_pub = load_evidence_pub(args.device_pub)
        payload = seal_for_device(signing, device_pub, args.device_id, list_key)
        write_file_atomic(args.out, payload, 0o644)
    except KeyFileError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    print(
        f"publish it retained: mosquitto_pub -r -q 1 -t <prefix>/{args.device_id}/hotlist/key -f {args.out}",
        file=sys.stderr,
    )
    return Exit.OK


# --- hot list ------------------------------------------------------------------------------------


def _ncic_entries(data: bytes, name: str) -> list[Entry]:
    """An NCIC-column CSV: what was ignored and what had expired is said once, on stderr (raises CsvError)."""
    from ..privacy.hotlist import parse_ncic_csv, split_expired

    entries, ignored = parse_ncic_csv(data, name)
    if ignored:
        print(f"{name}: ignored columns (not in the NCIC mapping): {', '.join(ignored)}", file=sys.stderr)
    entries, expired = split_expired(entries, _now())
    if expired:
        # the case numbers, never the plates: enough to find the records at headquarters
        cases = ", ".join(sorted({e.case_number for e in expired if e.case_number})[:20])
        print(f"{name}: {len(expired)} entr{'y' if len(expired) == 1 else 'ies'} already expired, left out"
              + (f" (NIC {cases})" if cases else ""), file=sys.stderr)
    return entries


def cmd_hotlist_pack(args: argparse.Namespace) -> int:
    from ..privacy.hotlist import CsvError, pack_bundle, parse_csv

    try:
        data = args.csv.read_bytes()
    except OSError as e:
        return fail(f"{args.csv}: {e.strerror}")
    try:
        name = str(args.csv)
        entries = _ncic_entries(data, name) if args.columns == "ncic" else parse_csv(data, name)
    except CsvError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return fail(f"{args.csv}: {len(e.problems)} problem(s) shown; nothing was packed", Exit.USAGE)
    try:
        signing = load_signing_key(args.keys / "signing.key")
        list_key = load_list_key(args.keys / "list.key")
        bundle = pack_bundle(
            entries,
            list_key=list_key,
            signing_key=signing,
            version=args.version,
            issued=_now(),
            valid_for=args.valid_for,
            list_id=args.list_id,
        )
        write_file_atomic(args.out, bundle, 0o644)
    except (KeyFileError, HotListError) as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    from ..privacy.hotlist import read_manifest_unverified

    _print_json(read_manifest_unverified(bundle).public())
    return Exit.OK


def cmd_hotlist_delta(args: argparse.Namespace) -> int:
    from ..privacy.hotlist import CsvError, pack_delta, parse_csv
    from ..privacy.hotlist.delta import read_delta_manifest_unverified

    try:
        base, data = args.base.read_bytes(), args.csv.read_bytes()
    except OSError as e:
        return fail(f"{e.filename}: {e.strerror}")
    try:
        entries = parse_csv(data, str(args.csv))
    except CsvError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return fail(f"{args.csv}: {len(e.problems)} problem(s) shown; nothing was packed", Exit.USAGE)
    try:
        delta = pack_delta(base, entries, list_key=load_list_key(args.keys / "list.key"),
                           signing_key=load_signing_key(args.keys / "signing.key"), version=args.version,
                           issued=_now(), valid_for=args.valid_for)
        write_file_atomic(args.out, delta, 0o644)
    except (KeyFileError, HotListError) as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    _print_json({**read_delta_manifest_unverified(delta).public(), "bytes": len(delta),
                 "base_bytes": len(base)})
    return Exit.OK


def cmd_hotlist_inspect(args: argparse.Namespace) -> int:
    from ..privacy.hotlist import HotList, verify_bundle

    try:
        if args.keys is not None:
            pub = load_signing_pub(args.keys / "signing.pub")
            list_key = load_list_key(args.keys / "list.key")
        else:
            cfg = config_or_exit(args.config)
            if isinstance(cfg, int):
                return cfg
            pub = load_signing_pub(cfg.hotlist.signing_pub)
            list_key = load_list_key(cfg.hotlist.list_key)
        data = args.bundle.read_bytes()
        manifest, plaintext = verify_bundle(data, pub, list_key, _now())
        hl = HotList(manifest, plaintext)
    except (KeyFileError, HotListError) as e:
        return fail(f"{args.bundle}: {e}")
    except OSError as e:
        return fail(f"{args.bundle}: {e.strerror}")
    _print_json({**hl.info(), "valid": True})
    return Exit.OK


def _installer(cfg: Config, store: Store, actor: str) -> HotListInstaller:
    """The installer as the daemon wires it, with the key files the config names (raises KeyFileError)."""
    from ..privacy.hotlist import HotListInstaller, load_keys

    signing_pub, list_key = load_keys(cfg.hotlist)
    return HotListInstaller.from_config(cfg.hotlist, store, signing_pub, list_key, actor=actor)


def cmd_hotlist_install(args: argparse.Namespace) -> int:
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    actor = args.actor or _default_actor()
    try:
        data = args.bundle.read_bytes()
    except OSError as e:
        return fail(f"{args.bundle}: {e.strerror}")
    try:
        with open_store(cfg) as store:
            installer = _installer(cfg, store, actor)
            version = installer.install(data)
            info = installer.active.info() if installer.active is not None else {}
    except (HotListError, KeyFileError, StoreError) as e:
        return fail(f"{args.bundle}: refused: {e}")
    _print_json({"installed": version, **info})
    print(
        "A running daemon picks the new list up at its next start (or send it over hotlist/set).",
        file=sys.stderr,
    )
    return Exit.OK


def cmd_hotlist_query(args: argparse.Namespace) -> int:
    purpose = args.purpose.strip()
    if len(purpose) < 3:
        return fail("--purpose must say why you are looking (it is written to the audit log)", Exit.USAGE)
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    from ..privacy.evidence import seal_text
    from ..privacy.hotlist import normalize_plate

    plate = normalize_plate(args.plate)
    if not plate:
        return fail(f"{args.plate!r} has no letters or digits", Exit.USAGE)
    actor = args.actor or _default_actor()
    if not cfg.storage.dir.is_dir():
        # nothing installed yet; opening the store would create storage.dir as whoever runs this
        return fail(f"no hot list is installed: storage.dir {cfg.storage.dir} does not exist yet "
                     "(alprd hotlist install BUNDLE --config CFG)")
    try:
        evidence_pub = load_evidence_pub(cfg.privacy.evidence_pub)
        with open_store(cfg) as store:
            hl = _installer(cfg, store, actor).load_installed()
            matches = [] if hl is None else hl.match_all(plate, (1.0,) * len(plate), args.state)
            # What was asked is kept sealed to headquarters: the device's disk never holds it in clear.
            store.audit(
                actor,
                "query",
                {
                    "query_sealed": seal_text(evidence_pub, f"{plate}|{(args.state or '').upper()}"),
                    "matches": len(matches),
                    "list_version": None if hl is None else hl.version,
                },
                purpose,
            )
    except (HotListError, KeyFileError, StoreError) as e:
        return fail(str(e))
    if hl is None:
        return fail("no hot list is installed (alprd hotlist install BUNDLE --config CFG)")
    _print_json({"query": plate, "matches": [m.as_dict() for m in matches]})
    return Exit.OK


# --- evidence ------------------------------------------------------------------------------------


def cmd_evidence_open(args: argparse.Namespace) -> int:
    from ..privacy.evidence import open_evidence

    try:
        key = load_evidence_key(args.key)
    except KeyFileError as e:
        return fail(f"--key {e}")
    try:
        blob = args.file.read_bytes()
        crop, frame, meta = open_evidence(key, blob)
    except EvidenceError as e:
        return fail(f"{args.file}: {e}")
    except OSError as e:
        return fail(f"{args.file}: {e.strerror}")
    out: Path = args.out or args.file.with_suffix(".opened")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_atomic(out / "crop.jpg", crop, 0o600)
        write_file_atomic(out / "frame.jpg", frame, 0o600)
        write_file_atomic(out / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode(), 0o600)
    except OSError as e:
        return fail(f"{out}: {e.strerror}")
    _print_json({"out": str(out), "meta": meta})
    return Exit.OK


# --- audit ---------------------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from ..privacy.audit import verify_chain, verify_checkpoint

    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    try:
        with open_store(cfg) as store:
            quarantined = store.quarantined
            entries = store.audit_entries()
            result = store.verify_audit()
            device_pub = store.device_public_bytes()
            mac_key = store.audit_mac_key()
    except StoreError as e:
        return fail(str(e))
    if quarantined is not None:
        # the fresh database verifies, trivially: saying "ok" here once hid a destroyed chain
        print(f"audit chain NOT VERIFIED: the database failed its integrity check and was moved to "
              f"{quarantined}; the chain it held could not be read")
        return Exit.FAILURE
    if entries and entries[0].event == "storage.quarantine":
        obj = entries[0].object if isinstance(entries[0].object, dict) else {}
        old = cfg.storage.dir / "quarantine" / str(obj.get("file"))
        print(f"audit chain INCOMPLETE: it restarted at {entries[0].ts} after the database was "
              f"quarantined; the entries before are in {old} (sha256 {obj.get('sha256')}), which "
              "could not be read")
        return Exit.FAILURE
    if not result.ok:
        print(f"audit chain BROKEN at entry {result.broken_index}: {result.reason}")
        return Exit.FAILURE
    if args.checkpoint is not None:
        try:
            cp = json.loads(args.checkpoint.read_text())
        except (OSError, ValueError) as e:
            return fail(f"{args.checkpoint}: cannot read checkpoint ({e})")
        if not verify_checkpoint(cp, device_pub):
            print(f"checkpoint {args.checkpoint}: signature invalid or made by another device")
            return Exit.FAILURE
        count = int(cp["count"])
        if count > len(entries):
            print(
                f"audit chain BROKEN at entry {len(entries) + 1}: the checkpoint covers {count} "
                f"entries, only {len(entries)} remain (truncated)"
            )
            return Exit.FAILURE
        at = verify_chain(entries[:count], mac_key)
        if at.head != cp["head"]:
            print(f"audit chain BROKEN: head at entry {count} differs from the checkpoint (rewritten)")
            return Exit.FAILURE
    print(f"audit chain ok: {result.count} entries, head {result.head}")
    return Exit.OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    cfg = config_or_exit(args.config)
    if isinstance(cfg, int):
        return cfg
    from ..store import write_checkpoint

    try:
        with open_store(cfg) as store:
            cp = store.checkpoint()
        if args.out is not None:
            write_checkpoint(args.out, cp)
    except StoreError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{args.out}: {e.strerror}")
    _print_json(cp)
    return Exit.OK
