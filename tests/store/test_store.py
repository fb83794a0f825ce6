"""SessionStore: the contract, a hypothesis model of it, tampering, binding, stale reads and faults."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from fssession import (
    InvalidSessionId,
    LockLost,
    SessionError,
    SessionNotFound,
    SessionStore,
    SessionTooLarge,
    StorageError,
    TamperedSession,
    _lockcore,
)
from fssession._markers import FREE, parse
from fssession._sessionfile import Found
from fssession.fileformat import read_header, verify
from fssession.layout import TMP_INFIX, header_value
from tests.support import KEY, REPO, Clock, session_files

GRACE = 5  # the reaper's grace period in the model


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "s", secret_key=KEY, max_age=100)


def _entries(root: Path) -> list[Path]:
    """Everything in the buckets (files, markers, temp files)."""
    return [p for b in root.iterdir() if b.is_dir() and len(b.name) == 2 for p in b.iterdir()]


def test_contract(store: SessionStore) -> None:
    sid = store.create({"user": "alice"})
    assert store.load(sid) == {"user": "alice"}
    with store.edit(sid) as data:
        data["n"] = data.get("n", 0) + 1
    assert store.load(sid) == {"user": "alice", "n": 1}
    with pytest.raises(RuntimeError), store.edit(sid) as data:
        data["n"] = 99
        raise RuntimeError("the block failed")
    assert store.load(sid) == {"user": "alice", "n": 1}, "not written if the block raises"
    store.touch(sid)
    new = store.rotate(sid)
    assert new != sid and store.load(new) == {"user": "alice", "n": 1}
    assert store.load(sid) is None
    with pytest.raises(SessionNotFound):
        store.touch(sid)
    assert store.delete(new) is True and store.delete(new) is False
    assert store.load(new) is None
    assert _entries(store.root) == [], "nothing left: no files, markers or temp files"


def test_files_do_not_reveal_ids_and_are_private(store: SessionStore) -> None:
    sid = store.create({"x": 1})
    (f,) = session_files(store.root)
    assert sid not in str(f) and len(f.name) == 64 and f.parent.name == f.name[:2]
    assert f.stat().st_mode & 0o777 == 0o600
    assert f.parent.stat().st_mode & 0o777 == 0o700
    assert str(f) == store.layout.path_for(sid)


def test_each_session_has_one_free_marker_naming_its_version(store: SessionStore) -> None:
    sid = store.create({"x": 1})
    with store.edit(sid) as d:
        d["x"] = 2
    f = Path(store.layout.path_for(sid))
    markers = [parse(f.name + ".", n) for n in os.listdir(f.parent) if n != f.name]
    assert len(markers) == 1 and markers[0] is not None and markers[0].kind == FREE
    assert markers[0].value == header_value(read_header(f.read_bytes()))
    assert os.path.islink(f.parent / markers[0].name)


def test_exceptions_are_typed(store: SessionStore) -> None:
    for bad in ["../../etc/passwd", "a" * 42 + "\0", 42, None, "x" * 43]:
        with pytest.raises(InvalidSessionId):
            store.load(bad)  # type: ignore[arg-type]
    missing = store.create()
    store.delete(missing)
    for op in (store.touch, store.rotate):
        with pytest.raises(SessionNotFound) as info:
            op(missing)
        assert isinstance(info.value, KeyError) and isinstance(info.value, SessionError)
    with pytest.raises(SessionNotFound), store.edit(missing):
        pass
    with pytest.raises(SessionTooLarge):
        SessionStore(store.root, secret_key=KEY, max_size=100).create({"big": "x" * 1000})


def test_bad_settings_are_refused_with_the_settings_name(tmp_path: Path) -> None:
    for options, word in [
        ({"lease": -1}, "lease"),
        ({"max_age": 0}, "max_age"),
        ({"fs_slack": 5, "lease": 2}, "fs_slack"),
    ]:
        with pytest.raises(ValueError, match=word):
            SessionStore(tmp_path, secret_key=KEY, **options)
    with pytest.raises(TypeError, match="nonsense"):
        SessionStore(tmp_path, secret_key=KEY, nonsense=1)


def test_key_rotation(tmp_path: Path) -> None:
    old = SessionStore(tmp_path, secret_key="old-key-0123456789abcdef")
    sid = old.create({"a": 1})
    rotated = SessionStore(tmp_path, secret_key=["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
    assert rotated.load(sid) == {"a": 1}
    with rotated.edit(sid) as d:
        d["a"] = 2
    with pytest.raises(TamperedSession):
        old.load(sid)  # now signed by the new key only
    assert SessionStore(tmp_path, secret_key="new-key-0123456789abcdef").load(sid) == {"a": 2}


def test_sliding_and_absolute_expiry(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    store = SessionStore(tmp_path, secret_key=KEY, max_age=100, absolute_max_age=250, clock=clock)
    sid = store.create({"a": 1})
    for _ in range(2):
        clock.advance(90)
        assert store.load(sid) == {"a": 1}  # each load inside max_age keeps it alive
    clock.advance(80)  # idle only 80 s, but 260 s old
    assert store.load(sid) is None, "past the absolute lifetime"
    sid2 = store.create({})
    clock.advance(101)
    assert store.load(sid2) is None
    with pytest.raises(SessionNotFound):
        store.touch(sid2)


def test_absolute_lifetime_is_on_by_default(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=100)
    assert store.absolute_max_age == 30 * 86400
    assert SessionStore(tmp_path, secret_key=KEY, max_age=60 * 86400).absolute_max_age == 60 * 86400
    assert SessionStore(tmp_path, secret_key=KEY, absolute_max_age=None).absolute_max_age is None


def test_touching_the_file_does_not_keep_a_session_past_its_absolute_lifetime(tmp_path: Path) -> None:
    """A writer of the directory can set the mtime (idle expiry); the signed absolute end still holds."""
    clock = Clock(1_800_000_000.0)
    store = SessionStore(tmp_path, secret_key=KEY, max_age=100, absolute_max_age=1000, clock=clock)
    sid = store.create({"a": 1})
    f = Path(store.layout.path_for(sid))
    for _ in range(12):
        clock.advance(90)
        os.utime(f, (clock(), clock()))  # the attacker keeps it "recently used"
    assert store.load(sid) is None


def test_load_does_not_rewrite_data(store: SessionStore) -> None:
    sid = store.create({"a": 1})
    (f,) = session_files(store.root)
    before = (f.stat().st_ino, f.read_bytes())
    for _ in range(5):
        store.load(sid)
    assert (f.stat().st_ino, f.read_bytes()) == before


class _Bomb:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["flip", "truncate", "extend", "empty", "evil-pickle", "header-only"])
def test_tampered_files_are_refused_and_never_unpickled(
    store: SessionStore, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    sid = store.create({"a": 1})
    (f,) = session_files(store.root)
    blob = f.read_bytes()
    marker = tmp_path / "pwned"
    altered = {
        "flip": blob[:70] + bytes([blob[70] ^ 1]) + blob[71:],
        "truncate": blob[:-5],
        "extend": blob + b"x",
        "empty": b"",
        "evil-pickle": pickle.dumps({"x": _Bomb(str(marker))}),
        "header-only": blob[:60],
    }[how]
    f.write_bytes(altered)
    with caplog.at_level(logging.WARNING, logger="fssession.store"), pytest.raises(TamperedSession):
        store.load(sid)
    assert str(f) in caplog.text, "the warning names the file"
    with pytest.raises(TamperedSession), store.edit(sid):
        pass
    assert not marker.exists()
    assert f.read_bytes() == altered, "a refused file is left as it was"


@pytest.mark.parametrize("how", ["copy", "rename"])
def test_a_session_file_moved_onto_another_sessions_name_does_not_verify(store: SessionStore, how: str) -> None:
    """The MAC binds the id: the admin's file under mallory's name is not the admin's session for her."""
    admin = store.create({"user": "admin", "role": "admin"})
    mallory = store.create({"user": "mallory"})
    src, dst = Path(store.layout.path_for(admin)), Path(store.layout.path_for(mallory))
    if how == "copy":
        shutil.copyfile(src, dst)
    else:
        os.rename(src, dst)
    with pytest.raises(TamperedSession):
        store.load(mallory)
    with pytest.raises(TamperedSession), store.edit(mallory):
        pass


