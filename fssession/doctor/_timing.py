"""Time as the file server stamps it: granularity, this host's skew, and whether a rename re-stamps ctime.

The lock judges a remote holder's age by its marker's ctime, which the
server stamps at the rename that gave the marker its name, where the
filesystem does that (NOTES.md, "When a holder is stale", rule b).  The
ctime check shows whether it does, without a sleep of its own: a symlink is
made as soon as the work directory exists, and renamed only after the other
checks have run (a second or more later), once a fresh probe shows that the
server's clock has moved past the symlink's stamp.  A rename that re-stamps
then leaves ``ctime > mtime``; one that does not (sshfs: SFTP v3 has no
ctime) leaves them equal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ._context import Context
from ._verdict import Verdict, fmt_s

__all__ = ["check_clock", "check_ctime", "granularity", "start_ctime_probe"]

_CTIME_FIRST = "ctime-a"
_CTIME_MOVED = "ctime-b"
_CTIME_NOW = "ctime-now"
_CTIME_WAIT = 3.0  # at most, for the server's clock to pass the first stamp (normally already past)
_TICK_NAMES = {1: "1 ns", 1_000: "1 us", 1_000_000: "1 ms", 1_000_000_000: "1 s"}


def granularity(stamps: Sequence[int]) -> int:
    """The coarsest power-of-ten unit (ns) that divides every stamp; 1 s or more for whole seconds."""
    gran = 1
    for unit in (10**k for k in range(1, 11)):
        if not all(ns % unit == 0 for ns in stamps):
            break
        gran = unit
    return gran


# ------------------------------------------------------------------ granularity and skew
def _samples(ctx: Context) -> list[tuple[float, float, int]]:
    """(before, after, server stamp) of fresh directories, more of them over a second if stamps are coarse."""
    work = ctx.work.dir
    samples: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + 1.3
    for k in range(12):
        t0 = time.time()
        work.mkdir(f"clock{k}", 0o700)
        t1 = time.time()
        samples.append((t0, t1, work.lstat(f"clock{k}").st_mtime_ns))
        coarse = all(ns % 1_000_000_000 == 0 for _, _, ns in samples)
        # Whole-second stamps bound the offset only to a second per sample;
        # samples spread over a second narrow it down to the fraction.
        if k >= 4 and (not coarse or time.monotonic() > deadline):
            break
        if coarse:
            time.sleep(0.1)
    return samples


def _offset(samples: list[tuple[float, float, int]], gran: int) -> tuple[float, float]:
    """(server minus local, uncertainty) from the samples' bounds."""
    tick = 1.0 if gran >= 1_000_000_000 else max(gran / 1e9, 0.01)  # stamps come from a coarse clock
    lo = max(ns / 1e9 - t1 for _, t1, ns in samples)
    hi = min(ns / 1e9 + tick - t0 for t0, _, ns in samples)
    if lo > hi:  # the clock stepped while we sampled: fall back to the widest honest bound
        lo = min(ns / 1e9 - t1 for _, t1, ns in samples)
        hi = max(ns / 1e9 + tick - t0 for t0, _, ns in samples)
    return (lo + hi) / 2, (hi - lo) / 2


def check_clock(ctx: Context) -> list[Verdict]:
    """Timestamp granularity, and this host's clock against the server's (the mtime it stamps)."""
    samples = _samples(ctx)
    gran = granularity([ns for _, _, ns in samples])
    offset, unc = _offset(samples, gran)
    ctx.skew = (offset, unc)
    return [_granularity_verdict(gran), _skew_verdict(ctx, offset, unc)]


def _granularity_verdict(gran: int) -> Verdict:
    label = _TICK_NAMES.get(gran, f"{gran} ns")
    data = {"granularity_ns": gran}
    if gran > 1_000_000_000:
        advice = "fssession allows for whole-second stamps at most: a lease could be judged expired early"
        return Verdict("timestamps", "timestamp granularity", "fail", label, advice, data)
    note = ""
    if gran == 1_000_000_000:
        note = "whole seconds: fssession allows for it (a crashed holder elsewhere is replaced up to 2 s later)"
    return Verdict("timestamps", "timestamp granularity", "ok", label, note, data)


