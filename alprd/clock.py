"""Wall and monotonic time behind a Protocol, so retention and expiry tests inject time instead of sleeping.

`alprd.capture.SystemClock` (which adds `sleep`) satisfies this Protocol structurally.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (can jump: NTP, an operator, a Pi without RTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only move forward while the machine is up (reset at reboot)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
