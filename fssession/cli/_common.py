"""What the subcommands share: entering a store (as its owner), error messages, times, progress lines."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from .._fs import Dir
from .._privileges import RootPolicy, owner_switch_needed
from .._text import printable
from ..errors import StorageError

__all__ = [
    "Progress",
    "add_allow_root",
    "age",
    "describe",
    "enter_store",
    "fail",
    "iso",
    "printable",
    "silence_stdout",
    "when",
]

# What an operator should read for the storage errors a command meets.
_PLAIN = {
    errno.EROFS: "not writable (read-only filesystem)",
    errno.ENOSPC: "full (no space or no inodes left)",
    errno.EDQUOT: "over its quota",
}


def add_allow_root(parser: argparse.ArgumentParser) -> None:
    """The ``--allow-root`` option of the commands that switch to the store's owner."""
    parser.add_argument(
        "--allow-root",
        action="store_true",
        help="run as root even on a store others can write (default: switch to the store directory's owner)",
    )


def enter_store(path: str, allow_root: bool) -> None:
    """Open the store's directory and, run as root on a store others can write, become its owner.

    Done first, before anything in the store is looked at.  Raises
    :class:`StorageError` for a missing directory, or (EPERM) for a store
    that root owns and others may write.
    """
    try:
        root = Dir.open_path(path)
    except FileNotFoundError:
        raise StorageError(errno.ENOENT, "no such store directory", path) from None
    except OSError as exc:
        raise StorageError.from_oserror(exc, path) from exc
    with root:
        st = root.stat()
        if not allow_root and owner_switch_needed(st):
            blocked = _unreadable_code(st.st_uid, st.st_gid)
            if blocked is not None:
                raise StorageError(
                    errno.EACCES,
                    f"the store's owner (uid {st.st_uid}) cannot read this fssession's Python files ({blocked}), "
                    "so it cannot run as that user: install fssession where every user can read it, "
                    "or pass --allow-root",
                    None,
                )
        RootPolicy(allow_root).apply(root.fd)


def add_prometheus(parser: argparse.ArgumentParser) -> None:
    """``--prometheus FILE`` (stats, reap)."""
    parser.add_argument(
        "--prometheus",
        metavar="FILE",
        help="also write the counts to FILE in node_exporter's textfile format, atomically "
        "(its directory must be writable by the user this runs as: the store's owner, when started as root)",
    )


def write_prometheus(command: str, stats: Any, path: str | None) -> int:
    """With ``--prometheus FILE``: write *stats* there for node_exporter; 0 done (or not asked), 1 failed."""
    if path is None:
        return 0
    try:
        from ..prometheus import write_textfile
    except ImportError as exc:
        print(f"fssession {command}: --prometheus: {exc}", file=sys.stderr)
        return 1
    try:
        write_textfile(stats, path)
    except OSError as exc:
        print(f"fssession {command}: cannot write {printable(path)}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _may(uid: int, gid: int, st: os.stat_result, bits: int) -> bool:
    """Whether a process of *uid*/*gid* (no supplementary groups: as after the switch) has *bits* on *st*."""
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return (st.st_mode >> shift) & bits == bits


def _unreadable_code(uid: int, gid: int) -> str | None:
    """A directory of the standard library or of fssession that *uid* could not import from (None: all fine).

    A root install in a private place (a venv or pipx under /root) would
    otherwise fail at the first module imported after the switch.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for leaf in (os.path.dirname(os.__file__), package):
        path, bits = os.path.realpath(leaf), 5  # the leaf is listed and entered; its parents entered
        while True:
            if not _may(uid, gid, os.stat(path), bits):
                return path
            parent = os.path.dirname(path)
            if parent == path:
                break
            path, bits = parent, 1
    return None


def describe(exc: BaseException, store: str, *, writing: bool = False) -> str:
    """One line for an error met on *store*: names the store, never an internal temp or stage path."""
    if not isinstance(exc, OSError):
        return printable(str(exc), 1000)
    code = exc.errno or 0
    if code in _PLAIN:
        what = _PLAIN[code]
    elif code in (errno.EACCES, errno.EPERM) and exc.filename is not None:
        what = f"{'not writable' if writing else 'not readable'} by this user ({os.strerror(code)})"
    else:
        what = exc.strerror or str(exc)
    return f"{printable(store)}: {printable(what, 1000)}"


def fail(command: str, message: str) -> int:
    """Print ``fssession COMMAND: message`` on stderr; returns 2 (bad usage, or not a usable store)."""
    print(f"fssession {command}: {message}", file=sys.stderr)
    return 2


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def iso(stamp: float) -> str:
    """A Unix time as ISO-8601 in UTC, to the second."""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age(seconds: float) -> str:
    """A duration for people: ``42 s``, ``5 min``, ``3.2 h``, ``12 d``."""
    size = abs(seconds)
    if size < 120:
        text = f"{size:.0f} s"
    elif size < 7200:
        text = f"{size / 60:.0f} min"
    elif size < 172800:
        text = f"{size / 3600:.1f} h"
    else:
        text = f"{size / 86400:.0f} d"
    return text


def when(stamp: float, now: float) -> str:
    """``2025-01-02T03:04:05Z (5 min ago)`` or ``(in 5 min)``, against the file server's *now*."""
    delta = now - stamp
    relative = f"{age(delta)} ago" if delta >= 0 else f"in {age(delta)}"
    return f"{iso(stamp)} ({relative})"


class Progress:
    """A one-line progress display on a terminal's stderr (never under cron); at most 5 updates a second."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.shown_at = 0.0

    def show(self, text: str) -> None:
        """Replace the line with *text*."""
        if time.monotonic() - self.shown_at < 0.2:
            return
        self.shown_at = time.monotonic()
        self.out.write(f"\r  {text} ")
        self.out.flush()

    def clear(self) -> None:
        """Erase the line (if anything was shown)."""
        if self.shown_at:
            self.out.write("\r" + " " * 72 + "\r")
            self.out.flush()
