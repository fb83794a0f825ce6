"""What is in a store (:func:`store_stats`) and what one session holds (:func:`inspect_session`).

Both return data and print nothing (``fssession stats`` and ``fssession
inspect`` present it).  Both reach the store only through
:class:`~fssession.layout.StoreLayout` and ``_fs``: buckets are opened
without following a symlink put in their place, every entry is named by
:func:`~fssession.layout.classify`, files are read through bounded reads
that never block on a FIFO.

``store_stats`` needs no key: like the reaper it reads headers, lock markers
and file times, one bucket at a time (memory bounded by the largest bucket).
``inspect_session`` verifies one session with the keys given.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._fs import Dir, NotRegular, TooLarge
from ._identity import is_dead_here
from ._lockcore import DRIFT
from ._markers import COMMITTING, FREE, Marker, parse
from ._text import printable
from .errors import StorageError, TamperedSession
from .fileformat import HEADER_SIZE, MAC_SIZE, read_header, verify
from .keys import Keyring
from .layout import BUCKETS, NAMING_KEY_FILE, OWNERS_DIR, Kind, StoreLayout, classify, classify_root
from .serializers import get_serializer
from .settings import LockSettings, StoreSettings

__all__ = ["AGE_LABELS", "StoreStats", "inspect_session", "store_stats"]

# Upper bounds (seconds) of the idle-age histogram's bins; the last bin is open.
AGE_BINS = (60, 600, 3600, 86400)
AGE_LABELS = ("<1m", "<10m", "<1h", "<1d", ">=1d")
_LITTER_AGE = 300.0  # root leftovers (stages, clock probes, doctors) younger than this may be at work
_MAX_LISTED = 200


@dataclass
class StoreStats:
    """What ``fssession stats`` reports; every count is of entries found in one pass."""

    path: str
    sessions: int = 0
    bytes: int = 0
    expired: int = 0  # awaiting the reaper
    idle_age: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGE_LABELS, 0))
    locks_held: int = 0  # owner or committing markers
    locks_committing: int = 0
    locks_stale: int = 0  # older than their lease by the server's stamps, or a dead process here
    locks_age_unknown: int = 0  # held, but this filesystem does not stamp renames (sshfs): cannot tell
    orphaned_markers: int = 0  # lock markers whose session file is gone (the reaper removes them)
    unmarked_sessions: int = 0  # session files without their lock marker (tampering, or a crash mid-create)
    temp_files: int = 0
    temp_files_orphaned: int = 0  # older than temp_age: the reaper removes them
    nfs_pending: int = 0  # removed files still open somewhere (.nfs*, .fuse_hidden*)
    litter: int = 0  # abandoned lock stages, clock probes and doctor directories in the root
    owners: int = 0  # owners with sessions listed in the owner index ("log out everywhere")
    owner_entries: int = 0  # entries in the owner index (one per owned session, briefly more after a crash)
    foreign: int = 0  # not a file fssession writes (never touched by the reaper)
    unreadable: int = 0  # buckets or session files this user cannot read, or not readable as sessions
    directories: int = 0
    per_directory_min: int = 0
    per_directory_max: int = 0
    clock_trusted: bool = True  # False: the server's clock could not be read (read-only), ages are ours
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def note(self, path: str, why: object) -> None:
        """List a problem (escaped: names come from the store), up to a bound."""
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(f"{printable(path)}: {printable(str(why))}")

    def as_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready data."""
        return asdict(self)


