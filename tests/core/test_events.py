"""Events: a scripted scenario gives exactly the events it should; no observer costs nothing but a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fssession import SessionStore, TamperedSession
from fssession.events import Event
from tests.support import KEY, REPO, Clock


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def count(self, name: str) -> int:
        return sum(e.name == name for e in self.events)


def test_a_sigkilled_holder_gives_one_take_over(tmp_path: Path) -> None:
    seen = Recorder()
    store = SessionStore(tmp_path, secret_key=KEY, on_event=seen, lease=600)
    sid = store.create({"n": 0})
    code = (
        "import os, sys, signal; from fssession import SessionStore\n"
        f"s = SessionStore(sys.argv[1], secret_key={KEY!r})\n"
        "cm = s.edit(sys.argv[2]); cm.__enter__(); print('holding', flush=True); signal.pause()"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), sid], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout is not None and p.stdout.readline().strip() == "holding"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with store.edit(sid) as d:
        d["n"] = 1
    assert seen.count("lock_takeover") == 1
    assert seen.count("lock_acquired") == 1
    (acquired,) = [e for e in seen.events if e.name == "lock_acquired"]
    assert acquired.detail == "waited" and acquired.seconds >= 0
    with store.edit(sid) as d:  # an uncontended edit: taken at once
        d["n"] = 2
    assert [e.detail for e in seen.events if e.name == "lock_acquired"] == ["waited", "at once"]


def test_tampering_and_rollbacks_are_counted(tmp_path: Path) -> None:
    seen = Recorder()
    store = SessionStore(tmp_path, secret_key=KEY, on_event=seen)
    sid = store.create({"a": 1})
    f = Path(store.layout.path_for(sid))
    old = f.read_bytes()
    with store.edit(sid) as d:
        d["a"] = 2
    f.write_bytes(old)
    with pytest.raises(TamperedSession):
        store.load(sid, min_generation=2)
    f.write_bytes(b"garbage")
    with pytest.raises(TamperedSession):
        store.load(sid)
    assert seen.count("rollback_refused") == 1 and seen.count("tampered") == 1


def test_a_reaper_run_reports_its_counts(tmp_path: Path) -> None:
    seen = Recorder()
    clock = Clock(1_800_000_000.0)
    store = SessionStore(tmp_path, secret_key=KEY, max_age=100, clock=clock, on_event=seen)
    for _ in range(3):
        store.create()
    clock.advance(500)
    store.reap(grace=5)
    (run,) = [e for e in seen.events if e.name == "reap_run"]
    assert run.values["removed"] == 3 and run.values["sessions_seen"] == 3 and run.seconds >= 0


def test_an_observer_that_fails_never_breaks_the_store(tmp_path: Path) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("metrics are down")

    store = SessionStore(tmp_path, secret_key=KEY, on_event=broken)
    sid = store.create({"a": 1})
    with store.edit(sid) as d:
        d["a"] = 2
    assert store.load(sid) == {"a": 2}
