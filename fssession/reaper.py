"""The reaper: a cron-safe purge of expired sessions, stale locks and what crashes leave behind.

It needs neither the secret key nor the application's settings: each session
file's header says when it expires (idle timeout, absolute end) and its mtime
says when it was last used.  It streams the store one fan-out directory at a
time with ``os.scandir`` (constant memory whatever the store's size).

Why it never deletes a session in use:

* A session is removed only if it is expired by more than ``grace`` seconds
  on the file server's clock.  A ``load`` or ``touch`` refreshes the mtime
  only while the session is live, so a session used during the run has an
  mtime younger than its idle timeout, and ``grace`` covers the client
  caches (a change another host made is invisible here for at most
  ``fs_slack``) and the error in our estimate of the server's clock.
* A session whose lock exists is taken through that lock without waiting
  (a live holder: in use, skipped).  The file is then claimed by an atomic
  rename to ``<name>.reap`` and the claimed file judged again (touched or
  replaced since the first look: put back with ``link()``); only then is it
  removed.  An ``edit`` that starts after the claim finds no session, and a
  ``delete`` removes the claim too.  NOTES.md ("The reaper") says why an
  unlocked session needs no lock for this.
* Stale locks are cleared by acquiring them through :class:`MkdirLock`,
  whose own rules decide staleness (a dead holder on this host, or a lease
  run out on the server's clock); a live holder is never disturbed.
* Temp files are removed only when older than ``temp_age`` (a writer holds
  one for the length of a write), the fan-out directories are never removed
  (there are at most 256, and removing one could race a writer creating its
  first file there), and anything that is not ours is reported, never
  touched.

Several reapers (cron on every node) coordinate through a store-wide
:class:`MkdirLock`: a reaper that finds it held exits at once, quietly.  If
they overlap anyway (a reaper frozen past its lease), each removal is still
settled by the claim's atomic rename, so the result is the same.
``max_seconds`` stops a run cleanly after the current directory and leaves a
cursor so the next run carries on where this one stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import multiprocessing as mp
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from .errors import LockLost, LockTimeout, SessionError, StorageError, TamperedSession
from .fileformat import Header, read_file_header
from .layout import (
    BUCKETS,
    CURSOR_FILE,
    GEN_CLAIM_INFIX,
    GEN_SUFFIX,
    LOCK_SUFFIX,
    NAME_LENGTH,
    NAMING_KEY_FILE,
    REAP_SUFFIX,
    REAPER_LOCK,
    TMP_INFIX,
    is_session_name,
)
from .lock import MkdirLock, ServerClock, discard_litter_entry, is_litter_name

__all__ = ["ReapStats", "add_arguments", "reap"]

_MAX_LISTED = 200  # problems kept by name in the stats; the rest are only counted


@dataclass
class ReapStats:
    """What one reaper run found and did (``dry_run``: what it would have removed)."""

    path: str
    dry_run: bool = False
    busy: bool = False  # another reaper held the store: this one did nothing
    complete: bool = False  # every directory was swept (False: stopped by max_seconds, busy or taken over)
    taken_over: bool = False  # frozen past the coordination lease: another reaper took over, this one stopped
    directories: int = 0
    sessions_seen: int = 0
    expired: int = 0  # expired sessions found
    removed: int = 0  # of those, removed
    in_use: int = 0  # expired at first look but locked, touched or replaced: left alone
    stale_locks: int = 0  # lock directories of dead or frozen holders cleared
    temp_files: int = 0  # orphaned temp files removed
    beacons: int = 0  # orphaned generation beacons removed or given back
    litter: int = 0  # abandoned lock stages and trash removed
    garbage: int = 0  # files that are not ours or not readable as sessions: reported, left alone
    errors: int = 0
    problems: list[str] = field(default_factory=list)  # garbage and errors, by path (first few hundred)
    elapsed: float = 0.0

    def note(self, kind: str, path: str, why: object) -> None:
        """Record a problem: "error" and "garbage" are counted, "notice" only listed (if there is room)."""
        if kind == "error":
            self.errors += 1
        elif kind == "garbage":
            self.garbage += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(f"{kind}: {path}: {why}")

    def summary(self) -> str:
        """One line for a log or a terminal."""
        if self.busy:
            return f"{self.path}: another reaper is running; nothing done"
        verb = "would remove" if self.dry_run else "removed"
        state = "complete" if self.complete else f"stopped after {self.directories} directories (resumes next run)"
        if self.taken_over:
            state = f"stopped after {self.directories} directories: frozen past its lease, another reaper took over"
        return (
            f"{self.path}: {verb} {self.removed} of {self.expired} expired sessions "
            f"({self.sessions_seen} seen, {self.in_use} in use), {self.stale_locks} stale locks, "
            f"{self.temp_files} temp files, {self.beacons} beacons, {self.litter} lock litter; "
            f"{self.garbage} foreign or unreadable files left alone, {self.errors} errors; "
            f"{state}, {self.elapsed:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready data."""
        return asdict(self)


