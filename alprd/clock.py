"""Time behind one Protocol, and the one backoff: retention, expiry and pacing tests inject time
instead of sleeping, and every retry (camera, broker, gpsd) waits the same way."""

from __future__ import annotations

import random
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (can jump: NTP, an operator, a Pi without RTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only move forward while the machine is up (reset at reboot)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (a test clock moves itself forward instead)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Backoff:
    """Exponential backoff: d doubles from `low` up to `high`; with jitter the wait is in [d/2, d], so
    a fleet that lost its broker together does not come back in step."""

    def __init__(
        self, low: float, high: float, rng: random.Random | None = None, *, jitter: bool = True
    ) -> None:
        self.low = low
        self.high = high
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failed attempt."""
        d = min(self.high, self.low * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return float(d * (0.5 + 0.5 * self._rng.random())) if self.jitter else float(d)

    def reset(self) -> None:
        self.attempts = 0
