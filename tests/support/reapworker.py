"""Processes for the reaper's real-process tests.

keep ROOT ROUNDS MAX_AGE SID...   uses the sessions for ROUNDS rounds (load, touch or edit each in
                                  turn, a round about every MAX_AGE/2 seconds); prints
                                  {"visits": n, "lost": [...], "expired": [...]}: "lost" are sessions
                                  found gone less than MAX_AGE after their last use (a reaper bug),
                                  "expired" those found gone later (this keeper was stalled)
reap ROOT                         runs the reaper in a loop until a line arrives on stdin; prints totals
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fssession import SessionNotFound, SessionStore
from fssession.reaper import reap
from tests.support import KEY


def _visit(store: SessionStore, sid: str, op: int) -> bool:
    """Use the session once; False if it was gone."""
    try:
        if op == 0:
            return store.load(sid) is not None
        if op == 1:
            store.touch(sid)
        else:
            with store.edit(sid) as data:
                data["n"] = data.get("n", 0) + 1
    except SessionNotFound:
        return False
    return True


def keep(root: str, rounds: int, max_age: int, sids: list[str]) -> None:
    store = SessionStore(root, secret_key=KEY, max_age=max_age)
    last_use = dict.fromkeys(sids, time.monotonic())
    lost: list[str] = []
    expired: list[str] = []
    for visit in range(rounds):
        started = time.monotonic()
        for i, sid in enumerate(sids):
            if sid in expired:
                continue
            op = (visit + i) % 3
            before = time.monotonic()
            if _visit(store, sid, op):
                last_use[sid] = time.monotonic()
            elif before - last_use[sid] < max_age:
                lost.append(f"{('load', 'touch', 'edit')[op]} {sid}")
            else:
                expired.append(sid)
        time.sleep(max(0.0, max_age / 2 - (time.monotonic() - started)))
    print(json.dumps({"visits": rounds, "lost": lost, "expired": expired}), flush=True)


def reap_loop(root: str) -> None:
    totals = {"runs": 0, "busy": 0, "removed": 0, "errors": 0, "problems": []}
    while True:
        stats = reap(root, grace=2.0)
        totals["runs"] += 1
        totals["busy"] += stats.busy
        totals["removed"] += stats.removed
        totals["errors"] += stats.errors
        totals["problems"] += stats.problems[:5]
        if select.select([sys.stdin], [], [], 0.3)[0]:
            break
    print(json.dumps(totals), flush=True)


if __name__ == "__main__":
    cmd, root = sys.argv[1], sys.argv[2]
    if cmd == "keep":
        keep(root, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    elif cmd == "reap":
        reap_loop(root)
    else:
        raise SystemExit(f"unknown command {cmd!r}")
