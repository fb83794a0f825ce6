"""Processes for the reaper's real-process tests.

keep ROOT SECONDS MAX_AGE SID...   keeps the sessions alive for SECONDS by loading, touching
                                   and editing each in turn, about every MAX_AGE/2 seconds;
                                   prints {"visits": n, "lost": [...]}
reap ROOT SECONDS                  runs the reaper in a loop for SECONDS; prints totals
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fssession import SessionNotFound, SessionStore
from fssession.reaper import reap

KEY = "test-secret-key-0123456789"


def keep(root: str, seconds: float, max_age: int, sids: list[str]) -> None:
    store = SessionStore(root, secret_key=KEY, max_age=max_age)
    end = time.monotonic() + seconds
    lost: list[str] = []
    visits = 0
    while time.monotonic() < end:
        round_started = time.monotonic()
        for i, sid in enumerate(sids):
            op = (visits + i) % 3
            try:
                if op == 0:
                    if store.load(sid) is None:
                        lost.append(f"load {sid}")
                elif op == 1:
                    store.touch(sid)
                else:
                    with store.edit(sid) as data:
                        data["n"] = data.get("n", 0) + 1
            except SessionNotFound:
                lost.append(f"{('load', 'touch', 'edit')[op]} {sid}")
        visits += 1
        time.sleep(max(0.0, max_age / 2 - (time.monotonic() - round_started)))
    print(json.dumps({"visits": visits, "lost": lost}), flush=True)


def reap_loop(root: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    totals = {"runs": 0, "busy": 0, "removed": 0, "errors": 0, "problems": []}
    while time.monotonic() < end:
        stats = reap(root, grace=2.0)
        totals["runs"] += 1
        totals["busy"] += stats.busy
        totals["removed"] += stats.removed
        totals["errors"] += stats.errors
        totals["problems"] += stats.problems[:5]
        time.sleep(0.3)
    print(json.dumps(totals), flush=True)


if __name__ == "__main__":
    cmd, root = sys.argv[1], sys.argv[2]
    if cmd == "keep":
        keep(root, float(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    elif cmd == "reap":
        reap_loop(root, float(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
