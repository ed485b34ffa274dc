"""Exception tree. Foreign exceptions are translated into these once, at the boundary."""

from __future__ import annotations


class AlprdError(Exception):
    """Base of every error alprd raises on purpose; its message says what to do."""


class ConfigError(AlprdError):
    """The configuration file is missing, unreadable or invalid."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class ModelError(AlprdError):
    """A model file is missing, corrupt, has the wrong hash or the wrong shape."""


class ImageError(AlprdError):
    """An image cannot be decoded or is unusable."""


class CaptureError(AlprdError):
    """The frame source failed (camera lost, stream ended unexpectedly)."""


class HotListError(AlprdError):
    """A hot list (CSV or bundle) is malformed, forged, expired or a rollback."""


class KeyFileError(AlprdError):
    """A key file is missing, malformed or has permissions that are too loose."""


class PublishError(AlprdError):
    """The MQTT side failed in a way the caller must know about."""


class StoreError(AlprdError):
    """On-device storage (SQLite, evidence files) failed."""


class InstanceLockedError(AlprdError):
    """Another alprd already runs on the same storage dir (a usage error: exit 2)."""


class EvidenceError(AlprdError):
    """Sealed evidence cannot be opened: damaged, not evidence, or sealed to another key."""
