"""The back office's messages: one handler per topic, in a registry the publisher subscribes from.

A message is applied or refused, whatever it holds, and never ends the daemon (4,000 `[` on the ack
topic used to end it with RecursionError, and published retained, on every restart). A handler
refuses by raising `Refused`; a refusal is never fatal and never one audit row per message (9,540
junk `hotlist/set` messages once made 6,594 rows and 5.6 MB): `Refusals` counts them per window.

To add a command topic: write a handler (a class with `handle(cmd)`, and `refused(cmd, reason)` if
the sender gets an answer) and `route` it in `device_commands` below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..clock import Clock
from ..config import Config
from ..errors import AlprdError, HotListError, StoreError
from ..payloads import HotlistResultBody
from ..privacy.acks import read_ack
from ..privacy.hotlist import HotListInstaller
from ..privacy.keys import load_ack_pub
from ..privacy.listkey import ListKeyReceiver
from ..types import Command
from ..untrusted import UntrustedInput
from .outbox import Outbox
from .publish import Inbound, Publisher

log = logging.getLogger(__name__)

MAX_SMALL_COMMAND_BYTES = 4096
"""An ack or a sealed list key is a few hundred bytes; larger ones are refused unread."""


class Refused(Exception):
    """A handler's refusal; the message says why (without echoing the payload)."""


class Handler(Protocol):
    def handle(self, cmd: Command) -> None:
        """Apply the message; raise Refused to refuse it."""


@dataclass(frozen=True)
class Route:
    inbound: Inbound
    handler: Handler
    refused: Callable[[Command, str], None] | None = None
    """Tells the sender about a refusal, where the topic has an answer topic."""


class Refusals:
    """Messages refused at the boundary, counted per window.

    The first refusal of a window per channel is logged at WARNING, the rest at DEBUG, and each window
    with any ends in one audit row with the counts (`flush`).
    """

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self.total: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, str] = {}
        self._seen_elsewhere: dict[str, int] = {}
        self._start = clock.monotonic()

    def note(self, channel: str, reason: str) -> None:
        reason = reason[:200]
        self.total[channel] = self.total.get(channel, 0) + 1
        n = self._counts[channel] = self._counts.get(channel, 0) + 1
        self._last[channel] = reason
        if n == 1:
            log.warning("%s: message refused (%s); more this window are only counted", channel, reason)
        else:
            log.debug("%s: message refused (%s)", channel, reason)

    def due(self) -> bool:
        return self._clock.monotonic() - self._start >= self.window_s

    def flush(self, elsewhere: Mapping[str, int] | None = None) -> dict[str, object] | None:
        """The window's counts (None if nothing was refused); starts the next window.

        `elsewhere` holds running totals counted by others (gpsd lines): what they added since the last
        window is reported with the rest."""
        out: dict[str, object] | None = None
        counts: dict[str, int] = {}
        if self._counts:
            counts = dict(self._counts)
            window_s = round(self._clock.monotonic() - self._start, 1)
            out = {"window_s": window_s, "counts": counts, "last_reason": dict(self._last)}
            log.warning("refused in the last %.0f s: %s", window_s, self._counts)
        for channel, total in (elsewhere or {}).items():
            if total > self._seen_elsewhere.get(channel, 0):
                if out is None:
                    out = {"counts": counts}
                counts[channel] = total - self._seen_elsewhere.get(channel, 0)
                self._seen_elsewhere[channel] = total
        self._counts.clear()
        self._last.clear()
        self._start = self._clock.monotonic()
        return out


