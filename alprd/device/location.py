"""Where the camera is: a static position (pole) or gpsd (car), and the heading when it is known.

The gpsd client is polled from the pipeline loop on a non-blocking socket (no thread of its own):
it sends `?WATCH={"enable":true,"json":true}` and keeps the newest TPV report. A lost gpsd is
reconnected with backoff; a stale fix is not reported.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Self

from ..clock import Backoff
from ..config import GpsdConfig, LocationConfig
from ..payloads import Location
from ..untrusted import UntrustedInput, loads

log = logging.getLogger(__name__)

_MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fix:
    lat: float
    lon: float
    heading: float | None
    speed: float | None
    mono: float
    source: str

    def as_dict(self) -> Location:
        out: Location = {"lat": round(self.lat, 7), "lon": round(self.lon, 7), "source": self.source}
        if self.heading is not None:
            out["heading"] = round(self.heading, 1)
        if self.speed is not None:
            out["speed_mps"] = round(self.speed, 2)
        return out


class GpsdClient:
    def __init__(self, cfg: GpsdConfig) -> None:
        self.cfg = cfg
        self._sock: socket.socket | None = None
        self._buf = b""
        self._retry_at = 0.0
        # no jitter: one receiver per device, nothing to spread out
        self._backoff = Backoff(1.0, 60.0, jitter=False)
        self.fix: Fix | None = None
        self.errors = 0
        self.refused = 0
        """Lines that were too long, too deep or not JSON: counted, never fatal."""

    def _connect(self, now: float) -> None:
        try:
            sock = socket.create_connection((self.cfg.host, self.cfg.port), timeout=1.0)
            sock.sendall(b'?WATCH={"enable":true,"json":true}\n')
            sock.setblocking(False)
        except OSError as e:
            self.errors += 1
            delay = self._backoff.next_delay()
            self._retry_at = now + delay
            log.warning("gpsd at %s:%s unreachable (%s); retrying in %.0f s", self.cfg.host, self.cfg.port,
                        e, delay)
            return
        self._sock = sock
        self._buf = b""
        self._backoff.reset()

    def poll(self, now: float | None = None) -> None:
        """Read whatever gpsd has sent since the last call; never blocks."""
        now = time.monotonic() if now is None else now
        if self._sock is None:
            if now < self._retry_at:
                return
            self._connect(now)
            if self._sock is None:
                return
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("gpsd closed the connection")
                self._buf += chunk
                if len(self._buf) > 4 * _MAX_LINE:
                    self._buf = self._buf[-_MAX_LINE:]
        except BlockingIOError:
            pass
        except OSError as e:
            log.warning("gpsd connection lost: %s", e)
            self._sock.close()
            self._sock = None
            self.errors += 1
            self._retry_at = now + self._backoff.low  # a lost connection: only failed connects back off
            return
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._handle(line, now)

    def _handle(self, line: bytes, now: float) -> None:
        if not line.strip():
            return
        try:
            msg = loads(line, _MAX_LINE)
        except UntrustedInput as e:
            self.refused += 1
            # a babbling receiver must not flood the journal: warn at the 1st, 2nd, 4th, 8th ... refusal
            n = self.refused
            (log.warning if n & (n - 1) == 0 else log.debug)("gpsd line refused (%d so far): %s", n, e)
            return
        if not isinstance(msg, dict) or msg.get("class") != "TPV":
            return
        mode = msg.get("mode", 0)
        lat, lon = msg.get("lat"), msg.get("lon")
        if not isinstance(mode, int) or mode < 2 or not isinstance(lat, int | float) or not isinstance(
            lon, int | float
        ):
            return
        track = msg.get("track")
        speed = msg.get("speed")
        self.fix = Fix(
            float(lat), float(lon),
            float(track) if isinstance(track, int | float) else None,
            float(speed) if isinstance(speed, int | float) else None,
            now, "gpsd",
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Locator:
    """The position to stamp on an event: the gpsd fix when fresh, else the static position."""

    def __init__(self, cfg: LocationConfig) -> None:
        self.cfg = cfg
        self.gpsd = GpsdClient(cfg.gpsd) if cfg.gpsd is not None else None

    def poll(self, now: float | None = None) -> None:
        if self.gpsd is not None:
            self.gpsd.poll(now)

    def current(self, now: float | None = None) -> Location | None:
        now = time.monotonic() if now is None else now
        if self.gpsd is not None and self.gpsd.fix is not None:
            fix = self.gpsd.fix
            if now - fix.mono <= self.gpsd.cfg.max_age_s:
                return fix.as_dict()
        if self.cfg.lat is not None and self.cfg.lon is not None:
            return Fix(self.cfg.lat, self.cfg.lon, self.cfg.heading_deg, None, now, "static").as_dict()
        return None

    def close(self) -> None:
        if self.gpsd is not None:
            self.gpsd.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
