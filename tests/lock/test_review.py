"""Interleavings that could break the lock, each forced: the compare-and-swap of exact-name renames must hold."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fssession import LockTimeout, MkdirLock, _lockcore
from fssession._fs import Dir
from fssession._identity import ProcessIdentity
from fssession._markers import COMMITTING, HELD, UNKNOWN, free_name, owner_name
from fssession.lock import read_owner
from fssession.settings import LockSettings

ELSEWHERE = ProcessIdentity("0" * 16, "elsewhere", 4242, 1)  # another host: never provably dead here


def test_a_renewal_after_the_judgement_defeats_the_take_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contender judged the holder stale; the holder renews before the contender acts: the take-over fails."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=1.0, fs_slack=0.05)
    holder.acquire()
    real_judge = _lockcore.judge
    fired = {"n": 0}

    def renew_then_judge(state: Any, marker: Any, mtime: int) -> str | None:
        if not fired["n"]:
            fired["n"] = 1
            holder.refresh()  # the renewal lands after the listing, before the take-over
            return None  # the contender's verdict: stale (on what it listed)
        return real_judge(state, marker, mtime)

    monkeypatch.setattr(_lockcore, "judge", renew_then_judge)
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=1.0, fs_slack=0.05).acquire(timeout=0)
    monkeypatch.undo()
    assert fired["n"] == 1
    holder.release()  # no LockLost: nothing took over a lock that was renewed


def test_a_free_marker_taken_between_listing_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter lists the free marker; someone else takes it first; the waiter must not think it holds it."""
    prefix = "a" * 64 + "."
    settings = LockSettings(lease=30, fs_slack=0.05)
    with _bucket_with(tmp_path, free_name(prefix, "1.60.0")) as bucket:
        real_try = _lockcore._try
        others: list[_lockcore.Hold] = []
        fired = {"n": 0}

        def sneak_in(attempt: Any, values: Any) -> Any:
            if list(values) == ["1.60.0"] and not fired["n"]:  # the try that follows the listing
                fired["n"] = 1
                others.append(_lockcore.acquire(bucket, prefix, settings, guesses=["1.60.0"], timeout=0))
            return real_try(attempt, values)

        monkeypatch.setattr(_lockcore, "_try", sneak_in)
        with pytest.raises(LockTimeout):
            _lockcore.acquire(bucket, prefix, settings, guesses=["0.60.0"], timeout=0.2)
        monkeypatch.undo()
        assert len(others) == 1
        names = os.listdir(tmp_path / "b")
        assert names == [others[0].marker], "exactly one holder, the one that renamed first"
        _lockcore.release(others[0], "1.60.0")


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
    """thread_local=False: one thread waiting must not make another's blocking=False call wait for it."""
    lockpath = tmp_path / "s.lock"
    holder = MkdirLock(lockpath, lease=30)
    holder.acquire()
    shared = MkdirLock(lockpath, lease=30, thread_local=False)
    done = threading.Event()

    def wait_in_vain() -> None:
        with pytest.raises(LockTimeout):
            shared.acquire(timeout=2)
        done.set()

    t = threading.Thread(target=wait_in_vain)
    t.start()
    time.sleep(0.1)
    with pytest.raises(LockTimeout):
        shared.acquire(blocking=False)
    assert not done.is_set(), "the non-blocking try returned before the blocking wait ended"
    t.join()
    holder.release()


