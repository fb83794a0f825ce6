"""The lock's properties with real processes and real signals on a local directory.

The same properties across two mounts of a shared export are in
tests/lock/test_shared.py.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fssession import LockLost, LockTimeout, MkdirLock
from fssession._fs import Dir
from fssession._identity import ProcessIdentity, current_identity
from fssession._markers import HELD, owner_name
from fssession.lock import read_owner, remove_stages
from tests.lock.helpers import finish, gate_take_over, overlaps, read_intervals, read_line, send, spawn, worker_argv
from tests.support.lockworker import raw_monotonic_ns

FORK = mp.get_context("fork")


def test_exclusion_between_processes(tmp_path: Path) -> None:
    lockpath = tmp_path / "s.lock"
    outs = [tmp_path / f"iv{i}" for i in range(6)]
    procs = [spawn(worker_argv("hammer", lockpath, out, 150, 0.0003)) for out in outs]
    results = [finish(p) for p in procs]
    assert all(r["lost"] == 0 for r in results)
    intervals = read_intervals(outs)
    assert len(intervals) == 6 * 150
    assert overlaps(intervals) == []
    assert len({iv[2] for iv in intervals}) == len(intervals), "every hold has its own token"
    assert [p.name for p in tmp_path.glob("s.lock*")] == ["s.lock"], "no stage left beside the lock"
    assert os.listdir(lockpath) == ["f,"], "free, holding only its free marker"


def _token(lockpath: Path) -> str | None:
    owner = read_owner(lockpath)
    return owner.owner.token if owner is not None and owner.owner is not None else None


def test_sigkilled_holder_on_this_host_is_replaced_at_once(tmp_path: Path) -> None:
    lockpath = tmp_path / "s.lock"
    holder = spawn(worker_argv("hold", lockpath), lease=120)
    assert read_line(holder).startswith("HELD")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = MkdirLock(lockpath, lease=120)
    lock.acquire(timeout=60)  # well inside the 120 s lease: only the dead-PID rule can free it
    lock.release()


def test_recycled_pid_is_not_mistaken_for_the_holder(tmp_path: Path) -> None:
    """A record naming a live PID with another start time is a dead holder."""
    me = current_identity()
    fake = ProcessIdentity(me.host_id, me.hostname, os.getppid(), me.start_time + 12345)
    lockpath = tmp_path / "s.lock"
    lockpath.mkdir()
    (lockpath / owner_name("", HELD, "f" * 16, 0, 30.0, fake, "")).symlink_to("x")
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=1)
    lock.release()


def test_live_holder_on_this_host_is_not_taken_over_within_its_lease(tmp_path: Path) -> None:
    lockpath = tmp_path / "s.lock"
    holder = spawn(worker_argv("hold", lockpath), lease=3, fs_slack=0.2)
    assert read_line(holder).startswith("HELD")
    with pytest.raises(LockTimeout) as info:
        MkdirLock(lockpath, lease=3).acquire(timeout=1.5)
    assert f"pid {holder.pid}" in str(info.value)
    send(holder, "release")
    assert read_line(holder).startswith("OK release")
    holder.wait()


@pytest.mark.parametrize("command", ["release", "refresh"])
def test_stopped_holder_is_taken_over_and_fenced(tmp_path: Path, command: str) -> None:
    """SIGSTOP past the lease: a contender takes over; the resumed holder gets LockLost."""
    lockpath = tmp_path / "s.lock"
    lease = 3.0
    holder = spawn(worker_argv("hold", lockpath), lease=lease, fs_slack=0.3)
    held = read_line(holder)
    assert held.startswith("HELD")
    holder.send_signal(signal.SIGSTOP)
    try:
        new = MkdirLock(lockpath, lease=30)
        new.acquire(timeout=lease + 60)
        # From the holder's own clock reading after its acquire (later than
        # the stamp contenders judge by, so this can only understate the age).
        took = (raw_monotonic_ns() - int(held.split()[2])) / 1e9
    finally:
        holder.send_signal(signal.SIGCONT)
    assert took >= lease * 0.9, "a live holder was taken over before its lease ran out"
    send(holder, command)
    reply = read_line(holder)
    assert reply.startswith(f"LOST {command}"), reply
    holder.wait(timeout=10)
    assert _token(lockpath) == new.token, "the new holder keeps the lock"
    new.release()
    assert read_owner(lockpath) is None


def _plant_dead_holder(lockpath: Path) -> str:
    """A lock whose holder was SIGKILLed, on this host: stale at once."""
    holder = spawn(worker_argv("hold", lockpath), lease=30)
    assert read_line(holder).startswith("HELD")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    owner = read_owner(lockpath)
    assert owner is not None
    return owner.name


def _racer(
    lockpath: str, before: Callable[[], None], results: Any, hold_until: Any, name: str
) -> None:  # pragma: no cover - runs in a child process
    gate_take_over(before)
    lock = MkdirLock(lockpath, lease=30)
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
        results.put((name, None))
        return
    results.put((name, lock.token))
    hold_until.wait(30)
    try:
        lock.release()
        results.put((name, "released"))
    except LockLost:
        results.put((name, "lost"))


def test_double_break_simultaneous(tmp_path: Path) -> None:
    """Two contenders judge the same stale lock, then act at the same instant: one wins."""
    lockpath = tmp_path / "s.lock"
    stale = _plant_dead_holder(lockpath)
    barrier = FORK.Barrier(2)
    results = FORK.Queue()
    release = FORK.Event()
    procs = [FORK.Process(target=_racer, args=(str(lockpath), barrier.wait, results, release, n)) for n in ("a", "b")]
    for p in procs:
        p.start()
    first = [results.get(timeout=30), results.get(timeout=30)]
    winners = [tok for _, tok in first if tok]
    assert len(winners) == 1, f"exactly one contender may take over, got {first}"
    owner = read_owner(lockpath)
    assert owner is not None and _token(lockpath) == winners[0] and owner.name != stale
    release.set()
    assert results.get(timeout=30)[1] == "released"
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert read_owner(lockpath) is None


def test_slow_breaker_never_removes_the_new_holders_lock(tmp_path: Path) -> None:
    """B judged the lock stale; A takes it over, releases, and C acquires; only then B acts."""
    lockpath = tmp_path / "s.lock"
    _plant_dead_holder(lockpath)
    judged = FORK.Event()
    go = FORK.Event()
    results = FORK.Queue()
    release_b = FORK.Event()

    def b_gate() -> None:
        judged.set()
        go.wait(30)

    b = FORK.Process(target=_racer, args=(str(lockpath), b_gate, results, release_b, "b"))
    b.start()
    assert judged.wait(30), "B never judged the lock stale"
    a = MkdirLock(lockpath, lease=30)
    a.acquire(timeout=30)  # A breaks the same stale lock
    a.release()
    c = MkdirLock(lockpath, lease=30)
    c.acquire(timeout=0)  # C holds a brand-new lock under the same name
    go.set()  # now B acts on its old judgement
    name, token = results.get(timeout=30)
    assert (name, token) == ("b", None), "B must not get the lock"
    b.join(30)
    assert _token(lockpath) == c.token, "C's lock survived B's late break"
    c.release()


def _fake_rename(real: Callable[..., None], *, perform: bool, code: int, when: Callable[[str, str], bool]) -> Any:
    calls = {"n": 0}

    def fake(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if calls["n"] == 0 and when(os.fspath(src), os.fspath(dst)):
            calls["n"] += 1
            if perform:
                real(src, dst, *a, **k)
            raise OSError(code, os.strerror(code), src)
        real(src, dst, *a, **k)

    return fake


@pytest.mark.parametrize("code", [errno.ENOENT, errno.ESTALE, errno.EIO, errno.EEXIST])
def test_acquire_whose_reply_was_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The rename of the free marker happened but an error came back: we still hold it, at once."""
    lockpath = tmp_path / "s.lock"
    MkdirLock(lockpath).acquire(timeout=0).lock.release()
    fake = _fake_rename(os.rename, perform=True, code=code, when=lambda s, d: s == "f," and d.startswith("o,"))
    monkeypatch.setattr(os, "rename", fake)
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=0)  # no waiting: a wrong answer would time out, or wait for the lease
    monkeypatch.undo()
    assert lock.is_locked
    lock.release()
    assert os.listdir(lockpath) == ["f,"]


