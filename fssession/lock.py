"""MkdirLock: a lease lock that is a directory on a shared filesystem.

The protocol is described step by step, with the reason each step is safe,
in NOTES.md ("The lock").  In short:

* The lock is the directory ``L``.  It exists only while held and always
  contains exactly one *owner marker*: a symlink whose **name** is the owner
  record ``o,<token>,<beat>,<lease_ms>,<pid>,<start>,<host_id>,<hostname>``.
* Acquire: prepare a private stage directory beside ``L`` holding our marker,
  then ``rename(stage, L)``.  Rename of a non-empty directory onto a
  non-empty one fails, so exactly one contender wins; an empty leftover ``L``
  is simply replaced.  A lost reply is settled by looking for our own marker.
* Renew, take over and release are renames of the marker *by its exact
  name*.  A rename whose source is gone fails, and tokens are never reused,
  so each of them is a compare-and-swap done by the file server: a holder
  that was taken over cannot renew or release, and of two contenders that
  judge the same stale holder only one can take it over.
* A holder is stale when it is provably dead on this host (same host, boot
  and PID namespace; PID gone or recycled), or when its marker has not
  changed for a whole lease, judged on the file server's clock (the mtimes it
  stamps) or on the contender's own monotonic clock: never by comparing two
  hosts' clocks.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from ._identity import ProcessIdentity, current_identity, is_dead_here
from .errors import LockError, LockLost, LockTimeout, StorageError

__all__ = ["MkdirLock", "OwnerInfo", "read_owner", "remove_litter", "server_now"]

log = logging.getLogger("fssession.lock")

OWNER_PREFIX = "o,"
RELEASED_PREFIX = "r,"
STAGE_INFIX = ".stage-"
_LINK_TARGET = "fssession-lock-owner"

# rename(dir, L) onto a non-empty L: POSIX says EEXIST or ENOTEMPTY; sshfs
# (SFTP v3 has one generic failure code) says EPERM.
_OCCUPIED = frozenset(
    {errno.EEXIST, errno.ENOTEMPTY, errno.EPERM, errno.EACCES, errno.EBUSY, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}
)
# The operation may have happened although an error came back (lost reply,
# retransmitted request, replaced file handle): look before deciding.
_AMBIGUOUS = frozenset({errno.ENOENT, errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.EINTR})
# Errors that are the storage's, not the lock's: report them at once.
_FATAL = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG})

_MIN_CAP = 0.002  # the backoff never settles below 2 ms between tries
_DRIFT = 0.001  # allowance for clock *rate* differences between hosts (0.1 %)


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """A parsed owner marker: who holds (or held) a lock."""

    name: str
    token: str
    beat: int
    lease: float
    owner: ProcessIdentity

    def describe(self) -> str:
        """Host and PID for people (timeouts, the CLI)."""
        where = "this host" if self.owner.host_id == current_identity().host_id else "another host"
        return f"pid {self.owner.pid} on {self.owner.hostname} ({where})"


def _sanitize_host(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)[:63]
    return cleaned or "unknown"


def _marker_name(token: str, beat: int, lease: float, who: ProcessIdentity) -> str:
    return (
        f"{OWNER_PREFIX}{token},{beat},{int(lease * 1000)},{who.pid},{who.start_time},"
        f"{who.host_id},{_sanitize_host(who.hostname)}"
    )


def parse_owner(name: str) -> OwnerInfo | None:
    """Parse a marker name; None when it is not a well-formed owner marker."""
    if not name.startswith(OWNER_PREFIX):
        return None
    parts = name[len(OWNER_PREFIX) :].split(",", 6)
    if len(parts) != 7:
        return None
    token, beat, lease_ms, pid, start, host_id, hostname = parts
    try:
        return OwnerInfo(
            name, token, int(beat), int(lease_ms) / 1000.0, ProcessIdentity(host_id, hostname, int(pid), int(start))
        )
    except ValueError:
        return None


def _with_beat(name: str, beat: int) -> str:
    """The same owner record with another beat (renewal counter)."""
    prefix, token, _old_beat, rest = name.split(",", 3)
    return f"{prefix},{token},{beat},{rest}"


def read_owner(path: str | os.PathLike[str]) -> OwnerInfo | None:
    """Who holds the lock directory *path* now, or None if it is free."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        info = parse_owner(name)
        if info is not None:
            return info
    return None


