"""``fssession stats`` and ``fssession inspect``: what is in a store, and what one session holds.

``stats`` needs no key: like the reaper it reads only headers and file times,
streaming one fan-out directory at a time (constant memory).  ``inspect``
verifies one session with the key, which it takes from the environment
(``FSSESSION_SECRET_KEY``) or a file (``--key-file``, one key per line, the
first signs, all verify), never from the command line, where every user of
the machine could read it in the process list.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SessionError, StorageError, TamperedSession
from .fileformat import Keyring, decode, read_file_header
from .ids import file_name
from .layout import BUCKETS, GEN_SUFFIX, LOCK_SUFFIX, NAMING_KEY_FILE, TMP_INFIX, is_session_name
from .lock import is_litter_name, read_owner, server_now

__all__ = ["StoreStats", "add_arguments", "inspect_session", "store_stats"]

# Upper bounds (seconds) of the idle-age histogram's bins; the last bin is open.
AGE_BINS = (60, 600, 3600, 86400)
AGE_LABELS = ("<1m", "<10m", "<1h", "<1d", ">=1d")


@dataclass
class StoreStats:
    """What ``fssession stats`` reports."""

    path: str
    sessions: int = 0
    bytes: int = 0
    expired: int = 0
    idle_age: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGE_LABELS, 0))
    locks_held: int = 0
    locks_stale: int = 0  # older than their holder's lease: the next contender or reaper clears them
    temp_files: int = 0
    temp_files_orphaned: int = 0  # older than an hour: the reaper removes them
    beacons: int = 0
    litter: int = 0
    foreign: int = 0
    unreadable: int = 0
    directories: int = 0
    per_directory_min: int = 0
    per_directory_max: int = 0
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The stats as plain JSON-ready data."""
        return asdict(self)

    def render(self) -> str:
        """A short table for a terminal."""
        mean = self.sessions / 256
        rows = [
            ("sessions", f"{self.sessions} ({self.expired} expired, awaiting the reaper)"),
            ("bytes", f"{self.bytes} ({self.bytes / max(self.sessions, 1):.0f} per session)"),
            ("idle for", "  ".join(f"{k}: {v}" for k, v in self.idle_age.items())),
            ("locks", f"{self.locks_held} held, {self.locks_stale} stale"),
            ("temp files", f"{self.temp_files} ({self.temp_files_orphaned} orphaned)"),
            ("other", f"{self.beacons} beacons, {self.litter} lock litter, {self.foreign} foreign files"),
            ("unreadable", str(self.unreadable)),
            (
                "fan-out",
                f"{self.directories}/256 directories; sessions per directory "
                f"min {self.per_directory_min}, mean {mean:.1f}, max {self.per_directory_max}",
            ),
        ]
        return "\n".join(f"{k:>11}  {v}" for k, v in rows) + f"\n{'':>11}  ({self.path}, {self.elapsed:.1f} s)"


def store_stats(
    path: str | os.PathLike[str], *, progress: Callable[[StoreStats, int], None] | None = None
) -> StoreStats:
    """Count what the store at *path* holds; reads headers and times only (no key needed)."""
    root = os.fspath(path)
    if not os.path.isfile(os.path.join(root, NAMING_KEY_FILE)):
        raise StorageError(2, f"not an fssession store (no {NAMING_KEY_FILE})", root)
    try:
        now = server_now(root)
    except OSError:
        now = time.time()  # a read-only mount: our clock will do for a report
    started = time.monotonic()
    stats = StoreStats(path=root)
    counts: list[int] = []
    for done, bucket in enumerate(BUCKETS, 1):
        try:
            entries = os.scandir(os.path.join(root, bucket))
        except FileNotFoundError:
            counts.append(0)
            continue
        stats.directories += 1
        before = stats.sessions
        with entries:
            for entry in entries:
                _count(entry, now, stats)
        counts.append(stats.sessions - before)
        if progress is not None:
            progress(stats, done)
    stats.per_directory_min, stats.per_directory_max = min(counts), max(counts)
    stats.elapsed = time.monotonic() - started
    return stats


