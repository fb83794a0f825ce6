"""A lock client run as a separate process (optionally as a simulated host) by the tests.

Every hold is recorded as a line ``<start_ns> <end_ns> <token>`` read from the
kernel's CLOCK_MONOTONIC through a raw syscall: libfaketime (used to skew a
simulated host's clock) does not interpose raw syscalls, so intervals from
all processes on this machine are comparable whatever their skew.

Commands (one JSON line of results on stdout at the end):
  hammer LOCK OUT N HOLD   acquire/release N times, holding HOLD seconds each
  stress LOCK OUT COUNT     take the lock COUNT times with 20 s waits; count timeouts and LockLost
  hold LOCK                acquire, print "HELD <token>", then wait for a line on stdin:
                             "release" -> release and print the outcome
                             "refresh" -> refresh and print the outcome
  keep LOCK                acquire, print "HELD <token>", renew every lease/4 until "release" on stdin
  try LOCK TIMEOUT         one acquire with TIMEOUT, print the outcome and how long it took
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fssession import LockLost, LockTimeout, MkdirLock


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CLOCK_GETTIME = {"x86_64": 228, "aarch64": 113}.get(os.uname().machine, 228)
_CLOCK_MONOTONIC = 1


def raw_monotonic_ns() -> int:
    """CLOCK_MONOTONIC straight from the kernel, immune to LD_PRELOAD clock fakes."""
    ts = _Timespec()
    if _libc.syscall(_SYS_CLOCK_GETTIME, _CLOCK_MONOTONIC, ctypes.byref(ts)) != 0:
        raise OSError(ctypes.get_errno(), "clock_gettime")
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


def _lock(path: str) -> MkdirLock:
    lease = float(os.environ.get("LOCK_LEASE", "5"))
    slack = float(os.environ.get("LOCK_FS_SLACK", "1.0"))
    return MkdirLock(path, lease=lease, fs_slack=slack)


def hammer(path: str, out: str, n: int, hold: float) -> None:
    lock = _lock(path)
    lost = 0
    with open(out, "a", buffering=1) as f:
        for _ in range(n):
            lock.acquire()
            start = raw_monotonic_ns()
            if hold:
                time.sleep(hold)
            end = raw_monotonic_ns()
            token = lock.token
            try:
                lock.release()
            except LockLost:
                lost += 1
            f.write(f"{start} {end} {token}\n")
    print(json.dumps({"done": n, "lost": lost}), flush=True)


def stress(path: str, out: str, count: float) -> None:
    """Take the lock *count* times with waits shorter than a lease, as web requests would: count timeouts and losses.

    A lock left held by a marker nobody knows is theirs blocks every request
    for a whole lease (30 s): a wait of 20 s times out then, while ordinary
    contention, even on a loaded machine, does not come near it.
    """
    lock = _lock(path)
    holds = timeouts = lost = 0
    with open(out, "a", buffering=1) as f:
        while holds + timeouts < count:
            try:
                lock.acquire(timeout=20)
            except LockTimeout:
                timeouts += 1
                continue
            start = raw_monotonic_ns()
            token = lock.token
            end_ns = raw_monotonic_ns()
            try:
                lock.release()
            except LockLost:
                lost += 1
            holds += 1
            f.write(f"{start} {end_ns} {token}\n")
    print(json.dumps({"holds": holds, "timeouts": timeouts, "lost": lost}), flush=True)


def hold(path: str) -> None:
    lock = _lock(path)
    lock.acquire()
    print(f"HELD {lock.token} {raw_monotonic_ns()}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "release":
                lock.release()
            elif cmd == "refresh":
                lock.refresh()
            else:
                continue
            print(f"OK {cmd} {raw_monotonic_ns()}", flush=True)
        except LockLost as exc:
            print(f"LOST {cmd} {raw_monotonic_ns()} {exc}", flush=True)
        if cmd == "release" or not lock.is_locked:
            break


def keep(path: str) -> None:
    """A live holder: renews every lease/4 until told to release (or killed).

    Waits with select() on stdin, not a thread: under libfaketime (a skewed
    simulated host) Python's timed thread waits can block for ever.
    """
    import select

    lock = _lock(path)
    lock.acquire()
    print(f"HELD {lock.token} {raw_monotonic_ns()}", flush=True)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], lock.lease / 4)
        if not ready:
            lock.refresh()
            continue
        if sys.stdin.readline().strip() in ("release", ""):
            lock.release()
            print(f"OK release {raw_monotonic_ns()}", flush=True)
            return


def try_once(path: str, timeout: float) -> None:
    lock = _lock(path)
    start = raw_monotonic_ns()
    try:
        lock.acquire(timeout=timeout)
    except LockTimeout as exc:
        print(json.dumps({"acquired": False, "at": raw_monotonic_ns(), "start": start, "msg": str(exc)}), flush=True)
        return
    at = raw_monotonic_ns()
    lock.release()
    print(json.dumps({"acquired": True, "at": at, "start": start}), flush=True)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "hammer":
        hammer(argv[1], argv[2], int(argv[3]), float(argv[4]))
    elif cmd == "stress":
        stress(argv[1], argv[2], float(argv[3]))
    elif cmd == "hold":
        hold(argv[1])
    elif cmd == "keep":
        keep(argv[1])
    elif cmd == "try":
        try_once(argv[1], float(argv[2]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
