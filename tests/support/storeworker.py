"""A SessionStore client run as a separate process by the store tests.

incr ROOT SID N      N locked increments of data["n"]; prints {"done": N}
churn ROOT SID...    edits the sessions round-robin forever (until killed)
hold ROOT SID        enters an edit, prints "holding", and waits there (until killed)
"""

from __future__ import annotations

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fssession import SessionStore
from tests.support import KEY


class _StaleReadCounter(logging.Handler):
    """Counts the stale reads an edit caught (and re-read) under the lock."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("stale read"):
            self.count += 1


def main(argv: list[str]) -> None:
    cmd, root = argv[0], argv[1]
    store = SessionStore(root, secret_key=KEY, lock_timeout=120, lease=30)
    if cmd == "incr":
        sid, n = argv[2], int(argv[3])
        stale = _StaleReadCounter()
        logging.getLogger("fssession.store").addHandler(stale)
        logging.getLogger("fssession.store").setLevel(logging.DEBUG)
        for _ in range(n):
            # A lock-free load first, as a web request does: on GlusterFS it
            # primes the client cache that then serves the edit an old
            # version (the stale read the generation beacon must catch).
            store.load(sid)
            with store.edit(sid) as data:
                data["n"] = data.get("n", 0) + 1
        print(json.dumps({"done": n, "stale_reads": stale.count}), flush=True)
    elif cmd == "churn":
        sids = argv[2:]
        i = 0
        while True:
            with store.edit(sids[i % len(sids)]) as data:
                data["n"] = data.get("n", 0) + 1
                data["blob"] = os.urandom(2000 + (i % 7) * 3000).hex()
            i += 1
    elif cmd == "hold":
        import time

        with store.edit(argv[2]):
            print("holding", flush=True)
            time.sleep(3600)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