class _Clock:
    """The file server's time for one run, and how to read a marker's age by it."""

    def __init__(self, layout: StoreLayout, lock: LockSettings) -> None:
        self.now = layout.clock()
        self.trusted = layout.clock.trustworthy
        self.coarse = layout.clock.granularity >= 1.0
        self.lock = lock

    def stale(self, marker: Marker, st: os.stat_result) -> bool | None:
        """Whether a held marker is stale by the lock's rules a and b (None: this filesystem cannot tell)."""
        owner = marker.owner
        if owner is not None and is_dead_here(owner.identity):
            return True
        # Rule b: ctime is the server's stamp of the rename that named the
        # marker, only where renames demonstrably re-stamp it (ctime > mtime).
        if not self.trusted or st.st_ctime_ns <= st.st_mtime_ns:
            return None
        recorded = owner.lease if owner is not None else self.lock.lease
        lease = min(recorded, self.lock.lease_cap) * (1 + DRIFT)
        coarse = self.coarse or st.st_ctime_ns % 1_000_000_000 == 0
        return self.now - st.st_ctime_ns / 1e9 - (1.0 if coarse else 0.0) > lease


def store_stats(
    path: str | os.PathLike[str],
    *,
    lease: float = 30.0,
    temp_age: float = 3600.0,
    progress: Callable[[StoreStats, int], None] | None = None,
) -> StoreStats:
    """Count what the store at *path* holds (no key needed); :class:`StorageError` if it is not a store.

    *lease* is the store's lock lease (stale locks are judged by it, with the
    lock's own cap on recorded leases); *temp_age* says when a temp file is a
    crash leftover.  *progress* is called after each bucket.
    """
    started = time.monotonic()
    layout = StoreLayout(path, need_key=False)
    try:
        if layout.root.exists(NAMING_KEY_FILE) is not True:
            raise StorageError(errno.ENOENT, f"not an fssession store (no {NAMING_KEY_FILE})", layout.path)
        stats = StoreStats(path=layout.path)
        clock = _Clock(layout, LockSettings(lease=lease, fs_slack=min(1.0, lease / 2)))
        stats.clock_trusted = clock.trusted
        _root_entries(layout.root, clock.now, stats)
        stats.owners, stats.owner_entries = _count_owners(layout.root)
        counts = []
        for done, name in enumerate(BUCKETS, 1):
            counts.append(_BucketCount(stats, clock, temp_age).run(layout.root, name))
            if progress is not None:
                progress(stats, done)
        stats.per_directory_min, stats.per_directory_max = min(counts), max(counts)
    finally:
        layout.close()
    stats.elapsed = time.monotonic() - started
    return stats


def _root_entries(root: Dir, now: float, stats: StoreStats) -> None:
    """The root's own entries: leftovers of crashed tools, and anything foreign."""
    try:
        with root.entries() as entries:
            for entry in entries:
                kind = classify_root(entry.name)
                if kind is Kind.FOREIGN:
                    stats.foreign += 1
                    stats.note(root.path(entry.name), "not a file fssession writes")
                elif kind in (Kind.STAGE, Kind.CLOCK_PROBE, Kind.DOCTOR, Kind.TEMP):
                    stats.litter += _older(entry, now, _LITTER_AGE)
    except OSError as exc:
        stats.unreadable += 1
        stats.note(root.label, exc.strerror or exc)


def _count_owners(root: Dir) -> tuple[int, int]:
    """(owners, entries) of the owner index; the names are keyed hashes, so no user is named."""
    owners = entries = 0
    try:
        top = root.opendir(OWNERS_DIR)
    except OSError:
        return 0, 0
    with top:
        for shard in top.listdir():
            try:
                with top.opendir(shard) as shard_dir:
                    for owner in shard_dir.listdir():
                        with shard_dir.opendir(owner) as owner_dir:
                            listed = len(owner_dir.listdir())
                        owners += bool(listed)
                        entries += listed
            except OSError:
                continue  # something planted, or gone meanwhile: not counted
    return owners, entries


def _older(entry: os.DirEntry[str], now: float, seconds: float) -> bool:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > seconds
    except OSError:
        return False  # gone since the listing


