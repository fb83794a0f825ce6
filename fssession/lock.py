"""MkdirLock: a lease lock in a directory of its own on a shared filesystem, with filelock's interface.

The lock is the directory ``L``; inside it, exactly one marker: ``f,`` while
free, ``o,<owner record>`` while held.  Acquire, renew and release rename
that marker by its exact name, so the file server does the compare-and-swap
(NOTES.md, "The lock"; the protocol itself is in ``_lockcore``).  ``L`` is
created once, by renaming a private stage that already holds ``f,`` onto it,
and stays after release (holding ``f,``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import _fs, _lockcore
from ._clock import ServerClock
from ._fs import Dir
from ._markers import FREE, TARGET, Marker, free_name, parse
from .errors import LockError, LockLost, LockTimeout, StorageError
from .settings import LockSettings, Setting

__all__ = ["STAGE_INFIX", "MkdirLock", "read_owner", "remove_stages"]

log = logging.getLogger("fssession.lock")

STAGE_INFIX = ".stage-"


@dataclass(slots=True)
class _Context:
    """Per-thread (or per-lock) state of one MkdirLock."""

    counter: int = 0
    hold: _lockcore.Hold | None = None
    pid: int = 0

    def reset(self) -> None:
        """Back to "not held" without touching the filesystem."""
        if self.hold is not None:
            self.hold.directory.close()
        self.hold = None
        self.counter = 0


class _AcquireReturn:
    """What :meth:`MkdirLock.acquire` returns: a context manager that releases."""

    __slots__ = ("lock",)

    def __init__(self, lock: MkdirLock) -> None:
        self.lock = lock

    def __enter__(self) -> MkdirLock:
        return self.lock

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.lock.release()


class MkdirLock:
    """A lease lock on a shared directory, safe across hosts, PID namespaces and skewed clocks.

    The interface is filelock's: ``acquire()``/``release()``, use as a context
    manager, ``is_locked``, ``lock_counter``, re-entrant per thread, ``timeout``
    (seconds; negative waits forever, 0 tries once) and ``blocking``.  A
    timeout raises :class:`~fssession.LockTimeout`, a ``filelock.Timeout``
    whose message names the holder.

    Every hold is a lease of *lease* seconds; :meth:`refresh` renews it.  A
    holder that neither releases nor renews in time may be taken over, and
    then its :meth:`refresh` and :meth:`release` raise
    :class:`~fssession.LockLost` without touching the new holder's marker.
    A lease recorded by another holder is honoured up to *max_lease*
    (default four times *lease*).  See :class:`~fssession.settings.LockSettings`
    for every option; pass ``settings=`` to give them at once.
    """

    def __init__(
        self,
        lock_file: str | os.PathLike[str],
        timeout: float = -1,
        *,
        lease: float = 30.0,
        max_lease: float | None = None,
        poll_interval: float = 0.001,
        max_poll_interval: float = 0.05,
        blocking: bool = True,
        thread_local: bool = True,
        fs_slack: float = 1.0,
        server_clock: bool = True,
        mode: int = 0o700,
        settings: LockSettings | None = None,
        parent: Dir | None = None,
    ) -> None:
        if settings is None:
            settings = LockSettings(
                lease=lease,
                max_lease=max_lease,
                fs_slack=fs_slack,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                server_clock=server_clock,
                mode=mode,
            )
        self.settings = settings
        self._path = os.fspath(lock_file)
        self._parent = parent  # the store's root, when the lock lives there (name relative to it)
        self.blocking = blocking
        self._thread_local = thread_local
        self._local = threading.local()
        self._shared = _Context()
        self._guard: threading.RLock | _NullContext = _NULL if thread_local else threading.RLock()
        self._clock: ServerClock | None = None

    # ------------------------------------------------------------ options
    @property
    def timeout(self) -> float:
        """Seconds ``acquire()`` waits by default (negative: for ever)."""
        return self.settings.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.settings = self.settings.with_(timeout=value)

    lease: Setting[float] = Setting("lease", "The lease of each hold, in seconds.")
    fs_slack: Setting[float] = Setting("fs_slack", "How late this filesystem may show a change, in seconds.")

    # ------------------------------------------------------------ state
    @property
    def _ctx(self) -> _Context:
        if not self._thread_local:
            ctx = self._shared
        else:
            found: _Context | None = getattr(self._local, "ctx", None)
            if found is None:
                found = self._local.ctx = _Context()
            ctx = found
        if ctx.hold is not None and ctx.pid != os.getpid():
            ctx.hold, ctx.counter = None, 0  # inherited through fork(): the parent holds it, not us
        return ctx

    @property
    def lock_file(self) -> str:
        """The lock directory's path."""
        return self._path

    @property
    def is_locked(self) -> bool:
        """True while this thread (or this lock, when not thread-local) holds it."""
        return self._ctx.hold is not None

    @property
    def lock_counter(self) -> int:
        """How many times the holder acquired it without releasing (re-entrancy depth)."""
        return self._ctx.counter

    @property
    def token(self) -> str | None:
        """The random token of the current hold, or None when not held."""
        hold = self._ctx.hold
        return hold.token if hold is not None else None

    @property
    def lease_remaining(self) -> float:
        """Seconds this hold may still be trusted without :meth:`refresh` (0 when not held)."""
        hold = self._ctx.hold
        return hold.remaining if hold is not None else 0.0

    # ------------------------------------------------------------ acquire
    def acquire(
        self,
        timeout: float | None = None,
        poll_interval: float | None = None,
        *,
        blocking: bool | None = None,
        cancel_check: Callable[[], bool] | None = None,
    ) -> _AcquireReturn:
        """Acquire the lock, waiting up to *timeout* seconds; returns a context manager.

        Raises :class:`LockTimeout` when the lock is still held at the
        deadline (or at once when not blocking), naming the holder, and
        :class:`StorageError` when the directory refuses (full, read-only,
        vanished, permission denied).
        """
        with self._guard:
            ctx = self._ctx
            if ctx.hold is not None:
                ctx.counter += 1
                return _AcquireReturn(self)
        if not self._thread_local:
            # The wait runs outside the guard, so that another thread of this
            # shared lock can try (or re-enter) meanwhile; it stops waiting
            # when one of them got the hold.
            user_check = cancel_check

            def cancel_check() -> bool:
                return self._shared.hold is not None or (user_check is not None and user_check())

        try:
            hold = self._acquire(timeout, poll_interval, blocking, cancel_check)
        except LockTimeout:
            with self._guard:
                if not self._thread_local and self._shared.hold is not None:
                    self._shared.counter += 1
                    return _AcquireReturn(self)
            raise
        with self._guard:
            ctx = self._ctx
            ctx.hold, ctx.counter, ctx.pid = hold, 1, os.getpid()
            return _AcquireReturn(self)

    def _acquire(
        self,
        timeout: float | None,
        poll_interval: float | None,
        blocking: bool | None,
        cancel_check: Callable[[], bool] | None,
    ) -> _lockcore.Hold:
        options: dict[str, Any] = {
            "guesses": ("",),
            "timeout": timeout,
            "blocking": self.blocking if blocking is None else blocking,
            "poll_interval": poll_interval,
            "cancel_check": cancel_check,
            "clock": self._server_clock() if self.settings.server_clock else None,
            "dir_stamps": True,
            "label": self._path,
        }
        directory = self._open()
        options["on_empty"] = self._initialise
        try:
            return _lockcore.acquire(directory, "", self.settings, **options)
        except _lockcore.NoMarker as exc:
            directory.close()
            raise LockError(
                f"lock directory {self._path!r} holds no marker but is not empty (foreign entries?)"
            ) from exc
        except BaseException:
            directory.close()
            raise

    def _server_clock(self) -> ServerClock:
        if self._clock is None:
            self._clock = ServerClock(opener=self._parent_dir)
        return self._clock

    @property
    def _name(self) -> str:
        return os.path.basename(self._path)

    def _open(self) -> Dir:
        """Open the lock directory, creating it on first use."""
        for _ in range(8):
            try:
                if self._parent is not None:
                    return self._parent.opendir(self._name)
                return Dir(os.open(self._path, _fs.O_DIR), self._path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise LockError(f"{self._path!r} exists and is not a lock directory") from exc
                raise StorageError.from_oserror(exc, self._path) from exc
            with self._parent_dir() as parent:
                # Occupied: a racer published first (or, on GlusterFS, a
                # create nobody won: then the next round tries again).
                self._publish(parent)
        raise StorageError(errno.EIO, "the lock directory cannot be created or opened", self._path)

    def _parent_dir(self) -> Dir:
        if self._parent is not None:
            return self._parent.reopen()
        try:
            return Dir.open_path(os.path.dirname(os.path.abspath(self._path)))
        except OSError as exc:
            raise StorageError.from_oserror(exc, self._path) from exc

    def _publish(self, parent: Dir) -> bool:
        """Rename a fresh stage holding ``f,`` onto the lock's name; False if a lock directory with entries is there.

        The rename replaces a missing or empty directory and fails on one
        with entries, so of several racers exactly one publishes.
        """
        stage_name = f"{self._name}{STAGE_INFIX}{secrets.token_hex(16)}"
        try:
            with contextlib.suppress(FileExistsError):
                # A random name exists only if our own mkdir's reply was lost,
                # or on a mount that says EEXIST for everything it refuses
                # (sshfs, full or read-only): opening it tells which.
                parent.mkdir(stage_name, self.settings.mode)
            with parent.opendir(stage_name) as stage, contextlib.suppress(FileExistsError):
                stage.symlink(TARGET, free_name("", ""))
            parent.rename(stage_name, self._name)
        except OSError as exc:
            _discard_stage(parent, stage_name)
            if exc.errno in _fs.OCCUPIED:
                return False  # not empty after all (a marker the listing missed), or a racer was first
            raise StorageError.from_oserror(exc, parent.path(stage_name)) from exc
        return True

    def _initialise(self) -> Dir | None:
        """A lock directory without a marker: replace it if it is truly empty (the rename fails otherwise).

        Returns the new lock directory, opened, if it did: the descriptor the
        acquire held names the replaced one.
        """
        with self._parent_dir() as parent:
            if not self._publish(parent):
                return None
            try:
                return parent.opendir(self._name)
            except OSError:
                return None

    # ------------------------------------------------------------ holding
    def _require(self, ctx: _Context) -> _lockcore.Hold:
        if ctx.hold is None:
            raise RuntimeError(f"lock {self._path!r} is not held by this {'thread' if self._thread_local else 'lock'}")
        return ctx.hold

    def refresh(self) -> None:
        """Renew the lease for another *lease* seconds; :class:`LockLost` if it was taken over."""
        with self._guard:
            ctx = self._ctx
            hold = self._require(ctx)
            try:
                _lockcore.renew(hold)
            except LockLost:
                ctx.reset()
                raise

    def release(self, force: bool = False) -> None:
        """Release one level of the lock (all levels with *force*).

        The last level frees it.  Raises :class:`LockLost` if the lock was
        taken over in the meantime; the new holder's marker is left alone.
        """
        with self._guard:
            ctx = self._ctx
            if ctx.hold is None:
                return
            if ctx.counter > 1 and not force:
                ctx.counter -= 1
                return
            hold = ctx.hold
            try:
                _lockcore.release(hold, "")
            except StorageError:
                raise  # still held: the caller may retry
            except LockLost:
                ctx.reset()
                raise
            ctx.reset()

    def __enter__(self) -> MkdirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, lease={self.lease:g}, locked={self.is_locked})"


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _NullContext()