class Commands:
    """The registry: channel (the topic below the device's base) -> size limit and handler."""

    def __init__(self, refusals: Refusals) -> None:
        self.refusals = refusals
        self._routes: dict[str, Route] = {}

    def route(
        self,
        channel: str,
        inbound: Inbound,
        handler: Handler,
        refused: Callable[[Command, str], None] | None = None,
    ) -> None:
        self._routes[channel] = Route(inbound, handler, refused)

    @property
    def inbound(self) -> dict[str, Inbound]:
        """What the publisher subscribes to."""
        return {channel: r.inbound for channel, r in self._routes.items()}

    def dispatch(self, cmds: Iterable[Command]) -> None:
        for cmd in cmds:
            self._dispatch(cmd)

    def _dispatch(self, cmd: Command) -> None:
        route = self._routes.get(cmd.channel)
        try:
            if cmd.error:
                raise Refused(cmd.error)
            if route is None:
                raise Refused("no handler for this topic")
            route.handler.handle(cmd)
        except Refused as e:
            self._refuse(cmd, route, str(e))
        except (RecursionError, MemoryError) as e:
            self._refuse(cmd, route, type(e).__name__)

    def _refuse(self, cmd: Command, route: Route | None, reason: str) -> None:
        self.refusals.note(cmd.channel, reason)
        if route is not None and route.refused is not None:
            route.refused(cmd, reason)


# --- the handlers ----------------------------------------------------------------------------------


def load_installed(installer: HotListInstaller) -> None:
    """The installed bundle, at start or once the list key arrives. Degrade, never crash-loop: a list
    that does not load leaves the device without one (the `no_hotlist` alarm) until a good one arrives."""
    try:
        installer.load_installed()
    except HotListError as e:
        log.error("installed hot list not usable: %s", e)


class HotListSet:
    """`hotlist/set`: a bundle, installed as `alprd hotlist install` does; the answer on `hotlist/result`.
    A refusal is not audited here: `Refusals` counts them per window."""

    def __init__(
        self,
        installer: HotListInstaller,
        publisher: Publisher,
        list_changed: Callable[[], None],
        clock: Clock,
    ) -> None:
        self._installer = installer
        self._publisher = publisher
        self._list_changed = list_changed
        self._clock = clock

    def handle(self, cmd: Command) -> None:
        try:
            version = self._installer.install(cmd.payload, actor="mqtt:hotlist/set", audit_refusal=False)
        except AlprdError as e:
            raise Refused(str(e) if isinstance(e, HotListError) else f"{type(e).__name__}: {e}") from None
        log.info("hotlist/set: version %s accepted", version)
        self._list_changed()
        active = self._installer.active
        self._publisher.publish_event(HotlistResultBody(
            ts=round(self._clock.time(), 3), bytes=len(cmd.payload), ok=True, version=version,
            entries=len(active) if active is not None else 0,
        ), qos=1)

    def refused(self, cmd: Command, reason: str) -> None:
        self._publisher.publish_event(HotlistResultBody(
            ts=round(self._clock.time(), 3), bytes=len(cmd.payload), ok=False, reason=reason,
        ), qos=1)


class HotListKey:
    """`hotlist/key` (hotlist.key_source hq): the list key, sealed to this device, held in RAM only;
    the installed bundle is loaded with it at once."""

    def __init__(
        self,
        receiver: ListKeyReceiver,
        installer: HotListInstaller,
        audit: Callable[[str, dict[str, object]], None],
        list_changed: Callable[[], None],
    ) -> None:
        self._receiver = receiver
        self._installer = installer
        self._audit = audit
        self._list_changed = list_changed

    def handle(self, cmd: Command) -> None:
        try:
            got = self._receiver.accept(cmd.payload)
        except UntrustedInput as e:
            raise Refused(str(e)) from None
        if got is None:
            return  # the retained copy of the key held, after a reconnect
        self._installer.set_list_key(got.key)
        load_installed(self._installer)
        log.info("list key from headquarters accepted (issued %s)", got.issued)
        self._audit("hotlist.key", {"issued": got.issued, "loaded": self._installer.active is not None})
        self._list_changed()


class EvidenceAcks(Protocol):
    """Where sealed evidence is kept (`alprd.store.Store`)."""

    def ack_evidence(self, hit_id: str) -> bool: ...


