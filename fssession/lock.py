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

from ._identity import ProcessIdentity, current_identity, is_dead_here, process_umask
from .errors import LockError, LockLost, LockTimeout, StorageError

__all__ = [
    "MkdirLock",
    "OwnerInfo",
    "ServerClock",
    "discard_litter_entry",
    "is_litter_name",
    "read_owner",
    "remove_litter",
    "rename_by_exact_name",
    "server_now",
]

log = logging.getLogger("fssession.lock")

OWNER_PREFIX = "o,"
RELEASED_PREFIX = "r,"
STAGE_INFIX = ".stage-"
TRASH_PREFIX = ".fssession-trash-"
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
    lease_base: float = 0.0  # _clock() taken before the server stamped our lease
    pid: int = 0
    stage: str | None = None
    stage_marker: str = ""
    stage_base: float = 0.0  # _clock() just before the stage was last stamped
    stamped_after: float = 0.0  # _clock() just after it was last stamped
    anchor: tuple[int, float] | None = None  # (server mtime of the stage in ns, stamped_after)
    view: _View | None = None  # the last inspection of the lock directory
    seen: dict[str, float] = field(default_factory=dict)  # owner name -> first seen
    # Marker names this acquire() call may have installed, with the clock
    # reading taken before each: a lost reply must not make us a stranger.
    mine: dict[str, float] = field(default_factory=dict)

    def forget_attempt(self) -> None:
        """Drop what one acquire() call learned (kept only while it runs)."""
        self.seen.clear()
        self.mine.clear()
        self.view = None

    def reset(self) -> None:
        """Back to "not held" without touching the filesystem."""
        self.marker = None
        self.counter = 0
        self.stage = None
        self.forget_attempt()


@dataclass(slots=True)
class _View:
    """What one inspection of a held lock directory showed."""

    owner: OwnerInfo
    lock_mtime_ns: int
    at: float  # _clock() of the inspection


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


