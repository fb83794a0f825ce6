"""Prometheus metrics: scripted scenarios with real processes give exactly their counts; the textfile is whole."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed (pip install -e '.[test]')")

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fssession import LockLost, LockTimeout, SessionStore, TamperedSession
from fssession.events import EVENT_NAMES, Event
from fssession.layout import BUCKETS, REAPER_LOCK
from fssession.prometheus import REAP_COUNTS, PrometheusObserver, write_textfile
from fssession.reaper import ReapStats
from tests.support import KEY, REPO, Clock

HANG_GUARD = 120.0  # seconds: only ever reached if something hangs


# ------------------------------------------------------------------ helpers


def totals(registry: CollectorRegistry) -> dict[str, float]:
    """Every counter and histogram count in *registry*, by sample name and labels."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith(("_total", "_count")):
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@contextmanager
def counting(registry: CollectorRegistry) -> Iterator[dict[str, float]]:
    """The counts that moved inside the block (filled in when it ends)."""
    moved: dict[str, float] = {}
    before = totals(registry)
    yield moved
    after = totals(registry)
    moved.update({k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)})


def observed(tmp_path: Path, **options: Any) -> tuple[SessionStore, CollectorRegistry]:
    registry = CollectorRegistry()
    store = SessionStore(tmp_path, secret_key=KEY, on_event=PrometheusObserver(registry), **options)
    return store, registry