def test_lease_must_exceed_fs_slack(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fs_slack"):
        MkdirLock(tmp_path / "s.lock", lease=1.0, fs_slack=1.0)


def _bucket_with(tmp_path: Path, name: str) -> Dir:
    (tmp_path / "b").mkdir(exist_ok=True)
    os.symlink("fssession-lock", tmp_path / "b" / name)
    return Dir.open_path(tmp_path / "b")


def test_taking_over_a_committing_holder_leaves_the_value_uncertain(tmp_path: Path) -> None:
    """A holder died between its fence and its release: its commit may or may not have landed."""
    prefix = "a" * 64 + "."
    stale = owner_name(prefix, COMMITTING, "1" * 16, 3, 0.2, ELSEWHERE, "7.60.0")
    with _bucket_with(tmp_path, stale) as bucket:
        settings = LockSettings(lease=0.2, fs_slack=0.05, server_clock=False)
        hold = _lockcore.acquire(bucket, prefix, settings, guesses=["6.60.0"], timeout=30)
        assert hold.taken_over and not hold.certain and hold.value == UNKNOWN
        assert f",{UNKNOWN}," in hold.marker, "its own marker says so, for whoever takes it over next"
        _lockcore.release(hold, UNKNOWN)
        again = _lockcore.acquire(bucket, prefix, settings, guesses=[], timeout=5)
        assert not again.certain, "an unknown value passed on stays unknown"
        _lockcore.release(again, "8.60.0")


def test_taking_over_a_holder_that_had_not_fenced_keeps_its_value(tmp_path: Path) -> None:
    """Nothing is committed without a fence, so an "o," marker's value is still the committed one."""
    prefix = "a" * 64 + "."
    stale = owner_name(prefix, HELD, "2" * 16, 0, 0.2, ELSEWHERE, "7.60.0")
    with _bucket_with(tmp_path, stale) as bucket:
        settings = LockSettings(lease=0.2, fs_slack=0.05, server_clock=False)
        hold = _lockcore.acquire(bucket, prefix, settings, guesses=[], timeout=30)
        assert hold.taken_over and hold.certain and hold.value == "7.60.0"
        _lockcore.release(hold, hold.value)
        assert os.listdir(tmp_path / "b") == [free_name(prefix, "7.60.0")]


def test_several_markers_are_never_guessed_at(tmp_path: Path) -> None:
    """Two free markers (only tampering makes them): acquiring either could give two holders."""
    prefix = "a" * 64 + "."
    with _bucket_with(tmp_path, free_name(prefix, "1.60.0")) as bucket:
        os.symlink("fssession-lock", tmp_path / "b" / free_name(prefix, "2.60.0"))
        settings = LockSettings(lease=5, fs_slack=0.05)
        with pytest.raises(LockTimeout):
            _lockcore.acquire(bucket, prefix, settings, guesses=["9.60.0"], timeout=0.2)


def test_no_marker_at_all_is_reported_not_waited_for(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with Dir.open_path(tmp_path / "b") as bucket, pytest.raises(_lockcore.NoMarker):
        _lockcore.acquire(bucket, "a" * 64 + ".", LockSettings(), guesses=["1.60.0"], timeout=5)


def test_a_lost_reply_to_the_stage_mkdir_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert os.listdir(tmp_path) == ["s.lock"]


def test_an_unknown_answer_then_our_marker_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename happened but said EIO, and the look-up said EIO too: the listing shows our marker."""
    lockpath = tmp_path / "s.lock"
    MkdirLock(lockpath).acquire(timeout=0).lock.release()
    real_rename, real_stat = os.rename, os.stat
    state = {"rename": 0, "stat": 0}

    def eio_rename(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        real_rename(src, dst, *a, **k)
        if os.fspath(dst).startswith("o,") and not state["rename"]:
            state["rename"] = 1
            raise OSError(errno.EIO, "I/O error", dst)

    def eio_stat(path: Any, *a: Any, **k: Any) -> Any:
        if isinstance(path, str) and path.startswith("o,") and not state["stat"]:
            state["stat"] = 1
            raise OSError(errno.EIO, "I/O error", path)
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "rename", eio_rename)
    monkeypatch.setattr(os, "stat", eio_stat)
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=0)  # must not mistake its own marker for a live stranger's
    monkeypatch.undo()
    assert lock.is_locked and state == {"rename": 1, "stat": 1}
    owner = read_owner(lockpath)
    assert owner is not None and owner.owner is not None and owner.owner.token == lock.token
    lock.release()
