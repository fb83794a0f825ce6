"""SessionStore: signed pickled sessions in a shared directory; lock-free loads, locked edits.

What it keeps in the store's directory, and under which names: see
``layout.py``; the file format: ``fileformat.py``.

The stale read: a GlusterFS client can serve the version before the last
commit for about a second after another client replaced the file, even to a
reader that holds the lock, and without any error.  Holding the lock is not
enough to know that one read the last commit, so every commit also leaves
the generation it wrote in the session's beacon.  An editor, under the lock,
renames the beacon to a name of its own (the file server resolves a rename
by name, so no client cache answers for it) and reads its target; it then
re-reads the session file until the file's signed header shows at least that
generation.  When there is no beacon (a crash in the middle of an edit) it
waits out the client caches instead (``fs_slack``, the bound the lock already
assumes).
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

from ._identity import process_umask
from .errors import (
    LockLost,
    SessionNotFound,
    SessionTooLarge,
    StorageError,
    TamperedSession,
)
from .fileformat import HEADER_SIZE, MAC_SIZE, Header, Keyring, decode, encode
from .ids import file_name, new_session_id
from .layout import GEN_CLAIM_INFIX, GEN_SUFFIX, LOCK_SUFFIX, NAMING_KEY_FILE, REAP_SUFFIX, TMP_INFIX
from .lock import MkdirLock, ServerClock, rename_by_exact_name
from .reaper import ReapStats, reap

__all__ = ["GEN_CLAIM_INFIX", "GEN_SUFFIX", "LOCK_SUFFIX", "TMP_INFIX", "SessionStore"]

log = logging.getLogger("fssession.store")

_RETRYABLE = (errno.ENOENT, errno.ESTALE)
# A handle to a version that another host replaced: NFS and GlusterFS say
# ESTALE; GlusterFS also says EBADFD from fstat (seen under 4-host contention).
_STALE_HANDLE = frozenset({errno.ESTALE, errno.EBADFD})


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
        self._server_clock = ServerClock(self.root, strict=False)  # a read-only store: our clock will have to do
        self._chmod_needed = bool(file_mode & process_umask())
        try:
            self.root.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.root) from exc
        self._naming_key = self._load_naming_key()
        self._root = os.fspath(self.root)
        self._paths: dict[str, str] = {}  # recently used ids -> paths (validated, hashed once)
        self._locks: dict[str, MkdirLock] = {}  # recently used paths -> their locks

    # ------------------------------------------------------------------ time
    def now(self) -> float:
        """The current time on the file server's clock (estimated; refreshed every minute)."""
        if self._clock is not None:
            return self._clock()
        return self._server_clock()

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
        """The session's lock object, reused for recently used sessions (building one costs more than a rename).

        Reuse is safe: a MkdirLock keeps its holds per thread, and a free one
        carries no state into the next acquire.
        """
        lock = self._locks.get(path)
        if lock is None:
            # dir_mode: nodes running as other uids of the group must be able
            # to judge and take over a dead holder's lock.
            lock = MkdirLock(
                path + LOCK_SUFFIX,
                timeout=self.lock_timeout,
                lease=self.lease,
                fs_slack=self.fs_slack,
                mode=self.dir_mode,
            )
            if len(self._locks) >= 1024:
                self._locks = {p: held for p, held in self._locks.items() if held.is_locked}
            self._locks[path] = lock
        return lock

    # ------------------------------------------------------------- reading
    def _read(self, path: str) -> tuple[Header, dict[str, Any], float] | None:
        """Verify and decode the file at *path*: (header, data, mtime), or None if there is none.

        A replace by another host can make the file look missing for a moment
        (sshfs: ENOENT, even from fstat of an open file) or its handle stale
        (NFS, GlusterFS: ESTALE from open, fstat, read or even close;
        GlusterFS: EBADFD from fstat).  ENOENT is retried a few times quickly
        (a session that really is missing must stay cheap); ESTALE, which
        says a file *was* there, for up to ``fs_slack`` seconds.  A size from
        a stale attribute cache is corrected by the header (``_read_all``).
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
                elif exc.errno not in _STALE_HANDLE or time.monotonic() > give_up:
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
                blob = _read_all(fd, st.st_size, self.max_size + HEADER_SIZE + MAC_SIZE)
            except OSError as exc:
                if exc.errno == errno.ENOENT and enoent_left > 1:
                    enoent_left -= 1  # sshfs: the file another host replaced, gone under an open handle
                elif exc.errno not in _STALE_HANDLE or time.monotonic() > give_up:
                    raise StorageError.from_oserror(exc, path) from exc
                else:
                    give_up = min(give_up, time.monotonic() + max(self.fs_slack, 0.1))
                    if _revalidate(path):
                        continue  # the name now leads to the current version: read it at once
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
                if self._clock is not None:
                    # An injected clock (tests, simulations) is not the
                    # server's: stamp the write with it before it becomes
                    # visible, so that no reader ever sees another time.
                    now = self._clock()
                    os.utime(fd, (now, now))
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if before_commit is not None:
                before_commit()
            os.rename(tmp, path)
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
            return  # another node made it first
        except OSError as exc:
            raise StorageError.from_oserror(exc, bucket) from exc
        if self.dir_mode & process_umask():
            # The umask would take away what dir_mode grants (e.g. the group's
            # write bit on a store shared by several users).
            try:
                os.chmod(bucket, self.dir_mode)
            except OSError as exc:
                raise StorageError.from_oserror(exc, bucket) from exc

    def _encode(
        self, data: Mapping[str, Any], generation: int, created: float, *, idle: int, expires_at: float | None = None
    ) -> bytes:
        if expires_at is None:
            expires_at = created + self.absolute_max_age if self.absolute_max_age else 0.0
        blob = encode(
            data, self.keyring, generation=generation, created=created, expires_at=expires_at, idle_timeout=idle
        )
        if len(blob) - HEADER_SIZE - MAC_SIZE > self.max_size:
            raise SessionTooLarge(f"session of {len(blob)} bytes exceeds max_size={self.max_size}")
        return blob

    def _idle(self, max_age: int | None, default: int) -> int:
        if max_age is None:
            return default
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        return int(max_age)

    def create(self, data: Mapping[str, Any] | None = None, *, max_age: int | None = None) -> str:
        """Store a new session and return its fresh id.

        *max_age* overrides the store's idle lifetime for this session (it is
        kept in the file, so the reaper honours it without being told).
        """
        sid = new_session_id()
        now = self.now()
        path = self._path(sid)
        self._write_atomically(path, self._encode(data or {}, 1, now, idle=self._idle(max_age, self.max_age)))
        self._publish_generation(path, 1)
        return sid

    def exists(self, sid: str) -> bool:
        """Whether the session exists and has not expired (verifies it; takes no lock, does not touch it)."""
        path = self._path(sid)
        found = self._read(path)
        return found is not None and not found[0].expired(self.now(), found[2])

    @contextmanager
    def edit(self, sid: str, *, max_age: int | None = None) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write: yields the data; written on clean exit, not if the block raises.

        The session's lock is held only inside the block, and the data
        yielded is the last committed version (see "The stale read" above).
        Before the rename that commits, the lock is renewed by its exact-name
        rename, which fails with :class:`LockLost` (nothing written) if
        another holder took it over meanwhile.  :class:`SessionNotFound` if
        it is missing or expired.  *max_age* sets a new idle lifetime for the
        session (default: keep its own).
        """
        path = self._path(sid)
        with self._holding(path, sid) as held:
            yield held.data
            header = held.header
            generation = max(header.generation, held.claimed or 0) + 1
            idle = self._idle(max_age, header.idle_timeout)
            blob = self._encode(held.data, generation, header.created, idle=idle, expires_at=header.expires_at)
            self._write_atomically(path, blob, before_commit=held.lock.refresh)
            held.done()
            self._publish_generation(path, generation, held.lock.token)

    @contextmanager
    def _holding(self, path: str, sid: str) -> Iterator[_Held]:
        """Hold the session's lock and its beacon, with the last committed version read.

        The caller calls ``done()`` once it has committed (or removed the
        session); otherwise the beacon is given back on the way out.
        """
        lock = self._lock(path)
        if lock.is_locked:
            # Nested edits of one session in one thread would each commit
            # over the other (and used to wait for themselves until timeout).
            raise RuntimeError(f"this thread is already editing session file {path}")
        lock.acquire()
        held = _Held(lock)
        try:
            token = lock.token
            assert token is not None
            held.claim = f"{path}{GEN_CLAIM_INFIX}{token}"
            held.claimed = self._claim_generation(path, held)
            held.header, held.data, _ = self._read_committed(path, sid, held.claimed)
            yield held
        finally:
            try:
                if held.claim_exists:
                    if held.finished:
                        _unlink_quietly(held.claim)
                    else:
                        self._give_back(path, held)
            finally:
                try:
                    lock.release()
                except LockLost:
                    if not held.finished:
                        raise
                    # Committed while we held it; only the release came too
                    # late.  Raising would make a caller retry what is done.
                    log.warning("lock %s expired after the commit of %s; the commit stands", lock.lock_file, path)

    def _give_back(self, path: str, held: _Held) -> None:
        """Nothing was written: put the claimed beacon back, unless we lost the lock or a newer one is there."""
        try:
            if not held.lock.is_locked:
                raise LockLost(held.lock.lock_file)  # already known lost (the commit's renewal failed)
            held.lock.refresh()
        except LockLost:
            _unlink_quietly(held.claim)  # a new holder may have published a newer beacon: never cover it
            return
        try:
            os.link(held.claim, path + GEN_SUFFIX)  # link, not rename: fails rather than replace a beacon
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("could not give back the generation beacon of %s: %s", path, exc)
        _unlink_quietly(held.claim)

    # ----------------------------------------------------- generation beacon
    def _claim_generation(self, path: str, held: _Held) -> int | None:
        """Under the lock: take the beacon by a rename to our own name and read the generation it holds.

        None when there is no beacon (an edit that crashed holding it) or it
        is unreadable; ``held.claim_exists`` says whether there is a claim to
        give back or remove.
        """
        try:
            # Believing a spurious ENOENT (GlusterFS) would only cost a wait
            # of fs_slack, so the patience here is shorter than the lock's.
            rename_by_exact_name(path + GEN_SUFFIX, held.claim, 2 * self.fs_slack + 1.0)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return None
            raise StorageError.from_oserror(exc, path + GEN_SUFFIX) from exc
        held.claim_exists = True
        try:
            return int(os.readlink(held.claim))
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable generation beacon %s: %s", held.claim, exc)
            return None

    def _publish_generation(self, path: str, generation: int, token: str | None = None) -> None:
        """After a commit: leave the generation for the next editor (best effort: the data is safe).

        While we hold the claim there is normally no beacon, so a plain
        symlink does it.  If one is there (a spurious ENOENT kept us from
        claiming it, or a holder that lost the lock gave its claim back in
        the instant before it could notice), the holder that just committed
        knows the true generation and replaces it, by renaming a fresh
        symlink over it.
        """
        beacon = path + GEN_SUFFIX
        try:
            try:
                os.symlink(str(generation), beacon)
                return
            except FileExistsError:
                if token is None:
                    raise
            fresh = f"{path}{GEN_CLAIM_INFIX}n{token}"
            os.symlink(str(generation), fresh)
            try:
                os.rename(fresh, beacon)
            except OSError:
                _unlink_quietly(fresh)
                raise
        except OSError as exc:
            log.warning("could not publish the generation of %s: %s", path, exc)

    def _read_committed(self, path: str, sid: str, claimed: int | None) -> tuple[Header, dict[str, Any], float]:
        """Under the lock: read until the file shows the generation the beacon promised.

        A client cache serves an old version for at most ``fs_slack`` (the
        bound the lock already assumes); past twice that, something else is
        wrong and the edit fails rather than lose an update.
        """
        if claimed is None:
            # Every commit leaves a beacon, and delete removes the file before
            # its beacon; so neither means no session (or a create still in
            # flight) ...
            if self._read(path) is None:
                raise SessionNotFound(sid)
            # ... and a file without a beacon means an edit crashed holding
            # it: nothing to compare with, so wait out any client cache.
            time.sleep(self.fs_slack)
            return self._read_live(path, sid)
        deadline = time.monotonic() + 2 * self.fs_slack + 0.1
        delay = 0.005
        refreshed = False
        while True:
            found = self._read_live(path, sid)
            if found[0].generation >= claimed:
                return found
            if time.monotonic() > deadline:
                raise StorageError(
                    errno.ESTALE,
                    f"still reading generation {found[0].generation} of a session at generation {claimed}",
                    path,
                )
            log.debug("stale read of %s (generation %d < %d): reading again", path, found[0].generation, claimed)
            if refreshed:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            else:
                # The client resolved the name through its cached entry for
                # the version another host replaced.  A listing of the
                # directory (READDIRPLUS on FUSE) brings the entries up to
                # date; without it the cache would serve the old version
                # until its entry timeout (a second on GlusterFS).
                _list_quietly(os.path.dirname(path))
                refreshed = True

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
                # A reaper may have claimed it a moment ago (renamed aside
                # to judge it again); removing the claim keeps the reaper
                # from putting it back after this logout.
                try:
                    os.unlink(path + REAP_SUFFIX)
                except FileNotFoundError:
                    return False
                except OSError as exc:
                    raise StorageError.from_oserror(exc, path) from exc
            except OSError as exc:
                raise StorageError.from_oserror(exc, path) from exc
            _unlink_quietly(path + GEN_SUFFIX)
        return True

    def reap(self, *, grace: float = 60.0, dry_run: bool = False, max_seconds: float | None = None) -> ReapStats:
        """Purge expired sessions and crash leftovers (see :mod:`fssession.reaper`); returns what it did.

        The same as ``fssession reap PATH`` with this store's lease and
        fs_slack; it needs no key and never removes a session in use.
        """
        return reap(
            self.root,
            grace=grace,
            dry_run=dry_run,
            max_seconds=max_seconds,
            lease=self.lease,
            fs_slack=self.fs_slack,
            now=self.now if self._clock is not None else None,
        )

    def rotate(self, sid: str) -> str:
        """Move the session's data to a fresh id (e.g. at login); the old id stops working."""
        path = self._path(sid)
        with self._holding(path, sid) as held:
            header = held.header
            new_sid = new_session_id()
            new_path = self._path(new_sid)
            blob = self._encode(held.data, 1, header.created, idle=header.idle_timeout, expires_at=header.expires_at)
            self._write_atomically(new_path, blob)
            self._publish_generation(new_path, 1)
            try:
                held.lock.refresh()  # a taken-over holder must not remove what the new one may have written
                os.unlink(path)
            except BaseException as exc:
                _unlink_quietly(new_path)
                _unlink_quietly(new_path + GEN_SUFFIX)
                if isinstance(exc, FileNotFoundError):
                    raise SessionNotFound(sid) from exc
                if isinstance(exc, OSError) and not isinstance(exc, StorageError):
                    raise StorageError.from_oserror(exc, path) from exc
                raise
            held.done()
        return new_sid


