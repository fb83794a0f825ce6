"""fssession benchmarks: every figure is a ratio against a baseline measured in the same run.

Lock section (issue 2):
  * uncontended acquire+release of MkdirLock against a bare os.mkdir+os.rmdir,
    filelock.SoftFileLock and filelock.FileLock, and a do-nothing
    filelock.BaseFileLock subclass (what building on it would cost at least);
  * filesystem syscalls per acquire+release, counted with ``strace -c -f``;
  * contended throughput and worst wait with 2, 4 and 8 processes, against
    SoftFileLock and a bare mkdir-retry loop with 1 ms sleeps.

The machines are shared and noisy: each timing is the median of several
rounds, and only ratios taken in the same run are compared.

Usage: scripts/bench [--dir DIR ...] [--quick] [--json OUT]
Each --dir is benchmarked (default: a directory on local disk, plus /dev/shm).
Shared mounts: pass a mount path, e.g. one printed by scripts/testbed/sshfs-up.
--testbed nfs boots the NFS VM (scripts/testbed/nfs-vm-up) and runs this
benchmark inside it on each profile in FSSESSION_NFS_PROFILES (default
v3,v42): two kernel NFS clients of one export.  Under TCG emulation only the
ratios and the syscall counts mean anything, not the times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import filelock

from .common import FS_SYSCALLS, have_strace, in_parallel, per_operation, scratch, table, wait_for_start
from .cycles import argv as cycles_argv
from .locks import BASELINE, CONTENDERS, SOFT, Lock, make_lock


class LockFailed(Exception):
    """A lock implementation raised instead of locking (reported, not fatal to the run)."""


# ---------------------------------------------------------------- uncontended


def time_cycles(lock: Lock, n: int) -> float:
    """Seconds per acquire+release, over n cycles."""
    lock.acquire()
    lock.release()
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n


def uncontended(directory: Path, rounds: int, n: int) -> dict[str, float]:
    """Median seconds per acquire+release of every contender, alone."""
    path = str(directory / "u")
    samples: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    # About 0.3 s per sample whatever the filesystem (a network mount is 100x slower than tmpfs).
    per_kind = {k: max(30, min(n, int(0.3 / time_cycles(make_lock(k, path), 10)))) for k in CONTENDERS}
    for _ in range(rounds):  # interleaved, so noise hits every kind alike
        for kind in CONTENDERS:
            samples[kind].append(time_cycles(make_lock(kind, path), per_kind[kind]))
    return {k: statistics.median(v) for k, v in samples.items()}


def count_syscalls(directory: Path, kind: str, n: int) -> dict[str, float] | None:
    """Syscalls per acquire+release: strace a run of n cycles and one of 0, subtract (None without strace)."""
    if not have_strace():
        return None
    return per_operation(lambda cycles: cycles_argv("lock", kind, directory / "s", cycles), n)


def syscall_table(work: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """Per contender: all syscalls, filesystem syscalls (and which), the others, per acquire+release."""
    found: dict[str, dict[str, Any]] = {}
    for kind in (k for k, c in CONTENDERS.items() if c.syscalls):
        per = count_syscalls(work, kind, 100 if quick else 300)
        if per is None:
            continue
        fs = {k: v for k, v in per.items() if k in FS_SYSCALLS}
        other = {k: v for k, v in per.items() if k not in fs}
        found[kind] = {
            "all": round(sum(per.values()), 1),
            "fs": round(sum(fs.values()), 1),
            "fs_detail": fs,
            "other": other,
        }
    return found


# ------------------------------------------------------------------ contended


def _contender(kind: str, path: str, seconds: float, start_at: float, out: Any) -> None:  # pragma: no cover
    """A worker: take and give back the lock for *seconds*; put (holds, worst wait, error)."""
    lock = make_lock(kind, path)
    wait_for_start(start_at)
    end = start_at + seconds
    holds, worst, error = 0, 0.0, ""
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=20)  # a wait this long is a failure worth reporting, not a hang
        except filelock.Timeout as exc:
            error = f"no lock in 20 s: {exc}"
            break
        except OSError as exc:  # e.g. SoftFileLock on sshfs: the O_EXCL loser gets EPERM
            error = f"{type(exc).__name__}: {exc.strerror}"
            break
        wait = time.monotonic() - t0
        lock.release()
        holds += 1
        worst = max(worst, wait)
    out.put((holds, worst, error))


def contended(dirs: list[Path], procs: int, seconds: float, kind: str) -> tuple[float, float]:
    """(holds per second, worst wait in seconds) with *procs* processes on one lock.

    With two directories (two mounts of one export), the processes alternate
    between them: half of them are on each "host".
    """
    args = [(kind, str(dirs[i % len(dirs)] / f"c{procs}"), seconds) for i in range(procs)]
    results = in_parallel(_contender, args, timeout=seconds + 120)
    errors = sorted({e for _, _, e in results if e})
    if errors:
        raise LockFailed("; ".join(errors))
    return sum(h for h, _, _ in results) / seconds, max(w for _, w, _ in results)


def contended_table(dirs: list[Path], quick: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Per process count and contender: median holds per second and worst wait, or the error."""
    kinds = [k for k, c in CONTENDERS.items() if c.contended]
    return {str(procs): {kind: _contended_cell(dirs, procs, kind, quick) for kind in kinds} for procs in (2, 4, 8)}


