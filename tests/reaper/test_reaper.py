"""The reaper: what it removes, what it never touches, crashes, concurrency, two mounts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fssession import MkdirLock, SessionStore
from fssession._identity import ProcessIdentity
from fssession._markers import FREE, HELD, owner_name, parse
from fssession.layout import CURSOR_FILE, REAPER_LOCK, TMP_INFIX
from fssession.reaper import _BucketSweep, reap
from tests.fsbed import SharedFS
from tests.support import KEY, REPO, Clock, session_files

T0 = 1_800_000_000.0
ELSEWHERE = ProcessIdentity("0" * 16, "elsewhere", 4242, 1)


def _store(root: Path, clock: Clock, **kw: object) -> SessionStore:
    return SessionStore(root, secret_key=KEY, max_age=100, clock=clock, **kw)  # type: ignore[arg-type]


def _session_files(root: Path) -> set[str]:
    return {p.name for p in session_files(root)}


def _markers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("??/*") if len(p.name) > 64 and p.name[64:66] in (".f", ".o", ".c"))


def test_removes_expired_keeps_live_and_honours_grace(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    old = [store.create({"i": i}) for i in range(20)]
    short = store.create({"short": True}, max_age=10)  # its own lifetime, kept in the file and the marker
    clock.advance(50)
    live = [store.create({"i": i}) for i in range(10)]
    clock.advance(60)  # old: idle 110 s > 100; live: 60 s; short: expired 100 s ago
    before = _session_files(tmp_path)

    dry = store.reap(grace=20, dry_run=True)
    assert (dry.expired, dry.removed) == (1, 1), "within the grace period only the short-lived one is due"
    assert _session_files(tmp_path) == before, "a dry run changes nothing"

    stats = store.reap(grace=5)
    assert stats.complete and stats.errors == 0 and stats.garbage == 0, stats.problems
    assert (stats.expired, stats.removed, stats.in_use) == (21, 21, 0)
    assert all(store.load(s) is not None for s in live)
    assert len(_session_files(tmp_path)) == 10
    assert len(_markers(tmp_path)) == 10, "each removed session's marker went with it"
    assert store.load(old[0]) is None and store.load(short) is None


def test_absolute_expiry_is_judged_from_the_marker_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock, absolute_max_age=200)
    store.create()
    clock.advance(300)
    stats = store.reap(grace=5)
    assert stats.removed == 1


def test_a_session_touched_since_it_was_judged_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    sid = store.create({"x": 1})
    clock.advance(200)
    path = store.layout.path_for(sid)
    real = _BucketSweep._remove

    def touched_meanwhile(self: _BucketSweep, *args: object) -> None:
        os.utime(path, (clock(), clock()))  # a load on another node refreshed it just after it was judged
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_BucketSweep, "_remove", touched_meanwhile)
    stats = store.reap(grace=5)
    assert (stats.expired, stats.removed, stats.in_use) == (1, 0, 1)
    monkeypatch.undo()
    assert store.load(sid) == {"x": 1}
    with store.edit(sid) as d:  # and its lock was given back as it was
        d["x"] = 2


def _plant_owner(path: str, kind: str = HELD, who: ProcessIdentity = ELSEWHERE, lease: float = 30.0) -> str:
    """Replace a session's free marker by an owner marker (a holder that is, or was, editing it)."""
    bucket, name = os.path.split(path)
    (free,) = [n for n in os.listdir(bucket) if n.startswith(name + ".f,")]
    marker = parse(name + ".", free)
    assert marker is not None
    held = owner_name(name + ".", kind, "5" * 16, 0, lease, who, marker.value)
    os.rename(os.path.join(bucket, free), os.path.join(bucket, held))
    return held


def test_a_held_session_is_skipped_and_a_dead_holders_session_removed(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    held, orphan = store.create(), store.create()
    clock.advance(500)
    _plant_owner(store.layout.path_for(held))  # a live holder on another host (its lease has not run out)
    # A holder on this host killed with SIGKILL: its marker stays, its PID is gone.
    code = (
        "import os, sys; from fssession import SessionStore\n"
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
        "cm = s.edit(sys.argv[2]); cm.__enter__(); os._exit(0)"
    )
    clock_env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code, str(tmp_path), orphan], check=False, cwd=REPO, env=clock_env)
    stats = store.reap(grace=5)
    assert (stats.expired, stats.removed, stats.in_use, stats.stale_locks) == (2, 1, 1, 1), stats
    assert os.path.exists(store.layout.path_for(held)) and not os.path.exists(store.layout.path_for(orphan))
    assert len(_markers(tmp_path)) == 1, "the dead holder's marker went with its session"


