"""``fssession reap PATH``: run the reaper and present its :class:`~fssession.reaper.ReapStats`.

Quiet under cron (cron mails any output): on success it prints nothing
unless stdout is a terminal, ``-v`` or ``--json`` asks for it.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SessionError
from ..reaper import ReapStats, reap
from ..settings import LockSettings, ReapSettings
from . import _common

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession reap``."""
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
        "--temp-age", type=float, default=3600.0, metavar="S", help="remove leftovers older than S s (3600)"
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="sweep with N processes (1)")
    parser.add_argument("--lease", type=float, default=30.0, metavar="S", help="the store's lock lease (30)")
    parser.add_argument("--fs-slack", type=float, default=1.0, metavar="S", help="the store's fs_slack (1)")
    _common.add_prometheus(parser)
    _common.add_allow_root(parser)


def run(args: argparse.Namespace) -> int:
    """Reap the store; 0 done, 1 done with errors (listed on stderr), 2 bad values or not a store."""
    try:
        settings = ReapSettings(
            grace=args.grace,
            temp_age=args.temp_age,
            jobs=args.jobs,
            max_seconds=args.max_seconds,
            dry_run=args.dry_run,
            lock=LockSettings(lease=args.lease, fs_slack=args.fs_slack),
        )
    except ValueError as exc:
        return _common.fail("reap", str(exc))
    progress = _common.Progress() if sys.stderr.isatty() and not (args.quiet or args.json) else None

    def show(stats: ReapStats, done: int) -> None:
        assert progress is not None
        progress.show(f"{done}/256 buckets, {stats.sessions_seen} sessions, {stats.removed} removed")

    try:
        _common.enter_store(args.path, args.allow_root)
        stats = reap(args.path, settings, progress=show if progress else None, allow_root=args.allow_root)
    except (OSError, SessionError) as exc:
        return _common.fail("reap", _common.describe(exc, args.path, writing=True))
    finally:
        if progress is not None:
            progress.clear()
    _print(stats, args)
    written = _common.write_prometheus("reap", stats, args.prometheus)
    return 1 if stats.errors or written else 0


def _print(stats: ReapStats, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(stats.as_dict(), sort_keys=True))
        return
    if stats.errors or (not args.quiet and (args.verbose or sys.stdout.isatty())):
        print(stats.summary())
    # Problems are escaped where they are recorded (ReapStats.note).
    shown = stats.problems if args.verbose else [p for p in stats.problems if p.startswith("error:")]
    for line in shown:
        print(f"  {line}", file=sys.stderr)
