"""The file server's clock, as seen from this process.

Expiry and the age of a lock holder are judged on the clock of the machine
that stamps the files, never on ours: web nodes' clocks may be skewed.  The
server's time is read from the mtime it stamps on a probe (a symlink created
and removed at once), paired with our boot clock read just *after* the probe
was made, so the estimate is never ahead of the server; it is advanced by
the boot clock (which no wall-clock jump moves) and read again every minute.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable

from ._fs import Dir, boot_clock

__all__ = ["PROBE_PREFIX", "ServerClock"]

PROBE_PREFIX = ".fssession-clock-"
_REFRESH = 60.0


class ServerClock:
    """``clock()`` -> the file server's current time (Unix seconds), estimated.

    *directory* is where probes are made (the store's root), or *opener*
    opens it on first use.  On a full filesystem (no inode for a probe) the
    directory's own time is stamped instead; on a read-only one, ``strict``
    raises the OSError, otherwise our own wall clock has to do and
    ``trustworthy`` turns False (a lock never judges a holder's age by it).
    ``granularity`` is 1.0 where the server stamps whole seconds (sshfs,
    MooseFS), else 0.0.
    """

    def __init__(
        self, directory: Dir | None = None, *, opener: Callable[[], Dir] | None = None, strict: bool = False
    ) -> None:
        if (directory is None) == (opener is None):
            raise ValueError("give a directory or an opener")
        self._dir = directory
        self._opener = opener
        self._strict = strict
        self._stamp = 0.0
        self._after = float("-inf")
        self.granularity = 0.0
        self.trustworthy = False

    def __call__(self) -> float:
        now = boot_clock()
        if now - self._after > _REFRESH:
            self._measure()
            now = boot_clock()
        return self._stamp + (now - self._after)

    def _measure(self) -> None:
        self.trustworthy = True
        try:
            if self._dir is None:
                assert self._opener is not None
                self._dir = self._opener()
            stamp_ns = self._probe()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self._dir is not None:
                stamp_ns = self._stamp_directory()
            elif self._strict:
                raise
            else:
                stamp_ns = self._own_time()  # read-only: nothing can be stamped
        self._after = boot_clock()
        self._stamp = stamp_ns / 1e9
        self.granularity = 1.0 if stamp_ns % 1_000_000_000 == 0 else 0.0

    def _probe(self) -> int:
        assert self._dir is not None
        name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        self._dir.symlink("probe", name)
        try:
            return self._dir.lstat(name).st_mtime_ns
        finally:
            self._dir.unlink_quietly(name)

    def _stamp_directory(self) -> int:
        assert self._dir is not None
        try:
            os.utime(self._dir.fd)
            return self._dir.stat().st_mtime_ns
        except OSError:
            if self._strict:
                raise
            return self._own_time()

    def _own_time(self) -> int:
        self.trustworthy = False
        return time.time_ns()
