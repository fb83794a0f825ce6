"""Regression tests for races found in review: each reproduces an interleaving that once broke a claim."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fssession import LockTimeout, MkdirLock
from fssession.lock import read_owner, remove_litter


def test_renewal_between_listing_and_mtime_is_not_judged_by_the_old_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late renewal that lands while a contender inspects must not be taken over by its old mtime."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=1.0, fs_slack=0.05)
    holder.acquire()
    time.sleep(1.1)  # past the lease, not taken over yet: the holder now renews, late
    real_listdir, real_fstat = os.listdir, os.fstat
    state = {"renewed": False}

    def renew_during_inspection(fd: Any) -> Any:
        # the renewal lands in the middle of the contender's inspection
        if isinstance(fd, int) and not state["renewed"]:
            state["renewed"] = True
            holder.refresh()
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", renew_during_inspection)
    monkeypatch.setattr(os, "fstat", real_fstat)
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=1.0, fs_slack=0.05).acquire(timeout=0)
    assert state["renewed"]
    monkeypatch.undo()
    holder.release()  # no LockLost: nobody took over a lock renewed in time


def test_reaper_and_a_paused_waiter(tmp_path: Path) -> None:
    """remove_litter takes a waiting contender's stage; the waiter still ends up with a real lock."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=30)
    holder.acquire()
    waiter = MkdirLock(lockpath, lease=30, thread_local=False)  # so this thread can release it
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", waiter.acquire(timeout=10)))
    t.start()
    deadline = time.monotonic() + 5
    while not list(tmp_path.glob("s.lock.stage-*")):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert remove_litter(tmp_path, min_age=-10) >= 1  # the reaper takes the waiter's stage
    holder.release()
    t.join(15)
    assert "r" in result
    assert os.listdir(lockpath) == [read_owner(lockpath).name]  # type: ignore[union-attr]
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=30).acquire(timeout=0.2)
    waiter.release()
    remove_litter(tmp_path, min_age=-10)
    assert list(tmp_path.iterdir()) == []


def test_lost_publish_reply_seen_only_when_restamping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish went through but said EEXIST; the waiter later finds its stage gone."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=2.0, fs_slack=0.1)
    holder.acquire()
    waiter = MkdirLock(lockpath, lease=2.0, fs_slack=0.1)
    out: dict[str, Any] = {}

    def wait() -> None:
        try:
            waiter.acquire(timeout=5)
            out["token"] = waiter.token
            waiter.release()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.5)  # the waiter has inspected (a view is cached) and its stage is due for re-stamping
    real_rename = os.rename
    fired = {"n": 0}

    def lossy(src: Any, dst: Any) -> None:
        if os.fspath(dst) == str(lockpath) and not fired["n"]:
            fired["n"] = 1
            real_rename(src, dst)
            raise OSError(errno.EEXIST, "File exists (retransmitted)", dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", lossy)
    holder.release()
    t.join(10)
    monkeypatch.undo()
    assert "error" not in out, repr(out.get("error"))
    assert fired["n"] == 1 and out.get("token")
    assert not lockpath.exists()


def test_lost_reply_to_the_stage_mkdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lockpath = tmp_path / "s.lock"
    real_mkdir = os.mkdir

    def lossy(path: Any, mode: int = 0o777, **kw: Any) -> None:
        real_mkdir(path, mode, **kw)
        if ".stage-" in os.fspath(path):
            raise FileExistsError(errno.EEXIST, "File exists (retransmitted)", path)

    monkeypatch.setattr(os, "mkdir", lossy)
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=0)
    lock.release()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_unknown_answer_then_our_marker_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish happened but said EIO, and the check said EIO too: the listing shows our marker."""
    lockpath = tmp_path / "s.lock"
    real_rename, real_lstat = os.rename, os.lstat
    state = {"rename": 0, "lstat": 0}

    def eio_rename(src: Any, dst: Any) -> None:
        real_rename(src, dst)
        if os.fspath(dst) == str(lockpath) and not state["rename"]:
            state["rename"] = 1
            raise OSError(errno.EIO, "I/O error", dst)

    def eio_lstat(path: Any, *a: Any, **k: Any) -> Any:
        if os.fspath(path).startswith(str(lockpath) + "/") and not state["lstat"]:
            state["lstat"] = 1
            raise OSError(errno.EIO, "I/O error", path)
        return real_lstat(path, *a, **k)

    monkeypatch.setattr(os, "rename", eio_rename)
    monkeypatch.setattr(os, "lstat", eio_lstat)
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=0)  # must not mistake its own marker for a live stranger's
    monkeypatch.undo()
    assert lock.is_locked and state == {"rename": 1, "lstat": 1}
    lock.release()


def test_fork_child_does_not_inherit_the_hold(tmp_path: Path) -> None:
    lockpath = tmp_path / "s.lock"
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 3
        try:
            if lock.is_locked:
                code = 4
            else:
                lock.acquire(timeout=0.3)
                code = 5  # acquired while the parent holds it
        except LockTimeout:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lock.is_locked
    lock.release()


def test_shared_lock_does_not_block_a_non_blocking_try(tmp_path: Path) -> None:
    """thread_local=False: one thread waiting must not make another's blocking=False call wait."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=30)
    holder.acquire()
    shared = MkdirLock(lockpath, lease=30, thread_local=False)

    def wait_in_vain() -> None:
        with pytest.raises(LockTimeout):
            shared.acquire(timeout=2)

    t = threading.Thread(target=wait_in_vain)
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    with pytest.raises(LockTimeout):
        shared.acquire(blocking=False)
    assert time.monotonic() - start < 0.5
    t.join()
    holder.release()


def test_lease_must_exceed_fs_slack(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MkdirLock(tmp_path / "s.lock", lease=1.0, fs_slack=1.0)
