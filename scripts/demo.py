"""The fssession demo: several processes hammering one MkdirLock, then crashed holders recovered.

Run it through ``scripts/demo`` (which sets up the virtualenv).  By default it
works in a fresh temporary directory on local disk; ``--path DIR`` runs it on
any directory, for example a mount of a shared filesystem.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fssession import LockTimeout, MkdirLock
from fssession import lock as lockmod
from fssession._identity import ProcessIdentity

FORK = mp.get_context("fork")


def _increment(counter: Path) -> None:
    """Read-modify-write a counter file: correct only under mutual exclusion."""
    value = int(counter.read_text() or "0")
    tmp = counter.with_name(f"{counter.name}.{os.getpid()}.tmp")
    tmp.write_text(str(value + 1))
    tmp.replace(counter)


def _hammer(lockpath: str, counter: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    lock = MkdirLock(lockpath, lease=10)
    waits, intervals = [], []
    for _ in range(n):
        t0 = time.monotonic()
        with lock:
            t1 = time.monotonic()
            _increment(Path(counter))
            intervals.append((t1, time.monotonic()))
        waits.append(t1 - t0)
    out.put((os.getpid(), waits, intervals))


def _hold_forever(lockpath: str, lease: float, ready: mp.Event) -> None:  # type: ignore[type-arg]
    lock = MkdirLock(lockpath, lease=lease)
    lock.acquire()
    ready.set()
    time.sleep(3600)


def hammer(root: Path, procs: int, n: int) -> bool:
    lockpath, counter = root / "counter.lock", root / "counter"
    counter.write_text("0")
    print(f"1. {procs} processes x {n} locked increments of one counter file ({lockpath})")
    out: mp.Queue = FORK.Queue()  # type: ignore[type-arg]
    start = time.monotonic()
    workers = [FORK.Process(target=_hammer, args=(str(lockpath), str(counter), n, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    intervals = sorted(iv for _, _, ivs in results for iv in ivs)
    overlaps = sum(1 for a, b in itertools.pairwise(intervals) if b[0] < a[1])
    waits = [w for _, ws, _ in results for w in ws]
    final = int(counter.read_text())
    for pid, ws, _ in results:
        print(f"   pid {pid:>7}: {len(ws)} holds, median wait {statistics.median(ws) * 1000:6.2f} ms")
    print(
        f"   counter = {final} (expected {procs * n}); overlapping holds: {overlaps}; "
        f"{procs * n / elapsed:,.0f} holds/s; worst wait {max(waits) * 1000:.1f} ms"
    )
    return final == procs * n and overlaps == 0


def crash_same_host(root: Path) -> bool:
    lockpath = root / "crash.lock"
    print("2. a holder on this host is killed with SIGKILL while holding (lease 30 s)")
    ready = FORK.Event()
    holder = FORK.Process(target=_hold_forever, args=(str(lockpath), 30.0, ready))
    holder.start()
    ready.wait(10)
    owner = lockmod.read_owner(lockpath)
    print(f"   held by {owner.describe() if owner else '?'}; kill -9 {holder.pid}")
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()
    t0 = time.monotonic()
    lock = MkdirLock(lockpath, lease=30)
    lock.acquire(timeout=5)
    took = time.monotonic() - t0
    print(f"   recovered after {took * 1000:.1f} ms: the PID is gone on this host, so no need to wait for the lease")
    lock.release()
    return took < 5


def crash_other_host(root: Path, lease: float) -> bool:
    lockpath = root / "remote.lock"
    print(f"3. a holder on another host dies (lease {lease:g} s); its PID cannot be probed from here")
    stage = root / "remote.lock.stage-demo"
    stage.mkdir()
    ghost = ProcessIdentity("0123456789abcdef", "web-7", 4242, 99)
    (stage / lockmod._marker_name("d" * 32, 0, lease, ghost)).symlink_to("fssession-lock-owner")
    stage.rename(lockpath)
    died = time.monotonic()
    waiter = MkdirLock(lockpath, lease=lease)
    attempt = 0
    while True:
        attempt += 1
        try:
            waiter.acquire(timeout=1.0)  # a web request waits at most ~1 s, far less than the lease
            break
        except LockTimeout as exc:
            print(f"   request {attempt}: timed out after 1 s: {str(exc).split(': ', 1)[1]}")
    took = time.monotonic() - died
    print(f"   request {attempt}: got the lock {took:.2f} s after the holder died (lease + {took - lease:.2f} s),")
    print("   judged on the file server's clock, with no clock of another host involved")
    waiter.release()
    return took < lease + 2.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, help="directory to work in (default: a fresh temporary directory)")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--holds", type=int, default=300)
    parser.add_argument("--lease", type=float, default=3.0, help="lease of the remote holder in part 3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fssession-demo-", dir=args.path) as tmp:
        root = Path(tmp)
        print(f"fssession lock demo in {root}\n")
        ok = hammer(root, args.procs, args.holds)
        print()
        ok &= crash_same_host(root)
        print()
        ok &= crash_other_host(root, args.lease)
        print()
        leftovers = sorted(p.name for p in root.iterdir() if p.name != "counter")
        print(f"left in the directory: {leftovers or 'nothing but the counter'}")
        ok &= not leftovers
    print("\nall good" if ok else "\nSOMETHING WENT WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
