"""MkdirLock's interface: filelock's face, leases, errors, litter."""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from pathlib import Path

import filelock
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fssession import LockError, LockLost, LockTimeout, MkdirLock, SessionError, StorageError
from fssession._identity import ProcessIdentity, current_identity
from fssession.lock import _marker_name, parse_owner, read_owner, remove_litter


@pytest.fixture
def lockpath(tmp_path: Path) -> Path:
    return tmp_path / "s.lock"


def test_acquire_release_and_context_manager(lockpath: Path) -> None:
    lock = MkdirLock(lockpath)
    assert not lock.is_locked
    with lock.acquire() as same:
        assert same is lock
        assert lock.is_locked and lock.lock_counter == 1
        assert lockpath.is_dir()
        owner = read_owner(lockpath)
        assert owner is not None and owner.token == lock.token
        assert owner.owner.pid == os.getpid()
    assert not lock.is_locked
    assert list(lockpath.parent.iterdir()) == [], "a released lock leaves nothing behind"
    with lock:
        assert lock.is_locked
    assert not lockpath.exists()


def test_reentrant_per_thread(lockpath: Path) -> None:
    lock = MkdirLock(lockpath)
    with lock, lock:
        assert lock.lock_counter == 2
        lock.release()
        assert lock.is_locked and lock.lock_counter == 1
        lock.acquire()
    assert not lock.is_locked and not lockpath.exists()
    lock.acquire()
    lock.acquire()
    lock.release(force=True)
    assert not lock.is_locked and not lockpath.exists()


def test_threads_exclude_each_other(lockpath: Path) -> None:
    lock = MkdirLock(lockpath, lease=10)  # one instance, thread-local contexts
    intervals: list[tuple[float, float]] = []
    guard = threading.Lock()

    def work() -> None:
        for _ in range(40):
            with lock:
                start = time.monotonic()
                time.sleep(0.0005)
                end = time.monotonic()
            with guard:
                intervals.append((start, end))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    intervals.sort()
    assert len(intervals) == 160
    for a, b in itertools.pairwise(intervals):
        assert b[0] >= a[1], f"threads overlapped: {a} {b}"


def test_timeout_names_the_holder(lockpath: Path) -> None:
    holder = MkdirLock(lockpath, lease=10)
    holder.acquire()
    other = MkdirLock(lockpath, lease=10)
    start = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        other.acquire(timeout=0.3)
    waited = time.monotonic() - start
    assert 0.3 <= waited < 2.0
    err = info.value
    assert isinstance(err, filelock.Timeout) and isinstance(err, SessionError)
    text = str(err)
    assert f"pid {os.getpid()}" in text and current_identity().hostname[:10] in text and "held for" in text
    with pytest.raises(LockTimeout):
        other.acquire(blocking=False)
    with pytest.raises(LockTimeout):
        other.acquire(timeout=0)
    holder.release()
    other.acquire(timeout=0)
    other.release()
    assert list(lockpath.parent.iterdir()) == [], "failed attempts leave no stage behind"


def test_cancel_check_stops_waiting(lockpath: Path) -> None:
    holder = MkdirLock(lockpath)
    holder.acquire()
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(LockTimeout):
        MkdirLock(lockpath).acquire(timeout=-1, cancel_check=cancel)
    assert len(calls) == 3
    holder.release()


def test_refresh_renews_and_release_after_takeover_raises(lockpath: Path) -> None:
    a = MkdirLock(lockpath, lease=0.5, fs_slack=0.1)
    a.acquire()
    first = read_owner(lockpath)
    time.sleep(0.3)
    a.refresh()
    renewed = read_owner(lockpath)
    assert first is not None and renewed is not None
    assert renewed.token == first.token and renewed.beat == first.beat + 1
    assert a.lease_remaining > 0.3
    # a live holder on this host is not taken over before its lease ran out
    b = MkdirLock(lockpath, lease=0.5, fs_slack=0.1)
    with pytest.raises(LockTimeout):
        b.acquire(timeout=0.2)
    # once it ran out (no refresh), a contender takes over
    b.acquire(timeout=3)
    assert a.lease_remaining == 0.0, "the old holder's own clock says its lease is over"
    assert a.is_locked  # it learns of the loss at its next check
    with pytest.raises(LockLost):
        a.refresh()
    assert not a.is_locked
    owner = read_owner(lockpath)
    assert owner is not None and owner.token == b.token, "the new holder keeps the lock"
    b.release()


