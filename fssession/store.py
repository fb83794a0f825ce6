"""SessionStore: signed sessions in a shared directory; lock-free loads, locked edits.

The public methods are here; the machinery under them (reading, writing,
holding a session's lock) is in ``_storecore.py``; where things are:
``layout.py``; the file format: ``fileformat.py``; the owner index (log out
everywhere): ``owners.py``.  NOTES.md ("The session store") gives each
operation's steps and why they are safe.
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
from ._identity import process_umask
from ._sessionfile import SessionFiles
from ._storecore import StoreCore
from .errors import SessionNotFound, StorageError, TamperedSession
from .events import Observer
from .fileformat import NO_OWNER, Header
from .ids import new_session_id
from .keys import Keyring
from .layout import StoreLayout, header_value
from .owners import OwnerIndex, SessionInfo
from .serializers import Serializer, get_serializer
from .settings import Setting, StoreSettings

if TYPE_CHECKING:
    from .reaper import ReapStats

__all__ = ["SessionStore"]

log = logging.getLogger("fssession.store")

_DEFAULT: Any = object()


class SessionStore(StoreCore):
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
        self.owners = OwnerIndex(self.layout.root, self.layout.naming_key, s.dir_mode)
        # The umask would take away what file_mode grants (a group-shared store).
        self._chmod = bool(s.file_mode & process_umask())
        self._editing = threading.local()

    # ------------------------------------------------------------ settings, for callers
    max_age: Setting[int] = Setting("max_age", "The idle lifetime of new sessions, in seconds.")
    absolute_max_age: Setting[int | None] = Setting("absolute_max_age", "The absolute lifetime of new sessions.")
    lock_timeout: Setting[float] = Setting("lock_timeout", "Seconds an edit waits for the session's lock.")

    @property
    def touch_interval(self) -> float:
        """A load refreshes a session's last-use time only when it is older than this."""
        return self.settings.touch_interval or 0.0

    # ------------------------------------------------------------ reading
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

    def exists(self, sid: str) -> bool:
        """Whether the session exists and has not expired (verifies it; takes no lock, does not touch it)."""
        return self._live(self._read(self.layout.name_for(sid), sid)) is not None

    def create(
        self, data: Mapping[str, Any] | None = None, *, max_age: int | None = None, owner: str | None = None
    ) -> str:
        """Store a new session and return its fresh id.

        *max_age* overrides the store's idle lifetime for this session (kept
        in the file, so the reaper honours it without being told).  *owner*
        (a user id) lists it under that owner, for :meth:`sessions_of` and
        :meth:`end_sessions`.
        """
        sid = new_session_id()
        name = self.layout.name_for(sid)
        now = self.now()
        absolute = self.settings.absolute_max_age
        tag = self.owners.tag(owner) if owner is not None else NO_OWNER
        header = Header(
            1, now, now + absolute if absolute else 0.0, self._idle(max_age, self.max_age), 0, owner_tag=tag
        )
        blob = self._encode(data or {}, sid, header)
        if owner is not None:
            self.owners.add(tag, name)  # the entry first: a live session is never missing from the index
        self._publish_new(name, blob, header)
        self._still_listed(tag, name)
        return sid

    def _still_listed(self, tag: bytes, name: str) -> None:
        """After a session appeared: if end_sessions removed its entry meanwhile, it was ended: remove it."""
        if tag != NO_OWNER and not self.owners.has(tag, name):
            log.info("a session was ended by end_sessions() while it was being made; removing it")
            self._delete_name(name)

    @contextmanager
    def edit(self, sid: str, *, max_age: int | None = None, owner: str | None = None) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write: yields the data; written on clean exit, not if the block raises.

        The lock is held only inside the block, and the data yielded is the
        last committed version.  Just before the rename that commits, the
        lock is renewed by an exact-name rename (the *fence*), which fails
        with :class:`LockLost` (nothing written) if another holder took it
        over.  :class:`SessionNotFound` if the session is missing or expired.
        *max_age* sets a new idle lifetime for the session; *owner* gives it
        an owner (at login), listed for :meth:`end_sessions`.
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
            tag = self.owners.tag(owner) if owner is not None else old.owner_tag
            header = dataclasses.replace(
                old, generation=old.generation + 1, idle_timeout=self._idle(max_age, old.idle_timeout), owner_tag=tag
            )
            blob = self._encode(data, sid, header)
            if tag != old.owner_tag:
                self.owners.add(tag, name)
            self._commit(hold, name, blob, header)
            committed = True
        finally:
            editing.discard(name)
            if not committed:
                self._abandon(hold, name, header_value(found.header))
        if tag != old.owner_tag:
            self.owners.remove(old.owner_tag, name)
            self._still_listed(tag, name)

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

    def delete(self, sid: str) -> bool:
        """Remove the session; True if it existed.  Takes its lock, so no edit can bring it back."""
        return self._delete_name(self.layout.name_for(sid))

    def _delete_name(self, name: str, only_tag: bytes | None = None) -> bool:
        """Remove the session stored as *name* (under its lock), then its owner entry.

        With *only_tag*, only if its header names that owner (end_sessions
        acting on an entry that may be stale).
        """
        bucket = self._bucket(name)
        if bucket is None:
            return False
        try:
            header = self.files.read_header(bucket, name)
        except TamperedSession:
            header = None  # not a session file, at a session's name: remove it all the same
        if header is None and bucket.exists(name) is False:
            return False
        if only_tag is not None and (header is None or header.owner_tag != only_tag):
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
        if header is not None:
            self.owners.remove(header.owner_tag, name)
        return existed

    # ------------------------------------------------------------ owners
    def sessions_of(self, owner: str) -> list[SessionInfo]:
        """The live sessions of *owner*: metadata only (handle, created, last seen, expiry), never their ids."""
        return sorted(self.owners.sessions(self.owners.tag(owner), self._bucket, self.now()), key=lambda s: s.created)

    def end_sessions(self, owner: str, *, keep: str | None = None) -> int:
        """End every session of *owner* except *keep* (a session id: the current one); returns how many ended.

        "Log out everywhere" after a password change or a lost device.  A
        login that races this call is ended too if its first step came before
        this call's last look (see ``owners.py``).
        """
        tag = self.owners.tag(owner)
        spare = self.layout.name_for(keep) if keep is not None else None
        ended = 0
        for _ in range(32):
            names = [n for n in self.owners.names(tag) if n != spare]
            if not names:
                return ended
            for name in names:
                ended += self._delete_name(name, only_tag=tag)
                self.owners.remove(tag, name)
                # A login between its two steps (entry written, file not yet):
                # if it checked its entry before the removal above, its file is
                # there now, and it is ended here; if after, it ends itself.
                ended += self._delete_name(name, only_tag=tag)
        raise StorageError(errno.EAGAIN, "sessions of this owner keep appearing faster than they end", owner)

    def end_session(self, owner: str, handle: str) -> bool:
        """End one session of *owner* by the handle :meth:`sessions_of` gave ("sign out that device")."""
        tag = self.owners.tag(owner)
        for name in self.owners.names(tag):
            if name[:16] == handle:
                ended = self._delete_name(name, only_tag=tag)
                self.owners.remove(tag, name)
                return ended
        return False

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
            if old.owner_tag != NO_OWNER:
                self.owners.add(old.owner_tag, new_name)
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
        self.owners.remove(old.owner_tag, name)
        self._still_listed(old.owner_tag, new_name)
        return new_sid

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