def holder(code: str, *args: str) -> subprocess.Popen[str]:
    """A process running *code* (which prints "ready" once it holds what it holds), started and ready."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready", "the holder process did not start"
    return p


HOLD_EDIT = (
    "import sys, signal; from fssession import SessionStore\n"
    f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
    "cm = s.edit(sys.argv[2]); cm.__enter__(); print('ready', flush=True); signal.pause()"
)


def stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(HANG_GUARD)


# --------------------------------------------------------------- the observer


def test_every_event_has_a_metric() -> None:
    assert PrometheusObserver(CollectorRegistry()).handled == set(EVENT_NAMES)


def test_a_sigkilled_holder_gives_exactly_one_take_over(tmp_path: Path) -> None:
    store, registry = observed(tmp_path, lease=600)  # only the dead PID can free it: no lease runs out here
    sid = store.create({"n": 0})
    p = holder(HOLD_EDIT, str(tmp_path), sid)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(HANG_GUARD)
    with counting(registry) as moved, store.edit(sid) as d:
        d["n"] = 1
    assert moved == {
        "fssession_lock_takeovers_total": 1,
        "fssession_lock_contended_total": 1,
        "fssession_lock_wait_seconds_count": 1,
    }
    with counting(registry) as moved, store.edit(sid) as d:  # uncontended: taken at once, nothing else
        d["n"] = 2
    assert moved == {"fssession_lock_wait_seconds_count": 1}
    assert registry.get_sample_value("fssession_lock_wait_seconds_bucket", {"le": "+Inf"}) == 2


def test_a_live_holder_gives_a_timeout(tmp_path: Path) -> None:
    store, registry = observed(tmp_path, lock_timeout=0.3)
    sid = store.create({"n": 0})
    p = holder(HOLD_EDIT, str(tmp_path), sid)
    try:
        with counting(registry) as moved, pytest.raises(LockTimeout), store.edit(sid):
            pass
    finally:
        stop(p)
    assert moved == {"fssession_lock_timeouts_total": 1}


def test_a_holder_taken_over_counts_its_lost_lock_at_the_commit(tmp_path: Path) -> None:
    store, registry = observed(tmp_path, lease=1.0, fs_slack=0.1)
    sid = store.create({"n": 0})
    contender = (
        "import sys; from fssession import SessionStore\n"
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r}, lease=1.0, fs_slack=0.1, lock_timeout=60)\n"
        "print('ready', flush=True)\n"
        "with s.edit(sys.argv[2]) as d: d['n'] = 'theirs'"
    )
    with counting(registry) as moved, pytest.raises(LockLost), store.edit(sid) as d:
        p = holder(contender, str(tmp_path), sid)  # it waits out our lease, takes over, commits
        assert p.wait(HANG_GUARD) == 0
        d["n"] = "ours"
    assert moved == {"fssession_lock_wait_seconds_count": 1, "fssession_lock_lost_total{step=commit}": 1}
    assert store.load(sid) == {"n": "theirs"}


def test_a_stale_read_caught_under_the_lock_is_counted_once(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    committed: list[bytes] = []  # the last commit's file, which the "cache" serves once the store reads again

    def observer(event: Event) -> None:
        metrics(event)
        if event.name == "stale_read":
            f.write_bytes(committed[0])

    store = SessionStore(tmp_path, secret_key=KEY, on_event=observer)
    sid = store.create({"n": 1})
    f = Path(store.layout.path_for(sid))
    old = f.read_bytes()
    with store.edit(sid) as d:
        d["n"] = 2
    committed.append(f.read_bytes())
    f.write_bytes(old)  # what a client cache that missed the last commit serves
    with counting(registry) as moved, store.edit(sid) as d:
        assert d == {"n": 2}  # read again under the lock: the last commit, not the stale copy
        d["n"] = 3
    assert moved == {"fssession_stale_reads_total": 1, "fssession_lock_wait_seconds_count": 1}


def test_rollbacks_tampering_and_load_retries_are_counted(tmp_path: Path) -> None:
    store, registry = observed(tmp_path, load_retries=3)
    sid = store.create({"a": 1})
    f = Path(store.layout.path_for(sid))
    old = f.read_bytes()
    with store.edit(sid) as d:
        d["a"] = 2
    f.write_bytes(old)
    with counting(registry) as moved, pytest.raises(TamperedSession):
        store.load(sid, min_generation=2)
    assert moved == {"fssession_rollbacks_refused_total": 1}

    flipped = bytearray(old)
    flipped[-1] ^= 1  # the MAC no longer matches; the length still does (not a torn read)
    f.write_bytes(bytes(flipped))
    with counting(registry) as moved, pytest.raises(TamperedSession):
        store.load(sid)
    assert moved == {"fssession_tampered_files_total": 1}

    f.write_bytes(old)
    assert store.load(sid) == {"a": 1}  # seen a moment ago: its absence is retried (a replace elsewhere?)
    f.unlink()
    with counting(registry) as moved:
        assert store.load(sid) is None
    assert moved == {"fssession_load_retries_total{reason=ENOENT}": 3}


def test_reaper_runs_give_their_counts(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    store, registry = observed(tmp_path, max_age=100, clock=clock)
    for _ in range(3):
        store.create()
    clock.advance(500)
    store.create()  # live: seen, not removed
    with counting(registry) as moved:
        stats = store.reap(grace=5)
    assert (stats.removed, stats.sessions_seen) == (3, 4)
    assert moved == {
        "fssession_reaper_runs_total{result=done}": 1,
        "fssession_reaper_run_seconds_count": 1,
        "fssession_reaper_directories_total": len(BUCKETS),
        "fssession_reaper_sessions_seen_total": 4,
        "fssession_reaper_expired_total": 3,
        "fssession_reaper_removed_total": 3,
    }

    code = (
        "import sys, signal; from fssession.lock import MkdirLock\n"
        "lock = MkdirLock(sys.argv[1]); lock.acquire(); print('ready', flush=True); signal.pause()"
    )
    p = holder(code, str(tmp_path / REAPER_LOCK))  # another reaper, running
    try:
        with counting(registry) as moved:
            assert store.reap(grace=5).busy
    finally:
        stop(p)
    assert moved == {"fssession_reaper_runs_total{result=busy}": 1}


def test_every_count_a_reaper_run_reports_has_a_metric(tmp_path: Path) -> None:
    runs: list[Event] = []
    store = SessionStore(tmp_path, secret_key=KEY, on_event=runs.append)
    store.reap()
    (run,) = [e for e in runs if e.name == "reap_run"]
    assert set(run.values) == set(REAP_COUNTS)


def test_label_values_stay_in_their_fixed_sets(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    for detail in ("ESTALE", "EIO", "a file name"):
        metrics(Event("load_retry", detail=detail))
    metrics(Event("lock_lost", detail="something new"))
    metrics(Event("lock_takeover", detail="pid 123 on host-a, token 0123abcd"))
    metrics(Event("not_an_event_yet"))
    labels = {v for f in registry.collect() for s in f.samples for v in s.labels.values() if "le" not in s.labels}
    assert labels == {"ESTALE", "ENOENT", "torn", "other", "renewal", "commit", "release", "removal", "done", "busy"}
    assert registry.get_sample_value("fssession_load_retries_total", {"reason": "other"}) == 2


def test_without_prometheus_client_the_import_names_the_extra() -> None:
    code = "import sys; sys.modules['prometheus_client'] = None\nimport fssession.prometheus"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and "pip install 'fssession[prometheus]'" in r.stderr


# ---------------------------------------------------------------- textfile

# The keys of report.StoreStats.as_dict(), with a non-numeric one and a nested map.
STORE_STATS = {
    "path": "/srv/sessions",
    "sessions": 1200,
    "bytes": 480_000,
    "expired": 17,
    "idle_age": {"<1m": 40, "<10m": 200, "<1h": 600, "<1d": 343, ">=1d": 17},
    "locks_held": 3,
    "locks_stale": 1,
    "temp_files": 2,
    "temp_files_orphaned": 1,
    "beacons": 0,
    "litter": 0,
    "foreign": 4,
    "unreadable": 0,
    "directories": 256,
    "per_directory_min": 1,
    "per_directory_max": 11,
    "elapsed": 0.25,
    "some_future_count": 5,
    "problems": ["not a number"],
}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def parse(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The gauges in a textfile: name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and METRIC_NAME.match(family.name) and family.documentation
        out[family.name] = [(s.labels, s.value) for s in family.samples]
    return out


def test_store_stats_parse_back_as_gauges(tmp_path: Path) -> None:
    out = tmp_path / "fssession.prom"
    write_textfile(STORE_STATS, out, labels={"store": "main"}, now=1_800_000_000.0)
    gauges = parse(out)
    main = {"store": "main"}
    for key in ("sessions", "bytes", "expired", "locks_held", "locks_stale", "temp_files", "foreign"):
        assert gauges[f"fssession_store_{key}"] == [(main, STORE_STATS[key])]
    assert gauges["fssession_store_some_future_count"] == [(main, 5)]
    assert gauges["fssession_store_duration_seconds"] == [(main, 0.25)]
    assert gauges["fssession_store_last_run_timestamp_seconds"] == [(main, 1_800_000_000.0)]
    idle = {labels["idle"]: value for labels, value in gauges["fssession_store_idle_age"]}
    assert idle == STORE_STATS["idle_age"]
    assert all(labels["store"] == "main" for labels, _ in gauges["fssession_store_idle_age"])
    numeric = {k for k, v in STORE_STATS.items() if isinstance(v, int | float | dict)}
    assert len(gauges) == len(numeric) + 1  # and the timestamp; path and problems left out
    assert out.stat().st_mode & 0o777 == 0o644


def test_a_reap_runs_stats_parse_back(tmp_path: Path) -> None:
    store_dir, prom = tmp_path / "store", tmp_path / "textfiles"
    prom.mkdir()
    clock = Clock(1_800_000_000.0)
    store = SessionStore(store_dir, secret_key=KEY, max_age=100, clock=clock)
    for _ in range(2):
        store.create()
    clock.advance(500)
    stats = store.reap(grace=5)
    write_textfile(stats, prom / "reap.prom")
    gauges = parse(prom / "reap.prom")
    for key in REAP_COUNTS:
        assert gauges[f"fssession_reap_{key}"] == [({}, getattr(stats, key))]
    assert gauges["fssession_reap_removed"] == [({}, 2)]
    assert gauges["fssession_reap_complete"] == [({}, 1)] and gauges["fssession_reap_busy"] == [({}, 0)]
    assert gauges["fssession_reap_duration_seconds"] == [({}, stats.elapsed)]
    assert os.listdir(prom) == ["reap.prom"]  # no temp file left beside it


def test_the_observer_and_the_textfiles_never_share_a_name(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    live = {name for f in registry.collect() for name in (f.name, *(s.name for s in f.samples))}
    write_textfile(ReapStats(path=str(tmp_path), complete=True), tmp_path / "reap.prom")
    write_textfile(STORE_STATS, tmp_path / "store.prom")
    cron = {*parse(tmp_path / "reap.prom"), *parse(tmp_path / "store.prom")}
    assert len(cron) > 30 and not live & cron  # one name, one meaning: alerts on cron's figures see only cron's


def test_the_textfile_directory_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_textfile(STORE_STATS, tmp_path / "missing" / "fssession.prom")
    assert not (tmp_path / "missing").exists()


def test_the_textfile_is_readable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_textfile(STORE_STATS, tmp_path / "fssession.prom")
    finally:
        os.umask(old)
    assert (tmp_path / "fssession.prom").stat().st_mode & 0o777 == 0o644


# A writer that rewrites the file until told to stop, alternating two sizes;
# every version says its size, so a torn or mixed read cannot pass for whole.
REWRITER = """
import itertools, os, sys
from fssession.prometheus import write_textfile
path, stop = sys.argv[1], sys.argv[2]
print('ready', flush=True)
for n in itertools.count():
    size = 300 if n % 2 else 3000
    write_textfile({"size": size, **{f"k{i:04d}": i for i in range(size)}}, path)
    if os.path.exists(stop):
        break