@dataclass(slots=True)
class _Context:
    """Per-thread (or per-lock) state of one MkdirLock."""

    counter: int = 0
    marker: str | None = None  # our marker's current name inside the lock dir
    token: str = ""
    beat: int = 0
    lease_base: float = 0.0  # monotonic time taken before the server stamped our lease
    pid: int = 0
    stage: str | None = None
    stage_marker: str = ""
    stage_base: float = 0.0  # monotonic time just before the stage was last stamped
    stamped_after: float = 0.0  # monotonic time just after it was last stamped
    anchor: tuple[int, float] | None = None  # (server mtime of the stage in ns, stamped_after)
    view: _View | None = None  # the last inspection of the lock directory
    seen: dict[str, float] = field(default_factory=dict)  # owner name -> first seen (monotonic)


@dataclass(slots=True)
class _View:
    """What one inspection of a held lock directory showed."""

    owner: OwnerInfo
    lock_mtime_ns: int
    at: float  # monotonic time of the inspection


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

    Every hold is a lease of *lease* seconds.  :meth:`refresh` renews it;
    a holder that neither releases nor renews in time may be taken over, and
    then its :meth:`refresh` and :meth:`release` raise
    :class:`~fssession.LockLost` without touching the new holder's lock.

    *fs_slack* is how stale the filesystem may show a directory's attributes
    (its attribute cache, in seconds).  The holder stops trusting its lease
    that long before contenders may judge it expired (:attr:`lease_remaining`).
    """

    def __init__(
        self,
        lock_file: str | os.PathLike[str],
        timeout: float = -1,
        *,
        lease: float = 30.0,
        poll_interval: float = 0.001,
        max_poll_interval: float = 0.05,
        blocking: bool = True,
        thread_local: bool = True,
        fs_slack: float = 1.0,
        mode: int = 0o700,
    ) -> None:
        if lease <= 0 or fs_slack < 0 or poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ValueError("lease and poll intervals must be positive, fs_slack >= 0")
        self._path = os.fspath(lock_file)
        self._parent, self._base = os.path.split(os.path.abspath(self._path))
        self.timeout = timeout
        self.blocking = blocking
        self.lease = float(lease)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.fs_slack = fs_slack
        self.mode = mode
        self._thread_local = thread_local
        # How often a waiter re-lists the lock directory (each listing is
        # several round trips on a network filesystem).
        self._inspect_every = min(0.25, self.lease / 8)
        self._local = threading.local()
        self._shared = _Context()
        self._guard = threading.RLock()  # serialises a shared context between threads

    # ------------------------------------------------------------------ state
    @property
    def _ctx(self) -> _Context:
        if not self._thread_local:
            return self._shared
        ctx: _Context | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = _Context()
        return ctx

    @property
    def lock_file(self) -> str:
        """The lock directory's path."""
        return self._path

    @property
    def is_locked(self) -> bool:
        """True while this thread (or this lock, when not thread-local) holds it."""
        return self._ctx.marker is not None

    @property
    def lock_counter(self) -> int:
        """How many times the holder acquired it without releasing (re-entrancy depth)."""
        return self._ctx.counter

    @property
    def token(self) -> str | None:
        """The random token of the current hold, or None when not held."""
        ctx = self._ctx
        return ctx.token if ctx.marker else None

    @property
    def lease_remaining(self) -> float:
        """Seconds this hold may still be trusted without :meth:`refresh` (0 when not held).

        Counted on this process's monotonic clock from just before the file
        server stamped the lease, less *fs_slack*: contenders cannot judge the
        lease expired before this reaches zero.
        """
        ctx = self._ctx
        if ctx.marker is None:
            return 0.0
        left = ctx.lease_base + self.lease * (1 - _DRIFT) - self.fs_slack - time.monotonic()
        return max(0.0, left)

    # ---------------------------------------------------------------- acquire
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
        :class:`StorageError` when the directory refuses the attempt (full,
        read-only, vanished, permission denied).
        """
        timeout = self.timeout if timeout is None else timeout
        blocking = self.blocking if blocking is None else blocking
        delay = self.poll_interval if poll_interval is None else poll_interval
        with self._guard if not self._thread_local else _NULL:
            ctx = self._ctx
            if ctx.marker is not None:
                ctx.counter += 1
                return _AcquireReturn(self)
            start = time.monotonic()
            deadline = None if timeout is None or timeout < 0 or timeout == float("inf") else start + timeout
            quick_retries = 0
            holder: str | None = None
            try:
                while True:
                    tried = time.monotonic()
                    outcome, holder = self._attempt(ctx)
                    cost = time.monotonic() - tried
                    if outcome == "won":
                        ctx.counter = 1
                        return _AcquireReturn(self)
                    if outcome == "retry-now" and quick_retries < 8:
                        # The lock looked occupied but was not there (a
                        # create that nobody won, a release in flight).
                        quick_retries += 1
                        continue
                    now = time.monotonic()
                    if not blocking or (deadline is not None and now >= deadline):
                        raise LockTimeout(self._path, holder, now - start)
                    if cancel_check is not None and cancel_check():
                        raise LockTimeout(self._path, holder, now - start)
                    # Exponential backoff with jitter, capped in proportion to
                    # what a try costs here: a waiter sleeps at least 20 times
                    # as long as it spends trying (no busy spinning, bounded
                    # load on a file server), yet on a fast disk it does not
                    # sleep 50 ms while others take the lock thousands of
                    # times (that is how waiters starve).
                    cap = min(self.max_poll_interval, max(_MIN_CAP, 20 * cost))
                    sleep = random.uniform(delay / 2, delay)
                    if deadline is not None:
                        sleep = min(sleep, max(0.0, deadline - now))
                    time.sleep(sleep)
                    delay = min(delay * 2, cap)
            finally:
                if ctx.marker is None:
                    self._discard_stage(ctx)
                ctx.seen.clear()
                ctx.view = None

    def _attempt(self, ctx: _Context) -> tuple[str, str | None]:
        """One try.  Returns ("won" | "held" | "retry-now", holder description)."""
        self._prepare_stage(ctx)
        assert ctx.stage is not None
        target_marker = os.path.join(self._path, ctx.stage_marker)
        try:
            os.rename(ctx.stage, self._path)
        except OSError as exc:
            code = exc.errno
            if code in _FATAL:
                raise StorageError.from_oserror(exc, self._path) from exc
            if code in _AMBIGUOUS and _lexists(target_marker):
                return self._won(ctx, ctx.stage_marker, ctx.stage_base, stage_consumed=True), None
            if code in _AMBIGUOUS and not _lexists(ctx.stage):
                ctx.stage = None  # our stage vanished (a reaper?): prepare a new one
                return "retry-now", None
            if code not in _OCCUPIED and code not in _AMBIGUOUS:
                raise StorageError.from_oserror(exc, self._path) from exc
            return self._contend(ctx)
        return self._won(ctx, ctx.stage_marker, ctx.stage_base, stage_consumed=True), None

    def _won(self, ctx: _Context, marker: str, base: float, *, stage_consumed: bool) -> str:
        ctx.marker = marker
        ctx.lease_base = base
        ctx.pid = os.getpid()
        if stage_consumed:
            ctx.stage = None
        return "won"

    def _prepare_stage(self, ctx: _Context) -> None:
        if ctx.stage is not None:
            # A stage prepared long ago would give the new lock an old mtime,
            # making it look stale to others the moment it is published.
            if time.monotonic() - ctx.stage_base > min(1.0, self.lease / 8):
                self._bump_stage(ctx)
            return
        ctx.token = secrets.token_hex(16)
        ctx.beat = 0
        ctx.stage_marker = _marker_name(ctx.token, 0, self.lease, current_identity())
        stage = f"{self._path}{STAGE_INFIX}{ctx.token}"
        base = time.monotonic()
        try:
            os.mkdir(stage, self.mode)
        except FileExistsError as exc:
            # A random name cannot exist: this is a mount that reports EEXIST
            # for everything it refuses (sshfs on a full or read-only export).
            raise StorageError(errno.EIO, "the filesystem refused to create a directory", stage) from exc
        except OSError as exc:
            raise StorageError.from_oserror(exc, stage) from exc
        ctx.stage = stage
        try:
            os.symlink(_LINK_TARGET, os.path.join(stage, ctx.stage_marker))
        except OSError as exc:
            self._discard_stage(ctx)
            raise StorageError.from_oserror(exc, stage) from exc
        ctx.stage_base, ctx.stamped_after, ctx.anchor = base, time.monotonic(), None

    def _bump_stage(self, ctx: _Context) -> None:
        """Rename our stage marker so the server stamps the stage with its current time."""
        assert ctx.stage is not None
        ctx.beat += 1
        new = _with_beat(ctx.stage_marker, ctx.beat)
        base = time.monotonic()
        try:
            os.rename(os.path.join(ctx.stage, ctx.stage_marker), os.path.join(ctx.stage, new))
        except OSError as exc:
            if not _lexists(os.path.join(ctx.stage, new)):
                ctx.stage = None  # gone or broken: prepare a fresh one next time
                if exc.errno in _FATAL:
                    raise StorageError.from_oserror(exc, self._path) from exc
                return
        ctx.stage_marker = new
        ctx.stage_base, ctx.stamped_after, ctx.anchor = base, time.monotonic(), None

    def _discard_stage(self, ctx: _Context) -> None:
        if ctx.stage is None:
            return
        stage, ctx.stage = ctx.stage, None
        try:  # the usual case: the stage holds our marker and nothing else
            os.unlink(os.path.join(stage, ctx.stage_marker))
            os.rmdir(stage)
        except OSError:
            _remove_tree_quietly(stage)

    # ------------------------------------------------------------- contention
    def _contend(self, ctx: _Context) -> tuple[str, str | None]:
        """The publish failed: judge the holder, and take the lock over if it is stale.

        The lock directory is listed at most every ``_inspect_every`` seconds
        while waiting; in between, a poll costs one rename.  Acting on an old
        view is safe: the take-over renames the marker by the exact name seen,
        which fails if anything changed since.
        """
        now = time.monotonic()
        view = ctx.view
        if view is None or now - view.at >= self._inspect_every:
            outcome = self._inspect(ctx)
            if outcome is not None:
                return outcome
            view = ctx.view
            assert view is not None
        owner = view.owner
        # The holder's own recorded lease: it is what the holder fences itself by.
        lease = owner.lease * (1 + _DRIFT)
        watched = now - ctx.seen.setdefault(owner.name, view.at)
        age = self._server_age(ctx, view.lock_mtime_ns, now)
        held_for = f"{age:.1f} s" if age is not None else f"at least {watched:.1f} s"
        holder = f"{owner.describe()}, held for {held_for} (lease {owner.lease:g} s)"
        if is_dead_here(owner.owner) or watched > lease or (age is not None and age > lease):
            ctx.view = None  # whatever happens next, look again
            return self._take_over(ctx, owner), holder
        return "held", holder

    def _inspect(self, ctx: _Context) -> tuple[str, str | None] | None:
        """List the lock directory into ``ctx.view``; an outcome when there is nothing to judge."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return "retry-now", None  # nobody holds it after all (GlusterFS: nobody won)
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise LockError(f"{self._path!r} exists and is not a lock directory") from exc
            raise StorageError.from_oserror(exc, self._path) from exc
        try:
            # fstat after open: opening revalidates the directory's attributes
            # (close-to-open), so its mtime is at least as fresh as the listing.
            lock_mtime = os.fstat(fd).st_mtime_ns
            names = os.listdir(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return "retry-now", None
            raise StorageError.from_oserror(exc, self._path) from exc
        finally:
            os.close(fd)
        if ctx.stage_marker in names:  # our publish went through; its reply was lost
            return self._won(ctx, ctx.stage_marker, ctx.stage_base, stage_consumed=True), None
        owners = [self._owner_of(name) for name in names if name.startswith(OWNER_PREFIX)]
        if not owners:
            self._clear_ownerless(names)
            return "retry-now", None
        if len(owners) > 1:  # cannot happen under the protocol; never guess which is live
            log.warning("lock %s has %d owner markers: %s", self._path, len(owners), names)
            return "held", owners[0].describe()
        if len(ctx.seen) > 64:
            ctx.seen.clear()
        ctx.view = _View(owners[0], lock_mtime, time.monotonic())
        return None

    def _owner_of(self, name: str) -> OwnerInfo:
        """Parse a marker; an unreadable one is a holder of unknown identity with our lease."""
        info = parse_owner(name)
        if info is None:
            info = OwnerInfo(name, "", 0, self.lease, ProcessIdentity("", "unknown host", 0, 0))
        return info

    def _server_age(self, ctx: _Context, lock_mtime_ns: int, now: float) -> float | None:
        """Seconds since the server stamped the lock, never overestimated, on the server's clock.

        The server stamped our stage when we last created or renamed its
        marker; that mtime, read once, anchors the server's clock to ours
        (taken just *after* the stamp, so the estimate of the server's "now"
        is never ahead of it).  Both stamps come from the server, so no other
        host's clock enters.  With whole-second timestamps (sshfs, MooseFS)
        a second is subtracted, since both stamps may be truncated.
        """
        if ctx.stage is None:
            return None
        if ctx.anchor is None:
            try:
                ctx.anchor = (os.lstat(ctx.stage).st_mtime_ns, ctx.stamped_after)
            except OSError:
                return None
        stage_ns, stamped_after = ctx.anchor
        server_now_ns = stage_ns + int((now - stamped_after) * 1e9)
        age = (server_now_ns - lock_mtime_ns) / 1e9
        coarse = stage_ns % 1_000_000_000 == 0 and lock_mtime_ns % 1_000_000_000 == 0
        return age - 1.0 if coarse else age

    def _take_over(self, ctx: _Context, owner: OwnerInfo) -> str:
        """Replace the stale *owner* by renaming its marker, by exact name, to ours."""
        ctx.beat += 1
        ours = _with_beat(ctx.stage_marker, ctx.beat)
        base = time.monotonic()
        try:
            os.rename(os.path.join(self._path, owner.name), os.path.join(self._path, ours))
        except OSError as exc:
            if exc.errno in _FATAL:
                raise StorageError.from_oserror(exc, self._path) from exc
            if not _lexists(os.path.join(self._path, ours)):
                return "retry-now"  # someone else took over (or renewed) first
        log.info("took over lock %s from stale holder %s", self._path, owner.describe())
        self._discard_stage(ctx)
        return self._won(ctx, ours, base, stage_consumed=False)

    def _clear_ownerless(self, names: list[str]) -> None:
        """Remove what a crash left in a lock directory that has no owner marker.

        Safe because a directory without an owner marker can never gain one
        (owners arrive only by renaming a complete stage onto an empty or
        missing lock, and a marker is only ever renamed or removed by its
        exact name), and nothing here touches a name starting with "o,".
        """
        for name in names:
            if name.startswith(OWNER_PREFIX):
                continue
            path = os.path.join(self._path, name)
            try:
                os.unlink(path)
            except IsADirectoryError:
                _remove_tree_quietly(path)
            except OSError as exc:
                if exc.errno == errno.EPERM:  # a directory on some systems
                    _remove_tree_quietly(path)

    # -------------------------------------------------------- renew / release
    def _require_held(self, ctx: _Context) -> str:
        if ctx.marker is None:
            raise RuntimeError(f"lock {self._path!r} is not held by this {'thread' if self._thread_local else 'lock'}")
        if ctx.pid != os.getpid():
            raise RuntimeError("a lock acquired before fork() cannot be used in the child")
        return ctx.marker

    def _lost(self, ctx: _Context, what: str) -> LockLost:
        ctx.marker = None
        ctx.counter = 0
        return LockLost(f"lock {self._path!r} was taken over by another holder before {what}")

    def refresh(self) -> None:
        """Renew the lease for another *lease* seconds; :class:`LockLost` if it was taken over."""
        ctx = self._ctx
        marker = self._require_held(ctx)
        ctx.beat += 1
        new = _with_beat(marker, ctx.beat)
        base = time.monotonic()
        try:
            os.rename(os.path.join(self._path, marker), os.path.join(self._path, new))
        except OSError as exc:
            if not _lexists(os.path.join(self._path, new)):
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    raise self._lost(ctx, "refresh()") from exc
                raise StorageError.from_oserror(exc, self._path) from exc
        ctx.marker = new
        ctx.lease_base = base

    def release(self, force: bool = False) -> None:
        """Release one level of the lock (all levels with *force*).

        The last level removes the lock.  Raises :class:`LockLost` if the lock
        was taken over in the meantime; the new holder's lock is left alone.
        """
        ctx = self._ctx
        if ctx.marker is None:
            return
        ctx.counter -= 1
        if ctx.counter > 0 and not force:
            return
        marker = self._require_held(ctx)
        released = os.path.join(self._path, f"{RELEASED_PREFIX}{ctx.token}")
        try:
            # By exact name: fails if a contender renamed our marker away.
            os.rename(os.path.join(self._path, marker), released)
        except OSError as exc:
            if not _lexists(released):
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    raise self._lost(ctx, "release()") from exc
                ctx.counter = 1  # still ours: the caller may retry the release
                raise StorageError.from_oserror(exc, self._path) from exc
        ctx.marker = None
        ctx.counter = 0
        # The lock is free from here on.  Removing the leftovers may race a
        # new holder, which is harmless: unlink takes only our own name, and
        # rmdir fails on a directory that holds someone's marker.
        try:
            os.unlink(released)
            os.rmdir(self._path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ESTALE, errno.EBUSY, errno.EPERM):
                log.warning("could not clean up released lock %s: %s", self._path, exc)

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


def _lexists(path: str) -> bool:
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


def _remove_tree_quietly(path: str) -> None:
    """Remove a private directory tree of ours; failures are logged, not raised."""
    try:
        entries = os.listdir(path)
    except NotADirectoryError:
        entries = []
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("could not list %s: %s", path, exc)
        return
    for name in entries:
        child = os.path.join(path, name)
        try:
            os.unlink(child)
        except IsADirectoryError:
            _remove_tree_quietly(child)
        except OSError:
            if os.path.isdir(child) and not os.path.islink(child):
                _remove_tree_quietly(child)
    try:
        os.rmdir(path)
    except NotADirectoryError:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ESTALE):
            log.warning("could not remove %s: %s", path, exc)


def server_now(directory: str | os.PathLike[str]) -> float:
    """The file server's current time, read from the mtime it stamps on a fresh directory."""
    probe = os.path.join(os.fspath(directory), f".fssession-clock-{secrets.token_hex(8)}")
    os.mkdir(probe, 0o700)
    try:
        return os.lstat(probe).st_mtime
    finally:
        os.rmdir(probe)


def remove_litter(directory: str | os.PathLike[str], min_age: float = 300.0) -> int:
    """Remove stage directories that waiting contenders left when they crashed.

    A live waiter re-stamps its stage at least every second while it polls,
    so a stage older than *min_age* seconds (on the server's clock) is
    abandoned; if a slow waiter's stage is removed anyway, it prepares a new
    one.  Returns how many were removed.  Streams the directory.
    """
    now = server_now(directory)
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            head, sep, token = entry.name.rpartition(STAGE_INFIX)
            if not sep or not head or len(token) != 32 or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > min_age:
                _remove_tree_quietly(entry.path)
                removed += 1
    return removed
