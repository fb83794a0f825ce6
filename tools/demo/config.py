"""The demo store's settings, and the names a node and the demo's client both rely on."""

from __future__ import annotations

import hashlib

SECRET_ENV = "FSSESSION_DEMO_SECRET"  # the key reaches the nodes by environment, not argv (ps shows argv)
METRICS_ENV = "FSSESSION_DEMO_METRICS"  # set (by --metrics): each node serves its store's metrics at /metrics
NODE_HEADER = "X-Fssession-Node"
SESSION_HEADER = "X-Fssession-Session"

# A short lease, so that a node killed while it holds a session's lock is
# replaced within seconds: a node on another host cannot be probed, only
# waited out (a node on this host is noticed at once).
LEASE = 3.0
FS_SLACK = 1.0  # the store's default: client caches of the mount are assumed at most this stale
LOCK_TIMEOUT = 10.0  # a request waits this long for a session's lock: more than a lease, so a dead holder is outlived
MAX_AGE = 600  # idle lifetime of the demo user's session (and the cookie's Max-Age)
VISITOR_TTL = 1  # idle lifetime of the throwaway visitors' sessions: gone by the time the reaper runs
GRACE = 2 * FS_SLACK  # the reaper's grace (the least it allows): it removes sessions expired longer than this
NODE_NAMES = ("web-1", "web-2", "web-3")
VICTIM = 1  # index of the node killed in the middle of an update


def fingerprint(sid: str | None) -> str | None:
    """A short hash of a session id, safe to show: the id itself stays in the HttpOnly cookie."""
    return None if sid is None else hashlib.blake2b(sid.encode(), digest_size=6).hexdigest()
