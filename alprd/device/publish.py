"""MQTT (paho-mqtt 2.x, callback API v2): status/Last Will, info, hits and summaries drained from the
outbox, metrics, and the back office's commands in.

`Publisher` is what the daemon needs from MQTT; `PahoPublisher` implements it. Bodies come from
`alprd.payloads` (each knows its topic); the command topics and their size limits come from the
command registry (`alprd.device.commands`), so this module knows no topic by name but `status`.

Brokers (`mqtt.hosts`): each attempt goes to the next in the list (`failover.Brokers`, set in paho's
`on_pre_connect`). Across a switch the outbox keeps every hit until the new node (or the back office)
acknowledges it; paho resends what was in flight unchanged, so a duplicate keeps its `hit_id`.

Threads: paho runs its own network thread. Its callbacks only record what happened in thread-safe
queues and flags; all work (outbox acks, resends, command handling) happens in `pump()`, called from
the pipeline thread. No lock of ours is ever held while calling paho, and callbacks take none
(holding an application lock across `publish()` while `on_publish` wanted it deadlocked: FACTS.md).
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..clock import Backoff
from ..config import MqttConfig
from ..errors import PublishError
from ..payloads import Body, StatusBody, StatusDetail
from ..types import Command
from .failover import Brokers, Subscriptions, drop_connection
from .outbox import Outbox

log = logging.getLogger(__name__)


PUBLISH_OVERHEAD = 16
"""Bytes a PUBLISH packet adds to topic and payload (header, lengths, packet id, properties)."""


class Inbound(NamedTuple):
    """A command topic to subscribe to, and the most bytes a message on it may have."""

    max_bytes: int
    limit_name: str
    """How the refusal names the limit, e.g. `mqtt.max_command_bytes`."""


def check_secret_mode(path: Path, what: str) -> None:
    """A secret others may read is refused, not used: it may already have leaked (keys.py does the
    same for key files; systemd credentials are 0400)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise PublishError(f"cannot read the {what} file {path}: {e.strerror}") from None
    if mode & 0o077:
        raise PublishError(
            f"the {what} file {path} has mode {mode:04o}: group/others may read it; run "
            f"`chmod 600 {path}` (and consider the secret leaked if others could read it)"
        )


