"""``store_stats`` and ``inspect_session``: counts that match what is in the store, verdicts that match the file.

Stores are real (``SessionStore`` on local disk); what a crash, another host
or a hostile writer would leave is planted with plain filesystem calls.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fssession import SessionStore, StorageError
from fssession._identity import ProcessIdentity, current_identity
from fssession._markers import HELD, owner_name
from fssession.layout import StoreLayout
from fssession.report import inspect_session, store_stats
from tests.support import KEY, REPO


def _name(path: Path, sid: str) -> str:
    layout = StoreLayout(path)
    try:
        return layout.name_for(sid)
    finally:
        layout.close()


def _file(path: Path, sid: str) -> Path:
    name = _name(path, sid)
    return path / name[:2] / name


def _marker(path: Path, sid: str) -> Path:
    name = _name(path, sid)
    (found,) = [p for p in (path / name[:2]).iterdir() if p.name.startswith(name + ".")]
    return found


def _hold_as(path: Path, sid: str, who: ProcessIdentity, lease: float = 30.0) -> Path:
    """Replace the session's free marker with a held one recording *who* (by a rename, as a holder would)."""
    free = _marker(path, sid)
    value = free.name.split(",", 1)[1]
    name = _name(path, sid)
    held = free.parent / owner_name(name + ".", HELD, "ab" * 8, 0, lease, who, value)
    os.rename(free, held)
    return held


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ stats
def test_stats_count_what_is_there(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=600)
    sids = [store.create({"i": i, "pad": "x" * i}) for i in range(50)]
    old = time.time() - 7200
    for sid in sids[:7]:
        os.utime(_file(tmp_path, sid), (old, old))  # idle for two hours: expired
    name = _name(tmp_path, sids[20])
    bucket = tmp_path / name[:2]
    (bucket / f"{name}.tmp-{'0' * 16}").write_bytes(b"")  # a write in progress
    (bucket / f"{'e' * 64}.tmp-{'1' * 16}").write_bytes(b"")  # old: a crash leftover
    os.utime(bucket / f"{'e' * 64}.tmp-{'1' * 16}", (old, old))
    (bucket / ".nfs000000000001").write_bytes(b"")
    (bucket / "notes.txt").write_text("foreign")
    os.symlink("nowhere", bucket / f"{'f' * 64}.f,1.600.0")  # a marker whose session is gone
    _marker(tmp_path, sids[30]).unlink()  # a session whose marker is gone
    (tmp_path / "README").write_text("foreign in the root")
    with store.edit(sids[40]):  # held by this process, live
        stats = store_stats(tmp_path)
    assert (stats.sessions, stats.expired, stats.locks_held, stats.locks_stale) == (50, 7, 1, 0)
    assert (stats.temp_files, stats.temp_files_orphaned, stats.nfs_pending) == (2, 1, 1)
    assert (stats.orphaned_markers, stats.unmarked_sessions, stats.foreign, stats.unreadable) == (1, 1, 2, 0)
    assert stats.idle_age["<1d"] == 7 and stats.idle_age["<1m"] == 43 and stats.idle_age[">=1d"] == 0
    assert stats.bytes == sum(_file(tmp_path, s).stat().st_size for s in sids)
    counts = [
        sum(len(n) == 64 for n in os.listdir(tmp_path / f"{b:02x}")) if (tmp_path / f"{b:02x}").is_dir() else 0
        for b in range(256)
    ]
    assert (stats.per_directory_min, stats.per_directory_max) == (min(counts), max(counts))
    assert stats.directories == sum((tmp_path / f"{b:02x}").is_dir() for b in range(256))
    assert any("notes.txt" in p for p in stats.problems) and any("README" in p for p in stats.problems)
    # The reaper, judging the same store, finds the same expired sessions.
    assert store.reap(dry_run=True).expired == stats.expired


