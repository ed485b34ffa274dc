"""One daemon per storage dir."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from ..errors import InstanceLockedError, StoreError

log = logging.getLogger(__name__)

LOCK_NAME = "alprd.lock"


class InstanceLock:
    """One daemon per storage dir: an exclusive `flock` on `<storage.dir>/alprd.lock`.

    Two daemons on one config took over each other's MQTT client id 40 times a minute, sent every hit
    twice and wrote one SQLite file. The kernel drops the lock when the process dies, SIGKILL
    included, so a stale file never blocks a restart. The file holds the PID for the refusal message.
    """

    def __init__(self, dir: Path) -> None:
        self.path = Path(dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise InstanceLockedError naming the PID that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # no inode left: nobody else can make it either
                log.error("%s cannot be created (%s): running without the one-instance lock",
                          self.path, e.strerror)
                return
            raise StoreError(f"{self.path}: cannot open the instance lock: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"{self.path}: cannot lock: {e.strerror}") from None
            raise InstanceLockedError(
                f"another alprd (PID {holder}) is running on storage.dir {self.path.parent} "
                f"(it holds {self.path}); stop it first, or give this one its own storage.dir"
            ) from None
        with contextlib.suppress(OSError):  # a full disk: the lock holds without the PID in it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        # the file stays: unlinking it would let a third process lock a new file beside a holder
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