def read_secret(path: Path, what: str) -> str:
    check_secret_mode(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PublishError(
            f"cannot read the {what} file {path}: {e}; with systemd, pass it with LoadCredential= "
            "and point the config at $CREDENTIALS_DIRECTORY"
        ) from e
    return text.rstrip("\r\n")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Publisher(Protocol):
    """What the daemon needs from MQTT. Called from the pipeline thread only."""

    session: int
    too_large: dict[str, int]
    """Topic -> messages not sent because the broker's packet limit is smaller (the alarm)."""

    @property
    def connected(self) -> bool: ...

    @property
    def inflight(self) -> int: ...

    @property
    def status_delivered(self) -> bool:
        """The broker acknowledged the retained status carrying what `set_status` last gave."""
        ...

    def set_status(self, detail: StatusDetail) -> None: ...

    def publish_retained(self, body: Body) -> None:
        """Sent now if connected, else at the next connect (and again after every reconnect)."""

    def publish_event(self, body: Body, qos: int = 1) -> None:
        """A non-durable message (metrics, command results): sent if connected, else dropped."""

    def publish_retained_at(self, topic: str, payload: bytes) -> None:
        """`publish_retained` for a full topic (Home Assistant discovery) or a body that is not JSON."""

    def commands(self) -> list[Command]:
        """What the back office sent since the last call."""
        ...

    def pump(self, outbox: Outbox, now: float | None = None) -> None:
        """Apply broker acks to the outbox, then (re)publish pending rows while connected."""

    def app_acked(self, key: str, outbox: Outbox) -> bool:
        """The back office confirmed hit `key` (app_ack mode): forget it for good."""
        ...

    def drain(
        self,
        outbox: Outbox,
        timeout: float,
        is_empty: Callable[[], bool],
        on_commands: Callable[[list[Command]], None] | None = None,
    ) -> bool:
        """Pump until `is_empty()` or `timeout` passes; True if it emptied."""
        ...

    def stop(self, state: str = "stopped") -> None:
        """The final retained status, then disconnect (idempotent)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class PahoPublisher:
    """The Publisher on a paho client. Build it, `start()`, call `pump(outbox)` often, `stop()` at the end
    (or leave its `with` block).

    `inbound` names the command topics (below `<prefix>/<device_id>/`) to subscribe to, with their size
    limits: a larger message is refused unread, on paho's thread, before it is queued.
    """

    OUTAGE_REMINDER_S = 300.0
    """While the broker stays unreachable: one log line when the outage starts, then one this often."""

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        session: int,
        rng: random.Random | None = None,
        *,
        inbound: Mapping[str, Inbound] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.session = session
        self.base = f"{cfg.topic_prefix.rstrip('/')}/{device_id}"
        # topic -> (channel, limit): paho hands over the full topic
        self._inbound = {self.topic(channel): (channel, limit) for channel, limit in (inbound or {}).items()}
        # paho doubles its own delay without jitter; drive it with ours so a fleet does not reconnect in step
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, rng)
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._connected = False
        self._connects = 0
        self._status_detail: StatusDetail | None = None
        # the newest `online` status sent: (the detail it carried, paho's handle to its PUBACK)
        self._status_sent: tuple[StatusDetail | None, mqtt.MQTTMessageInfo] | None = None
        self._mids: dict[int, str] = {}  # paho message id -> outbox row id
        self._sent: dict[str, float] = {}  # outbox row id -> monotonic time of the last publish
        self._delivered: dict[str, str] = {}  # rows the broker has, waiting for the app ack (app_ack mode)
        self.published = 0
        self.acked = 0
        self._stopping = False
        self._stopped = False
        self._retained: dict[str, bytes] = {}  # topic -> payload, (re)published on every connect
        self._max_packet: int | None = None  # the broker's limit (MQTT 5 CONNACK), if it states one
        self.too_large: dict[str, int] = {}  # topic -> messages not sent: over the broker's limit
        self.connect_error = ""
        self._down_since: float | None = None  # monotonic start of the current outage (network thread)
        self._down_logged = 0.0
        self._down_attempts = 0
        self.brokers = Brokers(cfg)
        self.last_outage_s: float | None = None
        """How long the last outage lasted, from the loss (or first failed attempt) to the CONNACK."""
        self._session_lost = False  # a CONNACK without the session: acks sent to it meanwhile are gone
        self._subscriptions = Subscriptions()
        self.client = self._make_client()

    # --- set-up ---------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # MQTT 3.1.1: a persistent session unless mqtt.clean_session; MQTT 5 sets clean_start on
            # connect instead
            clean_session=None if v5 else cfg.clean_session,
        )
        paho_log = logging.getLogger("alprd.paho")
        paho_log.addFilter(self._quiet_when_disconnected)
        client.enable_logger(paho_log)
        client.will_set(self.topic(StatusBody.topic), self._status("offline", None), qos=1, retain=True)
        if cfg.username is not None:
            password = read_secret(cfg.password_file, "MQTT password") if cfg.password_file else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            if cfg.tls.key is not None:
                check_secret_mode(cfg.tls.key, "MQTT client key")
            try:
                client.tls_set(
                    ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                    certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                    keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError, ValueError) as e:
                raise PublishError(f"MQTT TLS set-up failed: {e}; check mqtt.tls.ca/cert/key") from e
            client.tls_insecure_set(cfg.tls.insecure)
        client.max_inflight_messages_set(max(cfg.max_inflight, 20))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_pre_connect = self._on_pre_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._set_backoff(client)
        return client

    def subscribe(self, channel: str, limit: Inbound) -> None:
        """Take commands on `<base>/<channel>` from the next connection on (call before `start`)."""
        self._inbound[self.topic(channel)] = (channel, limit)

    def start(self) -> None:
        """Connect in the background (first attempt included): the daemon works offline too."""
        props: Properties | None = None
        kwargs: dict[str, Any] = {}
        if self.cfg.protocol == "5" and self.cfg.clean_session:
            # every connect starts afresh; no Session Expiry Interval means 0: the session ends with
            # the connection
            kwargs = {"clean_start": True}
        elif self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            kwargs = {"clean_start": False, "properties": props}
        host, port = self.brokers.endpoints[0]
        try:
            self.client.connect_async(host, port, self.cfg.keepalive_s, **kwargs)
        except (OSError, ValueError) as e:
            raise PublishError(f"cannot start MQTT connection to {self.brokers.current}: {e}") from e
        self.client.loop_start()

    def _quiet_when_disconnected(self, record: logging.LogRecord) -> bool:
        # paho 2.2's network thread logs "Client is not connected" at ERROR on every pass without a
        # socket: every reconnect wait while the broker is down, and once after our own disconnect().
        # `_outage` says it once (then every few minutes) instead.
        return not record.getMessage().startswith("Client is not connected")

    def _outage(self, why: str) -> None:
        """A failed connection attempt or a lost connection (network thread): log it when the outage
        starts, then a reminder every OUTAGE_REMINDER_S, not once per attempt."""
        now = time.monotonic()
        self._down_attempts += 1
        where = self.brokers.current
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning("MQTT broker %s: %s; retrying with backoff (hits wait in the outbox)", where, why)
        elif now - self._down_logged >= self.OUTAGE_REMINDER_S:
            self._down_logged = now
            log.warning("MQTT broker %s still unreachable after %s (%d attempts; last: %s)",
                        where, _duration(now - self._down_since), self._down_attempts, why)

    def _set_backoff(self, client: mqtt.Client) -> None:
        """paho's wait before its next reconnect: the backoff's next delay, whole seconds."""
        delay = max(1, round(self._backoff.next_delay()))
        client.reconnect_delay_set(delay, delay)

    def topic(self, channel: str) -> str:
        """The full topic of a level below the device's base (`hit` -> `alprd/<device_id>/hit`)."""
        return f"{self.base}/{channel}"

    def _status(self, state: str, detail: StatusDetail | None) -> bytes:
        return StatusBody.of(state, self.session, self.device_id, time.time(), detail).encode()

    # --- paho callbacks (network thread): record, never work -------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        # paho's `host`/`port` setters refuse while it is connecting, which this is: set what its
        # reconnect() reads next (paho-mqtt is pinned below 3; tests/test_failover.py checks it)
        client._host, client._port = self.brokers.attempt()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        if reason_code.is_failure:
            self._outage(f"refused the connection: {reason_code}")
            self.connect_error = f"refused the connection: {reason_code}"
            self._connected = False
            return
        if self._down_since is not None:
            self.last_outage_s = time.monotonic() - self._down_since
            log.warning("MQTT broker %s reachable again after %s (%d attempts)", self.brokers.current,
                        _duration(self.last_outage_s), self._down_attempts)
            self._down_since, self._down_attempts = None, 0
        if before := self.brokers.connected():
            log.warning("MQTT: now on broker %s (was on %s)", self.brokers.current, before)
        # acks for hits delivered before the loss waited in the old session: without it they are
        # gone, and those hits go out again now rather than after resend_after_s
        self._session_lost = not getattr(flags, "session_present", False)
        self._max_packet = getattr(props, "MaximumPacketSize", None)
        self.too_large = {}  # counted again against this connection's limit
        self._connects += 1
        self._backoff.reset()
        self.connect_error = ""
        self._set_backoff(client)
        self._subscriptions.clear()
        for topic in self._inbound:
            rc, mid = client.subscribe(topic, qos=self.cfg.subscribe_qos)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._subscriptions.sent(mid, topic)
        # connected only now, so the pipeline thread's first hit on this connection goes out after
        # the SUBSCRIBE: without a session (mqtt.clean_session, or a broker that lost it) the ack
        # subscription must exist before the back office answers the hit
        self._connected = True
        self._publish_status()
        # Retained messages go out only now, once the broker's size limit is known: one queued
        # before the connection and over the limit was resent by paho on every reconnect, and the
        # broker's disconnect for it became a loop that let no hit through.
        for topic, payload in list(self._retained.items()):
            self._send(topic, payload, retain=True)
        log.info("MQTT connected to %s (session present: %s)", self.brokers.current,
                 getattr(flags, "session_present", None))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        topic = self._subscriptions.answered(mid)
        if refused := [c for c in codes if getattr(c, "is_failure", False)]:
            log.error("MQTT broker %s refused the subscription to %s (%s): acks and commands on it will "
                      "not arrive; check the broker's ACL", self.brokers.current, topic, refused[0])

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError` and passes no reason: take it from there
        # (a TLS failure used to show only as a later "Client is not connected")
        exc = sys.exc_info()[1]
        self.connect_error = f"{type(exc).__name__}: {exc}"[:300] if exc is not None else "no reason given"
        self._outage(f"cannot connect ({self.connect_error})")
        self._set_backoff(client)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        if self._connected and not self._stopping:
            self._outage(f"disconnected: {reason_code}")
        self._connected = False
        self._set_backoff(client)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        self._acks.put((mid, not reason_code.is_failure))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        route = self._inbound.get(msg.topic)
        if route is None:
            return
        channel, (limit, name) = route
        if len(msg.payload) > limit:
            why = f"payload of {len(msg.payload)} bytes exceeds {name} ({limit})"
            self._commands.put(Command(channel, b"", why))
        else:
            self._commands.put(Command(channel, bytes(msg.payload)))

    # --- pipeline thread --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker has confirmed every subscription of this connection: acks and
        commands can arrive."""
        return self._connected and self._subscriptions.waiting() == 0

    @property
    def connects(self) -> int:
        return self._connects

    @property
    def inflight(self) -> int:
        return len(self._mids)

    def commands(self) -> list[Command]:
        out: list[Command] = []
        while True:
            try:
                out.append(self._commands.get_nowait())
            except queue.Empty:
                return out

    @property
    def max_packet(self) -> int | None:
        return self._max_packet

    def fits(self, topic: str, payload: bytes) -> bool:
        """Whether the broker's stated packet limit lets this message through."""
        size = len(payload) + len(topic.encode()) + PUBLISH_OVERHEAD
        return self._max_packet is None or size <= self._max_packet

    def _send(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """client.publish, unless the broker said it takes no message this large (counted, logged)."""
        if not self.fits(topic, payload):
            n = self.too_large.get(topic, 0) + 1
            self.too_large[topic] = n
            (log.error if n & (n - 1) == 0 else log.debug)(
                "message of %d bytes on %s not sent: the broker takes at most %s bytes per packet "
                "(%d so far); raise the broker's max_packet_size", len(payload), topic, self._max_packet, n)
            return None
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def set_status(self, detail: StatusDetail) -> None:
        """Change what the retained `online` status carries (camera state, alarms) and republish it."""
        self._status_detail = detail
        if self._connected:
            self._publish_status()

    def _publish_status(self) -> None:
        detail = self._status_detail
        info = self._send(self.topic(StatusBody.topic), self._status("online", detail), retain=True)
        if info is not None:
            self._status_sent = (detail, info)

    @property
    def status_delivered(self) -> bool:
        """The broker acknowledged the retained status carrying what `set_status` last gave."""
        sent = self._status_sent
        # identity, not equality: on_connect (paho's thread) may have sent the previous detail
        return sent is not None and sent[0] is self._status_detail and sent[1].is_published()

    def publish_retained(self, body: Body) -> None:
        """Sent now if connected, else at the next connect (and again after every reconnect)."""
        topic, payload = self.topic(body.topic), body.encode()
        self._retained[topic] = payload
        if self._connected:
            self._send(topic, payload, retain=True)

    def publish_event(self, body: Body, qos: int = 1) -> None:
        """A non-durable message (metrics, command results): sent if connected, else dropped."""
        if self._connected:
            self._send(self.topic(body.topic), body.encode(), qos=qos)

    def publish_retained_at(self, topic: str, payload: bytes) -> None:
        """`publish_retained` for a full topic (Home Assistant discovery) or a body that is not JSON."""
        self._retained[topic] = payload
        if self._connected:
            self._send(topic, payload, retain=True)

    def app_acked(self, key: str, outbox: Outbox) -> bool:
        """The back office confirmed hit `key`: forget it for good."""
        for item_id, k in list(self._delivered.items()):
            if k == key:
                outbox.ack(item_id)
                del self._delivered[item_id]
                self._sent.pop(item_id, None)
                self.acked += 1
                return True
        return False

    def pump(self, outbox: Outbox, now: float | None = None) -> None:
        """Apply broker acks to the outbox, then (re)publish pending rows while connected."""
        now = time.monotonic() if now is None else now
        self._apply_acks(outbox)
        if not self._connected:
            return
        self._check_session()
        room = self.cfg.max_inflight - len(self._mids)
        if room <= 0:
            return
        for item in outbox.pending(self.cfg.max_inflight + len(self._sent)):
            last = self._sent.get(item.msg_id)
            if last is not None and now - last < self.cfg.resend_after_s:
                continue
            info = self._send(self.topic(item.topic or item.kind), item.payload)
            if info is None:
                # over the broker's limit: it stays in the outbox (alarm), the rows behind it go on
                self._sent[item.msg_id] = now
                continue
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.debug("publish of outbox row %s not queued: %s", item.msg_id, info.rc)
                break
            self._mids[info.mid] = item.msg_id
            self._sent[item.msg_id] = now
            if self.cfg.app_ack and item.kind == "hit":
                self._delivered.setdefault(item.msg_id, item.key)
            self.published += 1
            room -= 1
            if room <= 0:
                break
        # acks that raced with the publish calls above are applied now that their mids are recorded
        self._apply_acks(outbox)

    def _check_session(self) -> None:
        if self._session_lost:
            self._session_lost = False
            in_flight = set(self._mids.values())  # paho resends these itself
            for item_id in self._delivered:
                if item_id not in in_flight:
                    self._sent.pop(item_id, None)
        # A SUBSCRIBE left unanswered for a keepalive: reconnect (the next broker, with a list) and
        # subscribe afresh. A RabbitMQ 3.10 node whose classic session queue lives on a dead node
        # answers none (docs/fleet.md); without the subscription no ack or command would arrive.
        if (topic := self._subscriptions.late(self.cfg.keepalive_s)) is not None:
            log.error("MQTT broker %s has not confirmed the subscription to %s in %d s: reconnecting",
                      self.brokers.current, topic, self.cfg.keepalive_s)
            self._subscriptions.clear()
            drop_connection(self.client.socket())

    def _apply_acks(self, outbox: Outbox) -> None:
        while True:
            try:
                mid, ok = self._acks.get_nowait()
            except queue.Empty:
                return
            item_id = self._mids.pop(mid, None)
            if item_id is None:
                continue
            if not ok:
                self._sent.pop(item_id, None)  # refused by the broker: try again on the next pump
                continue
            if item_id in self._delivered:
                continue  # the broker has it; the back office has not confirmed it yet
            outbox.ack(item_id)
            self._sent.pop(item_id, None)
            self.acked += 1

    def drain(
        self,
        outbox: Outbox,
        timeout: float,
        is_empty: Callable[[], bool],
        on_commands: Callable[[list[Command]], None] | None = None,
    ) -> bool:
        """Pump until the outbox is empty or `timeout` passes; True if it emptied.

        `on_commands` gets what arrived meanwhile: in app_ack mode the back office's acks are what
        empties the outbox, so a drain that ignored them always waited out the whole timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if on_commands is not None:
                on_commands(self.commands())
            self.pump(outbox)
            if is_empty():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, state: str = "stopped", timeout: float = 5.0) -> None:
        """Publish the final retained status (a clean disconnect does not fire the will) and disconnect.
        Once: the daemon stops it after draining, and leaving its `with` block stops it again."""
        if self._stopped:
            return
        self._stopped = True
        if self._connected:
            info = self._send(self.topic(StatusBody.topic), self._status(state, self._status_detail),
                              retain=True)
            try:
                if info is not None:
                    info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("final status %r not confirmed by the broker", state)
        self._stopping = True
        self._connected = False  # a disconnect we asked for is not worth a warning
        self.client.disconnect()
        self.client.loop_stop()
        logging.getLogger("alprd.paho").removeFilter(self._quiet_when_disconnected)
        self._connected = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
