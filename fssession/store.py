"""SessionStore: signed sessions in a shared directory; lock-free loads, locked edits.

Where things are: ``layout.py``; the file format: ``fileformat.py``; the
lock: ``_lockcore.py``; reading and writing one file: ``_sessionfile.py``.
NOTES.md ("The session store") gives each operation's steps and why they
are safe.  In short, an edit reads the file, then takes the session's lock
by renaming the free marker its header implies: success proves the version
read is the committed one.  Otherwise the lock's free marker says which
generation was committed last, and the file is read until it shows it (a
GlusterFS client can serve the previous version for a second, even to a
lock holder).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _lockcore, sealing
from ._fs import Dir
from ._identity import process_umask
from ._markers import TARGET, UNKNOWN, free_name
from ._sessionfile import Found, SessionFiles
from .errors import LockLost, SessionNotFound, SessionTooLarge, StorageError, TamperedSession
from .events import Observer, emit
from .fileformat import Header, encode
from .ids import new_session_id
from .keys import Keyring
from .layout import StoreLayout, header_value, parse_session_value, session_value, successors
from .serializers import Serializer, get_serializer
from .settings import StoreSettings

if TYPE_CHECKING:
    from .reaper import ReapStats

__all__ = ["SessionStore"]

log = logging.getLogger("fssession.store")

_DEFAULT: Any = object()


class SessionStore:
    """Sessions kept as signed files in a directory shared by every web node.

    ``load`` takes no lock; ``edit``, ``delete`` and ``rotate`` hold the
    session's lock only around their read-modify-write.  Keyword options are
    those of :class:`~fssession.settings.StoreSettings` (``max_age``,
    ``absolute_max_age``, ``lock_timeout``, ``lease``, ``max_lease``,
    ``fs_slack``, ``max_size``, ``durable``, ``file_mode``, ``dir_mode``,
    ``serializer``, ...), or pass ``settings=``.  *clock* replaces the file
    server's clock (tests, simulations).  *on_event* observes what happens
    inside (lock waits, take-overs, stale reads...: :mod:`fssession.events`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        secret_key: str | bytes | Sequence[str | bytes],
        *,
        settings: StoreSettings | None = None,
        clock: Callable[[], float] | None = None,
        load_retries: int = 4,
        on_event: Observer | None = None,
        **options: Any,
    ) -> None:
        self.settings = settings if settings is not None else StoreSettings.from_keywords(**options)
        if settings is not None and options:
            raise TypeError("give either settings= or keyword options, not both")
        s = self.settings
        self.keyring = Keyring(secret_key)
        self.serializer: Serializer = get_serializer(s.serializer)
        if s.encrypt:
            sealing.require_cipher()  # fail at start-up, not at the first login
        self.layout = StoreLayout(path, create=True, dir_mode=s.dir_mode, file_mode=s.file_mode, lock=s.lock)
        self.root = Path(path)
        self._clock = clock
        self.observer = on_event
        self.files = SessionFiles(
            self.keyring, max_size=s.max_size, fs_slack=s.lock.fs_slack, retries=load_retries, observer=on_event
        )
        # The umask would take away what file_mode grants (a group-shared store).
        self._chmod = bool(s.file_mode & process_umask())
        self._editing = threading.local()

    # ------------------------------------------------------------ settings, for callers
    @property
    def max_age(self) -> int:
        """The idle lifetime of new sessions, in seconds."""
        return self.settings.max_age

    @property
    def absolute_max_age(self) -> int | None:
        """The absolute lifetime of new sessions, in seconds (None: unbounded)."""
        return self.settings.absolute_max_age

    @property
    def lock_timeout(self) -> float:
        """Seconds an edit waits for the session's lock."""
        return self.settings.lock_timeout

    @property
    def touch_interval(self) -> float:
        """A load refreshes a session's last-use time only when it is older than this."""
        return self.settings.touch_interval or 0.0

    def now(self) -> float:
        """The current time on the file server's clock (estimated; refreshed every minute)."""
        return self._clock() if self._clock is not None else self.layout.clock()

    # ------------------------------------------------------------ reading
    def _bucket(self, name: str) -> Dir | None:
        try:
            return self.layout.bucket(name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.layout.path) from exc

    def _read(self, name: str, sid: str) -> Found | None:
        bucket = self._bucket(name)
        return None if bucket is None else self.files.read(bucket, name, sid)

    def _live(self, found: Found | None) -> Found | None:
        if found is None or found.header.expired(self.now(), found.mtime):
            return None
        return found

    def _decode(self, found: Found, name: str) -> dict[str, Any]:
        try:
            data = get_serializer(found.header.serializer).loads(found.payload)
        except Exception as exc:  # signed by a key holder yet unreadable: never trust it
            raise TamperedSession(f"signed payload does not decode ({type(exc).__name__})", name) from exc
        if not isinstance(data, dict):
            raise TamperedSession("signed payload is not a dict", name)
        return data

    def load(self, sid: str, *, min_generation: int = 0) -> dict[str, Any] | None:
        """The session's data, or None if it does not exist or expired.  Takes no lock.

        See :meth:`load_versioned` for *min_generation* and the errors.
        """
        loaded = self.load_versioned(sid, min_generation=min_generation)
        return None if loaded is None else loaded[0]

    def load_versioned(self, sid: str, *, min_generation: int = 0) -> tuple[dict[str, Any], int] | None:
        """(data, generation) of the session, or None if it does not exist or expired.  Takes no lock.

        The generation counts the session's commits (it is signed in the
        file).  *min_generation*: the generation the client last saw (the web
        adapters keep it in the cookie); a file older than that was rolled
        back by someone who can write the store, and raises
        :class:`TamperedSession` once a re-read confirms it.  Also raises
        :class:`InvalidSessionId`, :class:`SessionTooLarge`, :class:`StorageError`.
        """
        name = self.layout.name_for(sid)
        found = self._live(self._read(name, sid))
        if found is None:
            return None
        if found.header.generation < min_generation:
            found = self._check_rollback(name, sid, min_generation)
            if found is None:
                return None
        now = self.now()
        if now - found.mtime > (self.settings.touch_interval or 0.0):
            self._touch(name, now, strict=False)
        return self._decode(found, name), found.header.generation

    def _check_rollback(self, name: str, sid: str, wanted: int) -> Found | None:
        """An older generation than the client saw: a stale cache, or a rollback.  Decide by reading again."""
        deadline = time.monotonic() + 2 * self.settings.lock.fs_slack + 0.1
        while time.monotonic() < deadline:
            time.sleep(0.02)
            self._list_quietly(name)
            found = self._live(self._read(name, sid))
            if found is None or found.header.generation >= wanted:
                return found
        log.warning("session file %s was rolled back (generation older than its client saw)", name)
        emit(self.observer, "rollback_refused")
        raise TamperedSession(f"rolled back: generation older than the client's {wanted}", name)

    def exists(self, sid: str) -> bool:
        """Whether the session exists and has not expired (verifies it; takes no lock, does not touch it)."""
        return self._live(self._read(self.layout.name_for(sid), sid)) is not None

    def _read_live(self, name: str, sid: str) -> Found:
        found = self._live(self._read(name, sid))
        if found is None:
            raise SessionNotFound(sid)
        return found

    # ------------------------------------------------------------ writing
    def _encode(self, data: Mapping[str, Any], sid: str, header: Header) -> bytes:
        try:
            payload = self.serializer.dumps(dict(data))
        except Exception as exc:
            raise TypeError(f"session data cannot be stored with the {self.serializer.name} serializer: {exc}") from exc
        if len(payload) > self.settings.max_size:
            raise SessionTooLarge(f"session of {len(payload)} bytes exceeds max_size={self.settings.max_size}")
        header = dataclasses.replace(header, payload_length=len(payload), serializer=self.serializer.id)
        return encode(payload, self.keyring, sid.encode(), header, sealed=self.settings.encrypt)

    def _times(self) -> tuple[float, float] | None:
        # An injected clock is not the server's: stamp writes with it before
        # they become visible, so no reader ever sees another time.
        if self._clock is None:
            return None
        now = self._clock()
        return (now, now)

    def _write_temp(self, bucket: Dir, name: str, blob: bytes) -> str:
        s = self.settings
        return self.files.write_temp(
            bucket, name, blob, mode=s.file_mode, chmod=self._chmod, times=self._times(), durable=s.durable
        )

    def _idle(self, max_age: int | None, default: int) -> int:
        if max_age is None:
            return default
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        return int(max_age)

    def create(self, data: Mapping[str, Any] | None = None, *, max_age: int | None = None) -> str:
        """Store a new session and return its fresh id.

        *max_age* overrides the store's idle lifetime for this session (kept
        in the file, so the reaper honours it without being told).
        """
        sid = new_session_id()
        name = self.layout.name_for(sid)
        now = self.now()
        absolute = self.settings.absolute_max_age
        header = Header(1, now, now + absolute if absolute else 0.0, self._idle(max_age, self.max_age), 0)
        blob = self._encode(data or {}, sid, header)
        self._publish_new(name, blob, header)
        return sid

    def _publish_new(self, name: str, blob: bytes, header: Header) -> None:
        """Temp file, free marker, rename: the marker exists before the file does."""
        try:
            bucket = self.layout.bucket(name, create=True)
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.layout.path) from exc
        tmp = self._write_temp(bucket, name, blob)
        marker = free_name(name + ".", session_value(1, header.idle_timeout, header.expires_at))
        try:
            bucket.symlink(TARGET, marker)
        except OSError as exc:
            bucket.unlink_quietly(tmp)
            raise StorageError.from_oserror(exc, bucket.path(marker)) from exc
        try:
            self.files.commit(bucket, tmp, name, durable=self.settings.durable)
        except BaseException:
            bucket.unlink_quietly(marker)
            raise

    # ------------------------------------------------------------ the lock
    def _hold(self, name: str, sid: str, found: Found) -> tuple[_lockcore.Hold, Found]:
        """Acquire the session's lock; returns the hold and the committed version (read again if needed)."""
        lock = self.layout.lock_for(name, observer=self.observer)
        h = found.header
        guess = header_value(h)
        try:
            hold = lock.acquire([guess, *successors(guess)[1:]], self.settings.lock_timeout)
        except _lockcore.NoMarker:
            if self._read(name, sid) is None:
                raise SessionNotFound(sid) from None
            raise StorageError(
                errno.EIO,
                "the session has no lock marker (removed by someone who can write the store?)",
                lock.bucket.path(name),
            ) from None
        try:
            return hold, self._committed(name, sid, hold, found, guess)
        except BaseException:
            self._abandon(hold, name)
            raise

    def _committed(self, name: str, sid: str, hold: _lockcore.Hold, found: Found, guess: str) -> Found:
        """Under the lock: the version the lock's value says was committed last."""
        if hold.value == guess:
            return found  # the guess proved the version read is the committed one
        parsed = parse_session_value(hold.value) if hold.certain else None
        if parsed is None:
            # Taken over from a holder that may or may not have committed:
            # wait out client caches, then whatever is read is current.
            time.sleep(self.settings.lock.fs_slack)
            again = self._read(name, sid)
            if again is None:
                raise SessionNotFound(sid)
            return self._require_live(again, sid)
        wanted = parsed[0]
        deadline = time.monotonic() + 2 * self.settings.lock.fs_slack + 0.1
        listed = False
        while True:
            again = self._read(name, sid)
            if again is None:
                raise SessionNotFound(sid)
            if again.header.generation >= wanted:
                return self._require_live(again, sid)
            if time.monotonic() > deadline:
                raise StorageError(
                    errno.ESTALE,
                    f"still reading generation {again.header.generation} of a session at generation {wanted}",
                    name,
                )
            log.debug("stale read of %s (generation %d < %d): reading again", name, again.header.generation, wanted)
            emit(self.observer, "stale_read")
            if listed:
                time.sleep(0.01)
            else:
                # The client resolved the name through its cached entry for the
                # version another host replaced; a listing refreshes the entries
                # (READDIRPLUS on FUSE) so the next read gets the current one.
                self._list_quietly(name)
                listed = True

    def _require_live(self, found: Found, sid: str) -> Found:
        if found.header.expired(self.now(), found.mtime):
            raise SessionNotFound(sid)
        return found

    def _list_quietly(self, name: str) -> None:
        bucket = self._bucket(name)
        if bucket is not None:
            try:
                bucket.listdir()
            except OSError as exc:
                log.debug("could not list %s: %s", bucket.label, exc)

    def _abandon(self, hold: _lockcore.Hold, name: str, value: str | None = None) -> None:
        """Give the lock back after a failure; the data was not changed (or the session is gone)."""
        if hold.lost:
            return
        if value is None and not hold.certain:
            # What was committed last is not known (we took over from a holder
            # that was committing): pass that on, never a guess.
            value = UNKNOWN
        try:
            _lockcore.release(hold, value if value is not None else hold.value)
        except LockLost:
            log.warning("lock of %s was taken over before it could be given back", name)

    def _discard(self, hold: _lockcore.Hold, name: str) -> None:
        try:
            _lockcore.discard(hold)
        except LockLost:
            log.warning("lock of %s was taken over before its removal", name)

    # ------------------------------------------------------------ edit
    @contextmanager
    def edit(self, sid: str, *, max_age: int | None = None) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write: yields the data; written on clean exit, not if the block raises.

        The lock is held only inside the block, and the data yielded is the
        last committed version.  Just before the rename that commits, the
        lock is renewed by an exact-name rename (the *fence*), which fails
        with :class:`LockLost` (nothing written) if another holder took it
        over.  :class:`SessionNotFound` if the session is missing or expired.
        *max_age* sets a new idle lifetime for the session.
        """
        name = self.layout.name_for(sid)
        editing: set[str] = self._editing.__dict__.setdefault("names", set())
        if name in editing:
            # A nested edit of one session in one thread would wait for itself.
            raise RuntimeError(f"this thread is already editing session {name}")
        found = self._read_live(name, sid)
        hold, found = self._hold(name, sid, found)
        committed = False
        editing.add(name)
        try:
            data = self._decode(found, name)
            yield data
            old = found.header
            header = dataclasses.replace(
                old, generation=old.generation + 1, idle_timeout=self._idle(max_age, old.idle_timeout)
            )
            blob = self._encode(data, sid, header)
            self._commit(hold, name, blob, header)
            committed = True
        finally:
            editing.discard(name)
            if not committed:
                self._abandon(hold, name, header_value(found.header))

    def _commit(self, hold: _lockcore.Hold, name: str, blob: bytes, header: Header) -> None:
        """Temp file, fence, rename, release handing over the new generation."""
        bucket = hold.directory
        value = header_value(header)
        tmp = self._write_temp(bucket, name, blob)
        try:
            _lockcore.fence(hold, value)
        except BaseException:
            bucket.unlink_quietly(tmp)
            raise
        self.files.commit(bucket, tmp, name, durable=self.settings.durable)
        try:
            _lockcore.release(hold, value)
        except LockLost:
            # Committed while we held it; only the release came too late.
            # Raising would make a caller retry what is done.
            log.warning("lock of %s expired after the commit; the commit stands", name)

    # ------------------------------------------------------------ touch
    def touch(self, sid: str) -> None:
        """Extend the session's life without rewriting its data; :class:`SessionNotFound` if gone."""
        name = self.layout.name_for(sid)
        for attempt in range(self.files.retries):
            self._read_live(name, sid)
            try:
                self._touch(name, self.now(), strict=True)
                return
            except FileNotFoundError:
                # sshfs: a file another host is replacing is missing for a moment.
                time.sleep(0.002 * 2**attempt)
        raise SessionNotFound(sid)

    def _touch(self, name: str, now: float, *, strict: bool) -> None:
        # Sets the time on whatever version is current: a touch can never
        # bring back data that a concurrent edit replaced.
        bucket = self._bucket(name)
        try:
            if bucket is None:
                raise FileNotFoundError(errno.ENOENT, "no bucket", name)
            bucket.utime(name, (now, now))
        except FileNotFoundError:
            if strict:
                raise
        except OSError as exc:
            if strict:
                raise StorageError.from_oserror(exc, name) from exc
            log.debug("could not refresh the access time of %s: %s", name, exc)

    # ------------------------------------------------------------ delete, rotate
    def delete(self, sid: str) -> bool:
        """Remove the session; True if it existed.  Takes its lock, so no edit can bring it back."""
        name = self.layout.name_for(sid)
        bucket = self._bucket(name)
        if bucket is None:
            return False
        try:
            header = self.files.read_header(bucket, name)
        except TamperedSession:
            header = None  # not a session file, at a session's name: remove it all the same
        if header is None and bucket.exists(name) is False:
            return False
        guesses = [header_value(header)] if header else []
        try:
            hold = self.layout.lock_for(name, observer=self.observer).acquire(guesses, self.settings.lock_timeout)
        except _lockcore.NoMarker:
            return self._unlink(bucket, name)  # no lock to respect (a crash or tampering left none)
        try:
            existed = self._unlink(bucket, name)
        except BaseException:
            self._abandon(hold, name)
            raise
        self._discard(hold, name)
        self.files.seen.forget(name)
        return existed

    def _unlink(self, bucket: Dir, name: str) -> bool:
        try:
            bucket.unlink(name)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError.from_oserror(exc, bucket.path(name)) from exc
        return True

    def rotate(self, sid: str) -> str:
        """Move the session's data to a fresh id (e.g. at login); the old id stops working."""
        name = self.layout.name_for(sid)
        found = self._read_live(name, sid)
        hold, found = self._hold(name, sid, found)
        old = found.header
        try:
            new_sid = new_session_id()
            new_name = self.layout.name_for(new_sid)
            header = dataclasses.replace(old, generation=1)
            self._publish_new(new_name, self._encode(self._decode(found, name), new_sid, header), header)
        except BaseException:
            self._abandon(hold, name, header_value(old))
            raise
        try:
            _lockcore.renew(hold)  # a taken-over holder must not remove what the new one may have written
            self._unlink(hold.directory, name)
        except BaseException:
            self._remove_new(new_name)
            if not hold.lost:
                self._abandon(hold, name, header_value(old))
            raise
        self._discard(hold, name)
        self.files.seen.forget(name)
        return new_sid

    def _remove_new(self, name: str) -> None:
        bucket = self._bucket(name)
        if bucket is None:
            return
        bucket.unlink_quietly(name)
        for marker in self.layout.lock_for(name).markers():
            bucket.unlink_quietly(marker.name)

    # ------------------------------------------------------------ reap
    def reap(self, *, grace: float = 60.0, dry_run: bool = False, max_seconds: float | None = None) -> ReapStats:
        """Purge expired sessions and crash leftovers (see :mod:`fssession.reaper`); returns what it did.

        The same as ``fssession reap PATH`` with this store's lock settings;
        it needs no key and never removes a session in use.  As root on a
        store that others can write, it runs in a child process that first
        switches to the store directory's owner.
        """
        from .reaper import reap
        from .settings import ReapSettings

        settings = ReapSettings(grace=grace, dry_run=dry_run, max_seconds=max_seconds, lock=self.settings.lock)
        return reap(self.layout.path, settings, now=self._clock, observer=self.observer)

    def close(self) -> None:
        """Close the directory descriptors this store holds (it is unusable afterwards)."""
        self.layout.close()

    def __repr__(self) -> str:
        return f"SessionStore({self.layout.path!r})"
