"""Checks made on this host alone: the errnos the mount reports, rename over a file, racing creates.

Each works inside the doctor's work directory through its descriptor; the
forked children (a rename writer, the racers) inherit the descriptors and
act relative to them too.
"""

from __future__ import annotations

import errno
import json
import os
import select
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _fs
from .._fs import Dir
from ._context import Context
from ._verdict import STORAGE, Verdict, ename
from ._work import write_file

__all__ = ["LOCAL_PROCS", "LOCAL_ROUNDS", "check_errnos", "check_local_race", "check_rename", "judge_races"]

LOCAL_PROCS = 4  # racing processes for the local create race
LOCAL_ROUNDS = 60
_RENAME_SIZE = 4096
_RENAME_VERSIONS = 60


# ------------------------------------------------------------------ errnos
def _errno_of(op: Callable[[], None]) -> int | None:
    """The errno *op* fails with (None if it succeeded); the storage's own refusals propagate."""
    try:
        op()
    except OSError as exc:
        if exc.errno in STORAGE:
            raise
        return exc.errno
    return None


def check_errnos(ctx: Context) -> Verdict:
    """What the mount says for "exists" and "not empty" (and whether it gets them right)."""
    work = ctx.work.dir
    work.mkdir("errnos", 0o700)
    with work.opendir("errnos") as base:
        for parent, child in (("full", "x"), ("stage", "y")):
            base.mkdir(parent, 0o700)
            with base.opendir(parent) as made:
                made.mkdir(child, 0o700)
        results = {
            "mkdir-exists": _errno_of(lambda: base.mkdir("full", 0o700)),
            "rename-onto-nonempty": _errno_of(lambda: base.rename("stage", "full")),
            "rmdir-nonempty": _errno_of(lambda: base.rmdir("full")),
        }
    return _errnos_verdict(results)


def _odd(code: int | None) -> bool:
    """An errno the lock would not read as "occupied"."""
    return code is not None and code not in _fs.OCCUPIED


def _errnos_verdict(results: dict[str, int | None]) -> Verdict:
    named = {k: (ename(v) if v is not None else "succeeded") for k, v in results.items()}
    figure = (
        f"exists: mkdir {named['mkdir-exists']}, rename onto non-empty {named['rename-onto-nonempty']}; "
        f"not empty: rmdir {named['rmdir-nonempty']}; read-only, full: not seen"
    )
    wrong = [k for k, v in results.items() if v is None]
    odd = [k for k, v in results.items() if _odd(v)]
    if wrong:
        advice = f"{', '.join(wrong)} succeeded: this filesystem cannot hold fssession's locks"
        return Verdict("errnos", "errnos", "fail", figure, advice, named)
    if odd:
        advice = f"{', '.join(odd)}: an errno fssession's lock does not read as 'occupied'; please report it"
        return Verdict("errnos", "errnos", "warn", figure, advice, named)
    note = "EPERM where POSIX says EEXIST/ENOTEMPTY (sshfs does); fssession copes"
    return Verdict("errnos", "errnos", "ok", figure, note if errno.EPERM in results.values() else "", named)


# ------------------------------------------------------------------ rename
def _version(v: int) -> bytes:
    return b"%08d" % v + bytes([65 + v % 26]) * (_RENAME_SIZE - 8)


@dataclass
class _Reads:
    """What the reader saw while the writer replaced the file."""

    reads: int = 0
    torn: int = 0
    missing: int = 0
    estale: int = 0
    backwards: int = 0
    last: int = -1

    def read(self, work: Dir) -> None:
        """One fresh open and read of ``renamed``."""
        try:
            got, _st = work.read("renamed", 2 * _RENAME_SIZE)
        except FileNotFoundError:
            self.missing += 1
            return
        except OSError as exc:
            if exc.errno != errno.ESTALE:
                raise
            self.estale += 1
            return
        self.reads += 1
        if len(got) != _RENAME_SIZE or not got[:8].isdigit() or got != _version(int(got[:8])):
            self.torn += 1
            return
        v = int(got[:8])
        self.backwards += v < self.last
        self.last = max(self.last, v)


def _rename_writer(work: Dir) -> None:  # pragma: no cover - a forked child
    code = 0
    try:
        for v in range(1, _RENAME_VERSIONS + 1):
            write_file(work, "renamed", _version(v))
    except BaseException:
        code = 1
    os._exit(code)