def test_a_rolled_back_file_is_refused_to_a_client_that_saw_newer(store: SessionStore) -> None:
    sid = store.create({"role": "admin"})
    f = Path(store.layout.path_for(sid))
    old = f.read_bytes()
    with store.edit(sid) as d:
        d["role"] = "user"  # a downgrade
    seen = read_header(f.read_bytes()).generation
    f.write_bytes(old)  # a writer of the directory puts the old copy back
    assert store.load(sid) == {"role": "admin"}, "without the client's generation nothing can tell"
    with pytest.raises(TamperedSession, match="rolled back"):
        store.load(sid, min_generation=seen)


def test_a_symlink_in_place_of_a_session_is_refused(store: SessionStore, tmp_path: Path) -> None:
    sid = store.create({"a": 1})
    (f,) = session_files(store.root)
    other = tmp_path / "elsewhere"
    other.write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(other)
    with pytest.raises(TamperedSession):
        store.load(sid)


def test_a_fifo_in_place_of_a_session_does_not_hang(store: SessionStore) -> None:
    sid = store.create({"a": 1})
    (f,) = session_files(store.root)
    f.unlink()
    os.mkfifo(f)
    with pytest.raises(TamperedSession, match="regular"):
        store.load(sid)
    with pytest.raises(TamperedSession), store.edit(sid):
        pass