def _count(entry: os.DirEntry[str], now: float, stats: StoreStats) -> None:
    name = entry.name
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        stats.unreadable += 1
        return
    if is_session_name(name) and stat.S_ISREG(st.st_mode):
        stats.sessions += 1
        stats.bytes += st.st_size
        idle = now - st.st_mtime
        stats.idle_age[AGE_LABELS[sum(idle >= b for b in AGE_BINS)]] += 1
        try:
            header = read_file_header(entry.path)
        except (OSError, TamperedSession):
            stats.unreadable += 1
            return
        if header.expired(now, st.st_mtime):
            stats.expired += 1
    elif name.endswith(LOCK_SUFFIX) and stat.S_ISDIR(st.st_mode):
        stats.locks_held += 1
        owner = read_owner(entry.path)
        lease = owner.lease if owner is not None else 30.0
        if now - st.st_mtime > lease:
            stats.locks_stale += 1
    elif TMP_INFIX in name:
        stats.temp_files += 1
        stats.temp_files_orphaned += now - st.st_mtime > 3600
    elif GEN_SUFFIX in name:
        stats.beacons += 1
    elif is_litter_name(name):
        stats.litter += 1
    else:
        stats.foreign += 1


def load_keys(key_file: str | None) -> list[str]:
    """The verification keys: from *key_file* (one per line) or $FSSESSION_SECRET_KEY."""
    if key_file is not None:
        with open(key_file, encoding="utf-8") as f:
            keys = [line.strip() for line in f if line.strip()]
    else:
        env = os.environ.get("FSSESSION_SECRET_KEY", "")
        keys = [env] if env else []
    if not keys:
        raise ValueError("no key: set FSSESSION_SECRET_KEY or pass --key-file (never the key itself)")
    return keys


def inspect_session(path: str | os.PathLike[str], sid: str, keys: list[str]) -> dict[str, Any]:
    """Verify and describe one session; ``state`` is live, expired, missing or tampered."""
    root = os.fspath(path)
    try:
        with open(os.path.join(root, NAMING_KEY_FILE), encoding="ascii") as f:
            naming_key = bytes.fromhex(f.read().strip())
    except (OSError, ValueError) as exc:
        raise StorageError(2, f"not a readable fssession store: {exc}", root) from exc
    name = file_name(sid, naming_key)  # InvalidSessionId for anything that is not an id
    file = os.path.join(root, name[:2], name)
    report: dict[str, Any] = {"file": file}
    owner = read_owner(file + LOCK_SUFFIX)
    report["locked_by"] = owner.describe() if owner is not None else None
    try:
        with open(file, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as f:
            blob = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return report | {"state": "missing"}
    except OSError as exc:
        raise StorageError.from_oserror(exc, file) from exc
    try:
        header, data = decode(blob, Keyring(keys))
    except TamperedSession as exc:
        return report | {"state": "tampered", "reason": exc.reason}
    try:
        now = server_now(root)
    except OSError:
        now = time.time()
    report |= {
        "state": "expired" if header.expired(now, mtime) else "live",
        "generation": header.generation,
        "created": header.created,
        "last_access": mtime,
        "idle_timeout": header.idle_timeout,
        "expires_at": header.expires_at or None,
        "idle_seconds_left": round(header.idle_timeout - (now - mtime), 1) if header.idle_timeout else None,
        "bytes": len(blob),
        "data": data,
    }
    return report


# ---------------------------------------------------------------------- CLI
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession stats`` and ``fssession inspect`` (wired by :mod:`fssession.cli`)."""
    parser.add_argument("path", metavar="PATH", help="the store's directory")
    if name == "inspect":
        parser.add_argument("sid", metavar="SID", help="the session id (the cookie's value)")
        parser.add_argument("--key-file", help="a file with the secret key(s), one per line")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.set_defaults(run=_run_inspect)
    else:
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    show = sys.stderr.isatty() and not args.json

    def progress(stats: StoreStats, done: int) -> None:
        sys.stderr.write(f"\r  {done}/256 directories, {stats.sessions} sessions ")
        sys.stderr.flush()

    try:
        stats = store_stats(args.path, progress=progress if show else None)
    except StorageError as exc:
        print(f"fssession stats: {exc}", file=sys.stderr)
        return 2
    finally:
        if show:
            sys.stderr.write("\r" + " " * 60 + "\r")
    print(json.dumps(stats.as_dict(), sort_keys=True) if args.json else stats.render())
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    try:
        report = inspect_session(args.path, args.sid, load_keys(args.key_file))
    except (ValueError, OSError, SessionError) as exc:
        print(f"fssession inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, default=repr, sort_keys=True))
    else:
        for key, value in report.items():
            if key != "data":
                print(f"{key:>18}  {value}")
        if "data" in report:
            print(pprint.pformat(report["data"], width=100))
    messages = {
        "missing": "no such session",
        "expired": "the session has expired",
        "tampered": "the file FAILED verification: not written by a holder of this key",
    }
    if report["state"] in messages:
        print(f"fssession inspect: {messages[report['state']]}", file=sys.stderr)
        return 1
    return 0