def check_rename(ctx: Context) -> Verdict:
    """rename() over an existing file, racing a reader: always a whole version, the new one after."""
    work = ctx.work.dir
    write_file(work, "renamed", _version(0))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the writer child
        _rename_writer(work)
    ctx.children.append(pid)
    seen = _Reads()
    while True:
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        seen.read(work)
        if done_pid:
            break
    ctx.children.remove(pid)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(errno.EIO, "the rename writer failed", work.path("renamed"))
    final_ok = work.read("renamed", 2 * _RENAME_SIZE)[0] == _version(_RENAME_VERSIONS)
    return _rename_verdict(seen, final_ok)


def _rename_verdict(seen: _Reads, final_ok: bool) -> Verdict:
    figure = f"{_RENAME_VERSIONS} renames raced by {seen.reads} reads: {seen.torn} torn, {seen.missing} missing"
    if seen.estale:
        figure += f", {seen.estale} ESTALE"
    data = {"reads": seen.reads, "torn": seen.torn, "missing": seen.missing, "estale": seen.estale}
    data["backwards"] = seen.backwards
    title = "rename over a file"
    if seen.torn or seen.backwards or not final_ok:
        why = "a reader saw the file half-written" if seen.torn else "a fresh open read old data"
        return Verdict(
            "rename", title, "fail", figure, f"rename is not atomic here: {why}; sessions would be lost", data
        )
    if seen.missing:
        # The server renames atomically (no torn read); a client cache that
        # still holds the replaced file makes an open fail for a moment.
        advice = (
            "a fresh open found no file while it was being replaced (a client cache): fssession retries a load "
            "of a session it saw recently; shorten the mount's entry/attribute cache"
        )
        return Verdict("rename", title, "warn", figure, advice, data)
    note = "ESTALE while a file is replaced: fssession retries it" if seen.estale else ""
    return Verdict("rename", title, "ok", figure + "; fresh open saw the new version", note, data)


# ------------------------------------------------------------------ racing creates
def _racer(arena: Dir, n: int, ready_w: int, go_r: int, out_w: int) -> None:  # pragma: no cover - a child
    """One local racer (a forked child): per round, stage, say ready, wait for go, race; then report."""
    code = 0
    try:
        wins: dict[str, list[int]] = {"mkdir": [], "rename": []}
        errs: Counter[str] = Counter()
        stage = ""
        for r in range(LOCAL_ROUNDS):
            if not stage:  # a lost race leaves the stage as it was: it serves again
                stage = f"st{n}-{r}"
                arena.mkdir(stage, 0o700)
                with arena.opendir(stage) as made:
                    made.mkdir(str(n), 0o700)
            os.write(ready_w, b"r")
            if not os.read(go_r, 1):
                raise EOFError
            won = race_round(arena, r, stage, wins, errs)
            stage = "" if won else stage
        os.write(out_w, json.dumps({**wins, "errnos": dict(errs)}).encode())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def race_round(
    arena: Dir, r: int, stage: str, wins: dict[str, list[int]], errs: Counter[str], stage_dir: Dir | None = None
) -> bool:
    """Race ``mkdir m<r>`` and ``rename(stage, p<r>)``; record wins and losers' errnos; True if the rename won.

    The stage is in *stage_dir* (default: the arena itself).
    """
    try:
        arena.mkdir(f"m{r}", 0o700)
        wins["mkdir"].append(r)
    except OSError as exc:
        if exc.errno in STORAGE:
            raise
        errs[f"mkdir {ename(exc.errno)}"] += 1
    try:
        (stage_dir or arena).rename(stage, f"p{r}", dst_dir=arena)
    except OSError as exc:
        if exc.errno in STORAGE:
            raise
        errs[f"rename {ename(exc.errno)}"] += 1
        return False
    wins["rename"].append(r)
    return True


def check_local_race(ctx: Context) -> Verdict:
    """LOCAL_PROCS processes race mkdir and rename(stage dir) on the same names, round after round."""
    work = ctx.work.dir
    work.mkdir("local", 0o700)
    with work.opendir("local") as arena:
        results = _Racers(ctx, arena).run()
        summary = judge_races(
            arena, LOCAL_ROUNDS, [set(r["mkdir"]) for r in results], [set(r["rename"]) for r in results]
        )
    losers: Counter[str] = Counter()
    for r in results:
        losers.update(r["errnos"])
    return race_verdict(
        "race", "create race (local)", f"{LOCAL_PROCS} processes x {LOCAL_ROUNDS} rounds", summary, losers
    )