def _clock() -> float:
    """Seconds on a clock that keeps counting while the host is suspended.

    A holder's lease is counted on it: with CLOCK_MONOTONIC, a laptop or VM
    suspended past its lease would wake up still trusting it.
    """
    return time.clock_gettime(_BOOTTIME)


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


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

    *fs_slack* bounds how late this filesystem may show a directory's
    attributes (its attribute cache), plus, where timestamps come from the
    clients' clocks rather than the server's (GlusterFS with its ``ctime``
    feature, CephFS), the clock skew between hosts.  The holder stops
    trusting its lease that long before contenders may judge it expired
    (:attr:`lease_remaining`).  With ``server_clock=False`` no timestamp is
    trusted at all: a holder on another host is then judged only by a
    contender that watched its marker unchanged for a whole lease.
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
        server_clock: bool = True,
        mode: int = 0o700,
    ) -> None:
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ValueError("poll intervals must be positive, max_poll_interval >= poll_interval")
        if fs_slack < 0 or lease <= fs_slack:
            raise ValueError("need 0 <= fs_slack < lease")
        self._path = os.fspath(lock_file)
        self.timeout = timeout
        self.blocking = blocking
        self.lease = float(lease)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.fs_slack = fs_slack
        self.server_clock = server_clock
        self.mode = mode
        # The umask would strip group bits a store shared by several users of
        # one group needs (they must be able to take over each other's locks).
        self._chmod_needed = bool(mode & process_umask())
        self._thread_local = thread_local
        # How often a waiter re-lists the lock directory (each listing is
        # several round trips on a network filesystem).
        self._inspect_every = min(0.25, self.lease / 8)
        self._local = threading.local()
        self._shared = _Context()
        # Serialises every use of the shared context when not thread-local.
        self._guard: threading.RLock | _NullContext = _NULL if thread_local else threading.RLock()

    # ------------------------------------------------------------------ state
    @property
    def _ctx(self) -> _Context:
        if not self._thread_local:
            ctx = self._shared
        else:
            found: _Context | None = getattr(self._local, "ctx", None)
            ctx = found if found is not None else self._new_local()
        if ctx.marker is not None and ctx.pid != os.getpid():
            # Inherited through fork(): the parent holds the lock, not us.
            ctx.reset()
        return ctx

    def _new_local(self) -> _Context:
        ctx = _Context()
        self._local.ctx = ctx
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

        Counted on this host's boot clock (it counts suspended time) from just
        before the file server stamped the lease, less *fs_slack*: contenders
        cannot judge the lease expired before this reaches zero.
        """
        ctx = self._ctx
        if ctx.marker is None:
            return 0.0
        left = ctx.lease_base + self.lease * (1 - _DRIFT) - self.fs_slack - _clock()
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
        start = _clock()
        deadline = None if timeout is None or timeout < 0 or timeout == float("inf") else start + timeout
        quick_retries = 0
        holder: str | None = None
        while True:
            with self._guard:
                ctx = self._ctx
                if ctx.marker is not None:  # re-entrant (per thread, or shared when not thread-local)
                    ctx.counter += 1
                    return _AcquireReturn(self)
                tried = _clock()
                try:
                    outcome, holder = self._attempt(ctx)
                except BaseException:
                    self._abandon(ctx)
                    raise
                cost = _clock() - tried
                if outcome == "won":
                    ctx.counter = 1
                    ctx.forget_attempt()
                    return _AcquireReturn(self)
                now = _clock()
                give_up = (
                    not blocking
                    or (deadline is not None and now >= deadline)
                    or (cancel_check is not None and cancel_check())
                )
                if give_up and not (outcome == "retry-now" and quick_retries < 8):
                    if self._published_after_all(ctx):
                        ctx.counter = 1
                        ctx.forget_attempt()
                        return _AcquireReturn(self)
                    self._abandon(ctx)
                    raise LockTimeout(self._path, holder, now - start)
            if outcome == "retry-now" and quick_retries < 8:
                # The lock looked occupied but was not there (a create that
                # nobody won, a release in flight): try again at once.
                quick_retries += 1
                continue
            # Exponential backoff with jitter, capped in proportion to what a
            # try costs here: a waiter sleeps 10 to 20 times as long as it
            # spends trying (no busy spinning, bounded load on a file server),
            # yet on a fast disk it does not sleep 50 ms while others take the
            # lock thousands of times (that is how waiters starve).
            cap = min(self.max_poll_interval, max(_MIN_CAP, 20 * cost))
            sleep = random.uniform(delay / 2, delay)
            if deadline is not None:
                sleep = min(sleep, max(0.0, deadline - now))
            time.sleep(sleep)
            delay = min(delay * 2, cap)

    def _published_after_all(self, ctx: _Context) -> bool:
        """Before giving up: did one of our publishes or take-overs land although it reported failure?

        Without this check such a lock would stay held by a marker that
        nobody knows is theirs until its lease ran out.
        """
        names = _listing(self._path)
        for name in names or ():
            if name in ctx.mine:
                self._won(ctx, name, stage_consumed=name == ctx.stage_marker)
                if ctx.stage is not None:
                    self._discard_stage(ctx)
                return True
        return False

    def _abandon(self, ctx: _Context) -> None:
        """Give up an acquire() call: remove our stage, forget what we saw."""
        if ctx.marker is None:
            self._discard_stage(ctx)
        ctx.forget_attempt()

    def _attempt(self, ctx: _Context) -> tuple[str, str | None]:
        """One try.  Returns ("won" | "held" | "retry-now", holder description)."""
        if self._prepare_stage(ctx):
            return "won", None
        assert ctx.stage is not None
        marker = ctx.stage_marker
        try:
            os.rename(ctx.stage, self._path)
        except OSError as exc:
            code = exc.errno
            if code in _FATAL:
                raise StorageError.from_oserror(exc, self._path) from exc
            if code in _AMBIGUOUS:
                there = _exists(os.path.join(self._path, marker))
                if there:
                    return self._won(ctx, marker, stage_consumed=True), None
                if there is False and _exists(ctx.stage) is False:
                    ctx.stage = None  # our stage vanished (a reaper?): prepare a new one
                    return "retry-now", None
            elif code not in _OCCUPIED:
                raise StorageError.from_oserror(exc, self._path) from exc
            return self._contend(ctx)
        return self._won(ctx, marker, stage_consumed=True), None

    def _won(self, ctx: _Context, marker: str, *, stage_consumed: bool) -> str:
        ctx.marker = marker
        ctx.lease_base = ctx.mine[marker]
        ctx.pid = os.getpid()
        if stage_consumed:
            ctx.stage = None
        return "won"

    def _prepare_stage(self, ctx: _Context) -> bool:
        """Have a stage ready to publish; True if an earlier publish turns out to have succeeded."""
        if ctx.stage is not None:
            # A stage prepared long ago would give the new lock an old mtime,
            # making it look stale to others the moment it is published.
            if _clock() - ctx.stage_base > min(1.0, self.lease / 8):
                published = self._bump_stage(ctx)
                if published:
                    self._won(ctx, published, stage_consumed=True)
                    return True
            if ctx.stage is not None:
                return False
        ctx.token = secrets.token_hex(16)
        ctx.beat = 0
        marker = _marker_name(ctx.token, 0, self.lease, current_identity())
        stage = f"{self._path}{STAGE_INFIX}{ctx.token}"
        base = _clock()
        try:
            os.mkdir(stage, self.mode)
        except FileExistsError as exc:
            # A random name cannot exist, unless our own mkdir went through and
            # its reply was lost; otherwise this is a mount that says EEXIST for
            # everything it refuses (sshfs on a full or read-only export).
            if not _is_empty_dir(stage):
                raise StorageError(errno.EIO, "the filesystem refused to create a directory", stage) from exc
        except OSError as exc:
            raise StorageError.from_oserror(exc, stage) from exc
        if self._chmod_needed:
            try:
                os.chmod(stage, self.mode)
            except OSError as exc:
                _remove_tree_quietly(stage)
                raise StorageError.from_oserror(exc, stage) from exc
        ctx.stage = stage
        ctx.stage_marker = marker
        ctx.mine[marker] = base
        try:
            os.symlink(_LINK_TARGET, os.path.join(stage, marker))
        except FileExistsError:
            pass  # our own symlink, whose reply was lost: the name is unique to us
        except OSError as exc:
            self._discard_stage(ctx)
            raise StorageError.from_oserror(exc, stage) from exc
        ctx.stage_base, ctx.stamped_after, ctx.anchor = base, _clock(), None
        return False

    def _bump_stage(self, ctx: _Context) -> str | None:
        """Rename our stage marker so the server stamps the stage with its current time.

        Returns the marker name if it turns out the stage was already
        published as the lock (a publish whose reply was lost).
        """
        assert ctx.stage is not None
        old = ctx.stage_marker
        ctx.beat += 1
        new = _with_beat(old, ctx.beat)
        base = _clock()
        ctx.mine[new] = base
        try:
            os.rename(os.path.join(ctx.stage, old), os.path.join(ctx.stage, new))
        except OSError as exc:
            if _exists(os.path.join(ctx.stage, new)) is not True:
                if exc.errno in _FATAL:
                    raise StorageError.from_oserror(exc, self._path) from exc
                if _exists(os.path.join(self._path, old)):
                    return old  # the stage is the lock already
                ctx.stage = None  # gone or broken: prepare a fresh one next time
                return None
        ctx.stage_marker = new
        ctx.stage_base, ctx.stamped_after, ctx.anchor = base, _clock(), None
        return None

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
        now = _clock()
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
        age = self._server_age(ctx, view.lock_mtime_ns, now) if self.server_clock else None
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
            names = os.listdir(fd)
            # The mtime is read after the listing, so it is never older than
            # the change that produced any name listed (a renewal that lands
            # between the two makes the lock look younger, which is safe).
            lock_mtime = os.fstat(fd).st_mtime_ns
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return "retry-now", None
            raise StorageError.from_oserror(exc, self._path) from exc
        finally:
            os.close(fd)
        owners = [name for name in names if name.startswith(OWNER_PREFIX)]
        for name in owners:
            if name in ctx.mine:  # a publish or take-over of ours whose reply was lost
                return self._won(ctx, name, stage_consumed=name == ctx.stage_marker), None
        if not owners:
            self._clear_ownerless(names)
            return "retry-now", None
        if len(owners) > 1:  # cannot happen under the protocol; never guess which is live
            log.warning("lock %s has %d owner markers: %s", self._path, len(owners), names)
            return "held", self._owner_of(owners[0]).describe()
        if len(ctx.seen) > 64:
            ctx.seen.clear()
        ctx.view = _View(self._owner_of(owners[0]), lock_mtime, _clock())
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
        ctx.mine[ours] = _clock()
        try:
            os.rename(os.path.join(self._path, owner.name), os.path.join(self._path, ours))
        except OSError as exc:
            if exc.errno in _FATAL:
                raise StorageError.from_oserror(exc, self._path) from exc
            if _exists(os.path.join(self._path, ours)) is not True:
                return "retry-now"  # someone else took over (or it renewed) first; or look again
        log.info("took over lock %s from stale holder %s", self._path, owner.describe())
        self._discard_stage(ctx)
        return self._won(ctx, ours, stage_consumed=False)

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
        return ctx.marker

    def _lost(self, ctx: _Context, what: str) -> LockLost:
        ctx.reset()
        return LockLost(f"lock {self._path!r} was taken over by another holder before {what}")

    def _rename_marker(self, src: str, dst: str) -> None:
        """Rename an entry of the lock directory by exact name; OSError only if it truly failed."""
        rename_by_exact_name(os.path.join(self._path, src), os.path.join(self._path, dst), 2 * self.fs_slack + 2.0)

    def refresh(self) -> None:
        """Renew the lease for another *lease* seconds; :class:`LockLost` if it was taken over."""
        with self._guard:
            ctx = self._ctx
            marker = self._require_held(ctx)
            ctx.beat += 1
            new = _with_beat(marker, ctx.beat)
            base = _clock()
            try:
                self._rename_marker(marker, new)
            except OSError as exc:
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
        with self._guard:
            ctx = self._ctx
            if ctx.marker is None:
                return
            if ctx.counter > 1 and not force:
                ctx.counter -= 1
                return
            marker = self._require_held(ctx)
            released_name = f"{RELEASED_PREFIX}{ctx.token}"
            released = os.path.join(self._path, released_name)
            try:
                # By exact name: fails if a contender renamed our marker away.
                self._rename_marker(marker, released_name)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    raise self._lost(ctx, "release()") from exc
                raise StorageError.from_oserror(exc, self._path) from exc  # still held: may retry
            ctx.reset()
        # The lock is free from here on.  Removing the leftovers may race a new
        # holder, which is harmless: unlink takes only our own name, and rmdir
        # fails on a directory that holds someone's marker.
        _quietly(os.unlink, released)
        _quietly(os.rmdir, self._path)

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


def _exists(path: str) -> bool | None:
    """True or False when the filesystem says so; None when it could not tell (EIO, ESTALE...)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return None
    return True