def test_leftovers_of_crashes_are_removed_and_garbage_left_alone(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=86400)
    sid = store.create({"keep": 1})
    path = Path(store.layout.path_for(sid))
    bucket = path.parent
    old = time.time() - 7200
    dead_create = "c" * 64  # a create that died between its marker and its rename
    dead_delete = "d" * 64  # a delete that died between removing the file and its marker
    litter = {
        "temp": bucket / f"{'a' * 64}{TMP_INFIX}0123456789abcdef",
        "fresh-temp": bucket / f"{'b' * 64}{TMP_INFIX}0123456789abcdef",
        "orphan-free": bucket / f"{dead_create}.f,1.60.0",
        "orphan-held": bucket / owner_name(dead_delete + ".", HELD, "7" * 16, 0, 1.0, ELSEWHERE, "3.60.0"),
        "stage": tmp_path / f"{REAPER_LOCK}.stage-{'f' * 32}",
        "probe": tmp_path / ".fssession-clock-0123456789abcdef",
    }
    litter["temp"].write_bytes(b"half a session")
    litter["fresh-temp"].write_bytes(b"a write in progress")
    for name in ("orphan-free", "orphan-held", "probe"):
        os.symlink("fssession-lock", litter[name])
    litter["stage"].mkdir()
    for name, p in litter.items():
        if name != "fresh-temp":
            os.utime(p, (old, old), follow_symlinks=False)
    soon = time.time() + 7100  # "fresh" as seen from the reaper's clock below
    os.utime(litter["fresh-temp"], (soon, soon))
    foreign = bucket / "README.txt"
    foreign.write_text("not ours")
    planted = bucket / ("9" * 64)
    planted.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    os.utime(planted, (old, old))
    nfs = bucket / ".nfs000000000012345600000001"
    nfs.write_bytes(b"a file some process on this client still has open")

    # Symlinks' ctimes cannot be set back: judge them from two hours in the future.
    stats = reap(tmp_path, grace=5, now=lambda: time.time() + 7200)
    assert stats.errors == 0, stats.problems
    assert (stats.temp_files, stats.orphans, stats.litter, stats.nfs_pending) == (1, 2, 2, 1), stats
    assert not litter["temp"].exists() and litter["fresh-temp"].exists()
    for name in ("orphan-free", "orphan-held", "stage", "probe"):
        assert not os.path.lexists(litter[name]), name
    assert foreign.read_text() == "not ours" and planted.exists() and nfs.exists(), "garbage is never touched"
    assert stats.garbage == 2 and any("README.txt" in p for p in stats.problems)
    assert store.load(sid) == {"keep": 1}
    with store.edit(sid) as d:
        d["keep"] = 2