def test_an_unknown_id_costs_no_sleep(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    known = store.create({"a": 1})
    unknown = store.create({"b": 1})
    fresh = SessionStore(store.root, secret_key=KEY)  # a process that never saw either
    store.delete(unknown)

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s for an id nobody has")

    monkeypatch.setattr(time, "sleep", no_sleep)
    assert fresh.load(unknown) is None
    assert not fresh.exists(unknown)
    assert fresh.load(known) == {"a": 1}


def test_buckets_that_are_symlinks_are_never_followed(tmp_path: Path) -> None:
    root, victim = tmp_path / "s", tmp_path / "victim"
    victim.mkdir()
    store = SessionStore(root, secret_key=KEY)
    for bucket in (f"{i:02x}" for i in range(256)):
        if not (root / bucket).exists():
            (root / bucket).symlink_to(victim)
    fresh = SessionStore(root, secret_key=KEY)
    failures = 0
    for _ in range(40):
        try:
            fresh.create({"a": 1})
        except StorageError as exc:
            assert exc.errno in (errno.ELOOP, errno.ENOTDIR)
            failures += 1
    assert failures > 0 and list(victim.iterdir()) == [], "a session was written through a planted symlink"
    del store


def test_commit_checks_the_lock_first(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the lock was taken over during the block, the commit raises LockLost and writes nothing."""
    sid = store.create({"n": 0})

    def lost(hold: Any, value: str) -> None:
        raise LockLost("taken over (simulated)")

    monkeypatch.setattr(_lockcore, "fence", lost)
    with pytest.raises(LockLost), store.edit(sid) as data:
        data["n"] = 1
    monkeypatch.undo()
    assert store.load(sid) == {"n": 0}
    assert [p for p in _entries(store.root) if TMP_INFIX in p.name] == []


def test_write_failure_keeps_the_old_version(tmp_path: Path) -> None:
    """EFBIG under `ulimit -f` mid-write: StorageError, old version intact, no temp file (real process)."""
    root = tmp_path / "s"
    store = SessionStore(root, secret_key=KEY)
    sid = store.create({"small": 1})
    code = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
from fssession import SessionStore, StorageError
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
store = SessionStore({str(root)!r}, secret_key={KEY!r})
try:
    with store.edit({sid!r}) as d:
        d["big"] = "x" * 100000
except StorageError as exc:
    print("StorageError", exc.errno)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["StorageError", str(errno.EFBIG)], r.stdout + r.stderr
    assert store.load(sid) == {"small": 1}
    assert [p for p in _entries(root) if TMP_INFIX in p.name] == []
    with store.edit(sid) as d:  # and the lock was given back
        d["small"] = 2


def test_full_disk(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "fss-full", str(mnt)], check=True)
    try:
        store = SessionStore(mnt, secret_key=KEY)
        sid = store.create({"a": 1})
        with pytest.raises(StorageError) as info, store.edit(sid) as d:
            d["big"] = os.urandom(400_000)
        assert info.value.errno == errno.ENOSPC
        assert store.load(sid) == {"a": 1}
        assert [p for p in _entries(mnt) if TMP_INFIX in p.name] == []
        store.close()  # it holds its directories open
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _assert_markers_match(root: Path) -> None:
    """Each session file has exactly one marker, free and naming its version; no marker outlives its file."""
    for bucket in root.iterdir():
        if not bucket.is_dir() or len(bucket.name) != 2:
            continue
        names = set(os.listdir(bucket))
        sessions = {n for n in names if len(n) == 64}
        for name in names - sessions:
            assert name[:64] in sessions, f"marker {name} outlived its session"
        for name in sessions:
            markers = [m for m in (parse(name + ".", n) for n in names) if m is not None]
            assert len(markers) == 1, markers
            assert markers[0].kind == FREE
            assert markers[0].value == header_value(read_header((bucket / name).read_bytes()))


class StoreModel(RuleBasedStateMachine):
    """The store against a dict, with the clock moving."""

    sids = Bundle("sids")

    @initialize()
    def setup(self) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="fss-model-")
        self.clock = Clock(1_800_000_000.0)
        self.store = SessionStore(self.dir, secret_key=KEY, max_age=100, clock=self.clock)
        self.model: dict[str, dict[str, Any]] = {}
        self.last: dict[str, float] = {}

    def _alive(self, sid: str) -> bool:
        return sid in self.model and self.clock() - self.last[sid] < 100

    @rule(target=sids, data=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
    def create(self, data: dict[str, int]) -> str:
        sid = self.store.create(data)
        self.model[sid], self.last[sid] = dict(data), self.clock()
        return sid

    @rule(sid=sids)
    def load(self, sid: str) -> None:
        got = self.store.load(sid)
        if self._alive(sid):
            assert got == self.model[sid]
            if self.clock() - self.last[sid] > self.store.touch_interval:
                self.last[sid] = self.clock()
        else:
            assert got is None

    @rule(sid=sids, key=st.text(max_size=5), value=st.integers())
    def edit(self, sid: str, key: str, value: int) -> None:
        if not self._alive(sid):
            with pytest.raises(SessionNotFound), self.store.edit(sid):
                pass
            return
        with self.store.edit(sid) as data:
            data[key] = value
        self.model[sid][key] = value
        self.last[sid] = self.clock()

    @rule(sid=sids)
    def touch(self, sid: str) -> None:
        if not self._alive(sid):
            with pytest.raises(SessionNotFound):
                self.store.touch(sid)
            return
        self.store.touch(sid)
        self.last[sid] = self.clock()

    @rule(sid=sids)
    def delete(self, sid: str) -> None:
        existed = sid in self.model  # expired files stay until the reaper removes them
        assert self.store.delete(sid) == existed
        self.model.pop(sid, None)

    @rule(target=sids, sid=sids)
    def rotate(self, sid: str) -> str:
        if not self._alive(sid):
            with pytest.raises(SessionNotFound):
                self.store.rotate(sid)
            return sid
        new = self.store.rotate(sid)
        self.model[new], self.last[new] = self.model.pop(sid), self.clock()
        return new

    @rule()
    def reap(self) -> None:
        stats = self.store.reap(grace=GRACE)
        assert stats.complete and stats.errors == 0 and stats.garbage == 0, stats.problems
        due = {sid for sid in self.model if self.clock() - self.last[sid] >= 100 + GRACE}
        assert stats.removed == len(due)
        for sid in due:
            del self.model[sid]

    @rule(seconds=st.sampled_from([1, 10, 60, 99, 101, 500]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def no_temp_files(self) -> None:
        if hasattr(self, "dir"):
            assert not [p for p in Path(self.dir).rglob(f"*{TMP_INFIX}*")]

    @invariant()
    def every_marker_matches_its_file(self) -> None:
        if hasattr(self, "dir"):
            _assert_markers_match(Path(self.dir))

    def teardown(self) -> None:
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


class StaleReads(SessionStore):
    """Serves chosen old bytes for the next reads: what a GlusterFS client cache does after another
    client's commit (seen in testing: the version before the last, for about a second, no error)."""

    stale: list[bytes]

    def _read(self, name: str, sid: str) -> Found | None:
        if getattr(self, "stale", None):
            header, payload = verify(self.stale.pop(0), self.keyring, sid.encode())
            return Found(header, payload, os.stat(self.layout.path_for(sid)).st_mtime)
        return super()._read(name, sid)


def test_edit_rereads_until_it_sees_the_last_commit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StaleReads(tmp_path, secret_key=KEY)
    sid = store.create({"n": 0})
    with store.edit(sid) as d:
        d["n"] = 1
    old = Path(store.layout.path_for(sid)).read_bytes()
    with store.edit(sid) as d:
        d["n"] = 2
    store.stale = [old, old, old]  # the first read (the guess fails), then two stale reads under the lock
    with caplog.at_level(logging.DEBUG, logger="fssession.store"), store.edit(sid) as d:
        assert d["n"] == 2, "edit yielded a version older than the last commit"
        d["n"] += 1
    assert store.load(sid) == {"n": 3}
    assert "stale read" in caplog.text
    _assert_markers_match(tmp_path)


def test_a_read_that_stays_stale_fails_instead_of_losing_an_update(tmp_path: Path) -> None:
    store = StaleReads(tmp_path, secret_key=KEY, fs_slack=0.1)
    sid = store.create({"n": 0})
    old = Path(store.layout.path_for(sid)).read_bytes()
    with store.edit(sid) as d:
        d["n"] = 1
    store.stale = [old] * 1000
    with pytest.raises(StorageError) as info, store.edit(sid) as d:
        d["n"] = 99  # never reached
    assert info.value.errno == errno.ESTALE
    store.stale = []
    assert store.load(sid) == {"n": 1}
    _assert_markers_match(tmp_path)  # the lock was given back, with the value it had


def test_a_marker_naming_an_old_generation_heals(store: SessionStore) -> None:
    """A free marker put back with an older value (tampering): the file is newer and signed; it wins."""
    sid = store.create({"n": 0})
    for _ in range(3):
        with store.edit(sid) as d:
            d["n"] += 1
    f = Path(store.layout.path_for(sid))
    (marker,) = [n for n in os.listdir(f.parent) if n != f.name]
    os.rename(f.parent / marker, f.parent / marker.replace(",4.", ",1."))
    with store.edit(sid) as d:
        assert d["n"] == 3
        d["n"] += 1
    assert store.load(sid) == {"n": 4}
    _assert_markers_match(store.root)


def test_an_edit_killed_while_holding_the_lock(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, fs_slack=0.2, lease=300)
    sid = store.create({"n": 5})
    worker = str(REPO / "tests" / "support" / "storeworker.py")
    p = subprocess.Popen([sys.executable, worker, "hold", str(tmp_path), sid], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "holding"
    p.kill()
    p.wait()
    with store.edit(sid) as d:  # a dead holder on this host is replaced at once, long before its lease
        d["n"] += 1
    assert store.load(sid) == {"n": 6}
    _assert_markers_match(tmp_path)


def _hold_in_child(root: Path, sid: str, *, after_commit: bool, lease: float) -> subprocess.Popen[str]:
    """An editor in another process that stops itself (SIGSTOP) inside an edit, before or after committing."""
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
from fssession import LockLost, SessionStore, _lockcore
s = SessionStore({str(root)!r}, secret_key={KEY!r}, lease={lease}, fs_slack=0.2)
if {after_commit}:
    release = _lockcore.release
    def stop_then_release(hold, value):
        print("committed", flush=True); os.kill(os.getpid(), signal.SIGSTOP); release(hold, value)
    _lockcore.release = stop_then_release
try:
    with s.edit({sid!r}) as d:
        d["n"] += 100
        if not {after_commit}:
            print("holding", flush=True); os.kill(os.getpid(), signal.SIGSTOP)
    print("ok", flush=True)
except LockLost:
    print("LockLost", flush=True)
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _wait_past_lease(lease: float) -> None:
    time.sleep(lease * 1.5)


def test_a_holder_that_lost_the_lock_writes_nothing(tmp_path: Path) -> None:
    store = StaleReads(tmp_path, secret_key=KEY, lease=1.0, fs_slack=0.2, lock_timeout=60)
    sid = store.create({"n": 0})
    with store.edit(sid) as d:
        d["n"] = 1
    old = Path(store.layout.path_for(sid)).read_bytes()
    a = _hold_in_child(tmp_path, sid, after_commit=False, lease=1.0)
    assert a.stdout is not None and a.stdout.readline().strip() == "holding"
    _wait_past_lease(1.0)
    with store.edit(sid) as d:  # B takes over A's expired lock and commits
        d["n"] = 2
        os.kill(a.pid, signal.SIGCONT)  # A wakes while B holds the lock, and gives up at its fence
        assert a.stdout.readline().strip() == "LockLost"
    a.wait()
    assert store.load(sid) == {"n": 2}
    _assert_markers_match(tmp_path)
    store.stale = [old, old]  # a client cache still serving n=1
    with store.edit(sid) as d:
        assert d["n"] == 2, "a stale read was accepted"


def test_lock_lost_after_the_commit_is_not_an_error(tmp_path: Path) -> None:
    """A froze between its commit and its release: B takes over a committing marker, A's commit stands."""
    store = SessionStore(tmp_path, secret_key=KEY, lease=1.0, fs_slack=0.2, lock_timeout=60)
    sid = store.create({"n": 0})
    a = _hold_in_child(tmp_path, sid, after_commit=True, lease=1.0)
    assert a.stdout is not None and a.stdout.readline().strip() == "committed"
    _wait_past_lease(1.0)
    with store.edit(sid) as d:  # takes the expired lock over; its value is uncertain, so it reads afresh
        assert d["n"] == 100, "the taken-over holder's commit was not seen"
        d["n"] += 1
    os.kill(a.pid, signal.SIGCONT)
    assert a.stdout.readline().strip() == "ok", "a committed edit reported failure (a caller would retry it)"
    a.wait()
    assert store.load(sid) == {"n": 101}
    _assert_markers_match(tmp_path)


def test_a_nested_edit_of_the_same_session_is_refused(store: SessionStore) -> None:
    sid = store.create({"n": 0})
    with store.edit(sid) as d:
        with pytest.raises(RuntimeError, match="already editing"), store.edit(sid):
            pass
        d["n"] = 1
    assert store.load(sid) == {"n": 1}
    other = store.create({"m": 0})
    with store.edit(sid) as d, store.edit(other) as e:  # different sessions nest fine
        d["n"], e["m"] = 2, 2
    assert (store.load(sid), store.load(other)) == ({"n": 2}, {"m": 2})


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_group_shared_store_keeps_its_group_bits_and_setgid_despite_the_umask(tmp_path: Path, umask: int) -> None:
    """Web nodes running as different users of one group: buckets and files stay group-writable and setgid."""
    root = tmp_path / "s"
    old = os.umask(umask)
    try:
        store = SessionStore(root, secret_key=KEY, dir_mode=0o2770, file_mode=0o660)
        sid = store.create({"n": 0})
        with store.edit(sid) as d:
            d["n"] = 1
    finally:
        os.umask(old)
    path = Path(store.layout.path_for(sid))
    assert root.stat().st_mode & 0o7777 == 0o2770, "the store root gets dir_mode despite the umask"
    assert path.parent.stat().st_mode & 0o7777 == 0o2770, "buckets keep setgid and the group bits"
    assert path.stat().st_mode & 0o777 == 0o660
    assert (root / ".fssession-naming-key").stat().st_mode & 0o777 == 0o660


def test_an_enoent_for_a_name_that_is_there_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GlusterFS under load answers the open of a session another host just replaced with ENOENT,
    though the name is there: the cluster demo logged users out at random (1 run in 8 or so).  A
    node that had not read that session lately (a fresh store here) must look the name up again
    and retry, not take the session for gone; a name that is truly missing stays a miss at once."""
    from fssession import _fs

    sid = SessionStore(tmp_path, secret_key=KEY).create({"user": "alice"})
    real_read = _fs.Dir.read
    failures: list[str] = []

    def replaced_under_us(self: _fs.Dir, name: str, limit: int) -> tuple[bytes, os.stat_result]:
        if not failures and len(name) == 64:  # the session file, not the naming key
            failures.append(name)
            raise FileNotFoundError(errno.ENOENT, "a handle to the file another host replaced", name)
        return real_read(self, name, limit)

    monkeypatch.setattr(_fs.Dir, "read", replaced_under_us)
    assert SessionStore(tmp_path, secret_key=KEY).load(sid) == {"user": "alice"}
    assert len(failures) == 1
    failures.clear()
    other = SessionStore(tmp_path, secret_key=KEY)
    stranger = other.create({})
    other.delete(stranger)
    assert SessionStore(tmp_path, secret_key=KEY).load(stranger) is None