class _Held:
    """What ``SessionStore._holding`` hands its caller: the lock, the claimed generation, the data."""

    __slots__ = ("claim", "claim_exists", "claimed", "data", "finished", "header", "lock")

    def __init__(self, lock: MkdirLock) -> None:
        self.lock = lock
        self.claim = ""
        self.claim_exists = False
        self.claimed: int | None = None
        self.finished = False
        self.header: Header
        self.data: dict[str, Any]

    def done(self) -> None:
        """The session was committed or removed: its claimed beacon is spent."""
        self.finished = True


def _read_all(fd: int, size: int, limit: int) -> bytes:
    """Read the file: one read of size+1 bytes normally suffices (a short count is end of file).

    *size* is what fstat said, which a client cache can serve from the
    previous version (sshfs, seen under two-host load) while the contents
    come from the new one.  When the file turns out longer than that, its
    header says how long it should be, and the rest is read (up to *limit*
    bytes).  A file longer than its header says comes back one byte too long
    and fails verification as extended.
    """
    blob = os.read(fd, size + 1)
    if len(blob) <= size:
        return blob  # a short read of a regular file: that was all of it
    want = len(blob)
    if len(blob) >= HEADER_SIZE:
        want = HEADER_SIZE + int.from_bytes(blob[HEADER_SIZE - 4 : HEADER_SIZE], "big") + MAC_SIZE
    chunks, total = [blob], len(blob)
    while total <= min(want, limit):
        chunk = os.read(fd, min(want, limit) + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _revalidate(path: str) -> bool:
    """After a stale handle: make this client look the name up afresh; True if it now finds something.

    GlusterFS answers ``open`` through the client's cached entry for a name
    that another host's rename replaced (the open itself may be deferred),
    and only ``fstat`` then says ESTALE; waiting for the entry to expire
    costs up to a second per read.  A ``stat`` by path meets the same stale
    entry, gets ESTALE, and the kernel retries that lookup uncached
    (LOOKUP_REVAL), which replaces the entry for the next ``open``.
    """
    try:
        os.lstat(path)  # lstat: a beacon is a symlink, and nothing is ever followed
    except OSError:
        return False
    return True


def _list_quietly(directory: str) -> None:
    try:
        os.listdir(directory)
    except OSError as exc:
        log.debug("could not list %s: %s", directory, exc)


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
