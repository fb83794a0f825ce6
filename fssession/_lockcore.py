"""The lock protocol: one lock name in one directory, every step a rename by exact name.

NOTES.md ("The lock") tells the protocol and why each step is safe.  Here:

* :func:`acquire` returns a :class:`Hold` (or raises ``LockTimeout``): it
  renames the free marker it guesses, and only when that fails lists the
  directory, judges the holder (:func:`judge`) and takes a stale one over.
* :func:`renew`, :func:`fence`, :func:`release` and :func:`discard` change
  the holder's own marker by its exact name; a holder that was taken over
  gets ``LockLost`` and touches nothing of the new holder's.

Nothing here knows what the lock protects: the *value* a free marker carries
is the caller's (the store keeps the committed generation there).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import _fs
from ._clock import ServerClock
from ._fs import Dir, boot_clock
from ._identity import current_identity, is_dead_here
from ._markers import COMMITTING, FREE, HELD, UNKNOWN, Marker, free_name, owner_name, parse
from .errors import LockLost, LockTimeout, StorageError
from .events import Observer, emit
from .settings import LockSettings

__all__ = ["NO_MARKER", "Hold", "Watcher", "acquire", "discard", "fence", "judge", "release", "renew"]

log = logging.getLogger("fssession.lock")

DRIFT = 0.001  # allowance for clock *rate* differences between hosts (0.1 %)
_MIN_CAP = 0.002
_QUICK_RETRIES = 8
_EMPTY_LISTINGS = 3


class NoMarker(Exception):
    """The lock name has no marker at all: nothing to acquire (the caller knows why)."""


NO_MARKER = NoMarker


class Watcher:
    """When this process first saw each holder's marker name (rule c), kept across acquire calls.

    A web worker's requests each wait less than a lease; remembering the
    first sighting lets a later request free a dead remote holder's lock.
    Marker names carry a random token, so a name is never seen twice for
    two different holds.
    """

    def __init__(self, size: int = 4096) -> None:
        self._seen: dict[str, float] = {}
        self._size = size
        self._guard = threading.Lock()

    def first_seen(self, name: str, now: float) -> float:
        """The first time *name* was seen (now, if never before)."""
        with self._guard:
            if len(self._seen) >= self._size:
                self._seen.clear()
            return self._seen.setdefault(name, now)


WATCHER = Watcher()


@dataclass(slots=True)
class Hold:
    """One acquisition of a lock: our marker's current name and what it carries."""

    directory: Dir
    prefix: str
    settings: LockSettings
    marker: str
    token: str
    value: str
    certain: bool
    base: float  # boot clock before the rename that last stamped our lease
    kind: str = HELD
    beat: int = 0
    lost: bool = False
    taken_over: bool = False  # acquired by replacing a stale holder
    waited: bool = False  # others held it when we asked: waiters may be queued behind us
    observer: Observer | None = None

    @property
    def remaining(self) -> float:
        """Seconds this hold may still be trusted without renewal (contenders cannot act before)."""
        if self.lost:
            return 0.0
        left = self.base + self.settings.lease * (1 - DRIFT) - self.settings.fs_slack - boot_clock()
        return max(0.0, left)

    def _name(self, kind: str, beat: int, value: str) -> str:
        return owner_name(self.prefix, kind, self.token, beat, self.settings.lease, current_identity(), value)


@dataclass(slots=True)
class _Attempt:
    """What one acquire() call knows while it waits."""

    directory: Dir
    prefix: str
    settings: LockSettings
    clock: ServerClock | None
    dir_stamps: bool
    on_empty: Callable[[], Dir | None] | None = None
    observer: Observer | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    mine: dict[str, tuple[float, str, bool]] = field(default_factory=dict)  # our names -> (base, value, certain)
    holder: Marker | None = None
    listed_at: float = float("-inf")
    last_free: str | None = None
    empty: int = 0  # consecutive listings that showed no marker


