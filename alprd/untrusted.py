"""Parsing bytes that arrive from outside (MQTT commands and acks, gpsd lines).

Python's parsers recurse once per nesting level, so 4,000 `[` raise RecursionError, which is not a
ValueError and used to end the daemon. Size and nesting are bounded *before* parsing, and whatever
still escapes (RecursionError, MemoryError) is turned into `UntrustedInput` here, at the boundary.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 16
"""Nesting that any message we accept needs (gpsd's deepest is 3, an ack 1)."""


class UntrustedInput(ValueError):
    """The bytes were refused unparsed or did not parse; the message says why, without echoing them."""


def too_deep(data: bytes, limit: int) -> bool:
    """Whether `[`/`{` nest deeper than `limit` anywhere outside JSON strings."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot be deeper than the number of openers: the common case costs two scans
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def loads(data: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for outside bytes; raises UntrustedInput (a ValueError) for anything refused."""
    if len(data) > max_bytes:
        raise UntrustedInput(f"{len(data)} bytes, more than the {max_bytes} accepted")
    if too_deep(data, max_depth):
        raise UntrustedInput(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError, MemoryError) as e:
        raise UntrustedInput(f"not JSON ({type(e).__name__})") from None