class _BucketCount:
    """One bucket's entries, counted as they stream by; markers paired with sessions at the end."""

    def __init__(self, stats: StoreStats, clock: _Clock, temp_age: float) -> None:
        self.stats = stats
        self.clock = clock
        self.temp_age = temp_age
        self.sessions: set[str] = set()
        self.marked: set[str] = set()

    def run(self, root: Dir, name: str) -> int:
        """Count bucket *name* (never following a symlink in its place); returns its sessions."""
        try:
            bucket = root.opendir(name)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self.stats.foreign += 1
                self.stats.note(root.path(name), "not a bucket (a symlink or a file in its place): not followed")
            else:
                self.stats.unreadable += 1
                self.stats.note(root.path(name), exc.strerror or exc)
            return 0
        with bucket:
            self.stats.directories += 1
            try:
                with bucket.entries() as entries:
                    for entry in entries:
                        self._entry(bucket, entry)
            except OSError as exc:
                self.stats.unreadable += 1
                self.stats.note(bucket.label, exc.strerror or exc)
        self.stats.orphaned_markers += len(self.marked - self.sessions)
        self.stats.unmarked_sessions += len(self.sessions - self.marked)
        return len(self.sessions)

    def _entry(self, bucket: Dir, entry: os.DirEntry[str]) -> None:
        named = classify(entry.name)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return  # gone since the listing
        except OSError as exc:
            self.stats.unreadable += 1
            self.stats.note(bucket.path(entry.name), exc.strerror or exc)
            return
        if named.kind is Kind.SESSION:
            self._session(bucket, entry.name, st)
        elif named.kind is Kind.MARKER and named.marker is not None and named.session is not None:
            self._marker(named.session, named.marker, st)
        elif named.kind is Kind.TEMP:
            self.stats.temp_files += 1
            self.stats.temp_files_orphaned += self.clock.now - st.st_mtime > self.temp_age
        elif named.kind is Kind.NFS_SILLY:
            self.stats.nfs_pending += 1
        else:
            self.stats.foreign += 1
            self.stats.note(bucket.path(entry.name), "not a file fssession writes")

    def _session(self, bucket: Dir, name: str, st: os.stat_result) -> None:
        if not _is_regular(st):
            self.stats.foreign += 1
            self.stats.note(bucket.path(name), "a session's name that is not a regular file")
            return
        stats = self.stats
        stats.sessions += 1
        self.sessions.add(name)
        stats.bytes += st.st_size
        idle = self.clock.now - st.st_mtime
        stats.idle_age[AGE_LABELS[sum(idle >= b for b in AGE_BINS)]] += 1
        try:
            header = read_header(bucket.read_head(name, HEADER_SIZE))
        except FileNotFoundError:
            return  # deleted since the listing: counted as it was
        except TamperedSession as exc:
            stats.unreadable += 1
            stats.note(bucket.path(name), exc.reason)
            return
        except OSError as exc:
            stats.unreadable += 1
            stats.note(bucket.path(name), exc.strerror or exc)
            return
        stats.expired += header.expired(self.clock.now, st.st_mtime)

    def _marker(self, session: str, marker: Marker, st: os.stat_result) -> None:
        self.marked.add(session)
        if marker.kind == FREE:
            return
        self.stats.locks_held += 1
        self.stats.locks_committing += marker.kind == COMMITTING
        stale = self.clock.stale(marker, st)
        if stale is None:
            self.stats.locks_age_unknown += 1
        else:
            self.stats.locks_stale += stale


