"""``fssession init PATH``: create a store for the web servers' users (see :mod:`fssession.provision`)."""

from __future__ import annotations

import argparse
import grp
import pwd
import stat
from collections.abc import Callable

from ..errors import SessionError
from ..provision import init_store
from . import _common

__all__ = ["add_arguments", "run"]


def _user(text: str) -> int:
    return _id_of(text, "user", lambda name: pwd.getpwnam(name).pw_uid)


def _group(text: str) -> int:
    return _id_of(text, "group", lambda name: grp.getgrnam(name).gr_gid)


def _id_of(text: str, what: str, lookup: Callable[[str], int]) -> int:
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such {what}: {text!r}") from None


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o7777 or not value & 0o700 == 0o700:
        raise argparse.ArgumentTypeError(f"{text}: the owner needs rwx (e.g. 700, or 2770 for a shared group)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fssession init``."""
    parser.add_argument("path", metavar="PATH", help="the store's directory (created if missing)")
    parser.add_argument("--owner", type=_user, help="the user it belongs to (required as root; default: you)")
    parser.add_argument("--group", type=_group, help="the group the web servers' users share (default: yours)")
    parser.add_argument(
        "--mode", type=_mode, help="the directory's mode (default 700, or 2770 with --group: setgid, group rwx)"
    )
    parser.add_argument(
        "--force", action="store_true", help="reset an existing store's directory, key and buckets to these"
    )


def run(args: argparse.Namespace) -> int:
    """Create the store; 0 created or already as asked, 2 refused or failed."""
    mode = args.mode if args.mode is not None else 0o2770 if args.group is not None else 0o700
    try:
        result = init_store(args.path, owner=args.owner, group=args.group, mode=mode, force=args.force)
    except (OSError, SessionError) as exc:
        return _common.fail("init", _common.describe(exc, args.path, writing=True))
    owner = f"{_name(pwd.getpwuid, result.uid)}:{_name(grp.getgrgid, result.gid)}"
    setgid = " (setgid)" if result.mode & stat.S_ISGID else ""
    what = (
        "created"
        if result.created
        else f"reset {', '.join(result.changed)} of"
        if result.changed
        else "nothing to do: already set up as asked,"
    )
    print(
        f"{what} store {_common.printable(result.path)}: {owner}, mode {result.mode:04o}{setgid}, "
        f"naming key {result.key_mode:04o}"
    )
    return 0


def _name(lookup: object, number: int) -> str:
    try:
        return str(lookup(number)[0])  # type: ignore[operator]
    except KeyError:
        return str(number)