def test_stale_locks_by_the_locks_rules(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    dead, remote = store.create({"n": 1}), store.create({"n": 2})
    _hold_as(tmp_path, dead, dataclasses.replace(current_identity(), pid=_dead_pid()))  # rule a: dead, here
    st = _hold_as(tmp_path, remote, ProcessIdentity("0123456789abcdef", "web9", 4242, 1)).lstat()
    restamped = st.st_ctime_ns > st.st_mtime_ns  # rule b needs the rename's stamp
    stats = store_stats(tmp_path)
    assert stats.locks_held == 2
    # The remote holder's marker was renamed just now: live by its ctime, or
    # of unknown age where renames do not stamp ctime.
    assert (stats.locks_stale, stats.locks_age_unknown) == (1, 0 if restamped else 1)
    if not restamped:
        pytest.skip("this filesystem does not stamp renames in ctime: rule b cannot be shown here")
    time.sleep(0.2)
    # With a lease of 10 ms (recorded leases capped at 40 ms) both are stale now.
    assert store_stats(tmp_path, lease=0.01).locks_stale == 2


def test_a_planted_lease_is_capped(tmp_path: Path) -> None:
    """A marker claiming a year is judged by the capped lease (4 x the store's), as the lock judges it."""
    store = SessionStore(tmp_path, secret_key=KEY)
    sid = store.create()
    held = _hold_as(tmp_path, sid, ProcessIdentity("0123456789abcdef", "web9", 4242, 1), lease=365 * 86400.0)
    st = held.lstat()
    if st.st_ctime_ns <= st.st_mtime_ns:
        pytest.skip("this filesystem does not stamp renames in ctime")
    time.sleep(0.05)
    assert store_stats(tmp_path, lease=0.01).locks_stale == 1, "4 x 0.01 s passed: stale despite a year recorded"
    assert store_stats(tmp_path, lease=30.0).locks_stale == 0


def test_stats_follow_nothing_and_hang_on_nothing(tmp_path: Path) -> None:
    store_dir, outside = tmp_path / "store", tmp_path / "outside"
    store = SessionStore(store_dir, secret_key=KEY)
    sid = store.create({"n": 1})
    outside.mkdir()
    (outside / ("c" * 64)).write_bytes(Path(_file(store_dir, sid)).read_bytes())
    (store_dir / "cd").symlink_to(outside)  # a bucket that is a symlink: never followed
    os.mkfifo(store_dir / _name(store_dir, sid)[:2] / ("d" * 64))  # a FIFO with a session's name
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(store_stats(store_dir)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert result, "store_stats hung"
    stats = result[0]
    assert isinstance(stats.sessions, int)
    assert stats.sessions == 1 and stats.foreign == 2
    assert any("cd: not a bucket" in p for p in stats.problems)


def test_stats_of_something_that_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not an fssession store"):
        store_stats(tmp_path)
    with pytest.raises(StorageError) as info:
        store_stats(tmp_path / "missing")
    assert info.value.errno == errno.ENOENT


# ------------------------------------------------------------------ inspect
def test_inspect_verdicts(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=600)
    sid = store.create({"user": "alice"})
    live = inspect_session(tmp_path, sid, [KEY])
    assert (live["state"], live["data"], live["generation"], live["lock"]) == ("live", {"user": "alice"}, 1, "free")
    assert live["serializer"] == "pickle" and live["idle_timeout"] == 600
    assert abs(live["expires"] - (live["last_access"] + 600)) < 1
    assert inspect_session(tmp_path, sid, ["another-key-0123456789abc", KEY])["state"] == "live"
    wrong = inspect_session(tmp_path, sid, ["wrong-key-0123456789abcdef"])
    assert wrong["state"] == "tampered" and "does not verify" in wrong["reason"]
    with store.edit(sid):
        held = inspect_session(tmp_path, sid, [KEY])
    assert held["lock"] == "held" and f"pid {os.getpid()} on" in held["locked_by"]
    old = time.time() - 7200
    os.utime(_file(tmp_path, sid), (old, old))
    assert inspect_session(tmp_path, sid, [KEY])["state"] == "expired"
    store.delete(sid)
    assert inspect_session(tmp_path, sid, [KEY])["state"] == "missing"
    with pytest.raises(ValueError):
        inspect_session(tmp_path, "../../etc/passwd", [KEY])
    with pytest.raises(ValueError, match="at least 16 bytes"):
        inspect_session(tmp_path, sid, ["short"])


def test_inspect_another_sessions_file_does_not_verify(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    admin, mine = store.create({"role": "admin"}), store.create({"role": "user"})
    shutil.copyfile(_file(tmp_path, admin), _file(tmp_path, mine))
    copied = inspect_session(tmp_path, mine, [KEY])
    assert copied["state"] == "tampered" and "data" not in copied


def test_inspect_reads_no_more_than_max_size_and_never_blocks(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    big = store.create({"pad": "x" * 5000})
    small = inspect_session(tmp_path, big, [KEY], max_size=1000)
    assert small["state"] == "tampered" and "larger than the store's max_size" in small["reason"]
    assert inspect_session(tmp_path, big, [KEY])["state"] == "live"
    fifo = store.create()
    _file(tmp_path, fifo).unlink()
    os.mkfifo(_file(tmp_path, fifo))
    result: list[dict[str, object]] = []
    worker = threading.Thread(target=lambda: result.append(inspect_session(tmp_path, fifo, [KEY])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert result, "inspect blocked on a FIFO"
    assert result[0]["state"] == "tampered" and "a FIFO" in str(result[0]["reason"])


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_inspect_refuses_a_planted_naming_key(tmp_path: Path, plant: str) -> None:
    store_dir = tmp_path / "store"
    store = SessionStore(store_dir, secret_key=KEY)
    sid = store.create()
    key = store_dir / ".fssession-naming-key"
    (tmp_path / "elsewhere").write_bytes(key.read_bytes())
    key.unlink()
    if plant == "symlink":
        key.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(key)
    result: list[BaseException] = []

    def attempt() -> None:
        try:
            inspect_session(store_dir, sid, [KEY])
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert result, "inspect hung or followed the planted key"
    assert isinstance(result[0], StorageError)
    if plant == "symlink":
        assert result[0].errno == errno.ELOOP  # opened with O_NOFOLLOW
    else:
        assert "naming key is not a small regular file" in str(result[0])


def test_inspect_a_json_session(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, serializer="json")
    sid = store.create({"n": [1, 2]})
    report = inspect_session(tmp_path, sid, [KEY])
    assert report["serializer"] == "json" and report["data"] == {"n": [1, 2]}


# ------------------------------------------------------------------ memory
def test_stats_of_a_million_sessions_stays_under_100_mb() -> None:
    """Streaming: peak memory of `stats` over 1,000,000 session files (on tmpfs, for speed)."""
    shm = Path("/dev/shm")
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize if shm.is_dir() else 0
    if free < 6 << 30:
        pytest.skip(f"needs /dev/shm with 6 GiB free for a million files (has {free >> 20} MiB)")
    root = Path(tempfile.mkdtemp(prefix="fss-million-", dir=shm))
    try:
        store = SessionStore(root, secret_key=KEY)
        blob = _file(root, store.create({"user": "alice"})).read_bytes()
        for bucket in range(256):
            (root / f"{bucket:02x}").mkdir(exist_ok=True)
        names = (hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32).hexdigest() for i in range(1_000_000))
        for name in names:
            fd = os.open(root / name[:2] / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, blob)
            os.close(fd)
        code = (
            "import json, sys; from fssession.report import store_stats; s = store_stats(sys.argv[1]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
            "print(json.dumps({'sessions': s.sessions, 'peak_kb': int(hwm)}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=1800, cwd=REPO, check=True
        )
        result = json.loads(out.stdout)
        print(f"stats over {result['sessions']:,} sessions: peak {result['peak_kb'] / 1024:.1f} MB")
        assert result["sessions"] == 1_000_001
        assert result["peak_kb"] < 100 * 1024
    finally:
        shutil.rmtree(root, ignore_errors=True)