def reap(
    path: str | os.PathLike[str],
    *,
    grace: float = 60.0,
    dry_run: bool = False,
    max_seconds: float | None = None,
    temp_age: float = 3600.0,
    lease: float = 30.0,
    fs_slack: float = 1.0,
    now: Callable[[], float] | None = None,
    progress: Callable[[ReapStats, int], None] | None = None,
    coordinate: bool = True,
    jobs: int = 1,
) -> ReapStats:
    """Purge expired sessions and crash leftovers from the store at *path*; see the module docstring.

    Raises :class:`StorageError` if *path* is not a usable store (missing,
    not a directory, unreadable, or without fssession's naming key); a
    problem with a single file is counted in the stats instead.
    ``coordinate=False`` skips the store-wide reaper lock (tests use it to
    prove that overlapping reapers stay correct).  ``jobs`` > 1 sweeps with
    that many forked processes (the directories are independent).
    """
    root = os.fspath(path)
    if grace < 2 * fs_slack:
        raise ValueError("grace must be at least twice fs_slack (client caches hide recent touches)")
    if temp_age < lease:
        raise ValueError("temp_age must be at least the lease (an edit's temp file lives while it holds the lock)")
    _check_store(root)
    stats = ReapStats(path=root, dry_run=dry_run)
    started = time.monotonic()
    deadline = None if max_seconds is None else started + max_seconds
    clock = now if now is not None else ServerClock(root)
    coordinator = MkdirLock(os.path.join(root, REAPER_LOCK), lease=max(60.0, 4 * fs_slack), fs_slack=fs_slack)
    try:
        if coordinate:
            coordinator.acquire(blocking=False)
    except LockTimeout:
        stats.busy = True
        return stats
    except StorageError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full store is when the reaper is needed most, and taking the
        # coordination lock needs an inode.  Overlapping reapers are safe
        # (each removal is settled on its own), only less efficient.
        coordinate = False
        stats.note("notice", root, "store full: running without coordinating with other reapers")
    settings: dict[str, Any] = {
        "grace": grace,
        "dry_run": dry_run,
        "temp_age": temp_age,
        "lease": lease,
        "fs_slack": fs_slack,
    }
    try:
        first = _read_cursor(root)
        order = [os.path.join(root, b) for b in BUCKETS[first:] + BUCKETS[:first]]

        def keep_lock() -> bool:
            """Renew the store-wide lock; False if another reaper took it over (it carries on)."""
            if coordinate and coordinator.lease_remaining < coordinator.lease / 2:
                try:
                    coordinator.refresh()
                except LockLost:
                    stats.taken_over = True
                    return False
            return True

        if jobs <= 1:
            done = _sweep_serial(root, stats, clock, settings, order, deadline, keep_lock, progress)
        else:
            done = _sweep_parallel(root, stats, clock, settings, order, deadline, keep_lock, jobs)
        if stats.taken_over:
            pass  # the reaper that took over owns the cursor now
        elif done == len(order):
            _Sweep(root, stats, clock, **settings).root_entries()
            stats.complete = True
            if not dry_run and first:
                _write_cursor(root, 0)
        elif not dry_run:
            _write_cursor(root, (first + done) % 256)
    finally:
        stats.elapsed = time.monotonic() - started
        with contextlib.suppress(LockLost):  # taken over while we were frozen: the other reaper rightly holds it
            if coordinate:
                coordinator.release()
    return stats


