"""SessionStore: signed pickled sessions in a shared directory; lock-free loads, locked edits.

Layout under the store's root::

    .fssession-naming-key      the key that turns ids into file names (0600; never rotated)
    ab/                        256 fan-out directories, by the first two hex digits of the name
    ab/<64 hex>                a session file (see fileformat.py)
    ab/<64 hex>.lock           its MkdirLock while an edit, delete or rotate runs
    ab/<64 hex>.tmp-<token>    a write in progress (renamed over the session file to commit)

Status: correct where a client that holds the lock reads what the previous
holder committed (local disks, NFS with close-to-open, sshfs; on GlusterFS
the stale reads seen in testing surfaced as ESTALE and were retried).  A
GlusterFS client may still serve old bytes for about a second without an
error; the fix (a lock that carries the committed generation) is designed in
NOTES.md and not built yet.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import (
    SessionNotFound,
    SessionTooLarge,
    StorageError,
    TamperedSession,
)
from .fileformat import HEADER_SIZE, MAC_SIZE, Header, Keyring, decode, encode
from .ids import file_name, new_session_id
from .lock import MkdirLock, server_now

__all__ = ["SessionStore"]

log = logging.getLogger("fssession.store")

NAMING_KEY_FILE = ".fssession-naming-key"
TMP_INFIX = ".tmp-"
LOCK_SUFFIX = ".lock"
_RETRYABLE = (errno.ENOENT, errno.ESTALE)


class SessionStore:
    """Sessions kept as signed files in a directory shared by every web node.

    ``load`` takes no lock; ``edit``, ``delete`` and ``rotate`` hold the
    session's :class:`~fssession.MkdirLock` only around their
    read-modify-write.  See the README for the full contract.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        secret_key: str | bytes | Sequence[str | bytes],
        *,
        max_age: int = 1800,
        absolute_max_age: int | None = None,
        lock_timeout: float = 10.0,
        lease: float = 30.0,
        fs_slack: float = 1.0,
        max_size: int = 1 << 20,
        durable: bool = False,
        file_mode: int = 0o600,
        dir_mode: int = 0o700,
        load_retries: int = 4,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_age <= 0 or (absolute_max_age is not None and absolute_max_age <= 0):
            raise ValueError("max_age and absolute_max_age must be positive")
        self.root = Path(path)
        self.keyring = Keyring(secret_key)
        self.max_age = int(max_age)
        self.absolute_max_age = absolute_max_age
        self.lock_timeout = lock_timeout
        self.lease = lease
        self.fs_slack = fs_slack
        self.max_size = max_size
        self.durable = durable
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.load_retries = max(1, load_retries)
        # A load refreshes the last-access time only when it is this stale,
        # so that keeping a session alive is not a write on every request.
        self.touch_interval = min(60.0, self.max_age / 20)
        self._clock = clock
        self._offset = 0.0
        self._offset_at = float("-inf")
        self._chmod_needed = bool(file_mode & _current_umask())
        try:
            self.root.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.root) from exc
        self._naming_key = self._load_naming_key()
        self._root = os.fspath(self.root)
        self._paths: dict[str, str] = {}  # recently used ids -> paths (validated, hashed once)

    # ------------------------------------------------------------------ time
    def now(self) -> float:
        """The current time on the file server's clock (estimated; refreshed every minute)."""
        if self._clock is not None:
            return self._clock()
        local = time.time()
        if time.monotonic() - self._offset_at > 60:
            try:
                self._offset = server_now(self.root) - time.time()
            except OSError:
                self._offset = 0.0  # a read-only store: the local clock will have to do
            self._offset_at = time.monotonic()
        return local + self._offset

    # ---------------------------------------------------------------- naming
    def _load_naming_key(self) -> bytes:
        key_path = self.root / NAMING_KEY_FILE
        for _ in range(3):
            try:
                raw = key_path.read_bytes()
                key = bytes.fromhex(raw.decode("ascii").strip())
                if len(key) >= 16:
                    return key
                raise StorageError(errno.EINVAL, "naming key file is corrupt", str(key_path))
            except FileNotFoundError:
                pass
            except (UnicodeDecodeError, ValueError) as exc:
                raise StorageError(errno.EINVAL, "naming key file is corrupt", str(key_path)) from exc
            except OSError as exc:
                raise StorageError.from_oserror(exc, key_path) from exc
            # First use of this directory: one node creates the key, under a lock.
            with MkdirLock(self.root / (NAMING_KEY_FILE + LOCK_SUFFIX), timeout=self.lock_timeout):
                if not key_path.exists():
                    self._write_atomically(key_path, secrets.token_hex(32).encode() + b"\n")
        raise StorageError(errno.EIO, "could not read or create the naming key", str(key_path))

    def _path(self, sid: str) -> str:
        """The session file's path (a str: this is on every request's path, pathlib is slow)."""
        path = self._paths.get(sid)
        if path is None:
            name = file_name(sid, self._naming_key)  # validates first: a bad id raises here
            path = f"{self._root}/{name[:2]}/{name}"
            if len(self._paths) >= 4096:
                self._paths.clear()
            self._paths[sid] = path
        return path

    def _lock(self, path: str) -> MkdirLock:
        return MkdirLock(path + LOCK_SUFFIX, timeout=self.lock_timeout, lease=self.lease, fs_slack=self.fs_slack)

    # ------------------------------------------------------------- reading
    def _read(self, path: str) -> tuple[Header, dict[str, Any], float] | None:
        """Verify and decode the file at *path*: (header, data, mtime), or None if there is none.

        A replace by another host can make the file look missing for a moment
        (sshfs: ENOENT) or its handle stale (NFS, GlusterFS: ESTALE, from
        open, fstat, read or even close).  ENOENT is retried a few times
        quickly (a session that really is missing must stay cheap); ESTALE,
        which says a file *was* there, for up to ``fs_slack`` seconds.
        """
        enoent_left = self.load_retries
        give_up = float("inf")  # set at the first ESTALE (kept off the common path)
        delay = 0.002
        while True:
            blob = b""
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise TamperedSession("a symlink where a session file should be", path) from exc
                if exc.errno == errno.ENOENT:
                    enoent_left -= 1
                    if enoent_left <= 0:
                        return None
                elif exc.errno != errno.ESTALE or time.monotonic() > give_up:
                    raise StorageError.from_oserror(exc, path) from exc
                else:
                    give_up = min(give_up, time.monotonic() + max(self.fs_slack, 0.1))
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise TamperedSession("not a regular file", path)
                if st.st_size > self.max_size + HEADER_SIZE + MAC_SIZE:
                    raise SessionTooLarge(f"session file of {st.st_size} bytes exceeds max_size: {path}")
                blob = _read_all(fd, st.st_size)
            except OSError as exc:
                if exc.errno != errno.ESTALE or time.monotonic() > give_up:
                    raise StorageError.from_oserror(exc, path) from exc
                give_up = min(give_up, time.monotonic() + max(self.fs_slack, 0.1))
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            finally:
                _close_read_only(fd)
            try:
                header, data = decode(blob, self.keyring)
            except TamperedSession as exc:
                log.warning("refusing session file %s: %s", path, exc.reason)
                raise TamperedSession(exc.reason, path) from None
            return header, data, st.st_mtime

    def _read_live(self, path: str, sid: str) -> tuple[Header, dict[str, Any], float]:
        """Like _read, but SessionNotFound for a missing or expired session (edit, touch, rotate)."""
        found = self._read(path)
        if found is None or found[0].expired(self.now(), found[2]):
            raise SessionNotFound(sid)
        return found

    def load(self, sid: str) -> dict[str, Any] | None:
        """The session's data, or None if it does not exist or expired.  Takes no lock.

        Raises :class:`InvalidSessionId`, :class:`TamperedSession` (logged),
        :class:`SessionTooLarge` or :class:`StorageError`.
        """
        path = self._path(sid)
        found = self._read(path)
        if found is None:
            return None
        header, data, mtime = found
        now = self.now()
        if header.expired(now, mtime):
            return None
        if now - mtime > self.touch_interval:
            self._touch_path(path, now, strict=False)
        return data

    # ------------------------------------------------------------- writing
    def _write_atomically(self, path: str | Path, blob: bytes, before_commit: Callable[[], None] | None = None) -> None:
        """Write *blob* to a unique temp file beside *path*, then rename it over *path*.

        On any failure the previous version survives, the temp file is
        removed, and StorageError carries the errno.
        """
        path = os.fspath(path)
        tmp = f"{path}{TMP_INFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode)
        except FileNotFoundError:
            self._make_bucket(os.path.dirname(path))
            fd = self._open_new(tmp)
        except OSError as exc:
            raise StorageError.from_oserror(exc, tmp) from exc
        try:
            try:
                if self._chmod_needed:
                    os.fchmod(fd, self.file_mode)
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if before_commit is not None:
                before_commit()
            os.rename(tmp, path)
            if self._clock is not None:
                # An injected clock (tests, simulations) is not the server's:
                # stamp the write with it so that expiry stays consistent.
                now = self._clock()
                os.utime(path, (now, now))
        except BaseException as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                raise StorageError.from_oserror(exc, path) from exc
            raise
        if self.durable:
            _fsync_dir(os.path.dirname(path))

    def _open_new(self, tmp: str) -> int:
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode)
        except OSError as exc:
            raise StorageError.from_oserror(exc, tmp) from exc

    def _make_bucket(self, bucket: str) -> None:
        try:
            os.mkdir(bucket, self.dir_mode)
        except FileExistsError:
            pass  # another node made it first
        except OSError as exc:
            raise StorageError.from_oserror(exc, bucket) from exc

    def _encode(self, data: Mapping[str, Any], generation: int, created: float) -> bytes:
        expires_at = created + self.absolute_max_age if self.absolute_max_age else 0.0
        blob = encode(
            data, self.keyring, generation=generation, created=created, expires_at=expires_at, idle_timeout=self.max_age
        )
        if len(blob) - HEADER_SIZE - MAC_SIZE > self.max_size:
            raise SessionTooLarge(f"session of {len(blob)} bytes exceeds max_size={self.max_size}")
        return blob

    def create(self, data: Mapping[str, Any] | None = None) -> str:
        """Store a new session and return its fresh id."""
        sid = new_session_id()
        now = self.now()
        self._write_atomically(self._path(sid), self._encode(data or {}, 1, now))
        return sid

    @contextmanager
    def edit(self, sid: str) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write: yields the data; written on clean exit, not if the block raises.

        The session's lock is held only inside the block.  Before the rename
        that commits, the lock is renewed by its exact-name rename, which
        fails with :class:`LockLost` (nothing written) if another holder took
        it over meanwhile.  :class:`SessionNotFound` if it is missing or expired.
        """
        path = self._path(sid)
        lock = self._lock(path)
        with lock:
            header, data, _ = self._read_live(path, sid)
            yield data
            blob = self._encode(data, header.generation + 1, header.created)
            self._write_atomically(path, blob, before_commit=lock.refresh)

    def touch(self, sid: str) -> None:
        """Extend the session's life without rewriting its data; :class:`SessionNotFound` if gone."""
        path = self._path(sid)
        self._read_live(path, sid)
        self._touch_path(path, self.now(), strict=True)

    def _touch_path(self, path: str, now: float, *, strict: bool) -> None:
        # Sets the time on whatever version is current: a touch can never
        # bring back data that a concurrent edit replaced.
        try:
            os.utime(path, (now, now), follow_symlinks=False)
        except OSError as exc:
            if strict:
                if exc.errno in _RETRYABLE:
                    raise SessionNotFound(path) from exc
                raise StorageError.from_oserror(exc, path) from exc
            log.debug("could not refresh the access time of %s: %s", path, exc)

    def delete(self, sid: str) -> bool:
        """Remove the session; True if it existed.  Takes its lock, so no edit can bring it back."""
        path = self._path(sid)
        with self._lock(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StorageError.from_oserror(exc, path) from exc
        return True

    def rotate(self, sid: str) -> str:
        """Move the session's data to a fresh id (e.g. at login); the old id stops working."""
        path = self._path(sid)
        with self._lock(path):
            header, data, _ = self._read_live(path, sid)
            new_sid = new_session_id()
            self._write_atomically(self._path(new_sid), self._encode(data, 1, header.created))
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # already gone: the new id is what matters
            except OSError as exc:
                _unlink_quietly(self._path(new_sid))
                raise StorageError.from_oserror(exc, path) from exc
        return new_sid


def _read_all(fd: int, size: int) -> bytes:
    """Read the file: one read of size+1 bytes normally suffices (a short count is end of file).

    A file longer than fstat said comes back with size+1 bytes and then fails
    verification as extended.
    """
    chunks, total = [], 0
    while total <= size:
        chunk = os.read(fd, size + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total == size:
            break  # a regular file returned all it had: a further read would only say EOF
    return b"".join(chunks)


def _close_read_only(fd: int) -> None:
    """Close a descriptor we only read from: an error here (GlusterFS: ESTALE) cannot lose data."""
    try:
        os.close(fd)
    except OSError as exc:
        log.debug("closing a read-only descriptor: %s", exc)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # never created, or already cleaned up
    except OSError as exc:
        log.warning("could not remove temp file %s: %s", path, exc)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot fsync a directory
            raise StorageError.from_oserror(exc, directory) from exc
    finally:
        os.close(fd)


def _current_umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass  # no /proc: assume the common default
    return 0o022