def acquire(
    directory: Dir,
    prefix: str,
    settings: LockSettings,
    *,
    guesses: Sequence[str],
    successors: Callable[[str], Sequence[str]] = lambda v: (v,),
    hint: Callable[[], Sequence[str]] | None = None,
    timeout: float | None = None,
    blocking: bool = True,
    poll_interval: float | None = None,
    cancel_check: Callable[[], bool] | None = None,
    clock: ServerClock | None = None,
    dir_stamps: bool = False,
    on_empty: Callable[[], Dir | None] | None = None,
    label: str = "",
    observer: Observer | None = None,
) -> Hold:
    """Acquire the lock *prefix* in *directory*; ``LockTimeout`` naming the holder when it stays held.

    *guesses* are the free values to try first (one rename each);
    *successors* gives the free values a holder with a given value may
    publish (polled between listings); *hint*, if given, says cheaply which
    free values are likely now (the store reads the session's header: the
    committed generation), so that a waiter polls the right names after
    every handover, not only after a listing.  ``NoMarker`` when the name has no
    marker at all.  *dir_stamps*: the directory is the lock's own, so its
    mtime dates the last change of the marker (rule b without ctime).
    *on_empty* is called when a listing shows no marker; when it (re)creates
    the lock it returns the new directory, which the attempt uses from then on
    (the hold's ``directory``).
    """
    pacer = _Pacer(settings, settings.timeout if timeout is None else timeout, poll_interval, blocking, cancel_check)
    state = _Attempt(directory, prefix, settings, clock, dir_stamps, on_empty, observer)
    _yield_to_waiters(state)
    candidates = list(guesses)
    quick = 0
    holder_text: str | None = None
    while True:
        tried = boot_clock()
        hold = _try(state, candidates)
        if hold is None and (quick or tried - state.listed_at >= _inspect_every(settings)):
            outcome = _inspect(state)
            if isinstance(outcome, Hold):
                hold = outcome
            elif outcome is None and quick < _QUICK_RETRIES:
                # It changed under our eyes (freed, or taken by someone
                # faster): look again at once rather than back off.
                quick += 1
                candidates = []
                continue
            else:
                holder_text = outcome or holder_text
        if hold is not None:
            return _acquired(state, hold, pacer.start)
        quick = 0
        candidates = _next_candidates(state, successors, hint)
        if pacer.give_up():
            return _give_up(state, pacer, label or directory.path(prefix), holder_text)
        pacer.sleep(tried)


class _Pacer:
    """When an acquire() call waits, how long, and when it gives up."""

    def __init__(
        self,
        settings: LockSettings,
        timeout: float,
        poll_interval: float | None,
        blocking: bool,
        cancel_check: Callable[[], bool] | None,
    ) -> None:
        self.settings = settings
        self.start = boot_clock()
        self.deadline = None if timeout < 0 or timeout == float("inf") else self.start + timeout
        self.delay = settings.poll_interval if poll_interval is None else poll_interval
        self.blocking = blocking
        self.cancel_check = cancel_check

    def give_up(self) -> bool:
        """Whether to stop trying now (not blocking, past the deadline, or cancelled)."""
        if not self.blocking or (self.deadline is not None and boot_clock() >= self.deadline):
            return True
        return self.cancel_check is not None and self.cancel_check()

    def sleep(self, tried: float) -> None:
        """Back off before the next try (the try began at *tried*).

        Exponential backoff with jitter, capped in proportion to what a try
        costs here: a waiter sleeps 10 to 20 times as long as it spends
        trying (bounded load on a file server), yet on a fast disk it does
        not sleep 50 ms while others take the lock thousands of times.
        """
        now = boot_clock()
        cap = min(self.settings.max_poll_interval, max(_MIN_CAP, 20 * (now - tried)))
        pause = random.uniform(self.delay / 2, self.delay)
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - now))
        time.sleep(pause)
        self.delay = min(self.delay * 2, cap)


def _give_up(state: _Attempt, pacer: _Pacer, label: str, holder_text: str | None) -> Hold:
    """The last look before a timeout: a rename of ours that landed after all wins; otherwise LockTimeout."""
    won = _landed_after_all(state)
    if won is not None:
        return _acquired(state, won, pacer.start)
    waited = boot_clock() - pacer.start
    emit(state.observer, "lock_timeout", waited, holder_text or "")
    raise LockTimeout(label, holder_text, waited)


def _acquired(state: _Attempt, hold: Hold, start: float) -> Hold:
    hold.observer = state.observer
    hold.waited = state.listed_at > float("-inf")
    if state.observer is not None:
        waited = boot_clock() - start
        emit(state.observer, "lock_acquired", waited, "waited" if state.listed_at > float("-inf") else "at once")
    return hold


def _inspect_every(settings: LockSettings) -> float:
    return min(0.25, settings.lease / 8)


def _next_candidates(
    state: _Attempt, successors: Callable[[str], Sequence[str]], hint: Callable[[], Sequence[str]] | None
) -> list[str]:
    found: list[str] = list(hint()) if hint is not None else []
    if state.last_free is not None:
        found.append(state.last_free)
    holder = state.holder
    if holder is not None and holder.value != UNKNOWN:
        found.extend(v for v in successors(holder.value) if v not in found)
    return found


