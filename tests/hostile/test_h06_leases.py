"""Attack 6: a lock holder that claims a huge lease must not wedge a session, or the reaper, for ever.

A lease recorded by a holder is what others wait for.  A holder that claims
10^6 seconds and never renews must block a session only up to the bound the
contender sets (``max_lease``, by default a few times the contender's own
lease), and on the reaper's coordination lock it must make the reaper say so
(exit 1, a message on stderr) instead of exiting 0 as "busy" every run.

The claims are made by real holders through fssession's own lock code (so
the tests do not depend on the marker format, which is changing): a web
worker's process configured with ``lease=10**6`` that stops in the middle of
an edit (the same user as the contender, so that only the lease is at
stake, not permissions), and Mallory holding ``.fssession-reaper.lock``
with ``MkdirLock`` (no key needed; readable by the group), who then
backdates everything she created in the store.
Both holders stay alive: only the lease can free them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A

pytestmark = pytest.mark.slow

CREATE = """
import sys
from tests.hostile.agent import emit, shared_store
emit(shared_store(sys.argv[1]).create({"n": 0}))
"""

# A web node claiming an enormous lease, stuck in the middle of an edit (alive, never renewing).
GREEDY_EDIT = """
import sys
from tests.hostile.agent import emit, shared_store
store = shared_store(sys.argv[1], lease=10**6)
with store.edit(sys.argv[2]) as data:
    emit("holding")
    sys.stdin.readline()
"""

CONTEND = """
import sys
from tests.hostile.agent import attempt, emit, shared_store
store = shared_store(sys.argv[1], lease=2.0, lock_timeout=45.0)
def edit():
    with store.edit(sys.argv[2]) as data:
        data["n"] += 1
    return store.load(sys.argv[2])
emit(attempt(edit))
"""


def test_a_huge_claimed_lease_blocks_a_session_only_up_to_the_contenders_bound(lab: Lab, store_path: Path) -> None:
    sid = json.loads(lab.run(WEB_A, CREATE, str(store_path)).ok().out)
    greedy = lab.python(WEB_A, GREEDY_EDIT, str(store_path), sid, what="greedy holder")
    assert json.loads(greedy.readline()) == "holding"
    outcome = json.loads(lab.run(WEB_A, CONTEND, str(store_path), sid, timeout=120).ok().out)
    assert outcome == {"ok": {"n": 1}}, f"a holder claiming a 10^6 s lease kept the session: {outcome}"


# Mallory holds the reaper's coordination lock, claiming ten million seconds, and makes it look old.
SQUAT = """
import os, sys, time
from fssession import MkdirLock
root = sys.argv[1]
lock = MkdirLock(os.path.join(root, ".fssession-reaper.lock"), lease=10**7, mode=0o770)
lock.acquire(timeout=30)
old = time.time() - 86400
for dirpath, dirnames, filenames in os.walk(root):
    for name in [*dirnames, *filenames]:
        path = os.path.join(dirpath, name)
        if os.lstat(path).st_uid == os.getuid():
            os.utime(path, (old, old), follow_symlinks=False)
print("squatting", flush=True)
sys.stdin.readline()
"""


def test_a_squatted_reaper_lock_is_reported_not_silently_busy(lab: Lab, store_path: Path) -> None:
    squatter = lab.python(MALLORY, SQUAT, str(store_path), what="squatter")
    assert squatter.readline() == "squatting"
    result = lab.cli(WEB_A, "reap", str(store_path))
    assert result.rc == 1, f"a reaper lock held for a day, claiming 10^7 s, must be reported: {result}"
    assert result.err.strip(), "exit 1 must come with a message on stderr"
    # The next run (the squatter is still alive) either reports it again or, if the first run took the
    # lock over, does its work: never "busy" in silence.
    again = lab.cli(WEB_A, "reap", "--json", str(store_path))
    assert again.rc in (0, 1) and json.loads(again.out).get("busy") is not True, again
