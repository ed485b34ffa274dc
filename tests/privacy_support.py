"""Helpers for the privacy-core tests: a settable clock, agency keys, configs and bundles on real files."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alprd.privacy.hotlist import Entry, pack_bundle, parse_csv
from alprd.privacy.keys import generate_agency_keys, load_list_key, load_signing_key

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class FakeClock:
    """A real Clock whose wall and monotonic readings the test moves explicitly."""

    def __init__(self, wall: float = T0.timestamp(), mono: float = 1000.0) -> None:
        self.wall = wall
        self.mono = mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Someone (NTP, an operator) sets the wall clock; monotonic time is unaffected."""
        self.wall += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall, UTC)


@dataclass
class Agency:
    dir: Path

    @property
    def list_key(self) -> bytes:
        return load_list_key(self.dir / "list.key")

    @property
    def signing_key(self):  # type: ignore[no-untyped-def]
        return load_signing_key(self.dir / "signing.key")

    def pack(
        self,
        entries: list[Entry] | str,
        version: int,
        issued: datetime = T0,
        valid_for: timedelta = timedelta(hours=24),
        list_id: str = "default",
    ) -> bytes:
        if isinstance(entries, str):
            entries = parse_csv(textwrap.dedent(entries).lstrip().encode())
        return pack_bundle(
            entries,
            list_key=self.list_key,
            signing_key=self.signing_key,
            version=version,
            issued=issued,
            valid_for=valid_for,
            list_id=list_id,
        )


def make_agency(root: Path) -> Agency:
    d = root / "agency"
    generate_agency_keys(d)
    return Agency(d)


def device_dir(agency: Agency, root: Path) -> Path:
    """What a device receives: signing.pub, evidence.pub, list.key (0600), as systemd credentials would be."""
    d = root / "credentials"
    d.mkdir(mode=0o700)
    for name in ("signing.pub", "evidence.pub", "list.key"):
        data = (agency.dir / name).read_bytes()
        p = d / name
        p.write_bytes(data)
        os.chmod(p, 0o600 if name == "list.key" else 0o644)
    return d


def write_config(root: Path, creds: Path, storage: Path, extra: str = "") -> Path:
    cfg = root / "alprd.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        device_id: test-01
        storage:
          dir: {storage}
        hotlist:
          bundle: {storage}/hotlist.bundle
          list_key: {creds}/list.key
          signing_pub: {creds}/signing.pub
        privacy:
          evidence_pub: {creds}/evidence.pub
          evidence_ttl_s: 3600
        policy:
          purpose: locate vehicles on the hot list
          custodian: test records unit
          retention_days: 7
          sharing: none
        """)
        + extra
    )
    return cfg


SAMPLE_CSV = """\
plate,reason,state,plate_type,priority,expires,source,case_number,note
ABC1234,stolen vehicle,CA,passenger,10,,NCIC,C-1,
XYZ789,amber alert,,,0,2030-01-01,state,C-2,blue sedan
7?B2*,witness partial plate,,,20,,tip line,C-3,
OLD111,expired warrant,,,5,2020-01-01,,C-4,
"""