def _discard_stage(parent: Dir, name: str) -> None:
    try:
        parent.remove_tree(name, max_depth=1)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove lock stage %s: %s", parent.path(name), exc)


def read_owner(path: str | os.PathLike[str]) -> Marker | None:
    """Who holds the lock directory at *path* now (its marker), or None if it is free or absent."""
    try:
        with Dir(os.open(os.fspath(path), _fs.O_DIR), os.fspath(path)) as directory:
            names = directory.listdir()
    except OSError:
        return None
    for name in names:
        marker = parse("", name)
        if marker is not None and marker.kind != FREE:
            return marker
    return None


def remove_stages(directory: Dir, now: float, min_age: float) -> int:
    """Remove MkdirLock stages in *directory* older than *min_age* on the server clock *now* (crash litter).

    A stage is private to the contender that made it for the few calls
    between its creation and its publication; one this old was abandoned.
    """
    removed = 0
    for name in directory.listdir():
        head, sep, token = name.rpartition(STAGE_INFIX)
        if not sep or not head or len(token) != 32:
            continue
        try:
            st = directory.lstat(name)
            if now - st.st_mtime <= min_age:
                continue
            directory.remove_tree(name, max_depth=1)
            removed += 1
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESTALE):
                log.warning("could not remove lock stage %s: %s", directory.path(name), exc)
    return removed
