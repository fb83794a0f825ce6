"""``fssession doctor PATH``: is this mount fit to hold sessions?

Runs on each web node (several may run at once) and checks, by doing rather
than by asking, what NOTES.md ("What the shared filesystem must guarantee")
says fssession relies on: racing creates have exactly one winner, rename over
a file is atomic, the errnos the mount reports, timestamp granularity and the
skew to the file server's clock, how long another host's change stays
invisible here, permissions, and room.  It prints one verdict per check (ok,
warn, fail; skip when a check could not run) with the measured figure and
what to do; exit status 0 all ok, 1 warnings, 2 failures.

Everything it creates lives in ``PATH/.fssession-doctor-<token>`` and is
removed at the end, also on SIGINT/SIGTERM/SIGHUP; leftovers of a doctor that
was killed outright are removed by the next run once they are ten minutes old.

Two doctors on two hosts find each other through PATH (the *rendezvous*):
each announces itself with its private directory and a ``hello`` file in it,
pairs with the lowest-token peer it sees, and then they race creates on
agreed names and measure each other's attribute caches.  Signals between
them never rely on a lookup a cache could answer: a doctor signals by renaming
a non-empty directory to an agreed name in its own ``sig/``; the peer polls
with ``mkdir`` of that name, which the server executes against its current
state (guarantee 2) and which fails with "exists" once the signal is there.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import grp
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from types import FrameType
from typing import Any, Literal

from .fileformat import HEADER_SIZE, MAC_SIZE

__all__ = ["Doctor", "Verdict", "add_arguments", "main", "run"]

Status = Literal["ok", "warn", "fail", "skip"]

PREFIX = ".fssession-doctor-"
_WORKDIR_RE = re.compile(r"^\.fssession-doctor-([0-9a-f]{16})$")
LITTER_AGE = 600.0  # a doctor run lasts seconds; anything this old was killed
PROTOCOL = 1

LOCAL_PROCS = 4  # racing processes for the local create race
LOCAL_ROUNDS = 60
PEER_ROUNDS = 30  # cross-host race rounds (each needs a round trip barrier)
CACHE_ROUNDS = 3  # attribute-cache measurements per direction
BUCKETS = 256  # the store's fan-out directories
PEER_CHECKS = (("peer-race", "create race (hosts)"), ("attr-cache", "attribute cache"))

# "Exists" as fssession's lock understands it (lock._OCCUPIED), for judging
# the errnos the mount reports.
_LOCK_OCCUPIED = frozenset(
    {errno.EEXIST, errno.ENOTEMPTY, errno.EPERM, errno.EACCES, errno.EBUSY, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}
)
# For the rendezvous probes: a narrower set, so that a permission problem
# (EACCES) is reported instead of being taken for a signal.
_EXISTS = frozenset({errno.EEXIST, errno.EPERM, errno.ENOTEMPTY})
_STORAGE = {errno.EROFS: "read-only", errno.ENOSPC: "full", errno.EDQUOT: "over quota"}

_LOCAL_FS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs", "overlay", "jfs", "bcachefs", "vfat"}
    | {"exfat", "reiserfs", "nilfs2", "hfsplus", "ntfs", "ntfs3", "squashfs", "devtmpfs"}
)


def _ename(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if abs(seconds) < 10 else f"{seconds:.1f} s"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------- results


@dataclass
class Verdict:
    """One check's outcome: status, the measured figure, and what to do about it."""

    check: str
    title: str
    status: Status
    figure: str
    advice: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class _Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind through the clean-up."""


class _PeerGone(Exception):
    """The peer doctor stopped answering or removed its directory."""


@dataclass
class _Options:
    path: str
    fs_slack: float
    lease: float
    uids: list[int]
    sessions: int
    session_size: int
    peer_wait: float | None  # None: decide from the filesystem type


# --------------------------------------------------------------------------- mount


@dataclass
class _Mount:
    point: str
    fstype: str
    source: str
    options: dict[str, str]


def _unescape(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def _find_mount(path: str) -> _Mount | None:
    """The mount that holds *path*, from /proc/self/mountinfo (longest mount point prefix)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: _Mount | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        point = _unescape(fields[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if not inside or (best is not None and len(point) < len(best.point)):
            continue
        opts: dict[str, str] = {}
        for item in ",".join([fields[5], *tail[2:3]]).split(","):
            key, _, value = item.partition("=")
            if key:
                opts[key] = value
        best = _Mount(point, tail[0], _unescape(tail[1]), opts)
    return best


# --------------------------------------------------------------------------- the doctor


class Doctor:
    """One doctor run on one directory; :meth:`run` returns the verdicts."""

    def __init__(self, options: _Options) -> None:
        self.o = options
        self.path = os.path.abspath(options.path)
        self.token = secrets.token_hex(8)
        self.host = socket.gethostname()
        self.work = os.path.join(self.path, PREFIX + self.token)
        self.verdicts: list[Verdict] = []
        self.mount = _find_mount(self.path)
        self.created_work = False
        self.writable = False
        self.write_errno: int | None = None
        self.skew: tuple[float, float] | None = None  # (server - local, uncertainty)
        self.errnos: dict[str, str] = {}
        self.peer: dict[str, Any] | None = None
        self._children: list[int] = []

    # ----------------------------------------------------------------- plumbing
    def add(
        self, check: str, title: str, status: Status, figure: str, advice: str = "", data: dict[str, Any] | None = None
    ) -> None:
        """Record one verdict."""
        self.verdicts.append(Verdict(check, title, status, figure, advice, dict(data or {})))

    def _guarded(self, produces: Sequence[tuple[str, str]], fn: Callable[[], None], needs_write: bool = True) -> None:
        """Run one check that reports the verdicts *produces* (check, title).

        A refusal of the filesystem (or a bug) becomes a fail verdict for each
        of them that the check did not report, never a traceback; a check that
        needs to write is skipped, with the reason, when the directory is not
        writable.
        """
        if needs_write and not self.writable:
            why = f"the directory is not writable ({_ename(self.write_errno)})" if self.write_errno else "not writable"
            for check, title in produces:
                self.add(check, title, "skip", f"not run: {why}")
            return
        began, count = time.monotonic(), len(self.verdicts)
        try:
            fn()
        except (_Interrupted, KeyboardInterrupt):
            raise
        except OSError as exc:
            what = _STORAGE.get(exc.errno or 0)
            if what:
                figure = f"{_ename(exc.errno)} ({what}) from {exc.filename or 'the filesystem'}"
                advice = "free space / make the mount writable, then run the doctor again"
            else:
                figure, advice = f"failed: {exc}", "the filesystem refused an ordinary operation; see the figure"
            self._fill(produces, figure, advice)
        except Exception as exc:  # a bug or an unexpected mount: report it, keep checking
            self._fill(produces, f"check could not run: {exc!r}", "please report this with the output")
        for v in self.verdicts[count:]:
            v.data.setdefault("seconds", round(time.monotonic() - began, 3))

    def _fill(self, produces: Sequence[tuple[str, str]], figure: str, advice: str) -> None:
        done = {v.check for v in self.verdicts}
        for check, title in produces:
            if check not in done:
                self.add(check, title, "fail", figure, advice)

    def run(self) -> list[Verdict]:
        """Run every check and clean up; returns the verdicts in order."""
        started = time.monotonic()
        try:
            self._guarded([("mount", "mount")], self.check_mount, needs_write=False)
            if not os.path.isdir(self.path):
                self.add("writable", "writable", "fail", f"{self.path} is not a directory", "create it first")
                return self.verdicts
            self._guarded([("writable", "writable")], self.check_writable, needs_write=False)
            self._guarded([("errnos", "errnos")], self.check_errnos)
            self._guarded([("rename", "rename over a file")], self.check_rename)
            self._guarded([("race", "create race (local)")], self.check_local_race)
            self._guarded([("timestamps", "timestamp granularity"), ("clock", "clock skew")], self.check_clock)
            self._guarded([("permissions", "permissions")], self.check_permissions, needs_write=False)
            self._guarded([("space", "space")], self.check_space, needs_write=False)
            self._guarded(PEER_CHECKS, self.check_peer)
        finally:
            self._cleanup()
        self.elapsed = time.monotonic() - started
        return self.verdicts

    def _cleanup(self) -> None:
        for pid in self._children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        self._children.clear()
        if self.created_work:
            # A peer's probe may land in our sig/ while we delete: retry a little.
            for _ in range(20):
                shutil.rmtree(self.work, ignore_errors=True)
                if not os.path.lexists(self.work):
                    break
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.rmdir(self.work + ".poke")

    # ----------------------------------------------------------------- mount
    def check_mount(self) -> None:
        """Report the filesystem type and, for NFS, whether its attribute cache fits fs_slack."""
        m = self.mount
        if m is None:
            self.add("mount", "mount", "ok", "unknown (no /proc/self/mountinfo)")
            return
        local = m.fstype in _LOCAL_FS
        figure = f"{m.fstype} {m.source} on {m.point}" + (" (local)" if local else "")
        status: Status = "ok"
        advice = ""
        if m.fstype.startswith("nfs"):
            if "noac" in m.options:
                acdirmax = 0.0
            elif "actimeo" in m.options:
                acdirmax = float(m.options["actimeo"])
            else:
                acdirmax = float(m.options.get("acdirmax", "60"))
            figure += f", acdirmax={acdirmax:g} s"
            if acdirmax > self.o.fs_slack:
                status = "warn"
                advice = (
                    f"NFS may serve directory attributes {acdirmax:g} s old, more than fs_slack "
                    f"({self.o.fs_slack:g} s): mount with actimeo={max(1, int(self.o.fs_slack))} or raise fs_slack"
                )
        self.add(
            "mount", "mount", status, figure, advice, data={"fstype": m.fstype, "source": m.source, "local": local}
        )

    # ----------------------------------------------------------------- writable
    def check_writable(self) -> None:
        """Create the private work directory (the first write); remove old doctor litter."""
        removed = self._remove_litter()
        try:
            os.mkdir(self.work, 0o700)
        except OSError as exc:
            self.write_errno = exc.errno
            what = _STORAGE.get(exc.errno or 0, os.strerror(exc.errno or 0))
            advice = {
                errno.EROFS: "the mount is read-only: remount it read-write (or export it rw)",
                errno.ENOSPC: "the filesystem is full (blocks or inodes): free space",
                errno.EDQUOT: "the quota is exhausted: raise it or free space",
                errno.EACCES: "this user may not create entries here: fix ownership or mode",
            }.get(exc.errno or 0, "fix the mount, then run the doctor again")
            self.add("writable", "writable", "fail", f"mkdir failed: {_ename(exc.errno)} ({what})", advice)
            return
        self.created_work = True
        for sub in ("sig", "arena", "watch"):
            os.mkdir(os.path.join(self.work, sub))
        self._write_file(
            os.path.join(self.work, "hello"),
            json.dumps({"proto": PROTOCOL, "token": self.token, "host": self.host, "pid": os.getpid()}).encode(),
        )
        self.writable = True
        note = f"; removed {removed} leftovers of killed doctors" if removed else ""
        self.add("writable", "writable", "ok", f"created and wrote {PREFIX}{self.token}{note}")

    def _remove_litter(self) -> int:
        removed = 0
        try:
            with os.scandir(self.path) as entries:
                old = [e.path for e in entries if e.name.startswith(PREFIX)]
        except OSError:
            return 0
        if not old:
            return 0
        try:
            now = _server_time_hint(self.path)
        except OSError:
            return 0
        for p in old:
            try:
                age = now - os.lstat(p).st_mtime
            except OSError:
                continue
            if age > LITTER_AGE:
                shutil.rmtree(p, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.rmdir(p)
                removed += 1
        return removed

    @staticmethod
    def _write_file(path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    # ----------------------------------------------------------------- errnos
    def check_errnos(self) -> None:
        """What the mount says for "exists" and "not empty" (and whether it gets them right)."""
        base = os.path.join(self.work, "errnos")
        os.mkdir(base)
        os.mkdir(os.path.join(base, "full"))
        os.mkdir(os.path.join(base, "full", "x"))
        os.mkdir(os.path.join(base, "stage"))
        os.mkdir(os.path.join(base, "stage", "y"))
        results: dict[str, int | None] = {}
        full, stage = os.path.join(base, "full"), os.path.join(base, "stage")
        ops: list[tuple[str, Callable[[], None]]] = [
            ("mkdir-exists", partial(os.mkdir, full)),
            ("rename-onto-nonempty", partial(os.rename, stage, full)),
            ("rmdir-nonempty", partial(os.rmdir, full)),
        ]
        for key, op in ops:
            try:
                op()
                results[key] = None
            except OSError as exc:
                if exc.errno in _STORAGE:
                    raise
                results[key] = exc.errno
        self.errnos = {k: (_ename(v) if v is not None else "succeeded") for k, v in results.items()}
        figure = (
            f"exists: mkdir {self.errnos['mkdir-exists']}, rename onto non-empty "
            f"{self.errnos['rename-onto-nonempty']}; not empty: rmdir {self.errnos['rmdir-nonempty']}; "
            "read-only, full: not seen"
        )
        wrong = [k for k, v in results.items() if v is None]
        odd = [k for k, v in results.items() if v is not None and v not in _LOCK_OCCUPIED]
        if wrong:
            self.add(
                "errnos",
                "errnos",
                "fail",
                figure,
                f"{', '.join(wrong)} succeeded: this filesystem cannot hold fssession's locks",
                data=self.errnos,
            )
        elif odd:
            self.add(
                "errnos",
                "errnos",
                "warn",
                figure,
                f"{', '.join(odd)}: an errno fssession's lock does not read as 'occupied'; please report it",
                data=self.errnos,
            )
        else:
            nonposix = any(v == errno.EPERM for v in results.values())
            note = "EPERM where POSIX says EEXIST/ENOTEMPTY (sshfs does); fssession copes" if nonposix else ""
            self.add("errnos", "errnos", "ok", figure, note, data=self.errnos)

    # ----------------------------------------------------------------- rename
    def check_rename(self) -> None:
        """rename() over an existing file, racing a reader: always a whole version, the new one after."""
        target = os.path.join(self.work, "renamed")
        size, versions = 4096, 60

        def blob(v: int) -> bytes:
            return b"%08d" % v + bytes([65 + v % 26]) * (size - 8)

        self._write_file(target, blob(0))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the writer child
            code = 0
            try:
                for v in range(1, versions + 1):
                    tmp = f"{target}.tmp{v}"
                    with open(tmp, "wb") as f:
                        f.write(blob(v))
                    os.rename(tmp, target)
            except BaseException:
                code = 1
            os._exit(code)
        self._children.append(pid)
        reads = torn = missing = stale_handle = 0
        last = -1
        backwards = 0
        while True:
            done_pid, status = os.waitpid(pid, os.WNOHANG)
            try:
                with open(target, "rb") as rf:
                    got = rf.read()
                reads += 1
                if len(got) != size or not got[:8].isdigit() or got != blob(int(got[:8])):
                    torn += 1
                else:
                    v = int(got[:8])
                    backwards += v < last
                    last = max(last, v)
            except FileNotFoundError:
                missing += 1
            except OSError as exc:
                if exc.errno != errno.ESTALE:
                    raise
                stale_handle += 1
            if done_pid:
                break
        self._children.remove(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(errno.EIO, "the rename writer failed", target)
        with open(target, "rb") as rf:
            final_ok = rf.read() == blob(versions)
        figure = f"{versions} renames raced by {reads} reads: {torn} torn, {missing} missing"
        if stale_handle:
            figure += f", {stale_handle} ESTALE"
        data: dict[str, Any] = {
            "reads": reads,
            "torn": torn,
            "missing": missing,
            "estale": stale_handle,
            "backwards": backwards,
        }
        if torn or backwards or not final_ok:
            why = "a reader saw the file half-written" if torn else "a fresh open read old data"
            self.add(
                "rename",
                "rename over a file",
                "fail",
                figure,
                f"rename is not atomic here: {why}; sessions would be lost",
                data=data,
            )
        elif missing:
            # The server renames atomically (the torn count says so); a client
            # cache that still holds the replaced file makes an open fail.
            # The store's load() retries ENOENT (load_retries), so this costs
            # retries, not sessions, unless it lasts longer than those retries.
            advice = (
                "a fresh open found no file while it was being replaced (a client cache, or a rename that is not "
                "atomic): fssession's load() retries ENOENT a few times; shorten the mount's entry/attribute cache"
            )
            self.add("rename", "rename over a file", "warn", figure, advice, data=data)
        else:
            note = "ESTALE while a file is replaced: fssession retries it" if stale_handle else ""
            self.add("rename", "rename over a file", "ok", figure + "; fresh open saw the new version", note, data=data)

    # ----------------------------------------------------------------- local race
    def check_local_race(self) -> None:
        """LOCAL_PROCS processes race mkdir and rename(stage dir) on the same names, round after round."""
        arena = os.path.join(self.work, "local")
        os.mkdir(arena)
        ready_r, ready_w = os.pipe()
        fds = [ready_r, ready_w]
        gos: list[int] = []  # the write end of each racer's go pipe
        outs: list[tuple[int, int]] = []  # (pid, result fd)
        try:
            for n in range(LOCAL_PROCS):
                out_r, out_w = os.pipe()
                go_r, go_w = os.pipe()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - a racer child
                    _racer_child(arena, n, LOCAL_ROUNDS, ready_w, go_r, out_w)
                os.close(out_w)
                os.close(go_r)
                fds.append(go_w)
                gos.append(go_w)
                self._children.append(pid)
                outs.append((pid, out_r))
            for _ in range(LOCAL_ROUNDS):
                got = 0
                while got < LOCAL_PROCS:  # every racer has its stage ready
                    if not select.select([ready_r], [], [], 15.0)[0]:
                        raise TimeoutError("a racing process stopped answering")
                    got += len(os.read(ready_r, LOCAL_PROCS - got))
                # One byte to each, back to back: they wake within microseconds
                # of each other, and a create takes longer, so they contend.
                for go in gos:
                    os.write(go, b"g")
            results = []
            for pid, fd in outs:
                with os.fdopen(fd, "rb") as f:
                    raw = f.read()
                os.waitpid(pid, 0)
                self._children.remove(pid)
                results.append(json.loads(raw or b"null"))
        finally:
            for fd in fds:
                os.close(fd)
        if any(r is None for r in results):
            raise OSError(errno.EIO, "a racing process failed", arena)
        summary = _judge_races(
            arena,
            LOCAL_ROUNDS,
            [set(r["mkdir"]) for r in results],
            [set(r["rename"]) for r in results],
        )
        losers: Counter[str] = Counter()
        for r in results:
            losers.update(r["errnos"])
        self._race_verdict(
            "race", "create race (local)", f"{LOCAL_PROCS} processes x {LOCAL_ROUNDS} rounds", summary, losers
        )

    def _race_verdict(self, check: str, title: str, who: str, s: dict[str, int], losers: Counter[str]) -> None:
        errs = ", ".join(f"{k} x{v}" for k, v in sorted(losers.items())) or "none"
        figure = (
            f"{who}: mkdir {s['mkdir_double']} double wins, {s['mkdir_none']} with no winner; "
            f"rename(dir) {s['rename_double']} double wins, {s['rename_none']} with no winner; losers got {errs}"
        )
        data = {**s, "loser_errnos": dict(losers)}
        if s["mkdir_double"] or s["rename_double"]:
            advice = "two creators both won: this filesystem cannot hold fssession's locks (guarantee 1 in NOTES.md)"
            self.add(check, title, "fail", figure, advice, data=data)
        elif s["mkdir_none"] + s["rename_none"] > s["rounds"] // 10:
            advice = "many creates were reported failed although they happened: expect lock retries and slow acquires"
            self.add(check, title, "warn", figure, advice, data=data)
        else:
            note = (
                "a create that reported failure but happened (lost reply): fssession retries it"
                if (s["mkdir_none"] or s["rename_none"])
                else ""
            )
            self.add(check, title, "ok", figure, note, data=data)

    # ----------------------------------------------------------------- clock
    def check_clock(self) -> None:
        """Timestamp granularity, and this host's clock against the server's (the mtime it stamps)."""
        samples: list[tuple[float, float, int]] = []
        deadline = time.monotonic() + 1.3
        k = 0
        while True:
            probe = os.path.join(self.work, f"clock{k}")
            t0 = time.time()
            os.mkdir(probe)
            t1 = time.time()
            samples.append((t0, t1, os.lstat(probe).st_mtime_ns))
            k += 1
            coarse = all(ns % 1_000_000_000 == 0 for _, _, ns in samples)
            # Whole-second stamps bound the offset only to a second per sample;
            # samples spread over a second narrow it down to the fraction.
            if k >= 5 and (not coarse or k >= 12 or time.monotonic() > deadline):
                break
            if coarse:
                time.sleep(0.1)
        gran = _granularity([ns for _, _, ns in samples])
        tick = 1.0 if gran >= 1_000_000_000 else max(gran / 1e9, 0.01)  # stamps come from a coarse clock
        lo, hi = -float("inf"), float("inf")
        for t0, t1, ns in samples:
            lo, hi = max(lo, ns / 1e9 - t1), min(hi, ns / 1e9 + tick - t0)
        if lo > hi:  # the clock stepped while we sampled: fall back to the widest honest bound
            lo = min(ns / 1e9 - t1 for t0, t1, ns in samples)
            hi = max(ns / 1e9 + tick - t0 for t0, t1, ns in samples)
        offset, unc = (lo + hi) / 2, (hi - lo) / 2
        self.skew = (offset, unc)
        self._granularity_verdict(gran)
        self._skew_verdict(offset, unc)

    def _granularity_verdict(self, gran: int) -> None:
        names = {1: "1 ns", 1_000: "1 us", 1_000_000: "1 ms", 1_000_000_000: "1 s"}
        label = names.get(gran, f"{gran} ns")
        if gran > 1_000_000_000:
            self.add(
                "timestamps",
                "timestamp granularity",
                "fail",
                label,
                "fssession allows for whole-second stamps at most: a lease could be judged expired early",
                data={"granularity_ns": gran},
            )
        elif gran == 1_000_000_000:
            note = "whole seconds: fssession allows for it (a crashed holder elsewhere is replaced up to 2 s later)"
            self.add("timestamps", "timestamp granularity", "ok", label, note, data={"granularity_ns": gran})
        else:
            self.add("timestamps", "timestamp granularity", "ok", label, data={"granularity_ns": gran})

    def _skew_verdict(self, offset: float, unc: float) -> None:
        proven = max(0.0, abs(offset) - unc)  # judge by what the measurement proves
        side = "behind" if offset > 0 else "ahead of"
        figure = f"this host is {_fmt_s(abs(offset))} ± {_fmt_s(unc)} {side} the file server"
        ok_limit, fail_limit = self.o.fs_slack / 2, self.o.lease - self.o.fs_slack
        data = {"offset_s": -offset, "uncertainty_s": unc, "ok_below_s": ok_limit, "fail_above_s": fail_limit}
        # The lock and the store never compare this host's clock with another's
        # (they read server-stamped mtimes and the boot clock), so where the
        # server stamps the times, skew is harmless to them.  But GlusterFS
        # (features.ctime) and CephFS stamp with the *client's* clock: there
        # two hosts whose clocks differ by more than fs_slack can take over
        # each other's live locks that much early, and by more than
        # lease - fs_slack the moment they are renewed.  Two hosts each within
        # fs_slack/2 of the server are within fs_slack of each other.
        why = (
            "fix time sync (chrony/ntpd) here. Harmless where the file server stamps times (NFS, sshfs); "
            "on GlusterFS with features.ctime or CephFS hosts stamp with their own clocks and a skew above "
            f"fs_slack ({self.o.fs_slack:g} s) lets another host take over a live lock early"
        )
        if proven <= ok_limit:
            self.add("clock", "clock skew", "ok", figure, data=data)
        elif proven <= fail_limit:
            self.add("clock", "clock skew", "warn", figure, why, data=data)
        else:
            why += f"; above lease - fs_slack ({fail_limit:g} s) a renewed lock could be taken at once"
            self.add("clock", "clock skew", "fail", figure, why, data=data)

    # ----------------------------------------------------------------- permissions
    def check_permissions(self) -> None:
        """Owner, mode, setgid and umask of PATH against the uids that will use it."""
        st = os.stat(self.path)
        mode = stat.S_IMODE(st.st_mode)
        umask = _current_umask()
        owner = _user_name(st.st_uid)
        group = _group_name(st.st_gid)
        figure = (
            f"owner {owner}:{group}, mode {mode:04o}{' (setgid)' if mode & stat.S_ISGID else ''}, umask {umask:03o}"
        )
        uids = self.o.uids or [os.geteuid()]
        problems: list[str] = []
        warnings: list[str] = []
        for uid in uids:
            if not _may_write(uid, st):
                problems.append(f"{_user_name(uid)} cannot create entries in it")
        # (A read-only mount fails os.access too; "writable" reports that already.)
        read_only = bool(os.statvfs(self.path).f_flag & os.ST_RDONLY)
        if not self.o.uids and not read_only and not os.access(self.path, os.W_OK | os.X_OK):
            problems.append(f"{_user_name(os.geteuid())} cannot create entries in it (access check)")
        if len(set(uids)) > 1:
            # The store creates files 0600 and lock directories 0700: a node
            # running as another uid can neither read those sessions nor take
            # over a stale lock (the take-over renames inside the lock).
            problems.append(
                f"{len(set(uids))} different uids: fssession's files (0600) and locks (0700) are private to one uid; "
                "run every node as the same uid (on NFS: the same numeric uid)"
            )
        if umask & 0o300:
            problems.append(
                f"umask {umask:03o} removes the owner's write/search bits: new fan-out directories would be unusable"
            )
        if mode & 0o002 and not mode & stat.S_ISVTX:
            warnings.append("world-writable: any local user can remove sessions and locks (chmod o-w)")
        squash = self._created_owner()
        if squash is not None and squash != os.geteuid():
            warnings.append(
                f"files created here belong to uid {squash}, not {os.geteuid()} (root_squash / all_squash / sshfs "
                "remote user): make sure every node maps to the same uid"
            )
        data = {"uid": st.st_uid, "gid": st.st_gid, "mode": f"{mode:04o}", "umask": f"{umask:03o}", "uids": uids}
        if problems:
            self.add("permissions", "permissions", "fail", figure, "; ".join(problems + warnings), data=data)
        elif warnings:
            self.add("permissions", "permissions", "warn", figure, "; ".join(warnings), data=data)
        else:
            who = ", ".join(_user_name(u) for u in uids)
            self.add("permissions", "permissions", "ok", f"{figure}; writable by {who}", data=data)

    def _created_owner(self) -> int | None:
        if not self.writable:
            return None
        try:
            return os.lstat(os.path.join(self.work, "hello")).st_uid
        except OSError:
            return None

    # ----------------------------------------------------------------- space
    def check_space(self) -> None:
        """Free space and inodes against the store's size at --sessions sessions of --session-size bytes."""
        sv = os.statvfs(self.path)
        block = sv.f_frsize or sv.f_bsize or 4096
        free_bytes = sv.f_bavail * block
        n, size = self.o.sessions, self.o.session_size
        file_bytes = _round_up(HEADER_SIZE + size + MAC_SIZE, block)
        # Each bucket directory holds n/256 names of 64 hex digits (~80 bytes an entry).
        dir_bytes = BUCKETS * _round_up(max(1, n // BUCKETS) * 80, block)
        need_bytes = n * file_bytes + dir_bytes
        need_inodes = n + BUCKETS + 1
        inodes_known = sv.f_files > 0
        free_inodes = sv.f_favail if inodes_known else None
        figure = f"{_fmt_bytes(free_bytes)} free" + (f", {free_inodes} inodes free" if inodes_known else "")
        figure += f"; {n} sessions of {size} B need ~{_fmt_bytes(need_bytes)}" + (
            f" and {need_inodes} inodes" if inodes_known else ""
        )
        data = {
            "free_bytes": free_bytes,
            "free_inodes": free_inodes,
            "need_bytes": need_bytes,
            "need_inodes": need_inodes,
            "sessions": n,
            "session_size": size,
        }
        short = free_bytes < need_bytes or (free_inodes is not None and free_inodes < need_inodes)
        tight = free_bytes < 2 * need_bytes or (free_inodes is not None and free_inodes < 2 * need_inodes)
        if free_bytes == 0 or free_inodes == 0:
            self.add("space", "space", "fail", figure, "the filesystem is full: free space or inodes", data=data)
        elif short:
            self.add(
                "space",
                "space",
                "fail",
                figure,
                "not enough room for that many sessions: grow the filesystem",
                data=data,
            )
        elif tight:
            self.add(
                "space",
                "space",
                "warn",
                figure,
                "less than twice the room needed: sessions and temp files peak",
                data=data,
            )
        else:
            self.add("space", "space", "ok", figure, data=data)

    # ----------------------------------------------------------------- peer
    def peer_wait(self) -> float:
        """How long to wait for a peer: --peer-wait, else 3 s on network filesystems and 0 on local ones."""
        if self.o.peer_wait is not None:
            return self.o.peer_wait
        return 0.0 if self.mount is not None and self.mount.fstype in _LOCAL_FS else 3.0

    def check_peer(self) -> None:
        """Find a peer doctor through PATH; race it, and measure each other's attribute caches."""
        wait = self.peer_wait()
        if wait <= 0:
            local = self.mount is not None and self.mount.fstype in _LOCAL_FS
            why = "local filesystem, no other host mounts it" if local else "--peer-wait 0"
            for check, title in PEER_CHECKS:
                self.add(check, title, "skip", f"no peer doctor ({why})")
            return
        peer = self._find_peer(wait)
        if peer is None:
            msg = f"no peer doctor appeared within {wait:g} s"
            advice = "run the doctor on two nodes at once (e.g. with pssh) to measure these"
            for check, title in PEER_CHECKS:
                self.add(check, title, "skip", msg, advice)
            return
        self.peer = peer
        session = _PeerSession(self, peer)
        try:
            session.run()
        except _PeerGone as exc:
            done = {v.check for v in self.verdicts}
            for check, title in PEER_CHECKS:
                if check in done:
                    continue
                if session.paired:
                    # Signals are asked of the server, so caches cannot hide
                    # them: the peer died, or the mount stopped answering.
                    self.add(check, title, "warn", f"peer {peer['host']} stopped answering: {exc}", "run both again")
                else:  # e.g. three doctors at once: the peer paired with the third
                    why = f"peer {peer['host']} did not pair with this doctor (busy with another?)"
                    self.add(check, title, "skip", why, "run the doctor on two nodes at a time")

    def _find_peer(self, wait: float) -> dict[str, Any] | None:
        """Poll PATH for another doctor's work directory with a hello; propose to the lowest token."""
        poke = self.work + ".poke"
        deadline = time.monotonic() + wait
        while True:
            # Our own mkdir+rmdir in PATH makes the client revalidate PATH's
            # cached listing (NFS from the reply's attributes, sshfs drops its
            # directory cache), so a peer that announced itself is listed.
            with contextlib.suppress(OSError):
                os.mkdir(poke)
                os.rmdir(poke)
            found: list[dict[str, Any]] = []
            with contextlib.suppress(OSError), os.scandir(self.path) as entries:
                for e in entries:
                    m = _WORKDIR_RE.match(e.name)
                    if m and m.group(1) != self.token:
                        hello = _read_json(os.path.join(e.path, "hello"))
                        if hello and hello.get("proto") == PROTOCOL and hello.get("token") == m.group(1):
                            found.append({**hello, "dir": e.path})
            if found:
                return min(found, key=lambda h: str(h["token"]))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


class _PeerSession:
    """The two-doctor protocol, from this side.  Roles by token order: "lo" hosts the race arena."""

    def __init__(self, doctor: Doctor, peer: dict[str, Any]) -> None:
        self.d = doctor
        self.peer = peer
        self.peer_dir = str(peer["dir"])
        self.lo = doctor.token < str(peer["token"])
        self.arena = os.path.join(doctor.work if self.lo else self.peer_dir, "arena")
        # The peer may still be busy with its local checks (seconds on a slow
        # mount), so waits for it are generous; each is still bounded.
        self.timeout = max(15.0, 3 * doctor.o.fs_slack)
        self.paired = False

    # The signal primitives --------------------------------------------------
    def signal(self, name: str) -> None:
        """Raise signal *name*: rename a non-empty directory onto sig/<name> (replaces a peer's empty probe)."""
        tmp = os.path.join(self.d.work, f"s-{name}")
        os.mkdir(tmp)
        os.mkdir(os.path.join(tmp, "x"))
        for _ in range(50):
            try:
                os.rename(tmp, os.path.join(self.d.work, "sig", name))
                return
            except OSError as exc:
                if exc.errno not in _EXISTS:
                    raise
                time.sleep(0.01)  # not expected: a probe is always empty
        raise OSError(errno.EIO, "could not raise a signal", name)

    def probe(self, name: str) -> bool:
        """Has the peer raised *name*?  Asked of the server by mkdir, never of a cache."""
        p = os.path.join(self.peer_dir, "sig", name)
        try:
            os.mkdir(p)
        except OSError as exc:
            if exc.errno in _EXISTS:
                return True
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                raise _PeerGone("its directory is gone") from None
            raise
        try:
            os.rmdir(p)
        except OSError as exc:
            if exc.errno in _EXISTS:
                return True  # the signal landed on our probe between the two calls
        return False

    def wait_for(self, name: str, timeout: float | None = None, *, also: Sequence[str] = ()) -> str:
        """Wait until the peer raises *name* (or one of *also*); returns which.  _PeerGone on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        pause = 0.0
        while True:
            for candidate in (name, *also):
                if self.probe(candidate):
                    return candidate
            if time.monotonic() > deadline:
                raise _PeerGone(f"no {name!r} signal within {self.timeout if timeout is None else timeout:g} s")
            if pause:
                time.sleep(pause)
            # Start fast (the race barrier wants both sides released together),
            # then back off: each probe is two round trips to the server.
            pause = min(0.02, pause * 2 or 0.0005)

    # The protocol -----------------------------------------------------------
    def run(self) -> None:
        """Pair, race, exchange results, measure caches both ways, say goodbye."""
        d = self.d
        self.signal(f"want-{self.peer['token']}")
        self.wait_for(f"want-{d.token}")
        self.paired = True
        self.race()
        self.attr_cache()
        self.signal("bye")
        with contextlib.suppress(_PeerGone):
            self.wait_for("bye", timeout=5.0)

    def race(self) -> None:
        """PEER_ROUNDS rounds: barrier through signals, then mkdir and rename(stage) onto agreed names."""
        d = self.d
        mk: list[int] = []
        rn: list[int] = []
        errs: Counter[str] = Counter()
        done = 0
        stage = ""
        for r in range(PEER_ROUNDS):
            if not stage:  # made before the barrier, so that both race the moment it opens
                stage = os.path.join(d.work, f"st{r}")
                os.mkdir(stage)
                os.mkdir(os.path.join(stage, d.token))
            self.signal(f"b{r}")
            try:
                self.wait_for(f"b{r}", timeout=5.0)
            except _PeerGone:
                break
            try:
                os.mkdir(os.path.join(self.arena, f"m{r}"))
                mk.append(r)
            except OSError as exc:
                if exc.errno in _STORAGE:
                    raise
                errs[f"mkdir {_ename(exc.errno)}"] += 1
            try:
                os.rename(stage, os.path.join(self.arena, f"p{r}"))
                rn.append(r)
                stage = ""
            except OSError as exc:
                if exc.errno in _STORAGE:
                    raise
                errs[f"rename {_ename(exc.errno)}"] += 1
            done = r + 1
        skew = d.skew[0] if d.skew else None
        mine = {"rounds": done, "mkdir": mk, "rename": rn, "errnos": dict(errs), "host": d.host, "offset": skew}
        d._write_file(os.path.join(d.work, "result.json"), json.dumps(mine).encode())
        self.signal("done")
        self.wait_for("done")
        theirs = None
        give_up = time.monotonic() + self.timeout
        while theirs is None:  # a new name, never looked up here: no cache can answer for it
            theirs = _read_json(os.path.join(self.peer_dir, "result.json"))
            if theirs is None:
                if time.monotonic() > give_up:
                    raise _PeerGone("its race results never became readable")
                time.sleep(0.05)
        rounds = min(done, int(theirs["rounds"]))
        summary = _judge_races(
            self.arena,
            rounds,
            [{r for r in mk if r < rounds}, {int(r) for r in theirs["mkdir"] if int(r) < rounds}],
            [{r for r in rn if r < rounds}, {int(r) for r in theirs["rename"] if int(r) < rounds}],
        )
        losers = errs + Counter({str(k): int(v) for k, v in dict(theirs["errnos"]).items()})
        who = f"with {self.peer['host']}, {rounds} rounds"
        extra: dict[str, Any] = {"peer_host": self.peer["host"]}
        if skew is not None and theirs.get("offset") is not None:
            # Both measured against the same server clock: their difference is
            # the skew between the two hosts (what client-stamped filesystems need).
            extra["host_skew_s"] = float(theirs["offset"]) - skew
            who += f"; clocks differ by {_fmt_s(abs(extra['host_skew_s']))}"
        d._race_verdict("peer-race", "create race (hosts)", who, summary, losers)
        d.verdicts[-1].data.update(extra)
        if rounds == 0:
            d.verdicts[-1].status = "skip"
            d.verdicts[-1].figure = f"no round completed with {self.peer['host']}"

    def attr_cache(self) -> None:
        """CACHE_ROUNDS rounds each way: the writer changes its watch dir, the reader times how long it stays hidden.

        The reader primes its caches with the old state, signals ready; the
        writer renames an entry of its watch directory and replaces a file in
        it, then signals "changed".  The reader polls its cached view (listing,
        fresh open of the file) and the signal (asked of the server); the
        delay is from the first poll that saw the signal to the first that saw
        the change, on the reader's own clock.
        """
        d = self.d
        watch_mine = os.path.join(d.work, "watch")
        os.mkdir(os.path.join(watch_mine, "n0"))
        d._write_file(os.path.join(watch_mine, "data"), b"0")
        self.signal("watch-ready")
        self.wait_for("watch-ready")
        cap = max(3.0, 2 * d.o.fs_slack)  # beyond this the verdict is a failure anyway
        delays: list[tuple[float, float]] = []  # (listing, content) per round, as reader
        stop_mine, stop_theirs = f"stop-{d.token}", f"stop-{self.peer['token']}"
        stopped = False  # the reader of this direction has seen enough
        for i in range(2 * CACHE_ROUNDS):
            if i == CACHE_ROUNDS:
                stopped = False  # the other direction starts
            if stopped:
                continue
            reading = (i < CACHE_ROUNDS) == self.lo
            k = i % CACHE_ROUNDS  # how many changes this round's writer has made before
            if reading:
                delays.append(self._read_round(i, k, cap))
                if float("inf") in delays[-1] and i % CACHE_ROUNDS < CACHE_ROUNDS - 1:
                    # One round past the cap settles the verdict; spare the
                    # peer (and the operator) the remaining waits.
                    self.signal(stop_mine)
                    stopped = True
            else:
                stopped = not self._write_round(i, k, stop_theirs)
        worst_list = max(x for x, _ in delays)
        worst_data = max(y for _, y in delays)
        figure = (
            f"a change on {self.peer['host']} stayed invisible here for {_fmt_s(worst_list)} (listing), "
            f"{_fmt_s(worst_data)} (file content); worst of {len(delays)} rounds"
        )
        data = {"listing_s": worst_list, "content_s": worst_data, "cap_s": cap, "peer_host": self.peer["host"]}
        slack = d.o.fs_slack
        if worst_list == float("inf") or worst_data == float("inf"):
            figure = figure.replace("inf s", f"more than {cap:g} s")
            data = {**data, "listing_s": min(worst_list, 1e9), "content_s": min(worst_data, 1e9)}
        if worst_list > slack:
            advice = (
                f"directory attributes are cached longer than fs_slack ({slack:g} s): a lock renewed on another host "
                "can be taken over. Mount with a shorter attribute cache (NFS actimeo=1, sshfs -o dir_cache=no) "
                "or raise fs_slack above the figure"
            )
            d.add("attr-cache", "attribute cache", "fail", figure, advice, data=data)
        elif worst_list > slack / 2 or worst_data > 0.1 + 0.1 * slack:
            advice = "close to fs_slack" if worst_list > slack / 2 else ""
            if worst_data > 0.1 + 0.1 * slack:
                advice = (advice + "; " if advice else "") + (
                    "a load() here can return a session's previous version for that long after an edit elsewhere"
                )
            d.add("attr-cache", "attribute cache", "warn", figure, advice, data=data)
        else:
            d.add("attr-cache", "attribute cache", "ok", figure, data=data)

    def _write_round(self, i: int, k: int, stop: str) -> bool:
        """Make change *k* when the reader is ready; False if the reader stopped instead."""
        watch = os.path.join(self.d.work, "watch")
        if self.wait_for(f"r{i}", also=[stop]) == stop:
            return False
        os.rename(os.path.join(watch, f"n{k}"), os.path.join(watch, f"n{k + 1}"))
        self.d._write_file(os.path.join(watch, "data"), str(k + 1).encode())
        self.signal(f"c{i}")
        return True

    def _read_round(self, i: int, k: int, cap: float) -> tuple[float, float]:
        watch = os.path.join(self.peer_dir, "watch")
        want_name, want_data = f"n{k + 1}", str(k + 1).encode()

        def view() -> tuple[bool, bool]:
            try:
                names = os.listdir(watch)
            except OSError:
                names = []
            try:
                with open(os.path.join(watch, "data"), "rb") as f:
                    content = f.read()
            except OSError:
                content = b""
            return want_name in names, content == want_data

        view()  # prime every cache with the current (old) state
        self.signal(f"r{i}")
        t_server: float | None = None
        seen: list[float | None] = [None, None]
        deadline = time.monotonic() + self.timeout
        while True:
            t = time.monotonic()
            for n, hit in enumerate(view()):
                if hit and seen[n] is None:
                    seen[n] = t
            if t_server is None and self.probe(f"c{i}"):
                t_server = time.monotonic()
                deadline = t_server + cap
            if t_server is not None and None not in seen:
                break
            if time.monotonic() > deadline:
                if t_server is None:
                    raise _PeerGone(f"no 'c{i}' signal within {self.timeout:g} s")
                break
            time.sleep(0.002)
        assert t_server is not None
        return tuple(  # type: ignore[return-value]
            float("inf") if s is None else max(0.0, s - t_server) for s in seen
        )


# --------------------------------------------------------------------------- helpers


def _racer_child(arena: str, n: int, rounds: int, ready_w: int, go_r: int, out_w: int) -> None:  # pragma: no cover
    """One local racer (a forked child): per round, stage, say ready, wait for go, race; then report."""
    code = 0
    try:
        mk: list[int] = []
        rn: list[int] = []
        errs: Counter[str] = Counter()
        stage = ""
        for r in range(rounds):
            if not stage:  # a lost race leaves the stage as it was: it serves again
                stage = os.path.join(arena, f"st{n}-{r}")
                os.mkdir(stage)
                os.mkdir(os.path.join(stage, str(n)))
            os.write(ready_w, b"r")
            if not os.read(go_r, 1):
                raise EOFError
            try:
                os.mkdir(os.path.join(arena, f"m{r}"))
                mk.append(r)
            except OSError as exc:
                errs[f"mkdir {_ename(exc.errno)}"] += 1
            try:
                os.rename(stage, os.path.join(arena, f"p{r}"))
                rn.append(r)
                stage = ""
            except OSError as exc:
                errs[f"rename {_ename(exc.errno)}"] += 1
        os.write(out_w, json.dumps({"mkdir": mk, "rename": rn, "errnos": dict(errs)}).encode())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _judge_races(arena: str, rounds: int, mkdir_wins: list[set[int]], rename_wins: list[set[int]]) -> dict[str, int]:
    """Count double wins and rounds nobody won (then checking the name exists: a lost reply)."""
    s = {"rounds": rounds, "mkdir_double": 0, "mkdir_none": 0, "rename_double": 0, "rename_none": 0, "vanished": 0}
    for kind, wins, prefix in (("mkdir", mkdir_wins, "m"), ("rename", rename_wins, "p")):
        for r in range(rounds):
            winners = sum(r in w for w in wins)
            if winners > 1:
                s[f"{kind}_double"] += 1
            elif winners == 0:
                s[f"{kind}_none"] += 1
                if not os.path.lexists(os.path.join(arena, f"{prefix}{r}")):
                    s["vanished"] += 1
    return s


def _granularity(stamps: Sequence[int]) -> int:
    """The coarsest power-of-ten unit (ns) that divides every stamp; 1 s or more for whole seconds."""
    gran = 1
    for unit in (10**k for k in range(1, 11)):
        if all(ns % unit == 0 for ns in stamps):
            gran = unit
        else:
            break
    return gran


def _server_time_hint(directory: str) -> float:
    """The server's time from a fresh directory's mtime (as lock.server_now), on a doctor-prefixed name."""
    probe = os.path.join(directory, f"{PREFIX}clock-{secrets.token_hex(8)}")
    os.mkdir(probe, 0o700)
    try:
        return os.lstat(probe).st_mtime
    finally:
        os.rmdir(probe)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # No /proc: read it the only other way (set and restore at once).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _groups_of(uid: int) -> set[int]:
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return set()
    gids = {user.pw_gid}
    with contextlib.suppress(OSError):
        gids.update(os.getgrouplist(user.pw_name, user.pw_gid))
    return gids


def _may_write(uid: int, st: os.stat_result) -> bool:
    """Whether *uid* may create entries in a directory with *st*, by its mode bits (ACLs aside)."""
    if uid == 0:
        return True  # (an NFS server may still squash root: the created-owner check reports that)
    mode = st.st_mode
    if uid == st.st_uid:
        return bool(mode & stat.S_IWUSR and mode & stat.S_IXUSR)
    if st.st_gid in _groups_of(uid):
        return bool(mode & stat.S_IWGRP and mode & stat.S_IXGRP)
    return bool(mode & stat.S_IWOTH and mode & stat.S_IXOTH)


def _parse_uid(text: str) -> list[int]:
    uids = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            uids.append(int(item))
            continue
        try:
            uids.append(pwd.getpwnam(item).pw_uid)
        except KeyError:
            raise argparse.ArgumentTypeError(f"no such user: {item!r}") from None
    return uids


# --------------------------------------------------------------------------- output and CLI


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 when every check is ok (or skipped), 1 with warnings, 2 with failures."""
    statuses = {v.status for v in verdicts}
    return 2 if "fail" in statuses else 1 if "warn" in statuses else 0


def render(doctor: Doctor, verdicts: Sequence[Verdict]) -> str:
    """The verdict table for people."""
    fstype = doctor.mount.fstype if doctor.mount else "?"
    lines = [
        f"fssession doctor {doctor.path}  (host {doctor.host}, {fstype}, fs_slack {doctor.o.fs_slack:g} s, "
        f"lease {doctor.o.lease:g} s)"
    ]
    width = max(len(v.title) for v in verdicts) if verdicts else 10
    for v in verdicts:
        lines.append(f"  {v.status:<4}  {v.title:<{width}}  {v.figure}")
        if v.advice:
            lines.append(f"        {'':<{width}}  -> {v.advice}")
    counts = Counter(v.status for v in verdicts)
    code = exit_code(verdicts)
    summary = ", ".join(f"{counts[s]} {s}" for s in ("ok", "warn", "fail", "skip") if counts[s])
    lines.append(f"result: {summary} (exit {code})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the doctor for parsed arguments; print the table or JSON; return the exit code."""
    options = _Options(
        path=args.path,
        fs_slack=args.fs_slack,
        lease=args.lease,
        uids=[u for group in (args.uid or []) for u in group],
        sessions=args.sessions,
        session_size=args.session_size,
        peer_wait=args.peer_wait,
    )
    doctor = Doctor(options)
    with _terminating_signals():
        verdicts = doctor.run()
    code = exit_code(verdicts)
    if args.json:
        report = {
            "path": doctor.path,
            "host": doctor.host,
            "fstype": doctor.mount.fstype if doctor.mount else None,
            "fs_slack": options.fs_slack,
            "lease": options.lease,
            "peer": {"host": doctor.peer["host"], "token": doctor.peer["token"]} if doctor.peer else None,
            "exit": code,
            "checks": [asdict(v) for v in verdicts],
        }
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(render(doctor, verdicts))
    return code


@contextlib.contextmanager
def _terminating_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the clean-up in Doctor.run still happens."""

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave them alone
            previous[sig] = signal.signal(sig, raise_interrupted)
    try:
        yield
    except _Interrupted:
        raise KeyboardInterrupt from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _positive(kind: Callable[[str], float | int]) -> Callable[[str], Any]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Add the doctor's options to *parser* (the ``doctor`` subcommand's) and set ``run``."""
    parser.add_argument("path", metavar="PATH", help="the store's directory (on the shared mount)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument(
        "--uid",
        action="append",
        type=_parse_uid,
        metavar="USER[,USER...]",
        help="users (names or uids) the web nodes run as; default: the current user",
    )
    parser.add_argument("--fs-slack", type=_positive(float), default=1.0, help="the store's fs_slack (default 1 s)")
    parser.add_argument("--lease", type=_positive(float), default=30.0, help="the store's lock lease (default 30 s)")
    parser.add_argument(
        "--sessions", type=_positive(int), default=100_000, help="sessions to plan room for (default 100000)"
    )
    parser.add_argument(
        "--session-size", type=_positive(int), default=1024, help="bytes of data per session (default 1024)"
    )
    parser.add_argument(
        "--peer-wait",
        type=_positive(float),
        default=None,
        metavar="SECONDS",
        help="wait this long for a doctor on another host (default: 3 s on network filesystems, 0 on local ones)",
    )
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fssession.doctor PATH ...``: the doctor alone, without the other subcommands."""
    parser = argparse.ArgumentParser(prog="fssession doctor", description="check that a mount is fit to hold sessions")
    add_arguments("doctor", parser)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("fssession: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