"""


def test_a_reader_never_sees_a_partial_textfile(tmp_path: Path) -> None:
    out, stop_file = tmp_path / "fssession.prom", tmp_path / "stop"
    write_textfile({"size": 0}, out)
    p = holder(REWRITER, str(out), str(stop_file))
    sizes: dict[int, int] = {}
    deadline = time.monotonic() + HANG_GUARD
    try:
        # Read until both sizes were seen many times (the writer replaced the file under our reads).
        while min(sizes.get(300, 0), sizes.get(3000, 0)) < 20 or sum(sizes.values()) < 200:
            assert time.monotonic() < deadline, f"the writer never alternated: {sizes}"
            gauges = parse(out)
            said = gauges.get("fssession_store_size", [({}, -1.0)])[0][1]
            assert len(gauges) == said + 2, f"a partial file: {len(gauges)} gauges where it says {said} + 2"
            assert "fssession_store_last_run_timestamp_seconds" in gauges
            sizes[int(said)] = sizes.get(int(said), 0) + 1
    finally:
        stop_file.touch()
        assert p.wait(HANG_GUARD) == 0
    assert sorted(os.listdir(tmp_path)) == ["fssession.prom", "stop"]


# The writer is killed with SIGKILL half way through writing the temp file.
KILLED_MID_WRITE = """
import os, signal, sys
import fssession.prometheus as prom

