#!/usr/bin/env python3
"""Measure what two NFS clients see of each other's changes (run inside the NFS VM).

    scripts/testbed/nfs-vm-run -p v3 python3 scripts/testbed/nfs-probe.py [PROBE...] [--json OUT]

Client A is TESTBED_MOUNT_1, client B is TESTBED_MOUNT_2 (nfs-vm-run sets both
to the profile's two mounts, which are separate NFS clients).  One process can
act as either client: which client does an operation is decided by the mount
the path goes through, not by the process.  Every delay is measured on this
machine's CLOCK_MONOTONIC by polling every POLL seconds, and capped at CAP
seconds (past the default acdirmax of 60 s); a capped result means "not seen
within CAP".  Probes (all by default):

  symlink   A renames a symlink: when does B's lstat of the new name exist and
            show ctime > mtime?  (B primed with both names, and B unprimed)
  listing   A creates an entry: when does B list it, via a fresh open of the
            path, a long-held directory fd, or openat(held fd, ".")?
  dirmtime  A creates an entry: when does B see the directory's new mtime via
            stat(path), fstat(fresh open), fstat(held fd), fstat(openat(held, "."))?
  replace   A replaces a file by rename in a loop while B opens/fstats/reads it
  silly     a client renames over (or unlinks) a file one of its processes has
            open: the .nfsXXXX file, rmdir meanwhile, its removal by the other client
  misc      utime of a symlink via a dir fd, link() with dir fds (file, symlink),
            FIFO opens with O_NONBLOCK, racing mkdir of one name from both clients
  symswap   A renames a new symlink over an existing one while B reads it;
            rename of a missing source (plain, and one that B's cache still has)
  removed   A removes a directory / file that B has looked at: how long does B's
            lstat still find it, and what do listing / opening it give meanwhile?
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL = 0.02
CAP = 75.0
FORK = mp.get_context("fork")


def err_name(exc: OSError) -> str:
    """The symbolic errno of EXC, e.g. "ENOENT"."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def wait_for(check: Callable[[], Any], cap: float = CAP) -> tuple[float | None, Any]:
    """Poll CHECK until it returns a true value: (seconds it took or None if capped, that value)."""
    start = time.monotonic()
    while True:
        got = check()
        if got:
            return round(time.monotonic() - start, 3), got
        if time.monotonic() - start > cap:
            return None, got
        time.sleep(POLL)


class Pair:
    """The two clients' views of one export, and fresh directories seen by both."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self.root = f"probe-{uuid.uuid4().hex[:8]}"
        (a / self.root).mkdir()

    def fresh(self, name: str) -> tuple[Path, Path]:
        """A new directory created through A, once B can see it."""
        leaf = f"{self.root}/{name}-{uuid.uuid4().hex[:6]}"
        (self.a / leaf).mkdir()
        took, _ = wait_for(lambda: (self.b / leaf).is_dir(), 30)
        if took is None:
            raise RuntimeError(f"B does not see {leaf}")
        return self.a / leaf, self.b / leaf


def lstat_or_errno(path: Path) -> os.stat_result | str:
    """lstat PATH, or the errno name it failed with."""
    try:
        return os.lstat(path)
    except OSError as exc:
        return err_name(exc)


# ---------------------------------------------------------------- a: symlink


def _ctime_moved(st: os.stat_result | str) -> os.stat_result | None:
    return st if isinstance(st, os.stat_result) and st.st_ctime_ns > st.st_mtime_ns else None


def _symlink_trial(pair: Pair, primed: str) -> dict[str, Any]:
    da, db = pair.fresh("sym")
    os.symlink("some-target", da / "s1")
    time.sleep(1.5)  # a rename that updates ctime then shows ctime - mtime of about 1.5 s
    if primed != "unprimed":
        os.lstat(db / "s1")  # B caches the inode's attributes and the name
    if primed == "B cached s1 and a negative s2":
        lstat_or_errno(db / "s2")
    wall = time.time_ns()
    os.rename(da / "s1", da / "s2")
    start = time.monotonic()
    own = os.lstat(da / "s2")
    exists_s: float | None = None
    ctime_s: float | None = None
    first_moved = False
    st: os.stat_result | None = None
    while ctime_s is None and time.monotonic() - start < CAP:
        seen = lstat_or_errno(db / "s2")
        st = _ctime_moved(seen)
        if exists_s is None and isinstance(seen, os.stat_result):
            exists_s = round(time.monotonic() - start, 3)
            first_moved = st is not None
        if st is not None:
            ctime_s = round(time.monotonic() - start, 3)
        time.sleep(POLL)
    old = lstat_or_errno(db / "s1")
    return {
        "A_own_ctime_minus_mtime_s": round((own.st_ctime_ns - own.st_mtime_ns) / 1e9, 3),
        "A_ctime_minus_rename_wallclock_ms": round((own.st_ctime_ns - wall) / 1e6, 1),
        "B_s2_exists_after_s": exists_s,
        "B_ctime_gt_mtime_after_s": ctime_s,
        "B_first_lstat_of_s2_has_new_ctime": first_moved,
        "B_ctime_equals_A_ctime": st is not None and st.st_ctime_ns == own.st_ctime_ns,
        "ctime_subsecond_ns": own.st_ctime_ns % 1_000_000_000,
        "B_old_name_after": old if isinstance(old, str) else "still there",
    }


def probe_symlink(pair: Pair) -> dict[str, Any]:
    """A renames a symlink s1 -> s2; B polls lstat(s2) until it shows the rename's ctime."""
    ways = ("unprimed", "B cached s1", "B cached s1 and a negative s2")
    return {way: _symlink_trial(pair, way) for way in ways}