def test_release_of_lost_lock_raises_and_keeps_new_holder(lockpath: Path) -> None:
    a = MkdirLock(lockpath, lease=0.4, fs_slack=0.1)
    a.acquire()
    b = MkdirLock(lockpath, lease=0.4, fs_slack=0.1)
    b.acquire(timeout=3)
    with pytest.raises(LockLost):
        a.release()
    owner = read_owner(lockpath)
    assert owner is not None and owner.token == b.token
    b.release()
    assert not lockpath.exists()


def test_lease_remaining_counts_down(lockpath: Path) -> None:
    lock = MkdirLock(lockpath, lease=3.0, fs_slack=1.0)
    assert lock.lease_remaining == 0.0
    with lock:
        left = lock.lease_remaining
        assert 1.5 < left <= 2.0
        time.sleep(0.2)
        assert lock.lease_remaining < left


def test_not_a_directory_in_the_locks_place(lockpath: Path) -> None:
    lockpath.write_text("planted")
    with pytest.raises(LockError):
        MkdirLock(lockpath).acquire(timeout=0.2)
    assert lockpath.read_text() == "planted"


def test_symlink_in_the_locks_place_is_not_followed(tmp_path: Path, lockpath: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lockpath.symlink_to(elsewhere)
    with pytest.raises(LockError):
        MkdirLock(lockpath).acquire(timeout=0.2)
    assert list(elsewhere.iterdir()) == []


def test_missing_parent_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        MkdirLock(tmp_path / "nope" / "s.lock").acquire(timeout=0.2)
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value, OSError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; the read-only mount test covers it")
def test_permission_denied_is_a_storage_error(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(StorageError) as info:
            MkdirLock(d / "s.lock").acquire(timeout=0.2)
        assert info.value.errno in (errno.EACCES, errno.EPERM)
    finally:
        d.chmod(0o700)


def test_leftovers_of_a_crash_do_not_wedge(lockpath: Path) -> None:
    """An empty lock dir, or one holding only junk (sshfs .fuse_hidden, a released marker), is free."""
    lockpath.mkdir()
    MkdirLock(lockpath).acquire(timeout=0).lock.release()
    for junk in (".fuse_hidden0000000a00000001", "r,0123456789abcdef0123456789abcdef", "stray-dir"):
        lockpath.mkdir()
        if junk == "stray-dir":
            (lockpath / junk).mkdir()
            (lockpath / junk / "file").write_text("x")
        else:
            (lockpath / junk).write_text("x")
        lock = MkdirLock(lockpath)
        lock.acquire(timeout=0)
        assert sorted(os.listdir(lockpath)) == [read_owner(lockpath).name]  # type: ignore[union-attr]
        lock.release()
        assert not lockpath.exists()


def test_remove_litter_removes_only_old_stages(tmp_path: Path) -> None:
    old = tmp_path / f"s.lock.stage-{'a' * 32}"
    new = tmp_path / f"s.lock.stage-{'b' * 32}"
    other = tmp_path / "s.lock.stage-notatoken"
    for d in (old, new, other):
        d.mkdir()
    (old / "o,x").symlink_to("fssession-lock-owner")
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert remove_litter(tmp_path, min_age=600) == 1
    assert not old.exists() and new.exists() and other.exists()


hostnames = st.text(min_size=0, max_size=100)


@given(
    token=st.text("0123456789abcdef", min_size=32, max_size=32),
    beat=st.integers(0, 10**9),
    lease=st.floats(0.001, 10**6),
    pid=st.integers(1, 2**22),
    start=st.integers(0, 2**62),
    host_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    hostname=hostnames,
)
def test_owner_record_round_trips(
    token: str, beat: int, lease: float, pid: int, start: int, host_id: str, hostname: str
) -> None:
    name = _marker_name(token, beat, lease, ProcessIdentity(host_id, hostname, pid, start))
    assert "/" not in name and "\0" not in name and len(name.encode()) <= 255
    info = parse_owner(name)
    assert info is not None
    assert (info.token, info.beat, info.owner.pid, info.owner.start_time, info.owner.host_id) == (
        token,
        beat,
        pid,
        start,
        host_id,
    )
    assert abs(info.lease - int(lease * 1000) / 1000) < 1e-9


@given(st.text(max_size=300))
def test_parse_owner_never_crashes(name: str) -> None:
    info = parse_owner(name)
    assert info is None or name.startswith("o,")
