"""``fssession stats PATH``: present :func:`fssession.report.store_stats`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ..errors import SessionError
from ..report import StoreStats, store_stats
from . import _common

__all__ = ["add_arguments", "render", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession stats``."""
    parser.add_argument("path", metavar="PATH", help="the store's directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="list foreign and unreadable entries")
    parser.add_argument("--lease", type=float, default=30.0, metavar="S", help="the store's lock lease (30)")
    parser.add_argument(
        "--temp-age", type=float, default=3600.0, metavar="S", help="temp files older than S s are orphaned (3600)"
    )
    _common.add_prometheus(parser)
    _common.add_allow_root(parser)


def run(args: argparse.Namespace) -> int:
    """Count the store; 0 done, 1 when some buckets or files could not be read, 2 not a store."""
    if not args.lease > 0 or not args.temp_age > 0:
        return _common.fail("stats", "--lease and --temp-age must be positive")
    progress = _common.Progress() if sys.stderr.isatty() and not args.json else None
    try:
        _common.enter_store(args.path, args.allow_root)
        stats = store_stats(args.path, lease=args.lease, temp_age=args.temp_age, progress=_shown(progress))
    except (OSError, SessionError) as exc:
        return _common.fail("stats", _common.describe(exc, args.path))
    finally:
        if progress is not None:
            progress.clear()
    code = _print(stats, args)
    return max(code, _common.write_prometheus("stats", stats, args.prometheus))


def _print(stats: StoreStats, args: argparse.Namespace) -> int:
    print(json.dumps(stats.as_dict(), sort_keys=True) if args.json else render(stats))
    if args.verbose:
        for line in stats.problems:
            print(f"  {line}", file=sys.stderr)
    if not stats.unreadable:
        return 0
    if not args.verbose:
        print(f"fssession stats: {stats.unreadable} entries could not be read (-v lists them)", file=sys.stderr)
    return 1


def _shown(progress: _common.Progress | None) -> Callable[[StoreStats, int], None] | None:
    if progress is None:
        return None
    line = progress

    def show(stats: StoreStats, done: int) -> None:
        line.show(f"{done}/256 buckets, {stats.sessions} sessions")

    return show


def render(stats: StoreStats) -> str:
    """A short table for a terminal."""
    mean = stats.sessions / 256
    unknown = f", {stats.locks_age_unknown} of unknown age (renames not stamped)" if stats.locks_age_unknown else ""
    rows = [
        ("sessions", f"{stats.sessions} ({stats.expired} expired, awaiting the reaper)"),
        ("bytes", f"{stats.bytes} ({stats.bytes / max(stats.sessions, 1):.0f} per session)"),
        ("idle for", "  ".join(f"{k}: {v}" for k, v in stats.idle_age.items())),
        (
            "locks",
            f"{stats.locks_held} held ({stats.locks_committing} committing), {stats.locks_stale} stale{unknown}",
        ),
        ("markers", f"{stats.orphaned_markers} orphaned, {stats.unmarked_sessions} sessions without one"),
        ("temp files", f"{stats.temp_files} ({stats.temp_files_orphaned} orphaned)"),
        ("owners", f"{stats.owners} users with listed sessions, {stats.owner_entries} index entries"),
        (
            "other",
            f"{stats.nfs_pending} NFS files still open, {stats.litter} litter, {stats.foreign} foreign entries",
        ),
        ("unreadable", str(stats.unreadable)),
        (
            "fan-out",
            f"{stats.directories}/256 buckets; sessions per bucket "
            f"min {stats.per_directory_min}, mean {mean:.1f}, max {stats.per_directory_max}",
        ),
    ]
    clock = "" if stats.clock_trusted else "; ages by this host's clock (the server's could not be read)"
    footer = f"\n{'':>11}  ({_common.printable(stats.path)}, {stats.elapsed:.1f} s{clock})"
    return "\n".join(f"{k:>11}  {v}" for k, v in rows) + footer