def _listing(path: str) -> list[str] | None:
    """The names in a directory, or None if it cannot be listed."""
    try:
        return os.listdir(path)
    except OSError:
        return None


def _is_empty_dir(path: str) -> bool:
    try:
        return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    except OSError:
        return False


_EXPECTED_CLEANUP = frozenset({errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ESTALE, errno.EBUSY, errno.EPERM})


def _quietly(op: Callable[[str], None], path: str) -> None:
    """Best-effort cleanup after a release: expected races are silent, anything else is logged."""
    try:
        op(path)
    except OSError as exc:
        if exc.errno not in _EXPECTED_CLEANUP:
            log.warning("could not clean up %s: %s", path, exc)


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


def rename_by_exact_name(src: str, dst: str, patience: float) -> None:
    """Rename *src* (an entry other hosts also rename) to *dst*; OSError only if it truly failed.

    Seen on GlusterFS under contention: a rename by path fails with ENOENT
    for a second or two although the entry is there, because this client
    resolves the name through its cached entry for one that another host
    replaced.  An ``lstat`` by path then makes the kernel look the name up
    afresh, and a listing refreshes the entries too; so ENOENT is believed
    only when two listings of the directory, taken apart, both lack the
    source, and otherwise the rename is retried for up to *patience*
    seconds.  A *dst* that is listed means it did happen (a lost reply).
    """
    directory, name = os.path.split(src)
    deadline = _clock() + patience
    absent = 0
    while True:
        for attempt in range(2):
            try:
                os.rename(src, dst)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
                failure = exc
            if attempt or _exists(src) is not True:
                break  # the fresh lookup did not find it either: ask the directory
        names = _listing(directory)
        if names is not None and os.path.basename(dst) in names:
            return
        absent = absent + 1 if names is not None and name not in names else 0
        if absent >= 2 or _clock() > deadline:
            raise failure
        time.sleep(0.05)


