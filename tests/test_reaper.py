"""The reaper: what it removes, what it never touches, and the CLI's contract."""

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
from fssession.layout import CURSOR_FILE, GEN_CLAIM_INFIX, GEN_SUFFIX, LOCK_SUFFIX, REAPER_LOCK, TMP_INFIX
from fssession.reaper import reap
from tests.fsbed import SharedFS

KEY = "test-secret-key-0123456789"
REPO = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def _store(root: Path, clock: Clock, **kw: object) -> SessionStore:
    return SessionStore(root, secret_key=KEY, max_age=100, clock=clock, **kw)  # type: ignore[arg-type]


def _session_files(root: Path) -> set[str]:
    return {p.name for p in root.glob("??/*") if len(p.name) == 64}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fssession.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_removes_expired_keeps_live_and_honours_grace(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    old = [store.create({"i": i}) for i in range(20)]
    short = store.create({"short": True}, max_age=10)  # its own lifetime, kept in the file
    clock.t += 50
    live = [store.create({"i": i}) for i in range(10)]
    clock.t += 60  # old: idle 110 s > 100; live: 60 s; short: expired 100 s ago
    before = _session_files(tmp_path)

    dry = store.reap(grace=20, dry_run=True)
    assert (dry.expired, dry.removed) == (1, 1), "within the grace period only the short-lived one is due"
    assert _session_files(tmp_path) == before, "a dry run changes nothing"

    stats = store.reap(grace=5)
    assert stats.complete and stats.errors == 0 and stats.garbage == 0
    assert (stats.expired, stats.removed, stats.in_use) == (21, 21, 0)
    assert all(store.load(s) is not None for s in live)
    assert len(_session_files(tmp_path)) == 10
    assert not [p for p in tmp_path.rglob(f"*{GEN_SUFFIX}") if p.name[:64] not in _session_files(tmp_path)]
    assert store.load(old[0]) is None and store.load(short) is None


def test_a_session_touched_since_it_was_judged_survives(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    sid = store.create({"x": 1})
    clock.t += 200
    path = next(p for p in tmp_path.glob("??/*") if len(p.name) == 64)

    from fssession import reaper

    def touched_meanwhile(self: reaper._Sweep, p: str) -> None:
        os.utime(path, (clock.t, clock.t))  # a load on another node refreshed it just after it was judged

    real = reaper._Sweep._judged
    reaper._Sweep._judged = touched_meanwhile  # type: ignore[method-assign]
    try:
        stats = store.reap(grace=5)
    finally:
        reaper._Sweep._judged = real  # type: ignore[method-assign]
    assert (stats.expired, stats.removed, stats.in_use) == (1, 0, 1)
    assert store.load(sid) == {"x": 1}


def test_a_locked_session_is_skipped_and_a_dead_holders_lock_cleared(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    held, orphan = store.create(), store.create()
    clock.t += 500
    paths = {sid: store._path(sid) for sid in (held, orphan)}
    lock = MkdirLock(paths[held] + LOCK_SUFFIX)
    lock.acquire()
    try:
        # A holder killed with SIGKILL leaves its lock directory behind.
        lock_path = paths[orphan] + LOCK_SUFFIX
        code = f"from fssession import MkdirLock; MkdirLock({lock_path!r}).acquire(); import os; os._exit(0)"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        assert os.path.isdir(paths[orphan] + LOCK_SUFFIX)
        stats = store.reap(grace=5)
    finally:
        lock.release()
    assert (stats.expired, stats.removed, stats.in_use) == (2, 1, 1)
    assert os.path.exists(paths[held]) and not os.path.exists(paths[orphan])
    assert not os.path.exists(paths[orphan] + LOCK_SUFFIX), "the dead holder's lock went with the session"
    stats = store.reap(grace=5)
    assert stats.removed == 1 and not list(tmp_path.rglob(f"*{LOCK_SUFFIX}"))


def test_leftovers_of_crashes_are_removed_and_garbage_left_alone(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=86400)
    sid = store.create({"keep": 1})
    path = Path(store._path(sid))
    bucket = path.parent
    old = time.time() - 7200
    litter = {
        "temp": bucket / f"{'a' * 64}{TMP_INFIX}0123456789abcdef",
        "fresh-temp": bucket / f"{'b' * 64}{TMP_INFIX}0123456789abcdef",
        "orphan-beacon": bucket / f"{'c' * 64}{GEN_SUFFIX}",
        "claim": bucket / f"{path.name}{GEN_CLAIM_INFIX}{'d' * 32}",
        "stage": bucket / f"{'e' * 64}{LOCK_SUFFIX}.stage-{'f' * 32}",
    }
    litter["temp"].write_bytes(b"half a session")
    litter["fresh-temp"].write_bytes(b"a write in progress")
    os.symlink("3", litter["orphan-beacon"])
    (bucket / (path.name + GEN_SUFFIX)).rename(litter["claim"])  # an edit killed holding the beacon
    litter["stage"].mkdir()
    for name, p in litter.items():
        if name != "fresh-temp":
            os.utime(p, (old, old), follow_symlinks=False)
    foreign = bucket / "README.txt"
    foreign.write_text("not ours")
    planted = bucket / ("9" * 64)
    planted.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    os.utime(planted, (old, old))

    # Claims are aged by ctime (a rename keeps the mtime), which cannot be set
    # back: run the reaper 50 minutes in the future instead.
    stats = reap(tmp_path, grace=5, now=lambda: time.time() + 3000)
    assert stats.errors == 0
    assert (stats.temp_files, stats.beacons, stats.litter) == (1, 2, 1)
    assert stats.garbage == 2 and any("README.txt" in p for p in stats.problems)
    assert not litter["temp"].exists() and litter["fresh-temp"].exists()
    assert not os.path.lexists(litter["orphan-beacon"]) and not os.path.lexists(litter["claim"])
    # A dead editor's claim is removed, not given back: it may predate a commit
    # the editor made before it died.  The next edit waits out caches instead.
    assert not os.path.lexists(bucket / (path.name + GEN_SUFFIX))
    assert not litter["stage"].exists()
    assert foreign.read_text() == "not ours" and planted.exists(), "garbage is reported, never touched"
    assert store.load(sid) == {"keep": 1}
    with store.edit(sid) as d:
        d["keep"] = 2
    assert os.readlink(bucket / (path.name + GEN_SUFFIX)) == "2"


def test_max_seconds_stops_and_the_next_run_resumes(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    for _ in range(300):
        store.create()
    clock.t += 500
    first = store.reap(grace=5, max_seconds=0)  # at least one directory, then stop
    assert not first.complete and first.directories == 1
    cursor = (tmp_path / CURSOR_FILE).read_text().strip()
    assert cursor != "00"
    second = store.reap(grace=5)
    assert second.complete and first.removed + second.removed == 300
    assert not _session_files(tmp_path)
    assert (tmp_path / CURSOR_FILE).read_text().strip() == "00"


def test_a_second_reaper_backs_off_while_one_runs(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    with MkdirLock(tmp_path / REAPER_LOCK):
        stats = store.reap()
    assert stats.busy and not stats.complete and stats.directories == 0
    assert "another reaper" in stats.summary()


def test_cli_contract(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    store.create()
    quiet = _cli("reap", str(tmp_path))
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", "silent on success under cron"
    out = _cli("reap", str(tmp_path), "--json", "--dry-run")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["complete"] and summary["sessions_seen"] == 1 and summary["dry_run"]
    assert _cli("reap", str(tmp_path / "nope")).returncode == 2
    (tmp_path.parent / "plain").mkdir(exist_ok=True)
    bad = _cli("reap", str(tmp_path.parent / "plain"))
    assert bad.returncode == 2 and "not an fssession store" in bad.stderr
    assert _cli("reap", str(tmp_path), "--grace", "0.5").returncode == 2, "grace below 2 x fs_slack is refused"
    assert _cli("reap").returncode == 2
    # An error on one entry: listed, exit 1, the rest still done.
    (tmp_path / "ff").write_text("a file where a directory should be")
    err = _cli("reap", str(tmp_path))
    assert err.returncode == 1 and "ff" in err.stderr and "1 errors" in err.stdout
    script = _run_script("fssession-reap", str(tmp_path), "--json")
    assert script.returncode == 1 and json.loads(script.stdout)["errors"] == 1


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=120, env=env)


# ------------------------------------------------------------ real processes
def _expired_store(root: Path, n: int) -> SessionStore:
    """A store of *n* sessions that expired long ago (their files' times set back)."""
    store = SessionStore(root, secret_key=KEY, max_age=60)
    old = time.time() - 3600
    for _ in range(n):
        p = store._path(store.create({"pad": "x" * 100}))
        os.utime(p, (old, old))
    return store


def test_a_reaper_killed_mid_run_leaves_nothing_that_breaks_a_load(tmp_path: Path) -> None:
    store = _expired_store(tmp_path, 3000)
    live = [store.create({"live": i}) for i in range(20)]
    code = (
        "import sys; from fssession.reaper import reap; "
        "reap(sys.argv[1], progress=lambda stats, done: done == 100 and print('100', flush=True))"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "100"
    p.send_signal(signal.SIGKILL)  # somewhere in the 101st directory or a little later
    p.wait()
    remaining = _session_files(tmp_path)
    assert 20 < len(remaining) < 3020, "killed mid-run"
    for sid in live:
        assert store.load(sid) == {"live": live.index(sid)}
    stats = store.reap()  # the killed reaper's lock: a dead holder on this host, replaced at once
    assert stats.complete and not stats.busy and stats.errors == 0
    assert len(_session_files(tmp_path)) == 20
    assert not list(tmp_path.rglob(f"*{LOCK_SUFFIX}")) and not list(tmp_path.rglob("*.stage-*"))


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
    results = [json.loads(p.communicate(timeout=300)[0]) for p in ps]
    assert all(r["errors"] == 0 for r in results), results
    assert sum(r["removed"] for r in results) == 1500, "each expired session removed exactly once"
    assert any(r["complete"] for r in results)
    if not coordinate:
        assert all(r["complete"] for r in results)
    assert {sid for sid in live if store.load(sid) is not None} == live
    assert len(_session_files(tmp_path)) == 30


# ------------------------------------------------------- live sessions, two mounts
def _keepers_and_reapers(a: Path, b: Path) -> None:
    """Keepers hold sessions near their expiry while reapers loop on both mounts: none lost, the rest gone."""
    max_age, seconds = 6, 14.0
    store = SessionStore(a, secret_key=KEY, max_age=max_age)
    kept = [store.create({"kept": i}) for i in range(16)]
    doomed = [store.create({"doomed": i}) for i in range(40)]
    doomed_files = {Path(store._path(s)).name for s in doomed}
    time.sleep(1.2)  # let the other mount see them
    worker = str(Path(__file__).resolve().parent / "reapworker.py")
    ps = [
        subprocess.Popen(
            [sys.executable, worker, "keep", str(root), str(seconds), str(max_age), *kept[i::2]],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, root in enumerate((a, b))
    ] + [
        subprocess.Popen([sys.executable, worker, "reap", str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
        for root in (a, b)
    ]
    keepers, reapers = (
        [json.loads(p.communicate(timeout=300)[0]) for p in ps[:2]],
        [json.loads(p.communicate(timeout=300)[0]) for p in ps[2:]],
    )
    print(f"keepers {keepers}, reapers {reapers}")
    assert [k["lost"] for k in keepers] == [[], []], "a live session was reaped"
    assert all(k["visits"] >= 3 for k in keepers)
    assert all(r["errors"] == 0 for r in reapers), reapers
    assert all(store.load(s) is not None for s in kept)
    assert not doomed_files & _session_files(a), "expired sessions were left behind"
    assert sum(r["removed"] for r in reapers) == len(doomed)


def test_keepers_and_reapers_local(tmp_path: Path) -> None:
    _keepers_and_reapers(tmp_path, tmp_path)


def test_keepers_and_reapers_on_two_mounts(shared_fs: SharedFS) -> None:
    _keepers_and_reapers(*shared_fs.fresh_dir("reap-live"))


def test_claims_of_a_killed_reaper_are_settled(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    dead, alive = store.create({"d": 1}), store.create({"a": 1})
    clock.t += 90
    store.touch(alive)
    clock.t += 90  # dead: idle 180 s, expired beyond the grace; alive: idle 90 s
    # A reaper killed between claiming (rename aside) and settling: one claim
    # is still expired, the other was revived by a touch just before the claim.
    for sid in (dead, alive):
        os.rename(store._path(sid), store._path(sid) + ".reap")
    stats = store.reap(grace=5)
    assert stats.errors == 0 and (stats.removed, stats.in_use) == (1, 1)
    assert store.load(alive) == {"a": 1}, "a revived session is put back"
    assert store.load(dead) is None and not list(tmp_path.rglob("*.reap"))


def test_parallel_sweep_matches_serial(tmp_path: Path) -> None:
    store = _expired_store(tmp_path, 2000)
    live = [store.create({"live": i}) for i in range(20)]
    stats = reap(tmp_path, jobs=2)
    assert stats.complete and stats.errors == 0 and stats.removed == 2000 and stats.directories == 256
    assert [store.load(s) for s in live] == [{"live": i} for i in range(20)]
    assert len(_session_files(tmp_path)) == 20


def test_an_interrupted_restore_leaves_the_live_session_alone(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    sid = store.create({"n": 1})
    path = store._path(sid)
    os.link(path, path + ".reap")  # killed between link(aside, path) and unlink(aside)
    clock.t += 500  # the session is now expired too, but its claim is only a second name of it
    stats = store.reap(grace=5)
    assert not os.path.exists(path + ".reap")
    assert stats.removed == 1, "the session itself expired and went, once"
    assert not os.path.lexists(path + GEN_SUFFIX)


def test_a_logout_during_a_claim_is_not_undone(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = _store(tmp_path, clock)
    sid = store.create({"user": "alice"})
    clock.t += 200
    path = store._path(sid)

    from fssession import reaper

    def revived_then_logged_out(self: reaper._Sweep, p: str) -> None:
        os.utime(path, (clock.t, clock.t))  # a paused load's touch lands: the claim will look alive
        real_settle = self._settle

        def settle(aside: str, p2: str, seen: object, header: object) -> None:
            assert store.delete(sid) is True, "delete() sees the claimed session and removes it"
            real_settle(aside, p2, seen, header)  # type: ignore[arg-type]

        self._settle = settle  # type: ignore[method-assign]

    real = reaper._Sweep._judged
    reaper._Sweep._judged = revived_then_logged_out  # type: ignore[method-assign]
    try:
        store.reap(grace=5)
    finally:
        reaper._Sweep._judged = real  # type: ignore[method-assign]
    assert store.load(sid) is None, "the reaper put back a session the user had logged out of"


def test_the_reapers_locks_take_the_stores_directory_mode(tmp_path: Path) -> None:
    """Web nodes of other users in the group must be able to judge a lock a dead reaper left."""
    clock = Clock(T0)
    store = _store(tmp_path, clock, dir_mode=0o770, file_mode=0o660)
    store.create()
    clock.t += 500
    from fssession import reaper

    modes: list[int] = []

    def record(self: reaper._Sweep, p: str) -> None:
        modes.append(self._lock(p).mode)

    real = reaper._Sweep._judged
    reaper._Sweep._judged = record  # type: ignore[method-assign]
    try:
        store.reap(grace=5)
    finally:
        reaper._Sweep._judged = real  # type: ignore[method-assign]
    assert modes == [0o770]
