"""Reading and writing one session file: bounded, verified, retried where shared filesystems need it.

The read is ``open``, ``fstat``, ``read``, ``close`` through the bucket's
descriptor (``_fs.Dir.read``), then the MAC check bound to the session id.
What real shared filesystems do to it, and what is done about it:

* ``ENOENT``: an ``lstat`` of the name follows (a fresh lookup).  If the name
  is there, the open met the file it replaced (GlusterFS reports such a
  handle as ``ENOENT``, not ``ESTALE``, under load): retried as for
  ``ESTALE``.  If not, final at once, unless this process read or wrote that
  session within the last minute; then retried briefly (sshfs reports a file
  another host is replacing as missing for a moment, even from ``fstat`` of
  an open file).  A well-formed id nobody issued therefore costs an ``open``
  and an ``lstat``, never a sleep.
* ``ESTALE``/``EBADFD`` (NFS, GlusterFS: a handle to a version another host
  replaced): an ``lstat`` makes the client look the name up again, then the
  read is retried, for up to ``fs_slack`` seconds.
* A length that disagrees with the header (sshfs: one version's size with
  another's contents): re-read, after a fresh lookup, for up to twice
  ``fs_slack``, before the file is called tampered: a verdict is reached only
  on a self-consistent read.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass

from . import _fs
from ._fs import Dir, boot_clock
from ._text import printable
from .errors import SessionTooLarge, StorageError, TamperedSession
from .events import Observer, emit
from .fileformat import HEADER_SIZE, MAC_SIZE, Header, read_header, verify
from .keys import Keyring

__all__ = ["Found", "SessionFiles"]

log = logging.getLogger("fssession.store")

_SEEN_FOR = 60.0  # seconds a session counts as "seen a moment ago"


@dataclass(frozen=True, slots=True)
class Found:
    """A verified session file: its header, its (still serialized) payload, and its mtime."""

    header: Header
    payload: bytes
    mtime: float


class _Seen:
    """Sessions this process read or wrote lately (their absence may be a replace in progress)."""

    def __init__(self, size: int = 8192) -> None:
        self._at: dict[str, float] = {}
        self._size = size
        self._guard = threading.Lock()

    def note(self, name: str) -> None:
        with self._guard:
            if len(self._at) >= self._size:
                self._at.clear()
            self._at[name] = boot_clock()

    def recently(self, name: str) -> bool:
        at = self._at.get(name)
        return at is not None and boot_clock() - at < _SEEN_FOR

    def forget(self, name: str) -> None:
        self._at.pop(name, None)


class SessionFiles:
    """Reads and writes the session files of one store (the store's file I/O, in one place)."""

    def __init__(
        self, keyring: Keyring, *, max_size: int, fs_slack: float, retries: int = 4, observer: Observer | None = None
    ) -> None:
        self.keyring = keyring
        self.observer = observer
        self.limit = max_size + HEADER_SIZE + MAC_SIZE
        self.fs_slack = fs_slack
        self.retries = max(1, retries)
        self.seen = _Seen()

    def read(self, bucket: Dir, name: str, sid: str) -> Found | None:
        """Read and verify session *sid*'s file *name*; None if there is none.

        Raises :class:`TamperedSession` (logged), :class:`SessionTooLarge` or
        :class:`StorageError`.
        """
        retry = _Retry(self.fs_slack, self.retries if self.seen.recently(name) else 0)
        refused: bytes | None = None
        while True:
            try:
                blob, st = bucket.read(name, self.limit)
            except FileNotFoundError:
                if bucket.exists(name) is True and retry.stale():
                    # The name is there: the open met the file it replaced
                    # (GlusterFS reports a handle to a replaced file as
                    # ENOENT); the fresh lookup just made has refreshed it.
                    emit(self.observer, "load_retry", 0.0, "ENOENT")
                    time.sleep(retry.pause())
                    continue
                if not retry.missing():
                    self.seen.forget(name)
                    return None
                emit(self.observer, "load_retry", 0.0, "ENOENT")
                continue
            except OSError as exc:
                self._read_error(bucket, name, exc, retry)
                continue
            try:
                header, payload = verify(blob, self.keyring, sid.encode())
            except TamperedSession as exc:
                # A verdict only on a self-consistent read: a file whose length
                # disagrees with its header (or that is shorter than one) may be
                # one version's size with another's contents (sshfs, GlusterFS
                # caches), so it is read afresh until the bound; one that fails
                # its MAC is read once more, and refused when the same bytes
                # come back.
                torn = _torn(blob)
                if (torn or blob != refused) and retry.torn():
                    refused = blob
                    if torn:  # the second look at a file that fails its MAC is not a retry
                        emit(self.observer, "load_retry", 0.0, "torn")
                    bucket.exists(name)  # a fresh lookup: the client drops what it cached of the name
                    continue
                log.warning("refusing session file %s: %s", bucket.path(name), exc.reason)
                emit(self.observer, "tampered", 0.0, exc.reason)
                raise TamperedSession(exc.reason, bucket.path(name)) from None
            self.seen.note(name)
            return Found(header, payload, st.st_mtime)

    def _read_error(self, bucket: Dir, name: str, exc: OSError, retry: _Retry) -> None:
        """Map a read error; returns (to retry) only for a stale handle within its time."""
        path = bucket.path(name)
        if isinstance(exc, _fs.NotRegular):
            log.warning("refusing session file %s: not a regular file", path)
            raise TamperedSession("not a regular file", path) from exc
        if isinstance(exc, _fs.TooLarge):
            raise SessionTooLarge(f"session file of {exc.size} bytes exceeds max_size: {path}") from exc
        if exc.errno == errno.ELOOP:
            log.warning("refusing session file %s: a symlink", path)
            raise TamperedSession("a symlink where a session file should be", path) from exc
        if exc.errno in _fs.STALE_HANDLE and retry.stale():
            emit(self.observer, "load_retry", 0.0, "ESTALE")
            if bucket.exists(name) is not True:  # the fresh lookup found nothing yet: give caches a moment
                time.sleep(retry.pause())
            return
        raise StorageError.from_oserror(exc, path) from exc

    def read_header(self, bucket: Dir, name: str) -> Header | None:
        """The header of *name* without verifying it (no key); None if there is no such file."""
        try:
            head = bucket.read_head(name, HEADER_SIZE)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                raise TamperedSession(f"not a session file ({exc.strerror})", bucket.path(name)) from exc
            raise StorageError.from_oserror(exc, bucket.path(name)) from exc
        return read_header(head)

    def write_temp(
        self,
        bucket: Dir,
        name: str,
        blob: bytes,
        *,
        mode: int,
        chmod: bool,
        times: tuple[float, float] | None,
        durable: bool,
    ) -> str:
        """Write *blob* to a new temp file beside *name*; returns the temp file's name (StorageError on failure)."""
        try:
            return bucket.write_new(f"{name}.tmp-", blob, mode, chmod=chmod, times=times, fsync=durable)
        except OSError as exc:
            raise StorageError.from_oserror(exc, bucket.path(name)) from exc

    def commit(self, bucket: Dir, tmp: str, name: str, *, durable: bool) -> None:
        """Rename the temp file onto *name* (readers see the old version or the new one, never a mix)."""
        try:
            bucket.rename(tmp, name)
            if durable:
                bucket.fsync()
        except OSError as exc:
            bucket.unlink_quietly(tmp)
            raise StorageError.from_oserror(exc, bucket.path(name)) from exc
        self.seen.note(name)


def _torn(blob: bytes) -> bool:
    """Whether *blob* is not a whole file by its own header (too short for one, or another length)."""
    try:
        return len(blob) != read_header(blob).total_length
    except TamperedSession:
        return len(blob) < HEADER_SIZE or blob[:4] == b"FSSN"


class _Retry:
    """The bounded retry budget of one read."""

    __slots__ = ("_delay", "_missing", "_stale_until", "_torn_until", "fs_slack")

    def __init__(self, fs_slack: float, missing: int) -> None:
        self.fs_slack = max(fs_slack, 0.1)
        self._missing = missing
        self._stale_until = 0.0
        self._torn_until = 0.0
        self._delay = 0.002

    def pause(self) -> float:
        delay, self._delay = self._delay, min(self._delay * 2, 0.05)
        return delay

    def missing(self) -> bool:
        if self._missing <= 0:
            return False
        self._missing -= 1
        time.sleep(self.pause())
        return True

    def stale(self) -> bool:
        now = boot_clock()
        if not self._stale_until:
            self._stale_until = now + self.fs_slack
        return now <= self._stale_until

    def torn(self) -> bool:
        now = boot_clock()
        if not self._torn_until:
            self._torn_until = now + 2 * self.fs_slack
        if now > self._torn_until:
            return False
        time.sleep(self.pause())
        return True


def describe(bucket: Dir, name: str) -> str:
    """The session file's path, escaped, for messages."""
    return printable(bucket.path(name))