def _sweep_serial(
    root: str,
    stats: ReapStats,
    clock: Callable[[], float],
    settings: dict[str, Any],
    order: list[str],
    deadline: float | None,
    keep_lock: Callable[[], bool],
    progress: Callable[[ReapStats, int], None] | None,
) -> int:
    """Sweep the directories in *order* in this process; returns how many were done."""
    sweep = _Sweep(root, stats, clock, **settings)
    for done, bucket in enumerate(order):
        if deadline is not None and done and time.monotonic() >= deadline:
            return done
        if not keep_lock():
            return done
        sweep.directory(bucket)
        stats.directories += 1
        if progress is not None:
            progress(stats, done + 1)
    return len(order)


def _sweep_parallel(
    root: str,
    stats: ReapStats,
    clock: Callable[[], float],
    settings: dict[str, Any],
    order: list[str],
    deadline: float | None,
    keep_lock: Callable[[], bool],
    jobs: int,
) -> int:
    """Sweep with *jobs* forked workers that take directories in *order* from a shared counter.

    Directories are independent (a session, its lock, beacon and temp files
    share one), so workers never meet.  Every directory handed out is
    finished, so the counter is also where the next run resumes.
    """
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    pipes, workers = [], []
    for _ in range(jobs):
        receive, send = ctx.Pipe(duplex=False)
        worker = ctx.Process(target=_worker, args=(root, clock, settings, order, deadline, counter, send), daemon=True)
        worker.start()
        send.close()
        pipes.append(receive)
        workers.append(worker)
    try:
        for receive, worker in zip(pipes, workers, strict=True):
            while not receive.poll(1.0):
                if not keep_lock():
                    with counter.get_lock():
                        counter.value = len(order)  # hand out nothing more
                if not worker.is_alive() and not receive.poll(0):
                    raise StorageError(errno.EIO, f"reaper worker died (exit code {worker.exitcode})", root)
            part = receive.recv()
            for name in _COUNTS:
                setattr(stats, name, getattr(stats, name) + part[name])
            stats.problems.extend(part["problems"][: max(0, _MAX_LISTED - len(stats.problems))])
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    return min(int(counter.value), len(order))


_COUNTS = (
    "directories", "sessions_seen", "expired", "removed", "in_use", "stale_locks",
    "temp_files", "beacons", "litter", "garbage", "errors",
)  # fmt: skip


def _worker(
    root: str,
    clock: Callable[[], float],
    settings: dict[str, Any],
    order: list[str],
    deadline: float | None,
    counter: Any,
    send: Any,
) -> None:  # pragma: no cover - runs in a forked child
    stats = ReapStats(path=root)
    sweep = _Sweep(root, stats, clock, **settings)
    try:
        while deadline is None or time.monotonic() < deadline or not stats.directories:
            with counter.get_lock():
                index = counter.value
                if index >= len(order):
                    break
                counter.value = index + 1
            sweep.directory(order[index])
            stats.directories += 1
    except BaseException as exc:  # reported to the parent, which counts it; never lost silently
        stats.note("error", root, f"worker failed: {exc!r}")
    send.send(stats.as_dict())
    send.close()


def _check_store(root: str) -> None:
    try:
        st = os.stat(root)
    except OSError as exc:
        raise StorageError.from_oserror(exc, root) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(errno.ENOTDIR, "not a directory", root)
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise StorageError(errno.EACCES, "the reaper needs to list and change this directory", root)
    if not os.path.exists(os.path.join(root, NAMING_KEY_FILE)):
        raise StorageError(errno.ENOENT, f"not an fssession store (no {NAMING_KEY_FILE})", root)


def _read_cursor(root: str) -> int:
    try:
        with open(os.path.join(root, CURSOR_FILE), encoding="ascii") as f:
            value = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return 0
    return value if 0 <= value < 256 else 0


def _write_cursor(root: str, bucket: int) -> None:
    path = os.path.join(root, CURSOR_FILE)
    tmp = f"{path}{TMP_INFIX}{os.getpid()}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{bucket:02x}\n")
        os.replace(tmp, path)
    except OSError:
        pass  # without a cursor the next run starts from the top: slower, never wrong