# ---------------------------------------------------------------- b, c: directories


def _held(db: Path) -> int:
    """A directory fd on B, listed and stat'ed, so every cache of it is warm."""
    fd = os.open(db, os.O_RDONLY | os.O_DIRECTORY)
    os.listdir(fd)
    os.listdir(db)
    os.stat(db)
    return fd


def _list_via(how: str, db: Path, fd: int) -> list[str]:
    if how == "fresh open(path)":
        return os.listdir(db)
    if how == "held fd":
        return os.listdir(fd)
    if how == "scandir(held fd)":
        with os.scandir(fd) as it:
            return [e.name for e in it]
    fresh = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    try:
        return os.listdir(fresh)
    finally:
        os.close(fresh)


LIST_WAYS = ("fresh open(path)", "held fd", "scandir(held fd)", "openat(held fd, '.')")


def probe_listing(pair: Pair) -> dict[str, Any]:
    """A creates an entry; how long until B lists it, by each way (one directory per way)."""
    return {how: _listing_trial(pair, how) for how in LIST_WAYS}


def _listing_trial(pair: Pair, how: str) -> float | None:
    da, db = pair.fresh("list")
    fd = _held(db)
    try:
        time.sleep(0.05)
        (da / "new").write_bytes(b"x")
        took, _ = wait_for(lambda: "new" in _list_via(how, db, fd))
        return took
    finally:
        os.close(fd)