def _contended_cell(dirs: list[Path], procs: int, kind: str, quick: bool) -> dict[str, Any]:
    """One contender with *procs* processes: median holds per second and worst wait, or the error."""
    print(f"  {procs} processes, {kind} ...", file=sys.stderr)
    seconds = 1.0 if quick else 3.0
    try:
        runs = [contended(dirs, procs, seconds, kind) for _ in range(1 if quick else 3)]
    except LockFailed as exc:
        return {"error": str(exc)}
    return {
        "holds_per_s": round(statistics.median(r[0] for r in runs)),
        "worst_wait_ms": round(statistics.median(r[1] for r in runs) * 1000, 1),
    }


# ---------------------------------------------------------------- one directory


def _twin(work: Path, directory: Path, other_mount: Path) -> Path:
    """*work* as seen through a second mount of the same export (once that mount's cache shows it)."""
    twin = other_mount / work.relative_to(directory)
    deadline = time.monotonic() + 30
    while not twin.is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    return twin


def bench_dir(directory: Path, quick: bool, other_mount: Path | None = None, label: str = "") -> dict[str, Any]:
    """Every lock figure for one directory (and, with *other_mount*, contention across two mounts of it)."""
    with scratch(directory, "fssession-bench-") as work:
        dirs = [work] if other_mount is None else [work, _twin(work, directory, other_mount)]
        times = uncontended(work, 3 if quick else 7, 300 if quick else 2000)
        base = times[BASELINE]
        return {
            "dir": label or str(directory),
            "uncontended_us": {k: round(v * 1e6, 1) for k, v in times.items()},
            "uncontended_ratio": {k: round(v / base, 2) for k, v in times.items()},
            "syscalls": syscall_table(work, quick),
            "contended": contended_table(dirs, quick),
        }


def report(r: dict[str, Any]) -> str:
    """One directory's results as Markdown: the uncontended table, then the contended one."""
    rows = []
    for kind, us in r["uncontended_us"].items():
        sc = r["syscalls"].get(kind, {})
        rows.append([kind, us, r["uncontended_ratio"][kind], sc.get("fs", "-"), sc.get("all", "-")])
    lines = [f"### {r['dir']}", ""]
    lines += table(["lock", "µs per acquire+release", "x bare mkdir+rmdir", "fs syscalls", "all syscalls"], rows)
    mk = r["syscalls"].get("MkdirLock")
    if mk:
        lines += ["", f"MkdirLock filesystem syscalls per cycle: {mk['fs_detail']}"]
    headers = ["processes", "lock", "holds/s", "x SoftFileLock", "worst wait ms", "x bare loop's worst"]
    lines += ["", *table(headers, _contended_rows(r["contended"]))]
    return "\n".join(lines)