def _skew_verdict(ctx: Context, offset: float, unc: float) -> Verdict:
    fs_slack, lease = ctx.options.fs_slack, ctx.options.lease
    proven = max(0.0, abs(offset) - unc)  # judge by what the measurement proves
    side = "behind" if offset > 0 else "ahead of"
    figure = f"this host is {fmt_s(abs(offset))} ± {fmt_s(unc)} {side} the file server"
    ok_limit, fail_limit = fs_slack / 2, lease - fs_slack
    data = {"offset_s": -offset, "uncertainty_s": unc, "ok_below_s": ok_limit, "fail_above_s": fail_limit}
    # The lock and the store never compare two hosts' clocks (they read
    # server-stamped times and the boot clock), so where the server stamps
    # times, skew is harmless to them.  GlusterFS (features.ctime) and CephFS
    # stamp with the *client's* clock: there hosts whose clocks differ by more
    # than fs_slack can take over each other's live locks early.  Two hosts
    # each within fs_slack/2 of the server are within fs_slack of each other.
    why = (
        "fix time sync (chrony/ntpd) here. Harmless where the file server stamps times (NFS, sshfs); "
        "on GlusterFS with features.ctime or CephFS hosts stamp with their own clocks and a skew above "
        f"fs_slack ({fs_slack:g} s) lets another host take over a live lock early"
    )
    if proven <= ok_limit:
        return Verdict("clock", "clock skew", "ok", figure, data=data)
    if proven <= fail_limit:
        return Verdict("clock", "clock skew", "warn", figure, why, data)
    why += f"; above lease - fs_slack ({fail_limit:g} s) a renewed lock could be taken at once"
    return Verdict("clock", "clock skew", "fail", figure, why, data)


# ------------------------------------------------------------------ ctime on rename
def start_ctime_probe(ctx: Context) -> None:
    """Make the symlink the ctime check renames later (as early as possible: the other checks are the wait)."""
    ctx.work.dir.symlink("probe", _CTIME_FIRST)


def _server_passed(ctx: Context, stamp_ns: int) -> int | None:
    """A fresh server stamp later than *stamp_ns* (waiting for one, bounded); None if none came."""
    work = ctx.work.dir
    deadline = time.monotonic() + _CTIME_WAIT
    while True:
        work.symlink("probe", _CTIME_NOW)
        try:
            now_ns = work.lstat(_CTIME_NOW).st_mtime_ns
        finally:
            work.unlink_quietly(_CTIME_NOW)
        if now_ns > stamp_ns:
            return now_ns
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def check_ctime(ctx: Context) -> Verdict:
    """Whether a rename re-stamps the renamed symlink's ctime (what the lock's rule b reads)."""
    work, title = ctx.work.dir, "ctime on rename"
    first = work.lstat(_CTIME_FIRST)
    waited = time.monotonic()
    now_ns = _server_passed(ctx, first.st_mtime_ns)
    if now_ns is None:
        return Verdict("ctime", title, "skip", f"the server's clock did not move in {_CTIME_WAIT:g} s")
    work.rename(_CTIME_FIRST, _CTIME_MOVED)
    moved = work.lstat(_CTIME_MOVED)
    later = (moved.st_ctime_ns - moved.st_mtime_ns) / 1e9
    data = {
        "restamped": moved.st_ctime_ns > moved.st_mtime_ns,
        "ctime_minus_mtime_s": later,
        "created_ctime_minus_mtime_s": (first.st_ctime_ns - first.st_mtime_ns) / 1e9,
        "extra_wait_s": round(time.monotonic() - waited, 3),
    }
    if moved.st_ctime_ns <= moved.st_mtime_ns:
        note = (
            "renames do not re-stamp ctime here (sshfs: SFTP v3 has no ctime): a session lock left by a "
            "crashed process on another host is taken over once a contender has watched it for a whole lease, "
            "not as soon as its lease ran out"
        )
        return Verdict("ctime", title, "ok", "a rename leaves ctime = mtime", note, data)
    figure = f"a rename re-stamps ctime ({fmt_s(later)} after the symlink was made)"
    if moved.st_ctime_ns < now_ns:
        advice = (
            "the rename's ctime is earlier than a stamp the server made before it: ctime does not come from the "
            "server's clock here (client-stamped?); stale locks may be taken over early by up to the skew"
        )
        return Verdict("ctime", title, "warn", figure, advice, data)
    return Verdict("ctime", title, "ok", figure + "; the lock reads a holder's age from it", data=data)