class _Racers:
    """The forked racers and the pipes that start each round for all of them at once."""

    def __init__(self, ctx: Context, arena: Dir) -> None:
        self.ctx = ctx
        self.arena = arena
        self.fds: list[int] = []
        self.gos: list[int] = []  # the write end of each racer's go pipe
        self.outs: list[tuple[int, int]] = []  # (pid, result fd)

    def run(self) -> list[dict[str, Any]]:
        ready_r, ready_w = os.pipe()
        self.fds += [ready_r, ready_w]
        try:
            for n in range(LOCAL_PROCS):
                self._start(n, ready_w)
            for _ in range(LOCAL_ROUNDS):
                self._round(ready_r)
            return self._collect()
        finally:
            for fd in self.fds:
                os.close(fd)

    def _start(self, n: int, ready_w: int) -> None:
        out_r, out_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a racer child
            _racer(self.arena, n, ready_w, go_r, out_w)
        os.close(out_w)
        os.close(go_r)
        self.fds.append(go_w)
        self.gos.append(go_w)
        self.ctx.children.append(pid)
        self.outs.append((pid, out_r))

    def _round(self, ready_r: int) -> None:
        got = 0
        while got < LOCAL_PROCS:  # every racer has its stage ready
            if not select.select([ready_r], [], [], 15.0)[0]:
                raise TimeoutError("a racing process stopped answering")
            got += len(os.read(ready_r, LOCAL_PROCS - got))
        # One byte to each, back to back: they wake within microseconds of
        # each other, and a create takes longer, so they contend.
        for go in self.gos:
            os.write(go, b"g")

    def _collect(self) -> list[dict[str, Any]]:
        results = []
        for pid, fd in self.outs:
            with os.fdopen(fd, "rb") as f:
                raw = f.read()
            os.waitpid(pid, 0)
            self.ctx.children.remove(pid)
            results.append(json.loads(raw or b"null"))
        if any(r is None for r in results):
            raise OSError(errno.EIO, "a racing process failed", self.arena.label)
        return results


def judge_races(arena: Dir, rounds: int, mkdir_wins: list[set[int]], rename_wins: list[set[int]]) -> dict[str, int]:
    """Count double wins and rounds nobody won (then whether the name exists: a lost reply)."""
    s = {"rounds": rounds, "mkdir_double": 0, "mkdir_none": 0, "rename_double": 0, "rename_none": 0, "vanished": 0}
    for kind, wins, prefix in (("mkdir", mkdir_wins, "m"), ("rename", rename_wins, "p")):
        for r in range(rounds):
            winners = sum(r in w for w in wins)
            if winners > 1:
                s[f"{kind}_double"] += 1
            elif winners == 0:
                s[f"{kind}_none"] += 1
                s["vanished"] += arena.exists(f"{prefix}{r}") is False
    return s


def race_verdict(check: str, title: str, who: str, s: dict[str, int], losers: Counter[str]) -> Verdict:
    """The verdict on a create race: a double win fails, many creates nobody won warn."""
    errs = ", ".join(f"{k} x{v}" for k, v in sorted(losers.items())) or "none"
    figure = (
        f"{who}: mkdir {s['mkdir_double']} double wins, {s['mkdir_none']} with no winner; "
        f"rename(dir) {s['rename_double']} double wins, {s['rename_none']} with no winner; losers got {errs}"
    )
    data = {**s, "loser_errnos": dict(losers)}
    if s["mkdir_double"] or s["rename_double"]:
        advice = "two creators both won: this filesystem cannot hold fssession's locks (guarantee 1 in NOTES.md)"
        return Verdict(check, title, "fail", figure, advice, data)
    if s["mkdir_none"] + s["rename_none"] > s["rounds"] // 10:
        advice = "many creates were reported failed although they happened: expect lock retries and slow acquires"
        return Verdict(check, title, "warn", figure, advice, data)
    lost = s["mkdir_none"] or s["rename_none"]
    note = "a create that reported failure but happened (lost reply): fssession retries it" if lost else ""
    return Verdict(check, title, "ok", figure, note, data)