class ServerClock:
    """The file server's clock: ours plus an offset read from the mtime it stamps, renewed every minute.

    On a full filesystem (no inode for the probe) the directory itself is
    stamped instead.  If neither works (a read-only store), ``strict``
    raises :class:`StorageError`; otherwise our own clock has to do.
    """

    def __init__(self, directory: str | os.PathLike[str], *, strict: bool = True) -> None:
        self._directory = os.fspath(directory)
        self._strict = strict
        self._at = float("-inf")
        self._offset = 0.0

    def __call__(self) -> float:
        if time.monotonic() - self._at > 60:
            self._offset = self._measure() - time.time()
            self._at = time.monotonic()
        return time.time() + self._offset

    def _measure(self) -> float:
        try:
            return server_now(self._directory)
        except OSError as exc:
            failure = exc
        if failure.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                os.utime(self._directory)
                return os.stat(self._directory).st_mtime
            except OSError as exc:
                failure = exc
        if self._strict:
            raise StorageError.from_oserror(failure, self._directory) from failure
        return time.time()


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
            removed += discard_litter_entry(entry, now, min_age)
    return removed


def is_litter_name(name: str) -> bool:
    """Whether *name* is a lock's stage or a sweep's trash directory (what :func:`remove_litter` handles)."""
    if name.startswith(TRASH_PREFIX):
        return True
    head, sep, token = name.rpartition(STAGE_INFIX)
    return bool(sep and head and len(token) == 32)


def discard_litter_entry(entry: os.DirEntry[str], now: float, min_age: float) -> int:
    """Remove one abandoned stage (older than *min_age* on the server clock *now*) or trash directory.

    Returns 1 if something was removed.  Used by :func:`remove_litter` and by
    the reaper, which meets these entries while it streams a directory.
    """
    if not entry.is_dir(follow_symlinks=False) or not is_litter_name(entry.name):
        return 0
    if entry.name.startswith(TRASH_PREFIX):
        _remove_tree_quietly(entry.path)  # a crashed sweep's leftovers
        return 1
    try:
        age = now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0
    if age <= min_age:
        return 0
    # Rename first: a waiter that wakes up and publishes this stage must find
    # it gone (ENOENT) rather than half-emptied.
    trash = os.path.join(os.path.dirname(entry.path), f"{TRASH_PREFIX}{secrets.token_hex(8)}")
    try:
        os.rename(entry.path, trash)
    except OSError:
        return 0  # published or removed meanwhile: not ours to touch
    _remove_tree_quietly(trash)
    return 1