class _Sweep:
    """One pass over the store's entries; every decision about a single entry lives here."""

    def __init__(
        self,
        root: str,
        stats: ReapStats,
        now: Callable[[], float],
        *,
        grace: float,
        dry_run: bool,
        temp_age: float,
        lease: float,
        fs_slack: float,
    ) -> None:
        self.root = root
        self.stats = stats
        self.now = now
        self.grace = grace
        self.dry_run = dry_run
        self.temp_age = temp_age
        self.lease = lease
        self.fs_slack = fs_slack
        self.lock_mode = 0o700  # set from each directory's own mode as it is swept
        # Names removed in the current directory, so that their beacons,
        # listed later, cost nothing; bounded, so memory stays flat.
        self.removed_here: set[str] = set()

    def _lock(self, session_path: str) -> MkdirLock:
        return MkdirLock(session_path + LOCK_SUFFIX, lease=self.lease, fs_slack=self.fs_slack, mode=self.lock_mode)

    def directory(self, bucket: str) -> None:
        try:
            entries = os.scandir(bucket)
        except FileNotFoundError:
            return  # no session ever landed here
        except OSError as exc:
            self.stats.note("error", bucket, exc)
            return
        now = self.now()
        self.removed_here.clear()
        try:
            # Locks get the mode the store gave its directories, so that web
            # nodes running as other users of the group can judge a lock a
            # reaper left when it died (a 0700 lock would stay theirs forever).
            self.lock_mode = os.stat(bucket).st_mode & 0o7777
        except OSError:
            self.lock_mode = 0o700
        try:
            with entries:
                for entry in entries:
                    try:
                        self.entry(entry, now)
                    except FileNotFoundError:
                        continue  # gone since it was listed (e.g. a beacon removed with its session)
                    except (OSError, SessionError) as exc:
                        self.stats.note("error", entry.path, exc)
        except OSError as exc:  # the listing itself failed midway (ESTALE, EIO): next run
            self.stats.note("error", bucket, exc)

    def entry(self, entry: os.DirEntry[str], now: float) -> None:
        name = entry.name
        if is_session_name(name):
            self.session(entry, now)
        elif name.endswith(LOCK_SUFFIX) and len(name) == NAME_LENGTH + len(LOCK_SUFFIX):
            self.lock_dir(entry, now)
        elif TMP_INFIX in name and len(name.partition(TMP_INFIX)[0]) == NAME_LENGTH:
            self.temp_file(entry, now)
        elif name.endswith(GEN_SUFFIX) and len(name) == NAME_LENGTH + len(GEN_SUFFIX):
            self.beacon(entry, now, claim=False)
        elif GEN_CLAIM_INFIX in name and len(name.partition(GEN_CLAIM_INFIX)[0]) == NAME_LENGTH:
            self.beacon(entry, now, claim=True)
        elif name.endswith(REAP_SUFFIX) and len(name) == NAME_LENGTH + len(REAP_SUFFIX):
            self.leftover_claim(entry, now)
        elif is_litter_name(name):
            if not self.dry_run:
                self.stats.litter += discard_litter_entry(entry, now, max(self.lease, 300.0))
        else:
            self.stats.note("garbage", entry.path, "not a file fssession writes")

    # -------------------------------------------------------------- sessions
    def session(self, entry: os.DirEntry[str], now: float) -> None:
        self.stats.sessions_seen += 1
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            self.stats.note("garbage", entry.path, "a session name that is not a regular file")
            return
        header = self._header(entry.path)
        if header is None or not header.expired(now, st.st_mtime, self.grace):
            return
        self.stats.expired += 1
        if self.dry_run:
            self.stats.removed += 1
            return
        self._judged(entry.path)
        if not _lexists(entry.path + LOCK_SUFFIX):
            self._remove(entry.path, st, header)
            return
        # Locked: an edit, delete or rotate is under way, or a holder died.
        # The lock's own rules tell which, without waiting.
        lock = self._lock(entry.path)
        try:
            lock.acquire(blocking=False)
        except LockTimeout:
            self.stats.in_use += 1
            return
        try:
            self._remove(entry.path, st, header)
        finally:
            lock.release()

    def _judged(self, path: str) -> None:
        """Called between judging a session expired and claiming it (a seam for tests of that window)."""

    def _header(self, path: str) -> Header | None:
        """The header, or None (counted) if the file cannot be read as a session."""
        try:
            return read_file_header(path)
        except FileNotFoundError:
            return None  # removed since it was listed
        except TamperedSession as exc:
            self.stats.note("garbage", path, exc.reason)
            return None

    def _remove(self, path: str, seen: os.stat_result, header: Header) -> None:
        """Claim the session file by renaming it aside, judge what was claimed again, then remove or restore it.

        The rename is atomic: of several reapers one gets the file; a touch
        or load that comes later finds no session (it was expired); and the
        file judged now is exactly the one that will be removed, so a touch or
        an edit's commit that landed since the first look is seen here.
        """
        aside = path + REAP_SUFFIX  # one name per session: delete() knows it and removes it too
        for _ in range(2):
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return  # deleted, rotated or reaped meanwhile
            if not self._settle(aside, path, seen, header):
                return
            # The claim was a second link to this very file (a restore that
            # was interrupted), so the rename did nothing; that link is gone
            # now: claim again.

    def _settle(self, aside: str, path: str, seen: os.stat_result | None, header: Header | None) -> bool:
        """Remove a claimed file if it is expired; otherwise put it back (unless a newer version took its place).

        True when the claim turned out to be a second link of the session
        file (left by an interrupted restore): that link is removed and the
        session, still under its name, must be claimed again.
        """
        try:
            st = os.lstat(aside)
        except FileNotFoundError:
            return False  # a delete() (logout) removed the claim, or another reaper settled it
        if st.st_nlink > 1:
            os.unlink(aside)  # the session is back under its name, or about to be judged there
            return True
        if seen is None or (st.st_ino, st.st_dev) != (seen.st_ino, seen.st_dev):
            header = self._header(aside)  # another version than the one judged: judge it anew
        if header is not None and header.expired(self.now(), st.st_mtime, self.grace):
            try:
                os.unlink(aside)
            except FileNotFoundError:
                return False  # another reaper (or a logout) settled it first: counted there
            self.stats.removed += 1
            # No new version can have taken the name meanwhile: only an edit
            # could write one, and an edit refuses a session expired by more
            # than the grace period.
            _unlink_if_there(path + GEN_SUFFIX)
            if len(self.removed_here) < 65536:
                self.removed_here.add(os.path.basename(path))
            return False
        self._restore(aside, path)
        self.stats.in_use += 1
        return False

    def _restore(self, aside: str, path: str) -> None:
        """Put back a claimed session that turned out to be in use.

        link() fails if a newer version took the name meanwhile (then ours is
        obsolete); where hard links are not supported, a rename back is done
        only if the name is still free.
        """
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            return  # a delete() removed the claim meanwhile: the logout stands
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if not _lexists(path):
                os.rename(aside, path)
                return
        _unlink_if_there(aside)

    # ----------------------------------------------------------- leftovers
    def lock_dir(self, entry: os.DirEntry[str], now: float) -> None:
        """A lock directory: clear it if its holder is dead or its lease ran out (the lock's own rules)."""
        if not entry.is_dir(follow_symlinks=False):  # the listing's type: no extra call
            self.stats.note("garbage", entry.path, "a lock name that is not a directory")
            return
        if self.dry_run:
            return
        # Locks exist only while held, so there are few; trying each one lets
        # the lock's own rules judge it (a dead holder on this host is cleared
        # at once, a live one makes this fail without waiting).
        lock = MkdirLock(entry.path, lease=self.lease, fs_slack=self.fs_slack, mode=self.lock_mode)
        try:
            lock.acquire(blocking=False)
        except LockTimeout:
            return  # a live holder: leave it
        lock.release()
        self.stats.stale_locks += 1

    def temp_file(self, entry: os.DirEntry[str], now: float) -> None:
        st = entry.stat(follow_symlinks=False)
        if now - st.st_mtime > self.temp_age and not self.dry_run:
            _unlink_if_there(entry.path)
            self.stats.temp_files += 1

    def beacon(self, entry: os.DirEntry[str], now: float, *, claim: bool) -> None:
        """A generation beacon without its session, or a claim an edit left when it crashed.

        A dead editor's claim is removed, never given back as the beacon: it
        may predate a commit the editor made just before it died, and a
        missing beacon makes the next edit wait out client caches instead,
        which is safe.  Ages are judged by ctime, which a rename updates (a
        claim keeps the mtime of the commit that created the beacon).
        """
        if not claim and entry.name[:NAME_LENGTH] in self.removed_here:
            return  # removed with its session a moment ago
        session = os.path.join(os.path.dirname(entry.path), entry.name[:NAME_LENGTH])
        if not claim and _lexists(session):
            return  # the normal state of a session
        st = entry.stat(follow_symlinks=False)
        if now - max(st.st_mtime, st.st_ctime) <= self.lease or self.dry_run:
            return  # a live edit's claim, or a beacon whose session is being created or deleted
        lock = self._lock(session)
        try:
            lock.acquire(blocking=False)
        except LockTimeout:
            return
        try:
            if claim or not _lexists(session):
                _unlink_if_there(entry.path)
                self.stats.beacons += 1
        finally:
            lock.release()

    def leftover_claim(self, entry: os.DirEntry[str], now: float) -> None:
        """A session a reaper claimed and did not settle (killed, or running right now): settle it."""
        st = entry.stat(follow_symlinks=False)
        if now - st.st_ctime <= 60 or self.dry_run:
            return  # another reaper may be settling it this very moment
        path = os.path.join(os.path.dirname(entry.path), entry.name[: -len(REAP_SUFFIX)])
        self.stats.sessions_seen += 1
        self._settle(entry.path, path, None, None)

    def root_entries(self) -> None:
        """The store's root: litter of the naming key's lock and crashed clock probes."""
        now = self.now()
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    try:
                        self._root_entry(entry, now)
                    except OSError:
                        continue  # clock probes come and go every minute on every node: never an error
        except OSError as exc:
            self.stats.note("error", self.root, exc)

    def _root_entry(self, entry: os.DirEntry[str], now: float) -> None:
        if self.dry_run:
            return
        if entry.name.startswith(".fssession-clock-") and entry.is_dir(follow_symlinks=False):
            if now - entry.stat(follow_symlinks=False).st_mtime > 300:
                _rmdir_if_there(entry.path)
                self.stats.litter += 1
        elif is_litter_name(entry.name):
            self.stats.litter += discard_litter_entry(entry, now, max(self.lease, 300.0))


