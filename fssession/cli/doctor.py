"""``fssession doctor PATH``: run :class:`fssession.doctor.Doctor` and print its verdicts (table or JSON)."""

from __future__ import annotations

import argparse
import json
import pwd
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..doctor import Doctor, Options, exit_code, terminating_signals
from ..errors import StorageError
from . import _common

__all__ = ["add_arguments", "render", "run"]


def _uids(text: str) -> list[int]:
    uids = []
    for item in (part.strip() for part in text.split(",")):
        if item.isdigit():
            uids.append(int(item))
        elif item:
            try:
                uids.append(pwd.getpwnam(item).pw_uid)
            except KeyError:
                raise argparse.ArgumentTypeError(f"no such user: {item!r}") from None
    return uids


def _not_negative(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession doctor``."""
    parser.add_argument("path", metavar="PATH", help="the store's directory (on the shared mount)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument(
        "--uid",
        action="append",
        type=_uids,
        metavar="USER[,USER...]",
        help="users (names or uids) the web nodes run as; several: they share the store through its group",
    )
    parser.add_argument("--fs-slack", type=_not_negative(float), default=1.0, help="the store's fs_slack (1 s)")
    parser.add_argument("--lease", type=_not_negative(float), default=30.0, help="the store's lock lease (30 s)")
    parser.add_argument("--sessions", type=_not_negative(int), default=100_000, help="sessions to plan room for")
    parser.add_argument("--session-size", type=_not_negative(int), default=1024, help="bytes of data per session")
    parser.add_argument(
        "--peer-wait",
        type=_not_negative(float),
        default=None,
        metavar="SECONDS",
        help="wait this long for a doctor on another host (default: 3 s on network filesystems, 0 on local ones)",
    )
    _common.add_allow_root(parser)


def run(args: argparse.Namespace) -> int:
    """Run the doctor; print the table or JSON; 0 all ok, 1 warnings, 2 failures (or root refused)."""
    try:
        _common.enter_store(args.path, args.allow_root)
    except StorageError as exc:
        if exc.filename is None:  # root on a store it must not act on as root
            return _common.fail("doctor", _common.describe(exc, args.path))
        # No directory there: the doctor's own verdicts say so.
    options = Options(
        path=args.path,
        fs_slack=args.fs_slack,
        lease=args.lease,
        uids=[u for group in (args.uid or []) for u in group],
        sessions=args.sessions,
        session_size=args.session_size,
        peer_wait=args.peer_wait,
    )
    doctor = Doctor(options)
    with terminating_signals():
        verdicts = doctor.run()
    if args.json:
        print(json.dumps(doctor.report(), indent=2, allow_nan=False))
    else:
        print(render(doctor))
    return exit_code(verdicts)


def render(doctor: Doctor) -> str:
    """The verdict table for people."""
    fstype = doctor.mount.fstype if doctor.mount else "?"
    options = doctor.options
    lines = [
        f"fssession doctor {_common.printable(doctor.path)}  (host {doctor.host}, {fstype}, "
        f"fs_slack {options.fs_slack:g} s, lease {options.lease:g} s)"
    ]
    width = max((len(v.title) for v in doctor.verdicts), default=10)
    for v in doctor.verdicts:
        lines.append(f"  {v.status:<4}  {v.title:<{width}}  {v.figure}")
        if v.advice:
            lines.append(f"        {'':<{width}}  -> {v.advice}")
    counts = Counter(v.status for v in doctor.verdicts)
    summary = ", ".join(f"{counts[s]} {s}" for s in ("ok", "warn", "fail", "skip") if counts[s])
    lines.append(f"result: {summary} (exit {exit_code(doctor.verdicts)})")
    return "\n".join(lines)
