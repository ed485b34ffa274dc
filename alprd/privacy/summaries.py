"""What may leave the device about non-hits: per-window summaries.

`counts` mode (default) reports per-window counts (vehicle passes, hits, noise passes that were no
vehicle, frames read) and a confidence histogram of the passes: no per-plate data at all. `tokens`
mode adds `Trunc_b(HMAC-SHA256(K_e, "alprd/v1|" + state + "|" + plate))` per
non-hit pass, so the back office can count distinct vehicles in a window. `K_0` is random at start
and lives only in RAM; every flush ratchets it with HKDF and discards the old key, so a device seized
later cannot recompute earlier tokens, and tokens never link across windows or restarts. An unkeyed
hash of a plate is never used anywhere: a GPU enumerates every 7-character plate in seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..clock import Clock, SystemClock
from ..errors import StoreError
from ..payloads import SummaryWindow

log = logging.getLogger(__name__)

SummaryMode = Literal["counts", "tokens"]
TOKEN_BITS = (16, 18, 64)
TOKEN_DOMAIN = b"alprd/v1|"
RATCHET_INFO = b"alprd/v1|token-ratchet"
CONFIDENCE_BINS = 10
CLOCK_TOLERANCE_S = 1.0
"""Wall-clock slew within a window that is not taken as the clock being set back."""
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")

AuditFn = Callable[[str, dict[str, object]], None]
"""Appends an entry to the audit chain (event, object); raises StoreError when the disk refuses."""


def _normalize(text: str) -> str:
    return _NON_ALNUM.sub("", text).upper()


class Summarizer:
    """Per-window statistics of closed passes; `flush()` returns the summary of the window.

    With `audit`, every ratchet of the token key is audited (`summary.key_rotated`, with the epochs):
    an auditor can check that rotation happened on schedule, while the key itself never leaves memory.
    """

    def __init__(
        self,
        mode: SummaryMode = "counts",
        token_bits: int = 16,
        interval_s: float = 900.0,
        clock: Clock | None = None,
        audit: AuditFn | None = None,
    ) -> None:
        if mode not in ("counts", "tokens"):
            raise ValueError(f"summary mode must be counts or tokens, not {mode!r}")
        if token_bits not in TOKEN_BITS:
            raise ValueError(f"token_bits must be one of {TOKEN_BITS}")
        self.mode: SummaryMode = mode
        self.token_bits = token_bits
        self.interval_s = float(interval_s)
        self._clock = clock or SystemClock()
        self._audit = audit
        self.epoch = 0
        self._key = bytearray(os.urandom(32)) if mode == "tokens" else bytearray()
        self._floor: float | None = None
        """The end of the last window that went out: a later window must start after it."""
        self._reset()

    def _reset(self) -> None:
        self._start = self._clock.time()
        self._start_mono = self._clock.monotonic()
        self._passes = 0
        self._hits = 0
        self._noise = 0
        self._frames = 0
        self._hist = [0] * CONFIDENCE_BINS
        self._tokens: dict[int, int] = {}

    def token(self, plate: str, state: str | None) -> str:
        """The current epoch's token for a plate (hex, `token_bits` wide)."""
        if self.mode != "tokens":
            raise ValueError("tokens are only computed in tokens mode")
        return self._fmt(self._token_int(_normalize(plate), (state or "").upper()))

    def _token_int(self, plate: str, state: str) -> int:
        msg = TOKEN_DOMAIN + state.encode("utf-8") + b"|" + plate.encode("utf-8")
        digest = hmac.new(bytes(self._key), msg, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") >> (64 - self.token_bits)

    def _fmt(self, value: int) -> str:
        return f"{value:0{-(-self.token_bits // 4)}x}"

    def add(self, read_text: str, state: str | None, confidence: float, hit: bool) -> None:
        """Count one closed pass. In tokens mode a non-hit's token is taken now; the text is not kept."""
        self._passes += 1
        c = min(max(float(confidence), 0.0), 1.0)
        self._hist[min(int(c * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)] += 1
        if hit:
            self._hits += 1
        elif self.mode == "tokens" and not (self._floor is not None and self._clock.time() < self._floor):
            plate = _normalize(read_text)
            if plate:
                t = self._token_int(plate, (state or "").upper())
                self._tokens[t] = self._tokens.get(t, 0) + 1

    def add_noise(self) -> None:
        """Count a pass that was no vehicle (`Pass.noise`): no token, no histogram."""
        self._noise += 1

    def add_frames(self, n: int) -> None:
        """Count frames the reader read (motion frames)."""
        self._frames += n

    def due(self) -> bool:
        return self._clock.monotonic() - self._start_mono >= self.interval_s

    def flush(self) -> SummaryWindow:
        """Close the window: the summary, then (tokens mode) ratchet the key and forget the old one.

        A wall clock set back (2 h once gave two windows of tokens over the same hours, one ending
        before it started) must not make windows overlap: the window's start is then taken from the
        monotonic clock, and tokens are withheld (counts only) until the wall clock passes the end of
        the last window that went out, so no two token sets ever claim the same time.
        """
        end = self._clock.time()
        lasted = max(0.0, self._clock.monotonic() - self._start_mono)
        wall = end - self._start
        stepped = wall < 0.0 or wall < lasted - CLOCK_TOLERANCE_S
        start = end - lasted if stepped else self._start
        if self._floor is not None and start < self._floor - CLOCK_TOLERANCE_S:
            stepped = True
        tokens = self.mode == "tokens" and not stepped
        out = SummaryWindow(
            mode="tokens" if tokens else "counts",
            epoch=self.epoch,
            start=round(start, 3),
            end=round(end, 3),
            passes=self._passes,
            hits=self._hits,
            noise=self._noise,
            reads=self._frames,
            confidence_hist=tuple(self._hist),
            token_bits=self.token_bits if tokens else None,
            tokens={self._fmt(t): n for t, n in sorted(self._tokens.items())} if tokens else None,
            tokens_withheld=(
                "the wall clock went back; tokens resume once it passes the last window"
                if self.mode == "tokens" and not tokens else None
            ),
        )
        if self.mode == "tokens":  # ratcheted even when a clock step withheld the tokens
            self._ratchet()
        self._floor = end if self._floor is None else max(self._floor, end)
        self.epoch += 1
        self._reset()
        if self.mode == "tokens":
            self._audit_rotation(out.epoch)
        return out

    def _audit_rotation(self, epoch: int) -> None:
        if self._audit is None:
            return
        # A full disk must not turn a done rotation into an error: the storage alarm reports the disk.
        try:
            self._audit("summary.key_rotated", {"epoch": epoch, "next_epoch": self.epoch})
        except StoreError as e:
            log.error("audit entry summary.key_rotated not written: %s", e)

    def _ratchet(self) -> None:
        new = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=RATCHET_INFO).derive(
            bytes(self._key)
        )
        # Overwrite in place: the old key must not linger in this object (CPython may still hold the
        # transient copy passed to HKDF until it is collected; that is as far as Python lets us go).
        for i in range(len(self._key)):
            self._key[i] = 0
        self._key = bytearray(new)