def half_then_hang(fd, data):
    os.write(fd, data[: len(data) // 2])
    print('ready', flush=True)
    signal.pause()

prom._write_all = half_then_hang
prom.write_textfile({"sessions": 2, "bytes": 2}, sys.argv[1])
"""


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "fssession.prom"
    write_textfile({"sessions": 1, "bytes": 1}, out)
    old = out.read_bytes()
    p = holder(KILLED_MID_WRITE, str(out))
    os.kill(p.pid, signal.SIGKILL)
    p.wait(HANG_GUARD)
    assert out.read_bytes() == old
    assert parse(out)["fssession_store_sessions"] == [({}, 1)]
    (litter,) = [n for n in os.listdir(tmp_path) if n != out.name]
    assert litter.startswith(".fssession.prom.tmp-") and not litter.endswith(".prom")  # node_exporter skips it

    write_textfile({"sessions": 3}, out)  # a fresh temp may be another writer's, still writing: kept
    assert litter in os.listdir(tmp_path)
    hours_ago = time.time() - 2 * 3600
    os.utime(tmp_path / litter, (hours_ago, hours_ago))
    write_textfile({"sessions": 4}, out)  # an old one was left by a crash: removed
    assert os.listdir(tmp_path) == [out.name]
    assert parse(out)["fssession_store_sessions"] == [({}, 4)]


# ------------------------------------------------------------- the demo's node


def test_a_demo_node_serves_its_stores_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.demo.client import Client
    from tools.demo.cluster import start_node, stop_node
    from tools.demo.config import METRICS_ENV

    monkeypatch.setenv(METRICS_ENV, "1")
    (tmp_path / "peers.json").write_text("[]")
    node = start_node("web-1", tmp_path / "store", tmp_path / "peers.json", KEY * 2, simulate=False)
    try:
        alice = Client()
        assert alice.call(node, "/api/login", {"user": "alice"}).status == 200
        assert alice.call(node, "/api/incr").status == 200  # one locked edit, at least
        scraper = Client()
        with scraper.opener.open(node.url + "metrics", timeout=HANG_GUARD) as resp:
            text = resp.read().decode()
        assert scraper.cookie() is None  # a scrape makes no session
    finally:
        stop_node(node)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (count,) = [s.value for s in families["fssession_lock_wait_seconds"].samples if s.name.endswith("_count")]
    assert count >= 1


def test_the_cli_writes_the_textfile_for_cron(tmp_path: Path) -> None:
    """`fssession stats --prometheus FILE` and `fssession reap --prometheus FILE`: the counts, parseable."""
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from fssession import SessionStore

    store_dir, out = tmp_path / "s", tmp_path / "metrics"
    out.mkdir()
    store = SessionStore(store_dir, secret_key="k" * 32)
    for _ in range(3):
        store.create()
    for command in ("stats", "reap"):
        target = out / f"{command}.prom"
        r = subprocess.run(
            [sys.executable, "-m", "fssession", command, str(store_dir), "--prometheus", str(target), "--allow-root"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        names = {f.name for f in text_string_to_metric_families(target.read_text())}
        wanted = "fssession_store_sessions" if command == "stats" else "fssession_reap_sessions_seen"
        assert wanted in names, names
