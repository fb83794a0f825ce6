"""Log out everywhere: the owner index under crashes, concurrent logins and two mounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fssession import SessionStore
from fssession.layout import OWNERS_DIR
from tests.fsbed import SharedFS
from tests.support import KEY, REPO, Clock


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path, secret_key=KEY)


def _index_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / OWNERS_DIR).rglob("*") if p.is_symlink())


def test_sessions_of_tells_metadata_never_ids(store: SessionStore) -> None:
    laptop = store.create({"device": "laptop"}, owner="alice")
    phone = store.create({"device": "phone"}, owner="alice")
    store.create({"device": "other"}, owner="bob")
    mine = store.sessions_of("alice")
    assert len(mine) == 2 and store.sessions_of("carol") == []
    for info in mine:
        assert info.handle not in (laptop, phone) and laptop not in repr(info) and phone not in repr(info)
        # (created is the server clock's estimate, last_seen a timestamp it stamped
        # at a coarser tick: they may disagree by a tick)
        assert info.created <= info.last_seen + 0.05 and info.last_seen < info.expires
    assert {len(i.handle) for i in mine} == {16}


def test_end_sessions_keeps_the_current_one(store: SessionStore) -> None:
    current = store.create({"n": 1}, owner="alice")
    others = [store.create({"n": i}, owner="alice") for i in range(4)]
    bobs = store.create({"n": 9}, owner="bob")
    assert store.end_sessions("alice", keep=current) == 4
    assert all(store.load(s) is None for s in others)
    assert store.load(current) == {"n": 1} and store.load(bobs) == {"n": 9}
    assert [i.handle for i in store.sessions_of("alice")] == [store.layout.name_for(current)[:16]]
    assert store.end_sessions("alice") == 1 and store.load(current) is None


def test_end_one_session_by_its_handle(store: SessionStore) -> None:
    a = store.create(owner="alice")
    b = store.create(owner="alice")
    handle = store.layout.name_for(b)[:16]
    assert store.end_session("alice", handle) is True
    assert store.load(b) is None and store.load(a) == {}
    assert store.end_session("bob", store.layout.name_for(a)[:16]) is False, "another owner's handle does nothing"


def test_a_listing_reveals_no_owner_names(store: SessionStore) -> None:
    store.create(owner="alice@example.com")
    everything = [str(p.relative_to(store.root)) for p in store.root.rglob("*")]
    assert not [p for p in everything if "alice" in p or "example" in p]


def test_login_sets_the_owner_and_rotation_keeps_it(store: SessionStore) -> None:
    sid = store.create({"cart": 1})
    assert store.sessions_of("alice") == []
    with store.edit(sid, owner="alice") as d:  # login
        d["user"] = "alice"
    rotated = store.rotate(sid)
    assert [i.handle for i in store.sessions_of("alice")] == [store.layout.name_for(rotated)[:16]]
    with store.edit(rotated, owner="bob"):  # someone else logs in on that browser
        pass
    assert store.sessions_of("alice") == [] and len(store.sessions_of("bob")) == 1
    assert len(_index_names(store.root)) == 1, "the old owner's entry went"


def test_delete_and_the_reaper_clean_the_index(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    store = SessionStore(tmp_path, secret_key=KEY, max_age=100, clock=clock)
    gone = store.create(owner="alice")
    expiring = store.create(owner="alice")
    store.delete(gone)
    assert len(_index_names(tmp_path)) == 1
    clock.advance(500)
    stats = store.reap(grace=5)
    assert stats.removed == 1 and stats.owner_entries == 1, stats
    assert _index_names(tmp_path) == [] and store.load(expiring) is None


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    prologue = "import os, signal, sys\nfrom fssession import SessionStore\n"
    return subprocess.Popen([sys.executable, "-c", prologue + code, *args], stdout=subprocess.PIPE, text=True, cwd=REPO)


def test_a_create_killed_between_its_entry_and_its_file(tmp_path: Path) -> None:
    """SIGKILL after the index entry, before the session: an entry pointing at nothing, pruned by one reaper run."""
    code = (
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
        "real = s._publish_new\n"
        "def die(*a, **k): print('entry written', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
        "s._publish_new = die\n"
        "s.create({'x': 1}, owner='alice')\n"
    )
    p = _child(code, str(tmp_path))
    assert p.stdout is not None and p.stdout.readline().strip() == "entry written"
    p.wait()
    store = SessionStore(tmp_path, secret_key=KEY)
    assert len(_index_names(tmp_path)) == 1 and store.sessions_of("alice") == []
    stats = store.reap(grace=0.0 + 2.0)  # the entry is younger than the grace: kept this time
    assert stats.owner_entries == 0
    old = time.time() - 3600
    for p_ in (tmp_path / OWNERS_DIR).rglob("*"):
        if p_.is_symlink():
            os.utime(p_, (old, old), follow_symlinks=False)
    stats = reap_in_future(tmp_path)
    assert stats.owner_entries == 1 and _index_names(tmp_path) == []


def reap_in_future(root: Path) -> object:
    from fssession.reaper import reap

    return reap(root, grace=2.0, now=lambda: time.time() + 7200)


def test_end_sessions_killed_midway_is_finished_by_the_next_call(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    sids = [store.create({"n": i}, owner="alice") for i in range(6)]
    code = (
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
        "real, done = s._delete_name, []\n"
        "def counted(*a, **k):\n"
        "    r = real(*a, **k)\n"
        "    if r: done.append(1)\n"
        "    if len(done) == 3: print('three ended', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return r\n"
        "s._delete_name = counted\n"
        "s.end_sessions('alice')\n"
    )
    p = _child(code, str(tmp_path))
    assert p.stdout is not None and p.stdout.readline().strip() == "three ended"
    p.wait()
    assert sum(store.load(s) is not None for s in sids) == 3, "killed after ending three"
    assert store.end_sessions("alice") == 3
    assert all(store.load(s) is None for s in sids) and _index_names(tmp_path) == []


def test_logins_racing_end_sessions(tmp_path: Path) -> None:
    """Logins on another process while end_sessions runs: every login that finished before it began is ended."""
    store = SessionStore(tmp_path, secret_key=KEY)
    code = (
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
        "print('ready', flush=True)\n"
        "import time\n"
        "while True:\n"  # a busy login stream, paced so that a loaded machine's end_sessions is not simply outrun
        "    print(s.create({'x': 1}, owner='alice'), flush=True); time.sleep(0.002)\n"
    )
    p = _child(code, str(tmp_path))
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    made: list[str] = []
    reader = threading.Thread(target=lambda: made.extend(line.strip() for line in p.stdout or ()))
    reader.start()
    try:
        for _ in range(20):
            seen = len(made)
            while len(made) < seen + 10:
                time.sleep(0.005)
            before = list(made)  # logins whose create had returned before end_sessions began
            store.end_sessions("alice")
            survivors = [sid for sid in before if store.load(sid) is not None]
            assert survivors == [], f"{len(survivors)} sessions outlived end_sessions"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        reader.join(10)
    # A login that overlapped a call may have survived it, but never unlisted:
    # once the logins stop, one more call ends every session ever made.
    store.end_sessions("alice")
    leftovers = [sid for sid in made if len(sid) == 43 and store.load(sid) is not None]
    assert leftovers == [], f"{len(leftovers)} sessions escaped the owner index"
    assert store.sessions_of("alice") == []


@pytest.mark.shared
@pytest.mark.nfs
def test_end_sessions_from_the_other_mount(shared_fs: SharedFS) -> None:
    a, b = shared_fs.fresh_dir("owners")
    on_a = SessionStore(a, secret_key=KEY)
    sids = [on_a.create({"n": i}, owner="alice") for i in range(5)]
    keep = on_a.create({"n": 99}, owner="alice")
    deadline = time.monotonic() + 60
    on_b = SessionStore(b, secret_key=KEY)
    while len(on_b.sessions_of("alice")) < 6:
        assert time.monotonic() < deadline, "the other mount never listed them"
        time.sleep(0.05)
    assert on_b.end_sessions("alice", keep=keep) == 5
    for sid in sids:
        while on_a.load(sid) is not None:  # the first mount's caches may lag for a moment
            assert time.monotonic() < deadline + 60, "a session outlived end_sessions on the other mount"
            time.sleep(0.05)
    assert on_a.load(keep) == {"n": 99}


def test_stats_count_the_index_without_naming_anyone(store: SessionStore) -> None:
    from fssession.report import store_stats

    for owner in ("alice", "bob"):
        store.create(owner=owner)
    store.create(owner="alice")
    stats = store_stats(store.root)
    assert (stats.owners, stats.owner_entries, stats.foreign) == (2, 3, 0)
    assert "alice" not in repr(stats.as_dict())
