"""Several brokers of one cluster (`mqtt.hosts`), and the subscriptions a broker must confirm.

`Brokers` hands out the broker for each connection attempt in turn: the device stays on the first
that answers and, once it loses it, tries the next one, with the publisher's jittered backoff
between attempts. `Subscriptions` remembers SUBSCRIBEs until their SUBACK, so that one the broker
never answers is noticed (without it no ack and no command would ever arrive).
Both are used from paho's network thread (the attempts, the answers) and read from the pipeline
thread (`current`, `late`); they hold plain values and copy before they iterate.
"""

from __future__ import annotations

import contextlib
import socket
import time

from ..config import MqttConfig


def label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Brokers:
    def __init__(self, cfg: MqttConfig) -> None:
        self.endpoints = cfg.endpoints()
        self._next = 0
        self.current = label(*self.endpoints[0])
        """The broker of the current connection, or of the attempt under way (`host:port`)."""
        self.switches = 0
        """Connections made to another broker than the one before: failovers."""
        self._last_connected = ""

    def attempt(self) -> tuple[str, int]:
        """The broker for the next connection attempt; each call moves one along the list."""
        host, port = self.endpoints[self._next]
        self._next = (self._next + 1) % len(self.endpoints)
        self.current = label(host, port)
        return host, port

    def connected(self) -> str:
        """A connection to `current` is up; the broker the one before was on if that was another ("")."""
        before, self._last_connected = self._last_connected, self.current
        if before and before != self.current:
            self.switches += 1
            return before
        return ""


class Subscriptions:
    """SUBSCRIBEs sent on the current connection and not yet answered."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[str, float]] = {}

    def clear(self) -> None:
        self._waiting.clear()

    def sent(self, mid: int, topic: str) -> None:
        self._waiting[mid] = (topic, time.monotonic())

    def answered(self, mid: int) -> str:
        """The topic of SUBSCRIBE `mid` ("?" if not known)."""
        return self._waiting.pop(mid, ("?", 0.0))[0]

    def waiting(self) -> int:
        """SUBSCRIBEs not yet answered."""
        return len(self._waiting)

    def late(self, after_s: float) -> str | None:
        """A topic whose SUBACK is overdue by `after_s`, if any."""
        now = time.monotonic()
        return next((t for t, sent in list(self._waiting.values()) if now - sent > after_s), None)


def drop_connection(sock: object) -> None:
    """End a connection as if the network had: paho's own thread then sees it lost and reconnects
    (the next broker, with a list). A shutdown from another thread is safe where a close is not."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
