"""MkdirLock's interface: filelock's face, leases, bounded trust in markers, errors, litter."""

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
from fssession._fs import Dir
from fssession._identity import ProcessIdentity, current_identity
from fssession._markers import HELD, owner_name, parse
from fssession.lock import read_owner, remove_stages


@pytest.fixture
def lockpath(tmp_path: Path) -> Path:
    return tmp_path / "s.lock"


def _token(path: Path) -> str | None:
    owner = read_owner(path)
    return owner.owner.token if owner is not None and owner.owner is not None else None


def test_acquire_release_and_context_manager(lockpath: Path) -> None:
    lock = MkdirLock(lockpath)
    assert not lock.is_locked
    with lock.acquire() as same:
        assert same is lock
        assert lock.is_locked and lock.lock_counter == 1
        assert lockpath.is_dir()
        owner = read_owner(lockpath)
        assert owner is not None and owner.owner is not None
        assert owner.owner.token == lock.token and owner.owner.identity.pid == os.getpid()
    assert not lock.is_locked
    assert os.listdir(lockpath) == ["f,"], "a released lock keeps its directory, holding only the free marker"
    assert read_owner(lockpath) is None
    with lock:
        assert lock.is_locked
    assert [p.name for p in lockpath.parent.iterdir()] == ["s.lock"], "no stage or litter beside it"


def test_reentrant_per_thread(lockpath: Path) -> None:
    lock = MkdirLock(lockpath)
    with lock, lock:
        assert lock.lock_counter == 2
        lock.release()
        assert lock.is_locked and lock.lock_counter == 1
        lock.acquire()
    assert not lock.is_locked and read_owner(lockpath) is None
    lock.acquire()
    lock.acquire()
    lock.release(force=True)
    assert not lock.is_locked and read_owner(lockpath) is None


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
    assert time.monotonic() - start >= 0.3, "it waited the whole timeout"
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
    assert os.listdir(lockpath.parent) == ["s.lock"], "failed attempts leave nothing behind"


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
    assert first is not None and renewed is not None and first.owner and renewed.owner
    assert renewed.owner.token == first.owner.token and renewed.owner.beat == first.owner.beat + 1
    assert a.lease_remaining > 0.0
    # once the lease ran out (no refresh), a contender takes over
    b = MkdirLock(lockpath, lease=0.5, fs_slack=0.1)
    b.acquire(timeout=30)
    assert a.lease_remaining == 0.0, "the old holder's own clock says its lease is over"
    assert a.is_locked  # it learns of the loss at its next check
    with pytest.raises(LockLost):
        a.refresh()
    assert not a.is_locked
    assert _token(lockpath) == b.token, "the new holder keeps the lock"
    b.release()


def test_live_holder_is_not_taken_over_within_its_lease(lockpath: Path) -> None:
    a = MkdirLock(lockpath, lease=5, fs_slack=0.1)
    a.acquire()
    with pytest.raises(LockTimeout):
        MkdirLock(lockpath, lease=5, fs_slack=0.1).acquire(timeout=0.5)
    assert _token(lockpath) == a.token
    a.release()


def test_release_of_lost_lock_raises_and_keeps_new_holder(lockpath: Path) -> None:
    a = MkdirLock(lockpath, lease=0.4, fs_slack=0.1)
    a.acquire()
    b = MkdirLock(lockpath, lease=0.4, fs_slack=0.1)
    b.acquire(timeout=30)
    with pytest.raises(LockLost):
        a.release()
    assert _token(lockpath) == b.token
    b.release()
    assert read_owner(lockpath) is None


def test_lease_remaining_counts_down(lockpath: Path) -> None:
    lock = MkdirLock(lockpath, lease=3.0, fs_slack=1.0)
    assert lock.lease_remaining == 0.0
    with lock:
        left = lock.lease_remaining
        assert 0 < left <= 2.0
        time.sleep(0.2)
        assert lock.lease_remaining < left


def _plant_owner(lockpath: Path, lease: float, hostname: str = "elsewhere") -> str:
    """A marker of a holder on another host (never provably dead here) claiming *lease* seconds."""
    lockpath.mkdir(exist_ok=True)
    for name in os.listdir(lockpath):
        os.unlink(lockpath / name)
    who = ProcessIdentity("0" * 16, hostname, 4242, 1)
    name = owner_name("", HELD, "9" * 16, 0, lease, who, "")
    (lockpath / name).symlink_to("fssession-lock")
    return name


def test_a_recorded_lease_is_honoured_only_up_to_max_lease(lockpath: Path) -> None:
    """A planted marker claiming a year blocks for at most max_lease, not a year."""
    _plant_owner(lockpath, lease=365 * 86400)
    lock = MkdirLock(lockpath, lease=0.5, max_lease=1.0, fs_slack=0.1, server_clock=False)
    start = time.monotonic()
    lock.acquire(timeout=60)
    assert time.monotonic() - start >= 1.0, "a live-looking holder was taken over before max_lease"
    lock.release()