def _contended_rows(contention: dict[str, dict[str, dict[str, Any]]]) -> list[list[object]]:
    """The contended table's rows: throughput against SoftFileLock's, worst wait against the bare loop's."""
    rows: list[list[object]] = []
    for procs, row in contention.items():
        soft = row[SOFT].get("holds_per_s")
        bare_worst = row[BASELINE].get("worst_wait_ms") or 1
        for kind, v in row.items():
            if "error" in v:
                rows.append([procs, kind, f"fails: {v['error']}", "-", "-", "-"])
                continue
            vs_soft = f"{v['holds_per_s'] / soft:.1f}" if soft else "-"
            worst = v["worst_wait_ms"]
            rows.append([procs, kind, f"{v['holds_per_s']:,}", vs_soft, worst, f"{worst / bare_worst:.2f}"])
    return rows


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The lock benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, action="append", help="directory to benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--testbed",
        action="append",
        choices=["sshfs", "gluster", "nfs"],
        help="bring up this shared-filesystem testbed (two mounts of one export; needs root) and benchmark it",
    )
    parser.add_argument("--in-nfs-guest", action="store_true", help=argparse.SUPPRESS)  # set by --testbed nfs
    return parser.parse_args(argv)


def bench_nfs_guest(quick: bool) -> dict[str, Any]:
    """Inside the NFS VM (nfs-vm-run): the profile's two NFS clients."""
    profile = os.environ["NFSVM_PROFILE"]
    one, two = Path(os.environ["TESTBED_MOUNT_1"]), Path(os.environ["TESTBED_MOUNT_2"])
    return bench_dir(one, quick, two, f"kernel NFS {profile}, two clients of one export (in a QEMU guest)")


def bench_nfs(quick: bool) -> list[dict[str, Any]]:
    """Boot the NFS VM, run this benchmark inside it on each profile, stop the VM."""
    from tests.nfsbed import start_nfs_vm, stop_nfs_vm

    profiles = [p for p in os.environ.get("FSSESSION_NFS_PROFILES", "v3,v42").split(",") if p]
    print("bringing up the NFS VM ...", file=sys.stderr)
    vm = start_nfs_vm()
    results: list[dict[str, Any]] = []
    try:
        for profile in profiles:
            out = vm.base / f"bench-{profile}.json"
            argv = [sys.executable, "-m", "tools.bench.lock", "--in-nfs-guest", "--json", str(out)]
            proc = vm.run(profile, [*argv, *(["--quick"] if quick else [])], timeout=7200)
            if proc.returncode != 0:
                print(f"NFS {profile} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}", file=sys.stderr)
                continue
            print(f"(in the {vm.accel.upper()} guest)\n{proc.stdout}", flush=True)
            results += json.loads(out.read_text())
    finally:
        stop_nfs_vm(vm)
    return results


def bench_testbed(kind: str, quick: bool) -> dict[str, Any]:
    """Bring up the *kind* testbed (tests/fsbed.py), benchmark its two mounts, take it down."""
    from tests.fsbed import start_testbed, stop_testbed

    print(f"bringing up the {kind} testbed ...", file=sys.stderr)
    bed = start_testbed(kind)
    try:
        label = f"{kind} ({bed.profile or 'default'} profile), two mounts of one export"
        return bench_dir(bed.mounts[0], quick, bed.mounts[1], label)
    finally:
        stop_testbed(kind, bed.base)


def main(argv: list[str] | None = None) -> int:
    """Benchmark every directory and testbed asked for; print a report for each as it is done."""
    args = parse_args(argv)
    dirs = args.dir or ([] if args.testbed else [Path(tempfile.gettempdir()), Path("/dev/shm")])
    results = []
    if args.in_nfs_guest:
        dirs = []
        results.append(bench_nfs_guest(args.quick))
        print(report(results[-1]) + "\n", flush=True)
    for d in dirs:
        print(f"benchmarking {d} ...", file=sys.stderr)
        results.append(bench_dir(d, args.quick))
        print(report(results[-1]) + "\n", flush=True)
    for kind in args.testbed or []:
        if kind == "nfs":
            results += bench_nfs(args.quick)  # the guest printed its reports
            continue
        results.append(bench_testbed(kind, args.quick))
        print(report(results[-1]) + "\n", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
