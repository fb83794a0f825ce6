"""The reaper: a cron-safe purge of expired sessions and of what crashes leave behind.

It needs neither the secret key nor the application's settings: a session's
free lock marker says its idle timeout and absolute expiry, its file's mtime
says when it was last used.  It streams the store one bucket at a time
(memory bounded by the largest bucket) and prints nothing: the CLI
(``fssession reap``) presents the :class:`ReapStats` it returns.

Why it never removes a session in use (NOTES.md, "The reaper"):

* a session is removed only when expired by more than ``grace`` seconds on
  the file server's clock; a load or touch refreshes the mtime only while a
  session is live, and ``grace`` covers client caches and clock estimates;
* the removal happens under the session's own lock, taken by renaming the
  free marker seen in the listing (exact name: it fails if anyone acquired or
  committed since), after which the mtime is read again (a touch since the
  listing keeps the session); a holder is never disturbed unless the lock's
  own rules judge it stale;
* markers without a session, temp files and lock stages are removed only
  when older than ``temp_age``; NFS silly-renamed files and anything foreign
  are counted, never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _lockcore
from ._fs import Dir
from ._markers import FREE, Marker
from ._privileges import run_as_owner
from ._text import printable
from .errors import LockLost, LockTimeout, SessionError, StorageError, TamperedSession
from .events import Observer, emit
from .fileformat import HEADER_SIZE, read_header
from .layout import (
    BUCKETS,
    CURSOR_FILE,
    NAMING_KEY_FILE,
    REAPER_LOCK,
    Kind,
    SessionLock,
    StoreLayout,
    classify,
    classify_root,
    parse_session_value,
)
from .lock import read_owner, remove_stages
from .owners import prune as prune_owners
from .settings import LockSettings, ReapSettings

__all__ = ["ReapStats", "reap"]

_MAX_LISTED = 200
_PROBE_AGE = 300.0


@dataclass
class ReapStats:
    """What one reaper run found and did (``dry_run``: what it would have removed)."""

    path: str
    dry_run: bool = False
    busy: bool = False  # another reaper held the store: this one did nothing
    complete: bool = False  # every bucket was swept
    taken_over: bool = False  # frozen past the coordination lease: another reaper took over
    directories: int = 0
    sessions_seen: int = 0
    expired: int = 0
    removed: int = 0
    in_use: int = 0  # expired at first look but held, touched or changed since: left alone
    stale_locks: int = 0  # dead or frozen holders' locks taken over
    temp_files: int = 0
    orphans: int = 0  # lock markers without a session (crash between steps), removed
    litter: int = 0  # abandoned lock stages and clock probes
    nfs_pending: int = 0  # removed files still open somewhere (.nfs*, .fuse_hidden*), left alone
    owner_entries: int = 0  # owner-index entries whose session was gone, pruned
    garbage: int = 0  # not ours or not readable as a session: reported, left alone
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def note(self, kind: str, path: str, why: object) -> None:
        """Record a problem: "error" and "garbage" are counted, "notice" only listed (if there is room)."""
        if kind == "error":
            self.errors += 1
        elif kind == "garbage":
            self.garbage += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(f"{kind}: {printable(path)}: {printable(str(why))}")

    def merge(self, other: ReapStats) -> None:
        """Add another worker's counts and problems to these."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems.extend(other.problems[: max(0, _MAX_LISTED - len(self.problems))])

    def summary(self) -> str:
        """One line for a log or a terminal."""
        if self.busy and self.errors:
            return f"{printable(self.path)}: nothing done: the reaper's lock is wedged ({self.errors} errors, listed)"
        if self.busy:
            return f"{printable(self.path)}: another reaper is running; nothing done"
        verb = "would remove" if self.dry_run else "removed"
        state = "complete" if self.complete else f"stopped after {self.directories} buckets (resumes next run)"
        if self.taken_over:
            state = f"stopped after {self.directories} buckets: frozen past its lease, another reaper took over"
        return (
            f"{printable(self.path)}: {verb} {self.removed} of {self.expired} expired sessions "
            f"({self.sessions_seen} seen, {self.in_use} in use), {self.stale_locks} stale locks, "
            f"{self.temp_files} temp files, {self.orphans} orphaned markers, {self.litter} lock litter, "
            f"{self.nfs_pending} NFS files still open, {self.owner_entries} owner entries pruned; "
            f"{self.garbage} foreign or unreadable files left alone, "
            f"{self.errors} errors; {state}, {self.elapsed:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready data."""
        return asdict(self)


_COUNTS = (
    "directories", "sessions_seen", "expired", "removed", "in_use", "stale_locks", "temp_files",
    "orphans", "litter", "nfs_pending", "owner_entries", "garbage", "errors",
)  # fmt: skip


def reap(
    path: str | os.PathLike[str],
    settings: ReapSettings | None = None,
    *,
    now: Callable[[], float] | None = None,
    progress: Callable[[ReapStats, int], None] | None = None,
    coordinate: bool = True,
    allow_root: bool = False,
    observer: Observer | None = None,
    lease: float | None = None,
    fs_slack: float | None = None,
    **options: Any,
) -> ReapStats:
    """Purge expired sessions and crash leftovers from the store at *path*; see the module docstring.

    *settings* (or the keywords of :class:`ReapSettings`: ``grace``,
    ``temp_age``, ``jobs``, ``max_seconds``, ``dry_run``, with ``lease`` and
    ``fs_slack`` for the store's lock) say how.  Raises
    :class:`StorageError` if *path* is not a usable store; a problem with a
    single file is counted in the stats instead.  Run as root on a store
    others can write, it works in a child process that switched to the
    store's owner (``allow_root`` to skip that).  *observer* is told
    ``reap_run`` with the counts (:mod:`fssession.events`).  ``coordinate=False``
    skips the store-wide reaper lock (tests prove overlap is safe with it).
    """
    if settings is None:
        lock = LockSettings(lease=lease or 30.0, fs_slack=1.0 if fs_slack is None else fs_slack)
        settings = ReapSettings(lock=lock, **options)
    elif options or lease is not None or fs_slack is not None:
        raise TypeError("give either settings= or keyword options, not both")
    layout = _open_store(path)
    try:
        if allow_root:
            stats = _Reaper(layout, settings, now, progress, coordinate).run()
        else:
            stats = run_as_owner(layout.root.fd, lambda: _Reaper(layout, settings, now, progress, coordinate).run())
    finally:
        layout.close()
    counts = {name: float(getattr(stats, name)) for name in _COUNTS}
    emit(observer, "reap_run", stats.elapsed, "busy" if stats.busy else "", **counts)
    return stats


def _open_store(path: str | os.PathLike[str]) -> StoreLayout:
    layout = StoreLayout(path, need_key=False)
    if layout.root.exists(NAMING_KEY_FILE) is not True:
        layout.close()
        raise StorageError(errno.ENOENT, f"not an fssession store (no {NAMING_KEY_FILE})", os.fspath(path))
    return layout


class _Reaper:
    """One run: coordination, cursor, buckets, root leftovers."""

    def __init__(
        self,
        layout: StoreLayout,
        settings: ReapSettings,
        now: Callable[[], float] | None,
        progress: Callable[[ReapStats, int], None] | None,
        coordinate: bool,
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.clock = now if now is not None else layout.clock
        self.progress = progress
        self.coordinate = coordinate
        self.stats = ReapStats(path=layout.path, dry_run=settings.dry_run)
        lease = max(60.0, 4 * settings.lock.fs_slack)
        self.lock = layout.root_lock(REAPER_LOCK, settings.lock.with_(lease=lease, max_lease=None, timeout=0))

    def run(self) -> ReapStats:
        started = time.monotonic()
        if now_is_untrusted(self.clock):
            raise StorageError(errno.EROFS, "cannot read the file server's clock (read-only store?)", self.layout.path)
        try:
            if self.coordinate and not self._take_lock():
                return self.stats
            self._sweep(started)
        finally:
            self.stats.elapsed = time.monotonic() - started
            if self.coordinate and self.lock.is_locked:
                # Taken over while we were frozen: the other reaper rightly holds it.
                with contextlib.suppress(LockLost):
                    self.lock.release()
        return self.stats

    def _take_lock(self) -> bool:
        squatter = self._absurd_holder()
        try:
            self.lock.acquire(blocking=False)
        except LockTimeout as exc:
            self.stats.busy = True
            if squatter:
                self.stats.note("error", self.lock.lock_file, f"{squatter} ({exc})")
            return False
        except StorageError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # A full store is when the reaper is needed most, and taking the
            # coordination lock may need an inode; overlap is safe anyway.
            self.coordinate = False
            self.stats.note("notice", self.layout.path, "store full: running without coordinating with other reapers")
        if squatter:
            self.stats.note("error", self.lock.lock_file, f"{squatter}: taken over")
        return True

    def _absurd_holder(self) -> str:
        """Who holds the coordination lock, if they claim a lease longer than any sane one (else "")."""
        owner = read_owner(self.lock.lock_file)
        if owner is None or owner.owner is None or owner.owner.lease <= self.lock.settings.lease_cap:
            return ""
        return (
            f"held by {owner.describe()} with a recorded lease of {owner.owner.lease:g} s, longer than any "
            f"reaper's; it is honoured only up to {self.lock.settings.lease_cap:g} s"
        )

    def _sweep(self, started: float) -> None:
        first = self._read_cursor()
        order = list(BUCKETS[first:] + BUCKETS[:first])
        deadline = None if self.settings.max_seconds is None else started + self.settings.max_seconds
        if self.settings.jobs > 1:
            from ._reapjobs import sweep_parallel

            done = sweep_parallel(self, order, deadline)
        else:
            done = self._sweep_serial(order, deadline)
        if self.stats.taken_over:
            return  # the reaper that took over owns the cursor now
        if done == len(order):
            self.root_entries()
            self.stats.complete = True
            if first and not self.settings.dry_run:
                self._write_cursor(0)
        elif not self.settings.dry_run:
            self._write_cursor((first + done) % 256)

    def keep_lock(self) -> bool:
        """Renew the store-wide lock between buckets; False if another reaper took it over."""
        if self.coordinate and self.lock.lease_remaining < self.lock.lease / 2:
            try:
                self.lock.refresh()
            except LockLost:
                self.stats.taken_over = True
                return False
        return True

    def _sweep_serial(self, order: list[str], deadline: float | None) -> int:
        sweep = Sweep(self.layout, self.settings, self.clock, self.stats)
        for done, bucket in enumerate(order):
            if (deadline is not None and done and time.monotonic() >= deadline) or not self.keep_lock():
                return done
            sweep.bucket(bucket)
            self.stats.directories += 1
            if self.progress is not None:
                self.progress(self.stats, done + 1)
        return len(order)

    # ------------------------------------------------------------ cursor
    def _read_cursor(self) -> int:
        try:
            blob, _st = self.layout.root.read(CURSOR_FILE, 64)
            value = int(blob.decode("ascii").strip() or "0")
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.stats.note("notice", self.layout.root.path(CURSOR_FILE), f"ignoring an unreadable cursor ({exc})")
            return 0
        return value if 0 <= value < 256 else 0

    def _write_cursor(self, position: int) -> None:
        root = self.layout.root
        try:
            tmp = root.write_new(CURSOR_FILE + ".tmp-", f"{position}\n".encode(), self.layout.file_mode, chmod=True)
            root.rename(tmp, CURSOR_FILE)
        except OSError as exc:
            self.stats.note("error", root.path(CURSOR_FILE), exc)

    # ------------------------------------------------------------ the root
    def root_entries(self) -> None:
        """The store's root: abandoned lock stages, clock probes and temp files of crashed tools."""
        root, now = self.layout.root, self.clock()
        if self.settings.dry_run:
            return
        try:
            self.stats.litter += remove_stages(root, now, max(self.settings.lock.lease, _PROBE_AGE))
            for name in root.listdir():
                self._root_entry(root, name, now)
            self.stats.owner_entries += prune_owners(root, self._session_exists, now, self.settings.grace)
        except OSError as exc:
            self.stats.note("error", root.label, exc)

    def _session_exists(self, name: str) -> bool | None:
        try:
            with self.layout.root.opendir(name[:2]) as bucket:
                return bucket.exists(name)
        except FileNotFoundError:
            return False
        except OSError:
            return None

    def _root_entry(self, root: Dir, name: str, now: float) -> None:
        kind = classify_root(name)
        if kind not in (Kind.CLOCK_PROBE, Kind.TEMP):
            if kind is Kind.FOREIGN:
                self.stats.note("garbage", root.path(name), "not a file fssession writes")
            return
        try:
            st = root.lstat(name)
            if now - st.st_mtime > _PROBE_AGE:
                root.unlink(name)
                self.stats.litter += 1
        except OSError:
            pass  # probes come and go every minute on every node: never an error


def now_is_untrusted(clock: Callable[[], float]) -> bool:
    """Whether *clock* is a ServerClock that fell back to our own clock (nothing can be judged by it)."""
    clock()
    return getattr(clock, "trustworthy", True) is False


class Sweep:
    """Sweeping buckets: sessions, their markers, temp files (also used by parallel workers)."""

    def __init__(
        self, layout: StoreLayout, settings: ReapSettings, clock: Callable[[], float], stats: ReapStats
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.clock = clock
        self.stats = stats
        self.grace = settings.grace

    def bucket(self, name: str) -> None:
        """Sweep one bucket, opened afresh (never following a symlink put in its place)."""
        try:
            directory = self.layout.root.opendir(name)
        except FileNotFoundError:
            return
        except OSError as exc:
            kind = "garbage" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else "error"
            self.stats.note(kind, self.layout.root.path(name), f"not a bucket ({exc.strerror})")
            return
        with directory:
            try:
                with directory.entries() as entries:
                    _BucketSweep(self, directory, self.clock()).run(entries)
            except OSError as exc:
                self.stats.note("error", directory.label, exc)


class _BucketSweep:
    """One bucket's listing, grouped by session, then judged."""

    def __init__(self, sweep: Sweep, directory: Dir, now: float) -> None:
        self.sweep = sweep
        self.stats = sweep.stats
        self.dir = directory
        self.now = now
        self.sessions: dict[str, os.DirEntry[str]] = {}
        self.markers: dict[str, list[Marker]] = {}

    def run(self, entries: Any) -> None:
        later: list[tuple[Kind, os.DirEntry[str]]] = []
        for entry in entries:
            named = classify(entry.name)
            if named.kind is Kind.SESSION:
                self.sessions[entry.name] = entry
            elif named.kind is Kind.MARKER and named.session is not None and named.marker is not None:
                self.markers.setdefault(named.session, []).append(named.marker)
            else:
                later.append((named.kind, entry))
        for name, entry in self.sessions.items():
            self._guard(self.session, name, entry, self.markers.pop(name, []))
        for name, markers in self.markers.items():
            self._guard(self.orphans, name, markers)
        for kind, entry in later:
            self._guard(self.other, kind, entry)

    def _guard(self, work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except FileNotFoundError:
            pass  # gone since it was listed (removed by its owner or another reaper)
        except (OSError, SessionError) as exc:
            self.stats.note("error", self.dir.label, exc)

    # ------------------------------------------------------------ sessions
    def session(self, name: str, entry: os.DirEntry[str], markers: list[Marker]) -> None:
        self.stats.sessions_seen += 1
        if not entry.is_file(follow_symlinks=False):
            self.stats.note("garbage", self.dir.path(name), "a session's name that is not a regular file")
            return
        if len(markers) != 1:
            self._unmarked(name, entry, markers)
            return
        marker = markers[0]
        limits = parse_session_value(marker.value) if marker.kind == FREE else None
        if limits is None:
            self._held_or_unknown(name, marker)
            return
        _generation, idle, expires = limits
        if not self._expired(entry, idle, expires):
            return
        self.stats.expired += 1
        if self.sweep.settings.dry_run:
            self.stats.removed += 1
            return
        self._remove(name, [marker.value], idle, expires)

    def _expired(self, entry: os.DirEntry[str] | None, idle: int, expires: int, mtime: float | None = None) -> bool:
        if expires and self.now >= expires + self.sweep.grace:
            return True  # absolute end of life: no stat needed
        if not idle:
            return False
        if mtime is None:
            assert entry is not None
            mtime = entry.stat(follow_symlinks=False).st_mtime
        return self.now - mtime >= idle + self.sweep.grace

    def _lock(self, name: str) -> SessionLock:
        return SessionLock(self.dir, name, self.sweep.layout.lock_settings, self.sweep.layout.clock)

    def _remove(self, name: str, guesses: list[str], idle: int, expires: int) -> None:
        """Under the session's lock: judge again by a fresh mtime, then remove the file and the marker."""
        try:
            hold = self._lock(name).acquire(guesses, 0, blocking=False)
        except LockTimeout:
            self.stats.in_use += 1
            return
        except _lockcore.NoMarker:
            return
        if hold.taken_over:
            self.stats.stale_locks += 1
        try:
            st = self.dir.lstat(name)
        except FileNotFoundError:
            _lockcore.discard(hold)
            return
        if not self._expired(None, idle, expires, st.st_mtime):
            _lockcore.release(hold, hold.value)
            self.stats.in_use += 1
            return
        self.dir.unlink(name)
        self.stats.removed += 1
        with contextlib.suppress(LockLost):  # judged stale meanwhile: nothing of theirs was touched
            _lockcore.discard(hold)

    def _held_or_unknown(self, name: str, marker: Marker) -> None:
        """Held (or a free marker whose value says nothing): judge by the header, touch the lock only if expired."""
        header = self._header(name)
        if header is None:
            return
        mtime = self.dir.lstat(name).st_mtime
        if not header.expired(self.now, mtime, self.sweep.grace):
            return
        self.stats.expired += 1
        if self.sweep.settings.dry_run:
            self.stats.removed += 1
            return
        guesses = [marker.value] if marker.kind == FREE else []
        self._remove(name, guesses, header.idle_timeout, int(header.expires_at))

    def _unmarked(self, name: str, entry: os.DirEntry[str], markers: list[Marker]) -> None:
        if markers:
            self.stats.note("garbage", self.dir.path(name), f"{len(markers)} lock markers (tampering?): left alone")
            return
        header = self._header(name)
        if header is None:
            return
        if not header.expired(self.now, entry.stat(follow_symlinks=False).st_mtime, self.sweep.grace):
            self.stats.note("garbage", self.dir.path(name), "a session without its lock marker (tampering?)")
            return
        self.stats.expired += 1
        self.stats.removed += 1
        if not self.sweep.settings.dry_run:
            self.dir.unlink(name)  # no lock exists, so no edit can be under way

    def _header(self, name: str) -> Any:
        try:
            return read_header(self.dir.read_head(name, HEADER_SIZE))
        except TamperedSession as exc:
            self.stats.note("garbage", self.dir.path(name), exc.reason)
            return None

    # ------------------------------------------------------------ leftovers
    def orphans(self, name: str, markers: list[Marker]) -> None:
        """Markers whose session file is gone: a crash between create's, delete's or a reaper's steps.

        A marker without its file protects nothing (an edit reads the file
        before it locks), so it is removed by its exact name once it is older
        than ``temp_age`` (a create makes the marker a moment before the
        file) and a fresh look-up confirms the file is absent.  A holder that
        is still deleting the session then finds its marker gone, which it
        takes calmly: the session is gone either way.
        """
        if len(markers) != 1:
            self.stats.note("garbage", self.dir.path(name), f"{len(markers)} lock markers and no session")
            return
        marker = markers[0]
        st = self.dir.lstat(marker.name)
        if self.now - max(st.st_mtime, st.st_ctime) <= self.sweep.settings.temp_age or self.sweep.settings.dry_run:
            return
        if self.dir.exists(name) is not False:
            return  # a session after all
        if self.dir.unlink_quietly(marker.name):
            self.stats.orphans += 1

    def other(self, kind: Kind, entry: os.DirEntry[str]) -> None:
        if kind is Kind.NFS_SILLY:
            self.stats.nfs_pending += 1
        elif kind is Kind.TEMP:
            st = entry.stat(follow_symlinks=False)
            old = self.now - st.st_mtime > self.sweep.settings.temp_age
            if old and not self.sweep.settings.dry_run and self.dir.unlink_quietly(entry.name):
                self.stats.temp_files += 1
        else:
            self.stats.note("garbage", self.dir.path(entry.name), "not a file fssession writes")
