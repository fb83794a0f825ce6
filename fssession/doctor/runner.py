"""Running the doctor's checks in order, each guarded, and cleaning up whatever happens."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from types import FrameType
from typing import Any

from .._fs import Dir
from ._access import check_permissions, check_space, check_store_files
from ._context import Context, Options
from ._local import check_errnos, check_local_race, check_rename
from ._mount import check_mount, find_mount
from ._timing import check_clock, check_ctime, start_ctime_probe
from ._verdict import STORAGE, Verdict, ename, exit_code
from ._work import PROTOCOL, WorkDir, remove_litter
from .rendezvous import PEER_CHECKS, check_peer

__all__ = ["Doctor", "terminating_signals"]

Check = Callable[[Context], list[Verdict]]

_WRITE_ADVICE = {
    "EROFS": "the mount is read-only: remount it read-write (or export it rw)",
    "ENOSPC": "the filesystem is full (blocks or inodes): free space",
    "EDQUOT": "the quota is exhausted: raise it or free space",
    "EACCES": "this user may not create entries here: fix ownership or mode",
}


class _Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind through the clean-up."""


def _one(check: Callable[[Context], Verdict]) -> Check:
    return lambda ctx: [check(ctx)]


def check_writable(ctx: Context) -> list[Verdict]:
    """Create the private work directory (the first write); remove old doctors' litter."""
    removed = remove_litter(ctx.root)
    hello = {"proto": PROTOCOL, "token": ctx.token, "host": ctx.host, "pid": os.getpid()}
    try:
        ctx.work.create(hello)
    except OSError as exc:
        ctx.write_errno = exc.errno
        name = ename(exc.errno)
        what = STORAGE.get(exc.errno or 0, os.strerror(exc.errno or 0))
        advice = _WRITE_ADVICE.get(name, "fix the mount, then run the doctor again")
        return [Verdict("writable", "writable", "fail", f"mkdir failed: {name} ({what})", advice)]
    ctx.writable = True
    start_ctime_probe(ctx)
    note = f"; removed {removed} leftovers of killed doctors" if removed else ""
    return [Verdict("writable", "writable", "ok", f"created and wrote {ctx.work.name}{note}")]


# (verdicts it produces, the check, whether it needs to write)
_PLAN: tuple[tuple[tuple[tuple[str, str], ...], Check, bool], ...] = (
    ((("writable", "writable"),), check_writable, False),
    ((("errnos", "errnos"),), _one(check_errnos), True),
    ((("rename", "rename over a file"),), _one(check_rename), True),
    ((("race", "create race (local)"),), _one(check_local_race), True),
    ((("timestamps", "timestamp granularity"), ("clock", "clock skew")), check_clock, True),
    ((("permissions", "permissions"),), _one(check_permissions), False),
    ((("store", "store files"),), _one(check_store_files), False),
    ((("space", "space"),), _one(check_space), False),
    # Last of the local checks: its symlink was made with the work directory,
    # and the checks above are the second or so it needs between two stamps.
    ((("ctime", "ctime on rename"),), _one(check_ctime), True),
    (PEER_CHECKS, check_peer, True),
)


class Doctor:
    """One doctor run on one directory; :meth:`run` returns the verdicts, :meth:`report` all of it as data."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.path = os.path.abspath(options.path)
        self.mount = find_mount(self.path)
        self.host = socket.gethostname()
        self.verdicts: list[Verdict] = []
        self.peer: dict[str, str] | None = None
        self.elapsed = 0.0

    def run(self) -> list[Verdict]:
        """Run every check and clean up; returns the verdicts in order."""
        started = time.monotonic()
        self.verdicts.append(check_mount(self.mount, self.options.fs_slack))
        try:
            root = Dir.open_path(self.path)
        except OSError as exc:
            figure = f"{self.path} is not a directory ({exc.strerror})"
            self.verdicts.append(Verdict("writable", "writable", "fail", figure, "create it first"))
            return self.verdicts
        ctx = Context(self.options, root, WorkDir(root, secrets.token_hex(8)), self.mount, host=self.host)
        try:
            for produces, check, needs_write in _PLAN:
                self._guarded(ctx, produces, check, needs_write)
        finally:
            ctx.reap_children()
            ctx.work.remove()
            root.close()
            self.peer = ctx.peer
            self.elapsed = time.monotonic() - started
        return self.verdicts

    def _guarded(self, ctx: Context, produces: Sequence[tuple[str, str]], check: Check, needs_write: bool) -> None:
        """Run one check; a refusal of the filesystem (or a bug) becomes a fail verdict, never a traceback."""
        if needs_write and not ctx.writable:
            why = f"the directory is not writable ({ename(ctx.write_errno)})" if ctx.write_errno else "not writable"
            self.verdicts += [Verdict(check_, title, "skip", f"not run: {why}") for check_, title in produces]
            return
        began = time.monotonic()
        try:
            found = check(ctx)
        except (_Interrupted, KeyboardInterrupt):
            raise
        except OSError as exc:
            found = _failed(produces, *_storage_words(exc))
        except Exception as exc:  # a bug or an unexpected mount: report it, keep checking
            found = _failed(produces, f"check could not run: {exc!r}", "please report this with the output")
        for verdict in found:
            verdict.data.setdefault("seconds", round(time.monotonic() - began, 3))
        self.verdicts += found

    def report(self) -> dict[str, Any]:
        """Everything the run found, as JSON-ready data (what ``--json`` prints)."""
        return {
            "path": self.path,
            "host": self.host,
            "fstype": self.mount.fstype if self.mount else None,
            "fs_slack": self.options.fs_slack,
            "lease": self.options.lease,
            "peer": self.peer,
            "exit": exit_code(self.verdicts),
            "checks": [asdict(v) for v in self.verdicts],
        }


def _storage_words(exc: OSError) -> tuple[str, str]:
    what = STORAGE.get(exc.errno or 0)
    if what:
        return (
            f"{ename(exc.errno)} ({what}) from the filesystem",
            "free space / make the mount writable, then run the doctor again",
        )
    return f"failed: {exc}", "the filesystem refused an ordinary operation; see the figure"


def _failed(produces: Sequence[tuple[str, str]], figure: str, advice: str) -> list[Verdict]:
    return [Verdict(check, title, "fail", figure, advice) for check, title in produces]


@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C (KeyboardInterrupt), so that the doctor's clean-up runs."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave them alone
            previous[sig] = signal.signal(sig, interrupted)
    try:
        yield
    except _Interrupted:
        raise KeyboardInterrupt from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