class Ack:
    """`ack`, signed with ack.key: the back office confirms a hit (mqtt.app_ack: it leaves the outbox)
    or, with `"evidence": true`, the hit's evidence, which is then deleted (audited `evidence_acked`)."""

    def __init__(
        self,
        ack_pub: Ed25519PublicKey,
        device_id: str,
        publisher: Publisher,
        outbox: Outbox,
        evidence: EvidenceAcks | None = None,
        audit: Callable[[str, dict[str, object]], None] | None = None,
    ) -> None:
        self._pub = ack_pub
        self._device_id = device_id
        self._publisher = publisher
        self._outbox = outbox
        self._evidence = evidence
        self._audit = audit

    def handle(self, cmd: Command) -> None:
        try:
            hit_id, evidence = read_ack(self._pub, self._device_id, cmd.payload)
        except UntrustedInput as e:
            raise Refused(str(e)) from None
        if evidence:
            self._evidence_acked(hit_id)
        elif not self._publisher.app_acked(hit_id, self._outbox):
            log.debug("ack for hit %s, which is not waiting for one (a duplicate)", hit_id)

    def _evidence_acked(self, hit_id: str) -> None:
        if self._evidence is None:
            raise Refused("evidence acks are not taken here")
        try:
            deleted = self._evidence.ack_evidence(hit_id)
        except StoreError as e:
            raise Refused(f"evidence not deleted: {e}") from None
        if not deleted:
            log.debug("evidence ack for hit %s, whose evidence is gone (acked before, or expired)", hit_id)
            return
        log.info("evidence of hit %s acknowledged: deleted", hit_id)
        if self._audit is not None:
            try:
                self._audit("evidence_acked", {"hit_id": hit_id})
            except StoreError as e:
                log.error("audit entry evidence_acked for hit %s not written: %s", hit_id, e)


def ack_key(cfg: Config) -> Ed25519PublicKey | None:
    """The key acks are checked with: required with mqtt.app_ack; otherwise used when the file is
    there (the unit always passes ack.pub), so that evidence acks work without app_ack; None: the
    `ack` topic is not subscribed, and evidence lives until its TTL."""
    if not cfg.mqtt.enabled:
        return None
    if cfg.mqtt.app_ack or cfg.mqtt.ack_pub.is_file():
        return load_ack_pub(cfg.mqtt.ack_pub)
    log.warning("no %s: evidence acks are not taken, evidence is deleted at privacy.evidence_ttl_s",
                cfg.mqtt.ack_pub)
    return None


def device_commands(
    cfg: Config,
    refusals: Refusals,
    installer: HotListInstaller,
    publisher: Publisher,
    outbox: Outbox,
    clock: Clock,
    *,
    list_changed: Callable[[], None],
    audit: Callable[[str, dict[str, object]], None],
    ack_pub: Ed25519PublicKey | None,
    list_keys: ListKeyReceiver | None,
    evidence: EvidenceAcks | None = None,
) -> Commands:
    """The daemon's command topics: `hotlist/set` always, `ack` with an ack key (`ack_key`),
    `hotlist/key` with hotlist.key_source hq."""
    commands = Commands(refusals)
    hotlist_set = HotListSet(installer, publisher, list_changed, clock)
    limits = command_channels(cfg, ack_pub is not None)
    commands.route("hotlist/set", limits["hotlist/set"], hotlist_set, hotlist_set.refused)
    if ack_pub is not None:
        commands.route("ack", limits["ack"], Ack(ack_pub, cfg.device_id, publisher, outbox, evidence, audit))
    if list_keys is not None:
        commands.route("hotlist/key", limits["hotlist/key"],
                       HotListKey(list_keys, installer, audit, list_changed))
    return commands


def command_channels(cfg: Config, ack: bool) -> dict[str, Inbound]:
    """The command topics a config takes, with their size limits (`ack`: an ack key is loaded)."""
    out = {"hotlist/set": Inbound(cfg.mqtt.max_command_bytes, "mqtt.max_command_bytes")}
    if ack:
        out["ack"] = Inbound(MAX_SMALL_COMMAND_BYTES, "the ack limit")
    if cfg.hotlist.key_source == "hq":
        out["hotlist/key"] = Inbound(MAX_SMALL_COMMAND_BYTES, "the list-key message limit")
    return out