def _lexists(path: str) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _unlink_if_there(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # another reaper, or the owner, got there first
        os.unlink(path)


def _rmdir_if_there(path: str) -> None:
    with contextlib.suppress(OSError):  # in use again, or already gone: a probe is never worth an error
        os.rmdir(path)


# ---------------------------------------------------------------------- CLI
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession reap`` (wired by :mod:`fssession.cli`)."""
    parser.add_argument("path", metavar="PATH", help="the store's directory")
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="list foreign and unreadable files too")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something failed")
    parser.add_argument(
        "--max-seconds", type=float, metavar="S", help="stop cleanly after about S seconds; the next run resumes"
    )
    parser.add_argument(
        "--grace", type=float, default=60.0, metavar="S", help="remove sessions expired for more than S s (60)"
    )
    parser.add_argument(
        "--temp-age", type=float, default=3600.0, metavar="S", help="remove temp files older than S s (3600)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="sweep with N processes (1; the directories are independent)"
    )
    parser.add_argument("--lease", type=float, default=30.0, help="the store's lock lease in seconds (30)")
    parser.add_argument("--fs-slack", type=float, default=1.0, help="the store's fs_slack in seconds (1)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    progress = _Progress(sys.stderr) if sys.stderr.isatty() and not args.quiet and not args.json else None
    try:
        stats = reap(
            args.path,
            grace=args.grace,
            dry_run=args.dry_run,
            max_seconds=args.max_seconds,
            temp_age=args.temp_age,
            lease=args.lease,
            fs_slack=args.fs_slack,
            progress=progress,
            jobs=args.jobs,
        )
    except (ValueError, SessionError) as exc:
        print(f"fssession reap: {exc}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.clear()
    if args.json:
        print(json.dumps(stats.as_dict(), sort_keys=True))
    elif stats.errors or (not args.quiet and (args.verbose or sys.stdout.isatty())):
        print(stats.summary())  # under cron, success prints nothing (cron mails any output)
    shown = stats.problems if args.verbose else [p for p in stats.problems if p.startswith("error:")]
    for line in shown if not args.json else ():
        print(f"  {line}", file=sys.stderr)
    return 1 if stats.errors else 0


class _Progress:
    """A one-line progress display for a person at a terminal (never under cron)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown_at = 0.0

    def __call__(self, stats: ReapStats, done: int) -> None:
        if time.monotonic() - self.shown_at < 0.2:
            return
        self.shown_at = time.monotonic()
        self.out.write(f"\r  {done}/256 directories, {stats.sessions_seen} sessions, {stats.removed} removed ")
        self.out.flush()

    def clear(self) -> None:
        if self.shown_at:
            self.out.write("\r" + " " * 72 + "\r")
            self.out.flush()
