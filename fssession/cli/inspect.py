"""``fssession inspect PATH``: present :func:`fssession.report.inspect_session`.

The session id is a bearer credential: it is read from stdin (first line)
or ``$FSSESSION_SID``, not from the command line, where every local user
can read it in the process list (an id given there still works, with a
warning).  The key comes from ``$FSSESSION_SECRET_KEY`` or ``--key-file``
(one key per line; the first signs, all verify), never from the command
line either.  Everything shown that comes from the store is escaped.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import pprint
import sys
from typing import Any

from ..errors import SessionError
from ..report import inspect_session
from . import _common

__all__ = ["add_arguments", "read_keys", "read_sid", "run"]

_TIMES = ("created", "last_access", "absolute_expiry", "expires")
_MESSAGES = {
    "missing": "no such session",
    "expired": "the session has expired",
    "tampered": "the file FAILED verification: not written by a holder of this key for this session",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession inspect``."""
    parser.add_argument("path", metavar="PATH", help="the store's directory")
    parser.add_argument(
        "sid", metavar="SID", nargs="?", help=argparse.SUPPRESS
    )  # accepted with a warning: give it on stdin or in $FSSESSION_SID
    parser.add_argument("--key-file", help="a file with the secret key(s), one per line")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--max-size", type=int, default=None, metavar="BYTES", help="the store's max_size (default 1 MiB)"
    )
    _common.add_allow_root(parser)
    parser.epilog = "The session id is read from $FSSESSION_SID or the first line of stdin."


def read_keys(key_file: str | None) -> list[str]:
    """The verification keys: from *key_file* (one per line) or ``$FSSESSION_SECRET_KEY``."""
    if key_file is not None:
        with open(key_file, encoding="utf-8") as f:
            keys = [line.strip() for line in f if line.strip()]
    else:
        env = os.environ.get("FSSESSION_SECRET_KEY", "")
        keys = [env] if env else []
    if not keys:
        raise ValueError("no key: set FSSESSION_SECRET_KEY or pass --key-file (never the key itself)")
    return keys


def read_sid(argv_sid: str | None) -> str:
    """The session id: from argv (warned about), ``$FSSESSION_SID``, or stdin's first line (no echo on a terminal)."""
    if argv_sid is not None:
        print(
            "fssession inspect: warning: a session id on the command line is visible to every local user; "
            "pipe it on stdin or set FSSESSION_SID",
            file=sys.stderr,
        )
        return argv_sid
    env = os.environ.get("FSSESSION_SID", "").strip()
    if env:
        return env
    if sys.stdin is None:
        raise ValueError("no session id: give it on stdin or in FSSESSION_SID")
    line = getpass.getpass("session id: ") if sys.stdin.isatty() else sys.stdin.readline(4096)
    sid = line.strip()
    if not sid:
        raise ValueError("no session id: give it on stdin or in FSSESSION_SID")
    return sid


def run(args: argparse.Namespace) -> int:
    """Verify and show one session; 0 live, 1 missing, expired or tampered, 2 bad usage or not a store."""
    if args.max_size is not None and args.max_size <= 0:
        return _common.fail("inspect", "--max-size must be a positive number of bytes")
    try:  # the operator's key file and the id come first: they are not the store's
        keys = read_keys(args.key_file)
        sid = read_sid(args.sid)
    except (OSError, ValueError) as exc:
        return _common.fail("inspect", _common.printable(str(exc), 1000))
    try:
        _common.enter_store(args.path, args.allow_root)
        report = inspect_session(args.path, sid, keys, max_size=args.max_size)
    except (ValueError, OSError, SessionError) as exc:
        return _common.fail("inspect", _common.describe(exc, args.path))
    print(_json(report) if args.json else _table(report))
    if report["state"] in _MESSAGES:
        print(f"fssession inspect: {_MESSAGES[report['state']]}", file=sys.stderr)
        return 1
    return 0


def _json(report: dict[str, Any]) -> str:
    shown = dict(report)
    for key in (*_TIMES, "now"):
        if shown.get(key) is not None:
            shown[key] = _common.iso(shown[key])
    return json.dumps(shown, default=repr, sort_keys=True)


def _shown(key: str, value: Any, now: float | None) -> str:
    if value is None:
        return "-"
    if key in _TIMES and now is not None:
        return _common.when(value, now)
    if key == "idle_timeout":
        return f"{value} s"
    return _common.printable(str(value), 1000)


def _table(report: dict[str, Any]) -> str:
    now = report.get("now")
    first = [k for k in ("state", "reason") if k in report]
    keys = first + [k for k in report if k not in (*first, "data", "now")]
    lines = [f"{key.replace('_', ' '):>16}  {_shown(key, report[key], now)}" for key in keys]
    if "data" in report:
        shown = pprint.pformat(report["data"], width=100)
        lines.extend(_common.printable(line, 10_000) for line in shown.splitlines())
    return "\n".join(lines)