def test_max_seconds_stops_and_the_next_run_resumes(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    for _ in range(300):
        store.create()
    clock.advance(500)
    first = store.reap(grace=5, max_seconds=1e-9)  # one bucket, then stop
    assert not first.complete and first.directories == 1
    cursor = (tmp_path / CURSOR_FILE).read_text().strip()
    assert cursor == "1"
    second = store.reap(grace=5)
    assert second.complete and first.removed + second.removed == 300
    assert not _session_files(tmp_path)
    assert (tmp_path / CURSOR_FILE).read_text().strip() == "0"


def test_a_second_reaper_backs_off_while_one_runs(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    with MkdirLock(tmp_path / REAPER_LOCK):
        stats = store.reap()
    assert stats.busy and not stats.complete and stats.directories == 0 and stats.errors == 0
    assert "another reaper" in stats.summary()


def test_a_coordination_lock_claiming_an_absurd_lease_is_reported(tmp_path: Path) -> None:
    """A planted marker with a year-long lease: honoured only up to max_lease, and never silently."""
    store = SessionStore(tmp_path, secret_key=KEY)
    lock = tmp_path / REAPER_LOCK
    lock.mkdir()
    (lock / owner_name("", HELD, "8" * 16, 0, 365 * 86400, ELSEWHERE, "")).symlink_to("fssession-lock")
    stats = store.reap()
    assert stats.busy and stats.errors == 1, stats
    assert "longer than any reaper's" in stats.problems[0]


def test_the_reapers_lock_takes_the_stores_directory_mode(tmp_path: Path) -> None:
    """Web nodes of other users in the group must be able to judge a lock a dead reaper left."""
    old = os.umask(0o077)
    try:
        store = SessionStore(tmp_path / "s", secret_key=KEY, dir_mode=0o2770, file_mode=0o660)
        if os.geteuid() == 0:
            # Root will not reap a store others may write unless it belongs
            # to someone it can switch to: give it to nobody (the reaper then
            # runs as nobody, through the descriptors it opened).
            for p in [tmp_path / "s", *(tmp_path / "s").iterdir()]:
                os.chown(p, 65534, 65534, follow_symlinks=False)
        stats = store.reap()
    finally:
        os.umask(old)
    assert stats.complete and stats.errors == 0, stats.problems
    lock = tmp_path / "s" / REAPER_LOCK
    assert lock.stat().st_mode & 0o7777 == 0o2770
    if os.geteuid() == 0:
        assert lock.stat().st_uid == 65534, "the reaper switched to the store's owner"


def test_a_planted_fifo_or_symlink_does_not_hang_or_lead_the_reaper_astray(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    sid = store.create()
    path = Path(store.layout.path_for(sid))
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    os.mkfifo(path.parent / ("1" * 64))  # a FIFO with a session's name
    os.mkfifo(tmp_path / CURSOR_FILE)
    os.symlink(victim, tmp_path / "fe")  # a bucket that is a symlink
    clock.advance(500)
    stats = store.reap(grace=5)
    assert stats.complete and stats.removed == 1
    assert (victim / "keep").read_text() == "precious" and sorted(os.listdir(victim)) == ["keep"]
    assert stats.garbage >= 2


# ------------------------------------------------------------ real processes
def _expired_store(root: Path, n: int) -> SessionStore:
    """A store of *n* sessions that expired long ago (their files' times set back)."""
    store = SessionStore(root, secret_key=KEY, max_age=60)
    old = time.time() - 3600
    for _ in range(n):
        p = store.layout.path_for(store.create({"pad": "x" * 100}))
        os.utime(p, (old, old))
    return store


def test_a_reaper_killed_mid_run_leaves_nothing_that_breaks_a_load(tmp_path: Path) -> None:
    store = _expired_store(tmp_path, 3000)
    live = [store.create({"live": i}) for i in range(20)]
    code = (
        "import sys, time; from fssession.reaper import reap\n"
        "def progress(stats, done):\n"
        "    if done == 100:\n"
        "        print('100', flush=True); time.sleep(3600)  # killed here\n"
        "reap(sys.argv[1], progress=progress)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "100"
    p.send_signal(signal.SIGKILL)
    p.wait()
    remaining = _session_files(tmp_path)
    assert 20 < len(remaining) < 3020, "killed mid-run"
    for sid in live:
        assert store.load(sid) == {"live": live.index(sid)}
    stats = store.reap()  # the killed reaper's lock: a dead holder on this host, replaced at once
    assert stats.complete and not stats.busy and stats.errors == 0
    assert len(_session_files(tmp_path)) == 20 and len(_markers(tmp_path)) == 20
    assert not list(tmp_path.glob("*.stage-*"))


@pytest.mark.parametrize("reapers", [2, 4])
@pytest.mark.parametrize("coordinate", [True, False], ids=["coordinated", "overlapping"])
def test_concurrent_reapers_reach_the_same_state(tmp_path: Path, reapers: int, coordinate: bool) -> None:
    store = _expired_store(tmp_path, 1500)
    live = {store.create({"live": i}) for i in range(30)}
    code = (
        "import json, sys; from fssession.reaper import reap; "
        f"s = reap(sys.argv[1], coordinate={coordinate}); print(json.dumps(s.as_dict()))"
    )
    ps = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        for _ in range(reapers)
    ]
    results = [json.loads(p.communicate(timeout=600)[0]) for p in ps]
    assert all(r["errors"] == 0 for r in results), results
    assert sum(r["removed"] for r in results) == 1500, "each expired session removed exactly once"
    assert any(r["complete"] for r in results)
    if not coordinate:
        assert all(r["complete"] for r in results)
    assert {sid for sid in live if store.load(sid) is not None} == live
    assert len(_session_files(tmp_path)) == 30 and len(_markers(tmp_path)) == 30


def test_parallel_sweep_matches_serial(tmp_path: Path) -> None:
    store = _expired_store(tmp_path, 2000)
    live = [store.create({"live": i}) for i in range(20)]
    stats = reap(tmp_path, jobs=2)
    assert stats.complete and stats.errors == 0 and stats.removed == 2000 and stats.directories == 256
    assert [store.load(s) for s in live] == [{"live": i} for i in range(20)]
    assert len(_session_files(tmp_path)) == 20


# ------------------------------------------------------- live sessions, two mounts
def _keepers_and_reapers(a: Path, b: Path, rounds: int = 6, max_age: int = 6) -> None:
    """Keepers use sessions near their expiry while reapers loop on both mounts: none lost, the rest gone.

    A session counts as lost only if a keeper used it less than max_age
    before (a keeper stalled by a loaded machine lets it expire for real);
    its first use counts from its creation.  The sessions are made once the
    keepers are ready (starting Python takes seconds under emulation).
    """
    store = SessionStore(a, secret_key=KEY, max_age=max_age)
    doomed = [store.create({"doomed": i}, max_age=1) for i in range(40)]
    doomed_files = {Path(store.layout.path_for(s)).name for s in doomed}
    _wait_visible(b, doomed_files)
    worker = str(REPO / "tests" / "support" / "reapworker.py")
    keepers = [
        subprocess.Popen(
            [sys.executable, worker, "keep", str(root), str(rounds), str(max_age)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for root in (a, b)
    ]
    for p in keepers:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    created = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process on this machine
    kept = [store.create({"kept": i}) for i in range(16)]
    for i, p in enumerate(keepers):
        assert p.stdin is not None
        p.stdin.write(" ".join([repr(created), *kept[i::2]]) + "\n")
        p.stdin.flush()
    reapers = [
        subprocess.Popen(
            [sys.executable, worker, "reap", str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for root in (a, b)
    ]
    kept_results = [json.loads(p.communicate(timeout=600)[0]) for p in keepers]
    reap_results = [json.loads(p.communicate("stop\n", timeout=600)[0]) for p in reapers]
    print(f"keepers {kept_results}, reapers {reap_results}")
    assert [k["lost"] for k in kept_results] == [[], []], "a live session was reaped"
    assert all(r["errors"] == 0 for r in reap_results), reap_results
    stalled = {sid for k in kept_results for sid in k["expired"]}
    assert stalled != set(kept), "every keeper stalled past max_age: nothing was kept alive, so nothing was proven"
    assert all(store.load(s) is not None for s in kept if s not in stalled)
    stats = store.reap(grace=2.0)  # what the loops had not reached yet
    assert not doomed_files & _session_files(a), "expired sessions were left behind"
    assert sum(r["removed"] for r in reap_results) + stats.removed >= len(doomed)


def _wait_visible(root: Path, names: set[str]) -> None:
    deadline = time.monotonic() + 60
    while names - _session_files(root):
        assert time.monotonic() < deadline, "the other mount never showed the sessions"
        time.sleep(0.05)


def test_keepers_and_reapers_local(tmp_path: Path) -> None:
    _keepers_and_reapers(tmp_path, tmp_path)


@pytest.mark.shared
@pytest.mark.nfs
def test_keepers_and_reapers_on_two_mounts(shared_fs: SharedFS) -> None:
    # Under emulation (the NFS VM) starting Python alone takes seconds.
    _keepers_and_reapers(*shared_fs.fresh_dir("reap-live"), max_age=20 if shared_fs.slow else 6)


def test_free_markers_say_what_the_reaper_needs(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=77, absolute_max_age=1000)
    sid = store.create()
    (marker,) = _markers(tmp_path)
    parsed = parse(Path(store.layout.path_for(sid)).name + ".", marker)
    assert parsed is not None and parsed.kind == FREE
    generation, idle, expires = parsed.value.split(".")
    assert (generation, idle) == ("1", "77") and int(expires) > time.time() + 900


@pytest.mark.shared
@pytest.mark.nfs
def test_a_removed_file_still_open_is_left_to_the_client_holding_it(shared_fs: SharedFS) -> None:
    """A session deleted while a process holds its file open: NFS (and FUSE) keep it as ``.nfs*``
    (``.fuse_hidden*``) until the last close.  Reapers on both mounts count it, never remove it,
    and call nothing garbage; the client removes it when the file is closed."""
    a, b = shared_fs.fresh_dir("still-open")
    store = SessionStore(a, secret_key=KEY, max_age=100)
    kept = store.create({"kept": True})
    sid = store.create({"gone": True})
    path = Path(store.layout.path_for(sid))
    with open(path, "rb") as held:
        store.delete(sid)
        pending = [n for n in os.listdir(path.parent) if n.startswith((".nfs", ".fuse_hidden"))]
        print(f"{shared_fs.kind}: deleted while open, left as {pending}")
        if shared_fs.kind == "nfs":
            assert len(pending) == 1, f"no silly rename on NFS: {os.listdir(path.parent)}"
        for root in (a, b):
            stats = reap(root, grace=2)
            assert stats.errors == 0 and stats.garbage == 0, stats.problems
            assert stats.removed == 0 and stats.nfs_pending <= len(pending), stats
            if root == a:
                assert stats.nfs_pending == len(pending), "the holding client sees its own"
            assert all(os.path.lexists(path.parent / n) for n in pending), "a file still open was removed"
        assert held.read(4) == b"FSSN", "the open file still reads as the session it was"
    deadline = time.monotonic() + 60
    while any(os.path.lexists(path.parent / n) for n in pending):
        assert time.monotonic() < deadline, f"the client never removed {pending} after the last close"
        time.sleep(0.2)
    assert SessionStore(b, secret_key=KEY, max_age=100).load(kept) == {"kept": True}
