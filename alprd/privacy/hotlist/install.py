"""Installing a bundle on the device: only newer, valid bundles of its own list, rollback refused.

The installer also holds the active list: the pipeline matches against `installer.active`, so a
list installed over MQTT is in use from the next frame.

A delta (`delta.py`) is installed the same way, with the same rollback floor, and applies only to
the list it was made from. The device cannot sign what it computed, so it keeps the last full
bundle and, beside it in `<bundle>.d/`, the deltas on top of it (every byte signed by headquarters),
replayed and checked again at every start; a full bundle clears them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...clock import Clock, SystemClock
from ...errors import HotListError, KeyFileError, StoreError
from ...types import iso_z
from ..keys import write_file_atomic
from .bundle import Manifest, read_manifest_unverified, verify_bundle
from .delta import (
    DELTA_FORMAT,
    DeltaManifest,
    apply_delta,
    is_delta,
    read_delta_manifest_unverified,
    result_manifest,
    verify_delta,
)
from .index import HotList, Lookalike, release_memory

if TYPE_CHECKING:
    from ...config import HotlistConfig

log = logging.getLogger(__name__)

STATE_VERSION = "hotlist.version"
"""The version of the list last accepted, whose id is STATE_LIST_ID."""
STATE_SHA256 = "hotlist.sha256"
STATE_LIST_ID = "hotlist.list_id"
STATE_FLOOR = "hotlist.floor/"
"""+ list id: the highest version ever accepted of that list (its rollback floor)."""
DEFAULT_LIST_ID = "default"


class StateStore(Protocol):
    """What the installer needs from storage (alprd.store.Store provides it)."""

    def state_get(self, key: str) -> str | None: ...

    def commit_state(
        self, updates: Mapping[str, str], actor: str, event: str, obj: object, purpose: str
    ) -> None: ...

    def audit(self, actor: str, event: str, obj: object, purpose: str) -> None: ...


class HotListInstaller:
    """Accepts only newer, valid bundles of its own list; keeps the previous list active on refusal.

    A bundle of another list id is refused whatever its version (a validly signed `regionA` v100 must
    neither replace `default` v5 nor raise its rollback floor), and every list id keeps its own floor,
    so switching `hotlist.list_id` back and forth cannot be used to roll a list back. Acceptances are
    audited; refusals too, unless the caller counts them instead (`install(audit_refusal=False)`:
    the MQTT command topic, where one audit row per junk message would fill the disk).

    Commit order: the bundle file is replaced atomically (fsync'd), then the accepted version and the
    audit entry are committed in one SQLite transaction. A crash before the file replace leaves the old
    state; a crash between the two is completed at the next start (`load_installed`): a verified file
    newer than the recorded version can only come from an interrupted install.
    """

    def __init__(
        self,
        store: StateStore,
        bundle_path: Path,
        signing_pub: Ed25519PublicKey,
        list_key: bytes | None,
        clock: Clock | None = None,
        lookalike: Lookalike | None = None,
        *,
        actor: str = "alprd",
        list_id: str = DEFAULT_LIST_ID,
    ) -> None:
        self._store = store
        self.bundle_path = bundle_path
        self.delta_dir = bundle_path.with_name(bundle_path.name + ".d")
        self._pub = signing_pub
        self._key = list_key
        self.list_id = list_id
        self._clock = clock or SystemClock()
        self._lookalike = lookalike or Lookalike()
        self._actor = actor
        self._lock = threading.Lock()
        self.active: HotList | None = None

    @classmethod
    def from_config(
        cls,
        section: HotlistConfig,
        store: StateStore,
        signing_pub: Ed25519PublicKey,
        list_key: bytes | None,
        clock: Clock | None = None,
        *,
        actor: str = "alprd",
    ) -> HotListInstaller:
        """The installer the `hotlist:` section describes, given its keys (the daemon and the CLI load
        them differently: `load_keys`, or the list key arriving from headquarters)."""
        return cls(
            store,
            section.bundle,
            signing_pub,
            list_key,
            clock,
            Lookalike(tuple(section.lookalike_classes), section.lookalike_max),
            actor=actor,
            list_id=section.list_id,
        )

    def set_list_key(self, list_key: bytes) -> None:
        """The list key arrived (hotlist.key_source hq): bundles can be opened from now on."""
        with self._lock:
            self._key = list_key

    @property
    def has_list_key(self) -> bool:
        return self._key is not None

    def _need_key(self) -> bytes:
        if self._key is None:
            raise HotListError(
                "no list key yet (hotlist.key_source: hq): headquarters has not sent it on hotlist/key"
            )
        return self._key

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def _recorded_floor(self) -> int:
        """The highest version of this list id the store has recorded (raises StoreError)."""
        v = int(self._store.state_get(STATE_FLOOR + self.list_id) or 0)
        # before floors were kept per list, one version was recorded next to the id it belonged to
        legacy = self._store.state_get(STATE_VERSION)
        if legacy and (self._store.state_get(STATE_LIST_ID) or DEFAULT_LIST_ID) == self.list_id:
            v = max(v, int(legacy))
        return v

    def accepted_version(self) -> int:
        """The highest version of this list ever accepted: the recorded floor, or the installed file
        if it is of this list and newer."""
        v = self._recorded_floor()
        try:
            on_disk = read_manifest_unverified(self.bundle_path.read_bytes())
        except (OSError, HotListError):
            return v
        v = max(v, on_disk.version) if on_disk.list_id == self.list_id else v
        for path in self._delta_files():
            try:
                delta = read_delta_manifest_unverified(path.read_bytes())
            except (OSError, HotListError):
                continue
            if delta.list_id == self.list_id:
                v = max(v, delta.version)
        return v

    def _delta_files(self) -> list[Path]:
        """The stored deltas, oldest first (named by version)."""
        try:
            return sorted(self.delta_dir.glob("*.delta"))
        except OSError:
            return []

    def _with_deltas(self, manifest: Manifest, plaintext: bytes) -> tuple[Manifest, bytes]:
        """The stored bundle's list with the stored deltas applied, each verified again; a delta
        that does not follow the list it finds is refused, and so is the whole list (the floor
        would refuse the older list anyway)."""
        for path in self._delta_files():
            try:
                blob = path.read_bytes()
            except OSError as e:
                raise HotListError(f"{path}: cannot read a stored delta: {e.strerror}") from None
            delta, body = verify_delta(blob, self._pub, self._need_key(), self._now(), check_expiry=False)
            if delta.list_id != self.list_id or delta.version <= manifest.version:
                continue  # left from before the last full bundle
            if delta.base_version != manifest.version:
                raise HotListError(f"stored delta {path.name} updates version {delta.base_version}, "
                                   f"not the stored list's {manifest.version}")
            plaintext = apply_delta(plaintext, delta, body)
            manifest = result_manifest(delta, plaintext)
        return manifest, plaintext

    def _check_list_id(self, manifest: Manifest | DeltaManifest, what: str) -> None:
        if manifest.list_id != self.list_id:
            raise HotListError(
                f"{what} is of list {manifest.list_id!r} (version {manifest.version}); this device runs "
                f"list {self.list_id!r} (hotlist.list_id): refused whatever its version"
            )

    def load_installed(self) -> HotList | None:
        """Load the installed bundle at start-up; completes an install interrupted before its commit.

        If the store cannot be read (a full disk at start), the list is loaded on its signature, list
        id and expiry alone: a stolen car must still hit while storage is down.
        """
        with self._lock:
            try:
                data = self.bundle_path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise HotListError(
                    f"{self.bundle_path}: cannot read the installed list: {e.strerror}"
                ) from None
            try:
                manifest, plaintext = verify_bundle(
                    data, self._pub, self._need_key(), self._now(), check_expiry=False
                )
                self._check_list_id(manifest, "the installed bundle")
                manifest, plaintext = self._with_deltas(manifest, plaintext)
                try:
                    recorded: int | None = self._recorded_floor()
                except StoreError as e:
                    log.error("hot-list rollback floor unreadable (%s): loading the installed list on its "
                              "signature, list id and expiry", e)
                    recorded = None
                if recorded is not None and manifest.version < recorded:
                    raise HotListError(
                        f"installed bundle has version {manifest.version}, older than the accepted "
                        f"{recorded}: the file was rolled back; refusing it"
                    )
                if recorded is not None and manifest.version > recorded:
                    self._commit(manifest, self._actor, recovered=True)
                if self._now() >= manifest.expires:
                    raise HotListError(
                        f"installed list expired at {iso_z(manifest.expires)}; install a fresh bundle"
                    )
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
            except HotListError as e:
                self._audit_reject(self._actor, {"reason": str(e), "stage": "load"}, "hot-list load at start")
                raise
            self.active = hl
            return hl

    def _audit_reject(self, actor: str, obj: dict[str, object], purpose: str) -> None:
        try:
            self._store.audit(actor, "hotlist.reject", obj, purpose)
        except StoreError as e:  # the refusal itself matters more than its record: report, go on
            log.error("hot-list refusal could not be audited: %s", e)

    def _commit(
        self, manifest: Manifest, actor: str, recovered: bool = False, delta: DeltaManifest | None = None
    ) -> None:
        """Record the accepted version and its audit entry in one transaction: the install's second
        write. A crash between the two is completed at the next `load_installed`."""
        obj = manifest.public()
        if delta is not None:
            obj.update(delta.public(), sha256=manifest.sha256)
        if recovered:
            obj["recovered"] = True
        self._store.commit_state(
            {
                STATE_VERSION: str(manifest.version),
                STATE_SHA256: manifest.sha256,
                STATE_LIST_ID: manifest.list_id,
                STATE_FLOOR + manifest.list_id: str(manifest.version),
            },
            actor,
            "hotlist.accept",
            obj,
            "hot-list update",
        )

    def _write_bundle(self, bundle: bytes) -> None:
        """Replace the installed bundle atomically (fsync'd): the first of the install's two writes."""
        try:
            self.bundle_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file_atomic(self.bundle_path, bundle, 0o600)
        except OSError as e:
            raise HotListError(f"{self.bundle_path}: cannot store the bundle: {e.strerror}") from None

    def _write_delta(self, blob: bytes, version: int) -> None:
        try:
            self.delta_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file_atomic(self.delta_dir / f"{version:010d}.delta", blob, 0o600)
        except OSError as e:
            raise HotListError(f"{self.delta_dir}: cannot store the delta: {e.strerror}") from None

    def _clear_deltas(self) -> None:
        """After a full bundle: the deltas below it are history (and skipped at start if one stays)."""
        for path in self._delta_files():
            try:
                path.unlink()
            except OSError as e:
                log.warning("%s: old delta not removed: %s", path, e.strerror)

    def install(self, bundle: bytes, actor: str | None = None, *, audit_refusal: bool = True) -> int:
        """Verify, decrypt and activate `bundle` (or a delta); returns its version.

        Raises HotListError with the reason (the previous list stays active), or StoreError if the
        acceptance cannot be recorded after the file was replaced (then `load_installed` completes it).
        """
        who = actor or self._actor
        if is_delta(bundle):
            return self._install_delta(bundle, who, audit_refusal)
        with self._lock:
            version: int | None = None
            try:
                manifest, plaintext = verify_bundle(bundle, self._pub, self._need_key(), self._now())
                version = manifest.version
                self._check_list_id(manifest, "the bundle")
                last = self.accepted_version()
                if manifest.version <= last:
                    raise HotListError(
                        f"version {manifest.version} is not newer than the accepted version {last}: "
                        "rollback or replay refused"
                    )
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
                del plaintext
                self._write_bundle(bundle)
                self._clear_deltas()
                self._commit(manifest, who)
            except HotListError as e:
                if audit_refusal:
                    obj: dict[str, object] = {"reason": str(e)}
                    if version is not None:
                        obj["version"] = version
                    self._audit_reject(who, obj, "hot-list update")
                raise
            self.active = hl  # the previous list is freed here
            release_memory()
            log.info("hot list version %d accepted (%d entries)", manifest.version, len(hl))
            return manifest.version

    def _base_of(self, delta: DeltaManifest) -> tuple[Manifest, bytes]:
        """The list a delta applies to: the active one, or (`alprd hotlist install`, which loads
        nothing first) the stored one."""
        active = self.active
        if active is not None and active.version == delta.base_version:
            return active.manifest, active.plaintext
        try:
            data = self.bundle_path.read_bytes()
        except OSError:
            raise HotListError("no full list is installed to apply a delta to: send the full bundle") \
                from None
        manifest, plaintext = verify_bundle(data, self._pub, self._need_key(), self._now(),
                                            check_expiry=False)
        self._check_list_id(manifest, "the installed bundle")
        return self._with_deltas(manifest, plaintext)

    def _install_delta(self, blob: bytes, who: str, audit_refusal: bool) -> int:
        with self._lock:
            version: int | None = None
            try:
                delta, body = verify_delta(blob, self._pub, self._need_key(), self._now())
                version = delta.version
                self._check_list_id(delta, "the delta")
                last = self.accepted_version()
                if delta.version <= last:
                    raise HotListError(f"delta version {delta.version} is not newer than the accepted "
                                       f"version {last}: rollback or replay refused")
                base, base_plaintext = self._base_of(delta)
                if base.version != delta.base_version:
                    raise HotListError(f"this delta updates version {delta.base_version}; this device "
                                       f"has version {base.version}: send the full bundle")
                plaintext = apply_delta(base_plaintext, delta, body)
                del base_plaintext
                manifest = result_manifest(delta, plaintext)
                hl = HotList(manifest, plaintext, self._lookalike, self._clock)
                self._write_delta(blob, delta.version)
                self._commit(manifest, who, delta=delta)
            except HotListError as e:
                if audit_refusal:
                    obj: dict[str, object] = {"reason": str(e), "format": DELTA_FORMAT}
                    if version is not None:
                        obj["version"] = version
                    self._audit_reject(who, obj, "hot-list update")
                raise
            self.active = hl
            release_memory()
            log.info("hot list version %d accepted from a delta on %d (%d entries, -%d +%d)",
                     delta.version, delta.base_version, len(hl), delta.removed, delta.added)
            return delta.version


def load_keys(section: HotlistConfig) -> tuple[Ed25519PublicKey, bytes]:
    """signing.pub and list.key from the files the `hotlist:` section names (raises KeyFileError)."""
    from ..keys import load_list_key, load_signing_pub

    if section.key_source == "hq":
        raise KeyFileError(
            "hotlist.key_source is hq: the list key exists only in the running daemon's memory; "
            "install and query through the daemon (hotlist/set), or use a key_source: file config"
        )
    return load_signing_pub(section.signing_pub), load_list_key(section.list_key)