def _try(state: _Attempt, values: Sequence[str]) -> Hold | None:
    """Rename the free marker of each guessed value to our own name; the first that succeeds wins."""
    for value in values:
        hold = _rename_to_ours(state, free_name(state.prefix, value), value, certain=value != UNKNOWN)
        if hold is not None:
            return hold
    return None


def _rename_to_ours(state: _Attempt, source: str, value: str, *, certain: bool) -> Hold | None:
    who = current_identity()
    ours = owner_name(state.prefix, HELD, state.token, 0, state.settings.lease, who, value if certain else UNKNOWN)
    base = boot_clock()
    state.mine[ours] = (base, value if certain else UNKNOWN, certain)
    try:
        state.directory.rename(source, ours)
    except OSError as exc:
        if exc.errno in _fs.FATAL:
            raise StorageError.from_oserror(exc, state.directory.path(source)) from exc
        if exc.errno in _fs.AMBIGUOUS and state.directory.exists(ours):
            return _hold(state, ours)  # it happened; the reply was lost
        return None
    return _hold(state, ours)


def _hold(state: _Attempt, ours: str) -> Hold:
    base, value, certain = state.mine[ours]
    return Hold(state.directory, state.prefix, state.settings, ours, state.token, value, certain, base)


def _inspect(state: _Attempt) -> Hold | str | None:
    """List the lock's markers and act on them.

    Returns a Hold when we got it, a description of the holder when it is
    held, or None when it changed under our eyes (look again at once).
    """
    state.listed_at = boot_clock()
    directory = state.directory
    try:
        with directory.reopen() as fresh:
            names = _listing(fresh)
            # Read after the listing: never older than the change behind any name listed.
            dir_mtime_ns = fresh.stat().st_mtime_ns if state.dir_stamps else 0
    except OSError as exc:
        raise StorageError.from_oserror(exc, directory.label) from exc
    markers = [m for m in (parse(state.prefix, n) for n in names) if m is not None]
    for marker in markers:
        if marker.name in state.mine:
            return _hold(state, marker.name)
    # A listing is not atomic: an entry renamed while the directory is read
    # may be missed, or seen under both names.  Only a lock that looks empty
    # (or crowded) again and again is taken for what it looks like.
    if not markers:
        if state.on_empty is not None:
            fresh_dir = state.on_empty()
            if fresh_dir is not None:
                state.directory.close()
                state.directory = fresh_dir
                return None
        state.empty += 1
        if state.empty >= _EMPTY_LISTINGS:
            raise NoMarker(directory.path(state.prefix))
        state.holder = None
        return "nobody (the marker was being renamed)"
    state.empty = 0
    if len(markers) > 1:
        log.debug("lock %s shows %d markers: %s", directory.path(state.prefix), len(markers), names)
        state.holder = None
        return markers[0].describe()
    marker = markers[0]
    if marker.kind == FREE:
        state.last_free, state.holder = marker.value, None
        return _try(state, [marker.value])
    state.holder, state.last_free = marker, None
    verdict = judge(state, marker, dir_mtime_ns)
    if verdict is not None:
        return verdict
    return _take_over(state, marker)


def _listing(fresh: Dir) -> list[str]:
    return os.listdir(fresh.fd)


def judge(state: _Attempt, marker: Marker, dir_mtime_ns: int) -> str | None:
    """None when the holder is stale (take it over); otherwise a description for a timeout message."""
    settings = state.settings
    recorded = marker.owner.lease if marker.owner is not None else settings.lease
    lease = min(recorded, settings.lease_cap) * (1 + DRIFT)
    now = boot_clock()
    watched = now - WATCHER.first_seen(marker.name, now)
    if marker.owner is not None and is_dead_here(marker.owner.identity):
        return None
    age = _server_age(state, marker, dir_mtime_ns) if settings.server_clock else None
    if watched > lease or (age is not None and age > lease):
        return None
    held_for = f"{age:.1f} s" if age is not None else f"at least {watched:.1f} s"
    capped = f", lease capped at {settings.lease_cap:g} s" if recorded > settings.lease_cap else ""
    return f"{marker.describe()}, held for {held_for} (lease {recorded:g} s{capped})"


def _server_age(state: _Attempt, marker: Marker, dir_mtime_ns: int) -> float | None:
    """Seconds since the server stamped the marker's last change (never overestimated), or None."""
    if state.clock is None:
        return None
    stamp_ns = 0
    if state.dir_stamps and dir_mtime_ns:
        stamp_ns = dir_mtime_ns
    else:
        try:
            st = state.directory.lstat(marker.name)
        except OSError:
            return None
        # Only where renames demonstrably re-stamp the symlink (not sshfs:
        # SFTP v3 carries no ctime, so ctime equals the creation mtime).
        if st.st_ctime_ns > st.st_mtime_ns:
            stamp_ns = st.st_ctime_ns
    if not stamp_ns:
        return None
    try:
        now = state.clock()
    except OSError:
        return None
    if not state.clock.trustworthy:
        return None  # our own clock, not the server's: never compare it with a server stamp
    coarse = stamp_ns % 1_000_000_000 == 0 or state.clock.granularity >= 1.0
    return now - stamp_ns / 1e9 - (1.0 if coarse else 0.0)