def _mtime_via(how: str, db: Path, fd: int) -> int:
    if how == "stat(path)":
        return os.stat(db).st_mtime_ns
    if how == "fstat(held fd)":
        return os.fstat(fd).st_mtime_ns
    if how == "close(open(path)), then stat(path)":
        os.close(os.open(db, os.O_RDONLY | os.O_DIRECTORY))
        return os.stat(db).st_mtime_ns
    if how == "fstat(fresh open(path))":
        fresh = os.open(db, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fresh = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    try:
        return os.fstat(fresh).st_mtime_ns
    finally:
        os.close(fresh)


MTIME_WAYS = (
    "stat(path)",
    "fstat(fresh open(path))",
    "close(open(path)), then stat(path)",
    "fstat(held fd)",
    "fstat(openat(held fd, '.'))",
)


def probe_dirmtime(pair: Pair) -> dict[str, Any]:
    """A creates an entry; how long until B sees the directory's new mtime, by each way."""
    return {how: _mtime_trial(pair, how) for how in MTIME_WAYS}


def _mtime_trial(pair: Pair, how: str) -> dict[str, Any]:
    da, db = pair.fresh("mtime")
    fd = _held(db)
    try:
        before = _mtime_via(how, db, fd)
        time.sleep(0.05)
        (da / "new").write_bytes(b"x")
        new = os.stat(da).st_mtime_ns
        took, _ = wait_for(lambda: _mtime_via(how, db, fd) == new)
        return {"after_s": took, "changed_by_ns": new - before}
    finally:
        os.close(fd)


# ---------------------------------------------------------------- d: replace by rename


def _content(k: int) -> bytes:
    body = (b"%d-" % k) * (10 + (k * 37) % 120)
    return b"%d %d\n" % (k, len(body)) + body


def _replacer(da: str, stop: Any, count: Any) -> None:  # pragma: no cover - child process
    k = 1
    while not stop.is_set():
        k += 1
        tmp = os.path.join(da, f".tmp{k}")
        with open(tmp, "wb") as f:
            f.write(_content(k))
        os.rename(tmp, os.path.join(da, "f"))
        count.value = k


def _read_once(path: Path) -> tuple[str, int]:
    """Open, fstat, read to EOF, close: (outcome, version read or 0)."""
    stage = "open"
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            stage = "fstat"
            size = os.fstat(fd).st_size
            stage = "read"
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{err_name(exc)} at {stage}", 0
    data = b"".join(chunks)
    head, _, body = data.partition(b"\n")
    try:
        k, want = (int(x) for x in head.split())
    except ValueError:
        return "unparsable content", 0
    if len(body) != want:
        return ("short read" if len(body) < want else "long read"), k
    if size != len(data):
        return "fstat size != bytes read (content self-consistent)", k
    return "ok", k


RECOVERIES = ("reopen", "lstat(path), reopen", "listdir(parent), reopen")


def probe_replace(pair: Pair, reads: int) -> dict[str, Any]:
    """A replaces f by rename as fast as it can; B reads f READS times per way of recovering from a failed read."""
    return {how: _replace_trial(pair, reads, how) for how in RECOVERIES}


def _replace_trial(pair: Pair, reads: int, how: str) -> dict[str, Any]:
    da, db = pair.fresh("replace")
    (da / "f").write_bytes(_content(1))
    time.sleep(0.2)
    stop, count = FORK.Event(), FORK.Value("q", 1)
    writer = FORK.Process(target=_replacer, args=(str(da), stop, count))
    writer.start()
    outcomes: Counter[str] = Counter()
    recovery = Recovery()
    newest, backwards = 0, 0
    start = time.monotonic()
    try:
        for _ in range(reads):
            what, k = _read_once(db / "f")
            outcomes[what] += 1
            if what != "ok":
                k = recovery.recover(db / "f", how, count)
            if k and k < newest:
                backwards += 1
            newest = max(newest, k)
    finally:
        stop.set()
        writer.join(30)
    return {
        "reads": reads,
        "seconds": round(time.monotonic() - start, 1),
        "replacements": count.value - 1,
        "outcomes": dict(outcomes),
        "recovery": recovery.report(),
        "older_version_after_a_newer_one": backwards,
    }


class Recovery:
    """Retries after a failed read, until one succeeds (30 s at most), and what they took."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.worst_s = 0.0
        self.failed_again_with_no_new_replacement = 0

    def recover(self, path: Path, how: str, count: Any) -> int:
        """Retry reading PATH the way HOW says; the version read, or 0 if none within 30 s."""
        start = time.monotonic()
        attempt, seen = 0, count.value
        while time.monotonic() - start < 30:
            attempt += 1
            if how.startswith("lstat"):
                lstat_or_errno(path)
            elif how.startswith("listdir"):
                _names(path.parent)
            what, k = _read_once(path)
            if what == "ok":
                self.attempts[str(attempt) if attempt < 4 else "4-9" if attempt < 10 else "10+"] += 1
                self.worst_s = max(self.worst_s, time.monotonic() - start)
                return k
            self.failed_again_with_no_new_replacement += count.value == seen
            seen = count.value
        self.attempts["none in 30 s"] += 1
        return 0

    def report(self) -> dict[str, Any]:
        """Attempts needed (histogram), the longest recovery, and failures that no replacement explains."""
        return {
            "attempts_until_ok": dict(self.attempts),
            "worst_s": round(self.worst_s, 3),
            "failed_again_with_no_new_replacement": self.failed_again_with_no_new_replacement,
        }


# ---------------------------------------------------------------- e: silly rename


def _names(d: Path) -> list[str] | str:
    try:
        return sorted(os.listdir(d))
    except OSError as exc:
        return err_name(exc)


def _try(op: Callable[[], Any]) -> str:
    try:
        op()
    except OSError as exc:
        return err_name(exc)
    return "ok"


def _read_fd(fd: int) -> str:
    try:
        return repr(os.pread(fd, 100, 0))
    except OSError as exc:
        return err_name(exc)


def probe_silly(pair: Pair) -> dict[str, Any]:
    """Renaming over / unlinking a file its own client holds open, and the other client's view."""
    out: dict[str, Any] = {}
    # 1. same client: rename over an open file, then try to remove its directory
    da, db = pair.fresh("silly")
    (da / "x").write_bytes(b"old")
    fd = os.open(da / "x", os.O_RDONLY)
    (da / "y").write_bytes(b"new")
    os.rename(da / "y", da / "x")
    after = _names(da)
    silly = [n for n in after if n.startswith(".nfs")]
    r: dict[str, Any] = {"A_lists": after, "B_lists": _names(db), "held_fd_reads": _read_fd(fd)}
    os.unlink(da / "x")
    r["rmdir_on_A"] = _try(lambda: os.rmdir(da))
    r["rmdir_on_B"] = _try(lambda: os.rmdir(db))
    if silly:
        r["unlink_silly_on_A"] = _try(lambda: os.unlink(da / silly[0]))
    os.close(fd)
    took, _ = wait_for(lambda: not [n for n in _names(da) if n.startswith(".nfs")], 10)
    r["silly_gone_on_A_after_close_s"] = took
    took, _ = wait_for(lambda: not [n for n in _names(db) if n.startswith(".nfs")], CAP)
    r["silly_gone_on_B_after_close_s"] = took
    r["rmdir_on_A_after_close"] = _try(lambda: os.rmdir(da))
    out["rename_over_open_same_client"] = r
    # 2. same client: unlink an open file; the OTHER client deletes the .nfs file
    da, db = pair.fresh("silly2")
    (da / "x").write_bytes(b"old")
    fd = os.open(da / "x", os.O_RDONLY)
    os.unlink(da / "x")
    silly = [n for n in _names(da) if n.startswith(".nfs")]
    r = {"A_lists_after_unlink": _names(da)}
    if silly:
        wait_for(lambda: silly[0] in _names(db), 10)
        r["unlink_silly_on_B"] = _try(lambda: os.unlink(db / silly[0]))
        r["held_fd_on_A_reads_after"] = _read_fd(fd)
        r["fstat_held_fd_on_A_after"] = _try(lambda: os.fstat(fd))
    os.close(fd)
    r["A_lists_after_close"] = _names(da)
    out["unlink_open_then_other_client_deletes_silly"] = r
    # 3. the holder is on the other client: B holds x open, A renames y over x
    da, db = pair.fresh("silly3")
    (da / "x").write_bytes(b"old")
    wait_for(lambda: (db / "x").exists(), 10)
    fd = os.open(db / "x", os.O_RDONLY)
    (da / "y").write_bytes(b"new")
    os.rename(da / "y", da / "x")
    out["rename_over_file_open_on_other_client"] = {
        "A_lists": _names(da),
        "B_held_fd_reads": _read_fd(fd),
        "B_fstat_held_fd": _try(lambda: os.fstat(fd)),
    }
    os.close(fd)
    return out


# ---------------------------------------------------------------- f: misc


def _mkdir_racer(d: str, rounds: int, barrier: Any, out: Any) -> None:  # pragma: no cover - child
    got = []
    for r in range(rounds):
        barrier.wait()
        try:
            os.mkdir(os.path.join(d, f"m{r}"))
            got.append("won")
        except OSError as exc:
            got.append(err_name(exc))
    out.put(got)


def probe_misc(pair: Pair, rounds: int) -> dict[str, Any]:
    """utime on a symlink, link() with dir fds, FIFO opens, racing mkdirs."""
    out: dict[str, Any] = {}
    da, db = pair.fresh("misc")
    dfa = os.open(da, os.O_RDONLY | os.O_DIRECTORY)
    os.symlink("tgt", da / "l")
    when = (time.time_ns() // 10**9 - 1000) * 10**9 + 123456789
    res = _try(lambda: os.utime("l", ns=(when, when), dir_fd=dfa, follow_symlinks=False))
    took, _ = wait_for(lambda: getattr(lstat_or_errno(db / "l"), "st_mtime_ns", 0) == when)
    out["utime_symlink_nofollow_dirfd"] = {
        "result": res,
        "A_mtime_ok": os.lstat(da / "l").st_mtime_ns == when,
        "B_sees_after_s": took,
    }
    sub = da / "sub"
    sub.mkdir()
    dfs = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
    (da / "file").write_bytes(b"x")
    out["link_file_dirfds"] = _try(lambda: os.link("file", "file2", src_dir_fd=dfa, dst_dir_fd=dfs))
    out["link_symlink_dirfds"] = _try(lambda: os.link("l", "l2", src_dir_fd=dfa, dst_dir_fd=dfs, follow_symlinks=False))
    st = lstat_or_errno(sub / "l2")
    out["linked_symlink_is_symlink_nlink"] = [os.path.islink(sub / "l2"), getattr(st, "st_nlink", st)]
    out["link_onto_existing"] = _try(lambda: os.link("file", "file2", src_dir_fd=dfa, dst_dir_fd=dfs))
    os.close(dfs)
    out["fifo"] = _probe_fifo(da, db, dfa)
    os.close(dfa)
    out["mkdir_race"] = _mkdir_race(pair, rounds)
    return out


def _probe_fifo(da: Path, db: Path, dfa: int) -> dict[str, str]:
    r = {"mkfifo_dirfd": _try(lambda: os.mkfifo("p", dir_fd=dfa))}
    rd = -1

    def open_reader() -> None:
        nonlocal rd
        rd = os.open("p", os.O_RDONLY | os.O_NONBLOCK, dir_fd=dfa)

    r["writer_nonblock_no_reader"] = _try(lambda: os.close(os.open(da / "p", os.O_WRONLY | os.O_NONBLOCK)))
    r["reader_nonblock_dirfd"] = _try(open_reader)
    r["writer_nonblock_same_client_with_reader"] = _try(
        lambda: os.close(os.open(da / "p", os.O_WRONLY | os.O_NONBLOCK))
    )
    wait_for(lambda: (db / "p").exists(), 10)
    r["writer_nonblock_other_client_with_reader"] = _try(
        lambda: os.close(os.open(db / "p", os.O_WRONLY | os.O_NONBLOCK))
    )
    if rd >= 0:
        os.close(rd)
    return r


def _mkdir_race(pair: Pair, rounds: int) -> dict[str, Any]:
    da, db = pair.fresh("mkrace")
    barrier, q = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=_mkdir_racer, args=(str(d), rounds, barrier, q)) for d in (da, db)]
    for p in procs:
        p.start()
    res = [q.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(30)
    winners = Counter(sum(1 for side in res if side[r] == "won") for r in range(rounds))
    losers = Counter(e for side in res for e in side if e != "won")
    return {"rounds": rounds, "rounds_by_winner_count": dict(winners), "loser_errors": dict(losers)}


# ---------------------------------------------------------------- g: rename over a symlink


def _swapper(da: str, stop: Any) -> None:  # pragma: no cover - child process
    k = 0
    while not stop.is_set():
        k += 1
        os.symlink(f"t{k}", os.path.join(da, f"n{k}"))
        os.rename(os.path.join(da, f"n{k}"), os.path.join(da, "dst"))


def probe_symswap(pair: Pair, reads: int) -> dict[str, Any]:
    """A renames fresh symlinks over dst while B reads it; then renames of a missing source."""
    da, db = pair.fresh("swap")
    os.symlink("t0", da / "dst")
    wait_for(lambda: os.path.islink(db / "dst"), 10)
    stop = FORK.Event()
    p = FORK.Process(target=_swapper, args=(str(da), stop))
    p.start()
    outcomes: Counter[str] = Counter()
    newest, backwards = 0, 0
    try:
        for _ in range(reads):
            try:
                k = int(os.readlink(db / "dst")[1:])
                outcomes["ok"] += 1
                backwards += k < newest
                newest = max(newest, k)
            except OSError as exc:
                outcomes[err_name(exc)] += 1
    finally:
        stop.set()
        p.join(30)
    out: dict[str, Any] = {"reads": reads, "readlink_outcomes": dict(outcomes), "backwards": backwards}
    out["rename_missing_source"] = _try(lambda: os.rename(da / "nope", da / "z"))
    out["rename_missing_source_onto_existing"] = _try(lambda: os.rename(da / "nope", da / "dst"))
    (da / "s").write_bytes(b"x")
    wait_for(lambda: (db / "s").exists(), 10)
    os.lstat(db / "s")  # B's cache now has s
    os.rename(da / "s", da / "t")
    out["rename_source_gone_but_cached_on_B"] = _try(lambda: os.rename(db / "s", db / "u"))
    out["B_lists_after"] = _names(db)
    return out


# ---------------------------------------------------------------- removals


def _removed_trial(pair: Pair, what: str) -> dict[str, Any]:
    da, db = pair.fresh("removed")
    if what == "directory":
        (da / "x").mkdir()
        (da / "x" / "m").symlink_to("t")
    else:
        (da / "x").write_bytes(b"data")
    wait_for(lambda: (db / "x").exists(), 10)
    os.lstat(db / "x")  # B caches the name and the inode's attributes
    if what == "directory":
        os.listdir(db / "x")
        shutil.rmtree(da / "x")
    else:
        os.unlink(da / "x")
    # lstat only: an open or a listing of the path revalidates it (close-to-open)
    took, _ = wait_for(lambda: isinstance(lstat_or_errno(db / "x"), str))
    return {"B_lstat_finds_it_until_s": took, "then": _try(lambda: os.lstat(db / "x"))}


def _removed_then_opened(pair: Pair, what: str) -> dict[str, Any]:
    da, db = pair.fresh("removed")
    if what == "directory":
        (da / "x").mkdir()
    else:
        (da / "x").write_bytes(b"data")
    wait_for(lambda: (db / "x").exists(), 10)
    os.lstat(db / "x")
    if what == "directory":
        (da / "x").rmdir()
    else:
        os.unlink(da / "x")
    return {
        "open_or_list_it": _try(lambda: os.listdir(db / "x") if what == "directory" else (db / "x").read_bytes()),
        "lstat_after_that": _try(lambda: os.lstat(db / "x")),
    }


def probe_removed(pair: Pair) -> dict[str, Any]:
    """A removes what B has cached; B polls lstat(name) until it fails."""
    out: dict[str, Any] = {what: _removed_trial(pair, what) for what in ("directory", "file")}
    for what in ("directory", "file"):
        out[f"{what}, opened instead"] = _removed_then_opened(pair, what)
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    """Run the chosen probes; print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probes", nargs="*", help="which probes (default: all; see above)")
    parser.add_argument("--reads", type=int, default=3000, help="reads in the replace and symswap probes")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the mkdir race")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    a, b = Path(os.environ["TESTBED_MOUNT_1"]), Path(os.environ["TESTBED_MOUNT_2"])
    pair = Pair(a, b)
    table: dict[str, Callable[[], Any]] = {
        "symlink": lambda: probe_symlink(pair),
        "listing": lambda: probe_listing(pair),
        "dirmtime": lambda: probe_dirmtime(pair),
        "replace": lambda: probe_replace(pair, args.reads),
        "silly": lambda: probe_silly(pair),
        "misc": lambda: probe_misc(pair, args.rounds),
        "symswap": lambda: probe_symswap(pair, args.reads),
        "removed": lambda: probe_removed(pair),
    }
    results: dict[str, Any] = {"profile": os.environ.get("NFSVM_PROFILE", "?"), "A": str(a), "B": str(b)}
    for name in args.probes or list(table):
        start = time.monotonic()
        print(f"probe {name} ...", file=sys.stderr, flush=True)
        results[name] = table[name]()
        print(f"  {round(time.monotonic() - start, 1)} s: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    with contextlib.suppress(OSError):
        shutil.rmtree(a / pair.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
