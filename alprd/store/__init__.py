"""On-device storage: one SQLite file under `storage.dir` (`sqlite.Store`: outbox, evidence index,
audit chain, state), its schema migrations (`schema`) and the one-daemon-per-directory lock (`lock`).
"""

from .lock import LOCK_NAME, InstanceLock
from .schema import SCHEMA_VERSION
from .sqlite import DB_NAME, DEVICE_KEY_NAME, PurgeCounts, Store, current_boot_id, write_checkpoint

__all__ = [
    "DB_NAME", "DEVICE_KEY_NAME", "LOCK_NAME", "SCHEMA_VERSION", "InstanceLock", "PurgeCounts", "Store",
    "current_boot_id", "write_checkpoint",
]
