"""The store's machinery under its public methods: reading, writing, and holding a session's lock.

:class:`~fssession.store.SessionStore` inherits it; nothing here is public.
NOTES.md ("The session store") tells why each step is safe.  In short, an
edit reads the file, then takes the session's lock by renaming the free
marker its header implies: success proves the version read is the committed
one.  Otherwise the lock's free marker says which generation was committed
last, and the file is read until it shows it (a GlusterFS client can serve
the previous version for a second, even to a lock holder).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _lockcore
from ._fs import Dir
from ._markers import TARGET, UNKNOWN, free_name
from ._sessionfile import Found, SessionFiles
from .errors import LockLost, SessionNotFound, SessionTooLarge, StorageError, TamperedSession
from .events import Observer, emit
from .fileformat import Header, encode
from .keys import Keyring
from .layout import StoreLayout, header_value, parse_session_value, session_value, successors
from .serializers import Serializer, get_serializer
from .settings import StoreSettings

__all__ = ["StoreCore"]

log = logging.getLogger("fssession.store")


class StoreCore:
    """Reading, writing and locking one session's file (the store's private half)."""

    settings: StoreSettings
    keyring: Keyring
    serializer: Serializer
    layout: StoreLayout
    files: SessionFiles
    observer: Observer | None
    _clock: Callable[[], float] | None
    _chmod: bool

    def now(self) -> float:
        """The current time on the file server's clock (estimated; refreshed every minute)."""
        return self._clock() if self._clock is not None else self.layout.clock()

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

    def _check_rollback(self, name: str, sid: str, wanted: int) -> Found | None:
        """An older generation than the client saw: a stale cache, or a rollback.  Decide by reading again."""
        found, caught_up = self._catch_up(name, sid, wanted)
        if caught_up or self._live(found) is None:
            return self._live(found)  # current now, gone, or expired (then nothing to refuse)
        log.warning("session file %s was rolled back (generation older than its client saw)", name)
        emit(self.observer, "rollback_refused")
        raise TamperedSession(f"rolled back: generation older than the client's {wanted}", name)

    def _catch_up(self, name: str, sid: str, wanted: int, *, stale_event: bool = False) -> tuple[Found | None, bool]:
        """Read until the file shows generation *wanted* or later, for up to twice ``fs_slack``.

        A client that resolved the name through its cached entry for a
        version another host replaced reads that old version; a listing
        refreshes the entries (READDIRPLUS on FUSE), so after one the next
        read gets the current file.  Returns (the last read, None if the
        session is gone; whether it caught up).
        """
        deadline = time.monotonic() + 2 * self.settings.lock.fs_slack + 0.1
        listed = False
        while True:
            found = self._read(name, sid)
            if found is None or found.header.generation >= wanted:
                return found, True
            if time.monotonic() > deadline:
                return found, False
            log.debug("stale read of %s (generation %d < %d): reading again", name, found.header.generation, wanted)
            if stale_event:
                emit(self.observer, "stale_read")
            if listed:
                time.sleep(0.01)
            else:
                self._list_quietly(name)
                listed = True

    def _read_live(self, name: str, sid: str) -> Found:
        found = self._live(self._read(name, sid))
        if found is None:
            raise SessionNotFound(sid)
        return found

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
        again, caught_up = self._catch_up(name, sid, parsed[0], stale_event=True)
        if again is None:
            raise SessionNotFound(sid)
        if not caught_up:
            raise StorageError(
                errno.ESTALE,
                f"still reading generation {again.header.generation} of a session at generation {parsed[0]}",
                name,
            )
        return self._require_live(again, sid)

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

    def _touch(self, name: str, now: float, *, strict: bool) -> None:
        # Sets the time on whatever version is current: a touch can never
        # bring back data that a concurrent edit replaced.  The server stamps
        # its own time (no explicit times: those need the file's owner, and
        # a group-shared store's sessions belong to whichever node wrote
        # them); an injected clock (tests) is not the server's, so it is set.
        bucket = self._bucket(name)
        try:
            if bucket is None:
                raise FileNotFoundError(errno.ENOENT, "no bucket", name)
            bucket.utime(name, (now, now) if self._clock is not None else None)
        except FileNotFoundError:
            if strict:
                raise
        except OSError as exc:
            if strict:
                raise StorageError.from_oserror(exc, name) from exc
            log.debug("could not refresh the access time of %s: %s", name, exc)

    def _unlink(self, bucket: Dir, name: str) -> bool:
        try:
            bucket.unlink(name)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError.from_oserror(exc, bucket.path(name)) from exc
        return True

    def _remove_new(self, name: str) -> None:
        bucket = self._bucket(name)
        if bucket is None:
            return
        bucket.unlink_quietly(name)
        for marker in self.layout.lock_for(name).markers():
            bucket.unlink_quietly(marker.name)