def test_creation_that_nobody_won(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GlusterFS: both racers' publishes say EEXIST and nothing was created.  Try again at once."""
    lockpath = tmp_path / "s.lock"
    fake = _fake_rename(os.rename, perform=False, code=errno.EEXIST, when=lambda s, d: ".stage-" in s)
    monkeypatch.setattr(os, "rename", fake)
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=0)
    lock.release()


@pytest.mark.parametrize("command", ["release", "refresh"])
def test_renew_and_release_whose_reply_was_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    lockpath = tmp_path / "s.lock"
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire()
    fake = _fake_rename(os.rename, perform=True, code=errno.ENOENT, when=lambda s, d: s.startswith("o,"))
    monkeypatch.setattr(os, "rename", fake)
    getattr(lock, command)()  # no LockLost: the operation did happen
    monkeypatch.undo()
    if command == "refresh":
        owner = read_owner(lockpath)
        assert owner is not None and owner.owner is not None and owner.owner.beat == 1
        lock.release()
    assert os.listdir(lockpath) == ["f,"]


def test_spurious_enoent_while_the_marker_is_there_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GlusterFS: a rename by exact name fails with ENOENT although the source exists: not a LockLost."""
    lockpath = tmp_path / "s.lock"
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire()
    fake = _fake_rename(os.rename, perform=False, code=errno.ENOENT, when=lambda s, d: s.startswith("o,"))
    monkeypatch.setattr(os, "rename", fake)
    lock.refresh()
    monkeypatch.undo()
    owner = read_owner(lockpath)
    assert owner is not None and owner.owner is not None and owner.owner.beat == 1
    lock.release()


def test_occupied_reported_as_eperm_is_not_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sshfs says EPERM where POSIX says ENOENT/EEXIST: still just "held"."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=30)
    holder.acquire()
    real = os.rename

    def sshfs_like(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        try:
            real(src, dst, *a, **k)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise OSError(errno.EPERM, "Operation not permitted", src) from None
            raise

    monkeypatch.setattr(os, "rename", sshfs_like)
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=30).acquire(timeout=0.2)
    monkeypatch.undo()
    holder.release()


def test_waiting_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter sleeps between tries, with backoff: never a busy loop (counted, not timed)."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=30)
    holder.acquire()
    attempts: list[str] = []
    pauses: list[float] = []
    real_rename, real_sleep = os.rename, time.sleep

    def counting(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if os.fspath(dst).startswith("o,"):
            attempts.append(os.fspath(dst))
        real_rename(src, dst, *a, **k)

    def sleeping(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(os, "rename", counting)
    monkeypatch.setattr(time, "sleep", sleeping)
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=30).acquire(timeout=1.0)
    monkeypatch.undo()
    holder.release()
    # Each try renames the few free names the holder can publish (its value
    # and its successor), then the waiter sleeps: tries per sleep stay small
    # however fast the machine is.
    assert pauses, "the waiter never slept"
    assert len(attempts) <= 3 * (len(pauses) + 1), (len(attempts), len(pauses))
    print(f"{len(attempts)} renames, {len(pauses)} pauses")
    # Backoff from 1 ms to a cap of 2-50 ms (20x the cost of a try): after
    # the first doublings no pause is shorter than half the smallest cap.
    assert min(pauses[4:-1]) >= 0.001 / 2, sorted(pauses)[:5]  # the last one is cut short by the deadline


def test_random_sigkills_never_wedge_the_lock(tmp_path: Path) -> None:
    """Kill hammering workers at random instants; each time the lock is free again at once."""
    lockpath = tmp_path / "s.lock"
    rng = random.Random(1234)
    for round_ in range(15):
        workers = [spawn(worker_argv("hammer", lockpath, tmp_path / f"iv{round_}-{i}", 100000, 0)) for i in range(2)]
        time.sleep(0.15 + rng.random() * 0.3)
        for w in workers:
            w.send_signal(signal.SIGKILL)
        for w in workers:
            w.wait()
        lock = MkdirLock(lockpath, lease=60)
        lock.acquire(timeout=30)  # shorter than the 60 s lease: only crash recovery can free it in time
        lock.release()
        ivs = read_intervals(tmp_path.glob(f"iv{round_}-*"))
        assert overlaps(ivs) == []
    with Dir.open_path(tmp_path) as directory:
        remove_stages(directory, time.time(), min_age=-1)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("s.lock")]
    assert leftovers == ["s.lock"]
    assert os.listdir(lockpath) == ["f,"]
