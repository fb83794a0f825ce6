"""Attack 2: clean-up that checks an entry, then acts on it again by path, in a directory others write.

A group member races the store's own lock code (every edit, delete and
rotate of a web worker) and the reaper (run as root from cron) with the
generic attacker of ``racer.py``: everything in the store except the session
files, the naming key and the buckets is swapped, again and again, for
symlinks into a victim tree, and every name that disappears gets a symlink,
a FIFO or a lure planted under it.  The victim tree must come through byte
for byte, no call may hang, every failure must be one of fssession's typed
errors, and the store must still work for its web users afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.hostile.conftest import Lab
from tests.support.procs import Hung, LabProc, Result
from tests.support.users import MALLORY, WEB_A
from tests.support.victim import Victim

pytestmark = pytest.mark.slow

RACE_SECONDS = 20.0  # how long each side keeps at it: a bound on the attack, not a speed expectation

SESSIONS = """
import sys, time
from tests.hostile.agent import emit, shared_store
root, live, expired = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = shared_store(root)
sids = [store.create({"n": 0}) for _ in range(live)]
old = shared_store(root, max_age=60, clock=lambda: time.time() - 86400)
for _ in range(expired):
    old.create({"old": True})
emit(sids)
"""

# A web worker's traffic: edits, loads, rotations and short-lived sessions, until its budget is spent.
TRAFFIC = """
import sys, time
from tests.hostile.agent import attempt, emit, shared_store
root, budget, pause, sids = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
store = shared_store(root, lock_timeout=2.0, fs_slack=0.1, lease=2.0)

def edit(sid):
    with store.edit(sid) as data:
        data["n"] = data.get("n", 0) + 1

def churn():
    sid = store.create({"t": 1})
    edit(sid)
    return store.delete(sid)

counts, unexpected = {}, []
end = time.monotonic() + budget
i = 0
while time.monotonic() < end:
    j = i % len(sids)
    op = ("churn", "edit", "load", "rotate")[i % 4]
    if op == "churn":
        r = attempt(churn)
    elif op == "edit":
        r = attempt(lambda: edit(sids[j]))
    elif op == "load":
        r = attempt(lambda: store.load(sids[j]) is not None)
    else:
        r = attempt(lambda: store.rotate(sids[j]))
        if "ok" in r:
            sids[j] = r["ok"]
    key = op + ":" + r.get("error", "ok")
    counts[key] = counts.get(key, 0) + 1
    if "error" in r and not r["typed"]:
        unexpected.append(r)
    i += 1
    time.sleep(pause)
emit({"ops": i, "counts": counts, "unexpected": unexpected[:10]})
"""

# Afterwards: the store still works for a web user (a fresh session, start to end).
STILL_WORKS = """
import sys
from tests.hostile.agent import emit, shared_store
store = shared_store(sys.argv[1], lock_timeout=10.0)
sid = store.create({"after": 1})
with store.edit(sid) as data:
    data["after"] = 2
assert store.load(sid) == {"after": 2}, store.load(sid)
assert store.delete(sid) is True
emit("ok")
"""


def start_racer(lab: Lab, store: Path, victim: Victim, stop: Path) -> LabProc:
    """The generic attacker, as fss-mallory; returns once it is racing."""
    lures = [arg for name in victim.names() for arg in ("--lure", name)]
    racer = lab.spawn(
        MALLORY,
        ["-m", "tests.hostile.racer", str(store), "--dir-target", str(victim.tree), "--file-target",
         str(victim.secret), "--stop", str(stop), "--max-seconds", str(4 * RACE_SECONDS), *lures],
        what="racer",
    )  # fmt: skip
    assert "racing" in json.loads(racer.readline())
    return racer


def stop_racer(racer: LabProc, stop: Path) -> dict[str, int]:
    """Tell the racer to stop; its summary (it must have swapped something, or the test proved nothing)."""
    stop.touch()
    stats: dict[str, int] = json.loads(racer.finish().ok().out.strip().splitlines()[-1])
    assert stats["swaps"] > 0 and stats["plants"] > 0, f"the racer never got to act: {stats}"
    return stats


def finish_traffic(traffic: LabProc) -> Result | Hung:
    """Wait for the web worker under the hang guard; a hang is returned, to be reported after the victim check."""
    try:
        return traffic.finish(timeout=RACE_SECONDS + 120)
    except Hung as hung:
        return hung


def check_traffic(result: Result | Hung) -> dict[str, object]:
    """The web worker's summary: it finished, did work, and every failure was a typed fssession error."""
    if isinstance(result, Hung):
        raise result
    summary: dict[str, object] = json.loads(result.ok().out)
    assert summary["ops"], summary
    assert not summary["unexpected"], f"untyped errors under the race: {summary['unexpected']}"
    return summary


def test_web_worker_lock_code_survives_a_racing_group_member(
    lab: Lab, store_path: Path, weba_victim: Victim, workspace: Path
) -> None:
    sids = json.loads(lab.run(WEB_A, SESSIONS, str(store_path), "6", "0").ok().out)
    stop = workspace / "stop"
    racer = start_racer(lab, store_path, weba_victim, stop)
    traffic = lab.python(WEB_A, TRAFFIC, str(store_path), str(RACE_SECONDS), "0.005", *sids, what="web traffic")
    result = finish_traffic(traffic)
    stop_racer(racer, stop)
    weba_victim.assert_untouched()  # first: the worst outcome is reported even when the traffic also hung
    check_traffic(result)
    assert lab.run(WEB_A, STILL_WORKS, str(store_path)).ok().out.strip() == '"ok"'


@pytest.mark.parametrize("extra", [[], ["--allow-root"]], ids=["default", "allow-root"])
def test_root_reaper_survives_a_racing_group_member(
    lab: Lab, store_path: Path, root_victim: Victim, workspace: Path, extra: list[str]
) -> None:
    sids = json.loads(lab.run(WEB_A, SESSIONS, str(store_path), "6", "30").ok().out)
    stop = workspace / "stop"
    racer = start_racer(lab, store_path, root_victim, stop)
    # Lighter traffic here: the root reaper is the victim, and the racer needs the CPU to race it.
    traffic = lab.python(WEB_A, TRAFFIC, str(store_path), str(RACE_SECONDS), "0.01", *sids, what="web traffic")
    runs = []
    end = time.monotonic() + RACE_SECONDS
    while time.monotonic() < end:
        runs.append(lab.cli(None, "reap", str(store_path), "--json", "--grace", "2", *extra))
    traffic_result = finish_traffic(traffic)
    stop_racer(racer, stop)
    root_victim.assert_untouched()
    for run in runs:
        # 2 is allowed: a coordination lock the attacker replaced may stop a run, with a message.
        assert run.rc in (0, 1, 2) and "Traceback" not in run.err, f"root reaper crashed under the race: {run}"
    assert any(run.rc in (0, 1) for run in runs), f"no reaper run did its work: {runs[-1]}"
    check_traffic(traffic_result)
    assert lab.run(WEB_A, STILL_WORKS, str(store_path)).ok().out.strip() == '"ok"'
