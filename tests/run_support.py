"""Helpers for whole-daemon runs (issue 21): agency keys, a config with any section overridden, photos,
a scripted reader, and the privacy scan over every payload and file."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from alprd.config import Config
from alprd.privacy.keys import generate_agency_keys
from alprd.types import Box, Candidate, Image, Looks, PhotoResult, Read

DEVICE = "test-dev"


def agency(tmp: Path) -> Path:
    keys = tmp / "keys"
    generate_agency_keys(keys)
    return keys


def photos(tmp: Path, data_dir: Path, n: int, name: str = "photos") -> Path:
    folder = tmp / name
    folder.mkdir()
    for i, p in enumerate(sorted((data_dir / "us").glob("*.jpg"))[:n]):
        (folder / f"{i}.jpg").symlink_to(p)
    return folder


def bundle(keys: Path, rows: Mapping[str, str] | list[dict[str, str]], version: int = 1) -> bytes:
    """A signed, encrypted list: `{plate: reason}` or CSV rows as dicts."""
    from datetime import UTC, datetime, timedelta

    from alprd.privacy.hotlist import entries_from_rows, pack_bundle
    from alprd.privacy.keys import load_list_key, load_signing_key

    if isinstance(rows, Mapping):
        rows = [{"plate": p, "reason": r} for p, r in rows.items()]
    return pack_bundle(entries_from_rows(rows), list_key=load_list_key(keys / "list.key"),
                       signing_key=load_signing_key(keys / "signing.key"), version=version,
                       issued=datetime.now(UTC), valid_for=timedelta(hours=2))


def install(daemon: object, keys: Path, rows: Mapping[str, str] | list[dict[str, str]]) -> None:
    daemon.hotlist.install(bundle(keys, rows))  # type: ignore[attr-defined]


def _merge(base: dict[str, object], more: Mapping[str, object]) -> dict[str, object]:
    out = dict(base)
    for k, v in more.items():
        old = out.get(k)
        out[k] = _merge(old, v) if isinstance(old, dict) and isinstance(v, Mapping) else v
    return out


def config(tmp: Path, keys: Path, broker: object, source: Mapping[str, object], **more: object) -> Config:
    """A daemon config on a real broker and real keys (ack.pub included); `more` overrides sections."""
    base: dict[str, object] = {
        "device_id": DEVICE,
        "source": dict(source),
        "tracking": {"close_after_frames": 2},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5,  # type: ignore[attr-defined]
                 "reconnect_min_s": 1, "reconnect_max_s": 2, "drain_timeout_s": 10,
                 "ack_pub": str(keys / "ack.pub")},
        "storage": {"dir": str(tmp / "state")},
        "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                    "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub"), "summary_interval_s": 60},
        "policy": {"purpose": "tests", "custodian": "the CI", "retention_days": 1, "sharing": "none"},
    }
    return Config.model_validate(_merge(base, more))


class ScriptedReader:
    """Reads given per call of `read` (1-based); nothing after the script."""

    def __init__(self, script: Mapping[int, list[Read]]) -> None:
        self.model_hashes = {"scripted": "0" * 64}
        self.script = script
        self.calls = 0

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        self.calls += 1
        return PhotoResult(tuple(self.script.get(self.calls, [])), ms=1.0)


def rd(text: str, x: int = 10, conf: float = 0.9) -> Read:
    return Read(text, conf, (conf,) * len(text), (Candidate(text, conf),), Box(x, 100, 80, 40), 0.9, "us")


@contextmanager
def running(daemon: object, stop: threading.Event) -> Iterator[None]:
    """`daemon.run(stop)` on a thread until the block ends; then it must stop cleanly."""
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(daemon.run(stop)), daemon=True)  # type: ignore[attr-defined]
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive() and result == [0]


def wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_absent(plate: str, payloads: list[bytes], storage: Path) -> None:
    """The privacy scan: neither the plate nor a plain hash of it in any payload or any file."""
    needles = [plate.encode()]
    for algo in ("sha256", "sha1", "md5"):
        d = hashlib.new(algo, plate.encode())
        needles += [d.hexdigest().encode(), d.hexdigest().upper().encode(), d.digest()]
    blobs = list(payloads) + [p.read_bytes() for p in storage.rglob("*") if p.is_file()]
    assert blobs
    for blob in blobs:
        for needle in needles:
            assert needle not in blob