def test_timeout_message_says_the_lease_was_capped(lockpath: Path) -> None:
    _plant_owner(lockpath, lease=365 * 86400)
    with pytest.raises(LockTimeout) as info:
        MkdirLock(lockpath, lease=10, fs_slack=0.1).acquire(timeout=0.1)
    assert "capped at 40 s" in str(info.value)


def test_hostile_holder_names_are_escaped_in_messages(lockpath: Path) -> None:
    _plant_owner(lockpath, lease=30, hostname="evil")
    planted = next(iter(os.listdir(lockpath)))
    os.rename(lockpath / planted, lockpath / planted.replace(",evil", ",\x1b[2J\nFAKE LOG"))
    with pytest.raises(LockTimeout) as info:
        MkdirLock(lockpath, lease=10, fs_slack=0.1).acquire(timeout=0.1)
    text = str(info.value)
    assert "\x1b" not in text and "\n" not in text and "\\x1b" in text


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


def test_an_empty_lock_directory_is_free(lockpath: Path) -> None:
    """Made by someone else's mkdir, or emptied: no marker means no holder, so it is initialised."""
    lockpath.mkdir()
    with MkdirLock(lockpath).acquire(timeout=0):
        assert read_owner(lockpath) is not None
    assert os.listdir(lockpath) == ["f,"]


def test_junk_beside_the_marker_is_ignored(lockpath: Path) -> None:
    """FUSE's and NFS's names for a removed file still open (and anything else) never wedge the lock."""
    MkdirLock(lockpath).acquire(timeout=0).lock.release()
    junk = [".fuse_hidden0000000a00000001", ".nfs00000000000a1b2c00000001", "stray"]
    (lockpath / junk[0]).write_text("x")
    (lockpath / junk[1]).write_text("x")
    (lockpath / junk[2]).mkdir()
    for _ in range(2):
        with MkdirLock(lockpath).acquire(timeout=0):
            pass
    assert sorted(os.listdir(lockpath)) == sorted([*junk, "f,"])


def test_foreign_entries_and_no_marker_are_refused_not_guessed(lockpath: Path) -> None:
    lockpath.mkdir()
    (lockpath / "foreign").write_text("x")
    with pytest.raises(LockError):
        MkdirLock(lockpath).acquire(timeout=0)
    assert (lockpath / "foreign").read_text() == "x"


def test_remove_stages_removes_only_old_stages(tmp_path: Path) -> None:
    old = tmp_path / f"s.lock.stage-{'a' * 32}"
    new = tmp_path / f"s.lock.stage-{'b' * 32}"
    other = tmp_path / "s.lock.stage-notatoken"
    for d in (old, new, other):
        d.mkdir()
    (old / "f,").symlink_to("fssession-lock")
    past = time.time() - 3600
    os.utime(old, (past, past))
    with Dir.open_path(tmp_path) as directory:
        assert remove_stages(directory, time.time(), min_age=600) == 1
    assert not old.exists() and new.exists() and other.exists()


def test_a_stage_swapped_for_a_symlink_is_removed_as_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    stage = tmp_path / f"s.lock.stage-{'c' * 32}"
    stage.symlink_to(victim)
    past = time.time() - 3600
    os.utime(stage, (past, past), follow_symlinks=False)
    with Dir.open_path(tmp_path) as directory:
        remove_stages(directory, time.time(), min_age=600)
    assert (victim / "keep").read_text() == "precious"
    assert not stage.exists() and not stage.is_symlink()


hostnames = st.text(min_size=0, max_size=100)
values = st.text("0123456789abcdefABC._-", max_size=40)


@given(
    token=st.text("0123456789abcdef", min_size=16, max_size=16),
    beat=st.integers(0, 10**9),
    lease=st.floats(0.001, 10**6),
    pid=st.integers(1, 2**22),
    start=st.integers(0, 2**62),
    host_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    hostname=hostnames,
    value=values,
)
def test_owner_record_round_trips(
    token: str, beat: int, lease: float, pid: int, start: int, host_id: str, hostname: str, value: str
) -> None:
    prefix = "a" * 64 + "."
    name = owner_name(prefix, HELD, token, beat, lease, ProcessIdentity(host_id, hostname, pid, start), value)
    assert "/" not in name and "\0" not in name and len(name.encode()) <= 255
    marker = parse(prefix, name)
    assert marker is not None and marker.owner is not None
    owner = marker.owner
    assert (owner.token, owner.beat, owner.identity.pid, owner.identity.start_time, owner.identity.host_id) == (
        token,
        beat,
        pid,
        start,
        host_id,
    )
    assert marker.value == value
    assert abs(owner.lease - int(lease * 1000) / 1000) < 1e-9


@given(st.text(max_size=300))
def test_parse_never_crashes(name: str) -> None:
    marker = parse("", name)
    assert marker is None or name[:2] in ("f,", "o,", "c,")