def _is_regular(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


# ------------------------------------------------------------------ inspect
def inspect_session(
    path: str | os.PathLike[str], sid: str, keys: Sequence[str | bytes], *, max_size: int | None = None
) -> dict[str, Any]:
    """Verify and describe session *sid*; ``state`` is live, expired, missing or tampered.

    Reads at most *max_size* bytes of payload (the store's ``max_size``,
    1 MiB by default).  Times are Unix seconds on the file server's clock
    (``now`` is that clock as read for this report).  ``ValueError`` for
    keys that are too short or an id that is not one
    (:class:`~fssession.InvalidSessionId`); :class:`StorageError` if *path*
    is not a readable store.
    """
    keyring = Keyring(list(keys))
    limit = HEADER_SIZE + (max_size or StoreSettings().max_size) + MAC_SIZE
    layout = StoreLayout(path)
    try:
        name = layout.name_for(sid)  # InvalidSessionId before anything is looked up
        report: dict[str, Any] = {"file": layout.path_for(sid)}
        try:
            bucket = layout.root.opendir(name[:2])
        except FileNotFoundError:
            return report | {"state": "missing", "lock": "none"}
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return report | {"state": "tampered", "reason": "its bucket is not a directory (not followed)"}
            raise StorageError.from_oserror(exc, layout.root.path(name[:2])) from exc
        with bucket:
            report |= _lock_report(bucket, name)
            found = _read(bucket, name, limit)
            if isinstance(found, str):
                return report | ({"state": "missing"} if not found else {"state": "tampered", "reason": found})
            return report | _verified(found, keyring, sid, layout.clock())
    finally:
        layout.close()


def _read(bucket: Dir, name: str, limit: int) -> tuple[bytes, os.stat_result] | str:
    """The file and its stat; or why not: "" when there is none, else the reason it is no session."""
    try:
        return bucket.read(name, limit)
    except FileNotFoundError:
        return ""
    except NotRegular as exc:
        return f"not a regular file ({_kind_of(exc.mode)}): not read"
    except TooLarge as exc:
        return f"{exc.size} bytes, larger than the store's max_size allows ({limit} with header and MAC): not read"
    except OSError as exc:
        raise StorageError.from_oserror(exc, bucket.path(name)) from exc


def _kind_of(mode: int) -> str:
    """What a file mode says the entry is, in a word."""
    kinds = {0o120000: "a symlink", 0o010000: "a FIFO", 0o020000: "a device", 0o060000: "a device"}
    return kinds.get(mode & 0o170000, "a directory" if mode & 0o170000 == 0o040000 else "a socket")


def _verified(found: tuple[bytes, os.stat_result], keyring: Keyring, sid: str, now: float) -> dict[str, Any]:
    blob, st = found
    try:
        header, payload = verify(blob, keyring, sid.encode())
    except TamperedSession as exc:
        return {"state": "tampered", "reason": exc.reason}
    ends = header.expires(st.st_mtime)
    report: dict[str, Any] = {
        "state": "expired" if header.expired(now, st.st_mtime) else "live",
        "generation": header.generation,
        "now": now,
        "created": header.created,
        "last_access": st.st_mtime,
        "idle_timeout": header.idle_timeout or None,
        "absolute_expiry": header.expires_at or None,
        "expires": ends if ends != float("inf") else None,
        "bytes": len(blob),
    }
    try:
        serializer = get_serializer(header.serializer)
        report |= {"serializer": serializer.name, "data": serializer.loads(payload)}
    except Exception as exc:  # an unknown serializer, or a payload it cannot decode: say so, show the rest
        report["data_error"] = f"{type(exc).__name__}: {exc}"
    return report


def _lock_report(bucket: Dir, name: str) -> dict[str, Any]:
    """The session's lock as its markers say: free, held, committing, none, or several (tampering)."""
    prefix = name + "."
    try:
        markers = [m for m in (parse(prefix, n) for n in bucket.listdir() if n.startswith(prefix)) if m is not None]
    except OSError as exc:
        return {"lock": f"unknown ({exc.strerror})", "locked_by": None}
    if not markers:
        return {"lock": "none", "locked_by": None}
    if len(markers) > 1:
        return {"lock": f"{len(markers)} markers (tampering?)", "locked_by": None}
    marker = markers[0]
    if marker.kind == FREE:
        return {"lock": "free", "locked_by": None}
    state = "committing" if marker.kind == COMMITTING else "held"
    return {"lock": state, "locked_by": marker.describe()}