def _take_over(state: _Attempt, stale: Marker) -> Hold | None:
    """Replace the stale holder by renaming its marker, by its exact name, to ours."""
    certain = stale.kind == HELD and stale.owner is not None and stale.value != UNKNOWN
    hold = _rename_to_ours(state, stale.name, stale.value, certain=certain)
    if hold is not None:
        hold.taken_over = True
        emit(state.observer, "lock_takeover", 0.0, stale.describe())
        log.info("took over lock %s from stale holder %s", state.directory.path(state.prefix), stale.describe())
    return hold


def _landed_after_all(state: _Attempt) -> Hold | None:
    """Before giving up: did a rename of ours land although it reported failure (a lost reply)?"""
    try:
        names = state.directory.listdir()
    except OSError:
        return None
    for name in names:
        if name in state.mine:
            return _hold(state, name)
    return None


# ------------------------------------------------------------- the holder
def _patience(hold: Hold) -> float:
    return 2 * hold.settings.fs_slack + 2.0


def _move(hold: Hold, target: str, what: str) -> None:
    """Rename our marker to *target* by its exact name; LockLost if it is gone (taken over)."""
    if hold.lost:
        raise LockLost(f"lock {hold.directory.path(hold.prefix)!r} was already lost before {what}")
    try:
        _fs.rename_exact(hold.directory, hold.marker, target, _patience(hold))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESTALE):
            hold.lost = True
            emit(hold.observer, "lock_lost", 0.0, what)
            raise LockLost(f"lock {hold.directory.path(hold.prefix)!r} was taken over before {what}") from exc
        raise StorageError.from_oserror(exc, hold.directory.path(hold.marker)) from exc


def renew(hold: Hold) -> None:
    """Renew the lease (a new beat in our marker's name)."""
    target = hold._name(hold.kind, hold.beat + 1, hold.value)
    base = boot_clock()
    _move(hold, target, "renewal")
    hold.marker, hold.beat, hold.base = target, hold.beat + 1, base


def fence(hold: Hold, value: str) -> None:
    """Renew, declaring the *value* about to be committed; ``LockLost`` (nothing to commit) if taken over."""
    target = hold._name(COMMITTING, hold.beat + 1, value)
    base = boot_clock()
    _move(hold, target, "the commit")
    hold.marker, hold.beat, hold.base, hold.kind, hold.value = target, hold.beat + 1, base, COMMITTING, value


def release(hold: Hold, value: str) -> None:
    """Free the lock, handing *value* to the next holder."""
    _move(hold, free_name(hold.prefix, value), "release")
    hold.lost = True  # nothing more may be done with this hold
    if hold.waited:
        _CONTENDED[(hold.directory.label, hold.prefix)] = boot_clock()


# Locks this process released lately after having had to wait for them: there
# are probably waiters, polling with backoff, and a process that re-takes the
# lock the instant it let go would beat them every time (that is how waiters
# starve).  Its next acquire of the same lock steps back for a moment first.
_CONTENDED: dict[tuple[str, str], float] = {}
_YIELD = 0.001  # measured: 4 ms halved P=8 throughput and raised its p99 30x for a 3x lower max wait


def _yield_to_waiters(state: _Attempt) -> None:
    released = _CONTENDED.pop((state.directory.label, state.prefix), None)
    if released is not None and boot_clock() - released < 0.1:
        time.sleep(random.uniform(_YIELD / 2, _YIELD))
    if len(_CONTENDED) > 1024:
        _CONTENDED.clear()


def discard(hold: Hold) -> None:
    """Remove our marker: the lock ceases to exist with what it protected."""
    if hold.lost:
        raise LockLost(f"lock {hold.directory.path(hold.prefix)!r} was already lost")
    try:
        hold.directory.unlink(hold.marker)
    except OSError as exc:
        hold.lost = True
        if exc.errno in (errno.ENOENT, errno.ESTALE):
            emit(hold.observer, "lock_lost", 0.0, "removal")
            raise LockLost(f"lock {hold.directory.path(hold.prefix)!r} was taken over before its removal") from exc
        raise StorageError.from_oserror(exc, hold.directory.path(hold.marker)) from exc
    hold.lost = True
