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

Usage: scripts/bench [--dir DIR ...] [--testbed sshfs|gluster|nfs ...] [--quick] [--json OUT]
Each --dir is benchmarked (default: a directory on local disk, plus /dev/shm).
Shared mounts: pass a mount path, e.g. one printed by scripts/testbed/sshfs-up.
--testbed nfs boots the NFS VM (scripts/testbed/nfs-vm-up) and runs this script
inside it on each profile in FSSESSION_NFS_PROFILES (default v3,v42): two kernel
NFS clients of one export.  Under TCG emulation only the ratios and syscall
counts mean anything, not the times.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import filelock

from fssession import MkdirLock

FORK = mp.get_context("fork")

# Syscalls that touch a filesystem (each can be a network round trip on NFS).
FS_SYSCALLS = {
    "open", "openat", "openat2", "creat", "close", "read", "pread64", "readv", "write", "pwrite64", "writev",
    "stat", "lstat", "fstat", "newfstatat", "statx", "fstatfs", "statfs", "access", "faccessat", "faccessat2",
    "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "unlink", "unlinkat", "link", "linkat",
    "symlink", "symlinkat", "readlink", "readlinkat", "getdents64", "fsync", "fdatasync", "utimensat",
    "futimesat", "ftruncate", "truncate", "flock", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat",
}  # fmt: skip


class _NoopBaseLock(filelock.BaseFileLock):
    """The least a BaseFileLock subclass can cost: its own bookkeeping around an fd."""

    _lifetime_supported = False

    def _acquire(self) -> None:
        self._context.lock_file_fd = os.open(os.devnull, os.O_RDONLY)

    def _release(self) -> None:
        fd = self._context.lock_file_fd
        self._context.lock_file_fd = None
        if fd is not None:
            os.close(fd)


class _BareMkdir:
    """The baseline: mkdir to take, rmdir to give back, 1 ms sleeps while busy."""

    def __init__(self, path: str) -> None:
        self.path = path

    def acquire(self) -> None:
        while True:
            try:
                os.mkdir(self.path)
                return
            except FileExistsError:
                time.sleep(0.001)

    def release(self) -> None:
        os.rmdir(self.path)


def make_lock(kind: str, path: str) -> Any:
    if kind == "MkdirLock":
        return MkdirLock(path + ".mk", lease=30)
    if kind == "bare mkdir+rmdir":
        return _BareMkdir(path + ".bare")
    if kind == "SoftFileLock":
        return filelock.SoftFileLock(path + ".soft")
    if kind == "FileLock":
        return filelock.FileLock(path + ".flock")
    if kind == "BaseFileLock (no-op subclass)":
        return _NoopBaseLock(path + ".noop")
    raise ValueError(kind)


UNCONTENDED = ["bare mkdir+rmdir", "MkdirLock", "SoftFileLock", "FileLock", "BaseFileLock (no-op subclass)"]


def time_cycles(lock: Any, n: int) -> float:
    """Seconds per acquire+release, over n cycles."""
    lock.acquire()
    lock.release()
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n


def uncontended(directory: Path, rounds: int, n: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in UNCONTENDED}
    # About 0.3 s per sample whatever the filesystem (a network mount is 100x slower than tmpfs).
    per_kind = {k: max(30, min(n, int(0.3 / time_cycles(make_lock(k, str(directory / "u")), 10)))) for k in UNCONTENDED}
    for _ in range(rounds):  # interleaved, so noise hits every kind alike
        for kind in UNCONTENDED:
            samples[kind].append(time_cycles(make_lock(kind, str(directory / "u")), per_kind[kind]))
    return {k: statistics.median(v) for k, v in samples.items()}


def count_syscalls(directory: Path, kind: str, n: int) -> dict[str, float] | None:
    """Syscalls per acquire+release: strace a run of n cycles and one of 0, subtract."""
    if shutil.which("strace") is None:
        return None
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]); from scripts.bench import make_lock; "
        "lock = make_lock(sys.argv[1], sys.argv[2]); n = int(sys.argv[4]); lock.acquire(); lock.release()\n"
        "for _ in range(n): lock.acquire(); lock.release()"
    )
    counts = []
    for cycles in (0, n):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            subprocess.run(
                ["strace", "-f", "-c", "-o", out.name, sys.executable, "-c", code, kind, str(directory / "s"),
                 str(Path(__file__).resolve().parent.parent), str(cycles)],
                check=True, capture_output=True,
            )  # fmt: skip
            counts.append(_parse_strace(out.read()))
    per: dict[str, float] = {}
    for name in set(counts[0]) | set(counts[1]):
        diff = (counts[1].get(name, 0) - counts[0].get(name, 0)) / n
        if diff > 0.05:
            per[name] = round(diff, 2)
    return per


def _parse_strace(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                counts[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return counts


def _contender(kind: str, path: str, seconds: float, start_at: float, out: Any) -> None:  # pragma: no cover
    lock = make_lock(kind, path)
    while time.monotonic() < start_at:
        time.sleep(0.0005)
    end = start_at + seconds
    holds, worst, error = 0, 0.0, ""
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            if isinstance(lock, _BareMkdir):
                lock.acquire()
            else:
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


CONTENDED = ["bare mkdir+rmdir", "MkdirLock", "SoftFileLock"]


def contended(dirs: list[Path], procs: int, seconds: float, kind: str) -> tuple[float, float]:
    """(holds per second, worst wait in seconds) with *procs* processes on one lock.

    With two directories (two mounts of one export), the processes alternate
    between them: half of them are on each "host".
    """
    out = FORK.Queue()
    start_at = time.monotonic() + 0.3
    workers = [
        FORK.Process(target=_contender, args=(kind, str(dirs[i % len(dirs)] / f"c{procs}"), seconds, start_at, out))
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    errors = sorted({e for _, _, e in results if e})
    if errors:
        raise LockFailed("; ".join(errors))
    return sum(h for h, _, _ in results) / seconds, max(w for _, w, _ in results)


class LockFailed(Exception):
    """A lock implementation raised instead of locking (reported, not fatal to the run)."""


def bench_dir(directory: Path, quick: bool, other_mount: Path | None = None, label: str = "") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fssession-bench-", dir=directory))
    dirs = [work]
    if other_mount is not None:  # the same directory seen through the second mount
        twin = other_mount / work.relative_to(directory)
        deadline = time.monotonic() + 30
        while not twin.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        dirs.append(twin)
    try:
        result: dict[str, Any] = {"dir": label or str(directory)}
        n = 300 if quick else 2000
        times = uncontended(work, 3 if quick else 7, n)
        base = times["bare mkdir+rmdir"]
        result["uncontended_us"] = {k: round(v * 1e6, 1) for k, v in times.items()}
        result["uncontended_ratio"] = {k: round(v / base, 2) for k, v in times.items()}
        result["syscalls"] = {}
        for kind in ("bare mkdir+rmdir", "MkdirLock", "SoftFileLock", "BaseFileLock (no-op subclass)"):
            per = count_syscalls(work, kind, 100 if quick else 300)
            if per is not None:
                fs = {k: v for k, v in per.items() if k in FS_SYSCALLS}
                other = {k: v for k, v in per.items() if k not in fs}
                result["syscalls"][kind] = {
                    "all": round(sum(per.values()), 1),
                    "fs": round(sum(fs.values()), 1),
                    "fs_detail": fs,
                    "other": other,
                }
        seconds = 1.0 if quick else 3.0
        result["contended"] = {}
        for procs in (2, 4, 8):
            row = {}
            for kind in CONTENDED:
                print(f"  {procs} processes, {kind} ...", file=sys.stderr)
                try:
                    runs = [contended(dirs, procs, seconds, kind) for _ in range(1 if quick else 3)]
                except LockFailed as exc:
                    row[kind] = {"error": str(exc)}
                    continue
                row[kind] = {
                    "holds_per_s": round(statistics.median(r[0] for r in runs)),
                    "worst_wait_ms": round(statistics.median(r[1] for r in runs) * 1000, 1),
                }
            result["contended"][str(procs)] = row
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    lines = [
        f"### {r['dir']}",
        "",
        "| lock | µs per acquire+release | x bare mkdir+rmdir | fs syscalls | all syscalls |",
        "|---|---|---|---|---|",
    ]
    for kind, us in r["uncontended_us"].items():
        sc = r["syscalls"].get(kind, {})
        lines.append(f"| {kind} | {us} | {r['uncontended_ratio'][kind]} | {sc.get('fs', '-')} | {sc.get('all', '-')} |")
    mk = r["syscalls"].get("MkdirLock")
    if mk:
        lines += ["", f"MkdirLock filesystem syscalls per cycle: {mk['fs_detail']}"]
    lines += [
        "",
        "| processes | lock | holds/s | x SoftFileLock | worst wait ms | x bare loop's worst |",
        "|---|---|---|---|---|---|",
    ]
    for procs, row in r["contended"].items():
        soft = row["SoftFileLock"].get("holds_per_s")
        bare_worst = row["bare mkdir+rmdir"].get("worst_wait_ms") or 1
        for kind, v in row.items():
            if "error" in v:
                lines.append(f"| {procs} | {kind} | fails: {v['error']} | - | - | - |")
                continue
            vs_soft = f"{v['holds_per_s'] / soft:.1f}" if soft else "-"
            lines.append(
                f"| {procs} | {kind} | {v['holds_per_s']:,} | {vs_soft} | {v['worst_wait_ms']} | "
                f"{v['worst_wait_ms'] / bare_worst:.2f} |"
            )
    return "\n".join(lines)


def bench_nfs_guest(quick: bool) -> dict[str, Any]:
    """Inside the NFS VM (nfs-vm-run): the profile's two NFS clients."""
    profile = os.environ["NFSVM_PROFILE"]
    one, two = Path(os.environ["TESTBED_MOUNT_1"]), Path(os.environ["TESTBED_MOUNT_2"])
    return bench_dir(one, quick, two, f"kernel NFS {profile}, two clients of one export (in a QEMU guest)")


def bench_nfs(quick: bool) -> list[dict[str, Any]]:
    """Boot the NFS VM and run this benchmark inside it on each profile."""
    from tests.nfsbed import start_nfs_vm, stop_nfs_vm

    profiles = [p for p in os.environ.get("FSSESSION_NFS_PROFILES", "v3,v42").split(",") if p]
    print("bringing up the NFS VM ...", file=sys.stderr)
    vm = start_nfs_vm()
    results = []
    try:
        for profile in profiles:
            out = vm.base / f"bench-{profile}.json"
            argv = [sys.executable, "scripts/bench.py", "--in-nfs-guest", "--json", str(out)]
            proc = vm.run(profile, [*argv, *(["--quick"] if quick else [])], timeout=7200)
            if proc.returncode != 0:
                print(f"NFS {profile} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}", file=sys.stderr)
                continue
            print(f"(in the {vm.accel.upper()} guest)\n{proc.stdout}", flush=True)
            results += json.loads(out.read_text())
    finally:
        stop_nfs_vm(vm)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    if args.in_nfs_guest:
        results.append(bench_nfs_guest(args.quick))
        print(report(results[-1]) + "\n", flush=True)
        dirs: list[Path] = []
    else:
        dirs = args.dir or ([] if args.testbed else [Path(tempfile.gettempdir()), Path("/dev/shm")])
    for d in dirs:
        print(f"benchmarking {d} ...", file=sys.stderr)
        results.append(bench_dir(d, args.quick))
        print(report(results[-1]) + "\n", flush=True)
    for kind in args.testbed or []:
        from tests.fsbed import start_testbed, stop_testbed

        if kind == "nfs":
            results += bench_nfs(args.quick)
            continue
        print(f"bringing up the {kind} testbed ...", file=sys.stderr)
        bed = start_testbed(kind)
        try:
            label = f"{kind} ({bed.profile or 'default'} profile), two mounts of one export"
            results.append(bench_dir(bed.mounts[0], args.quick, bed.mounts[1], label))
            print(report(results[-1]) + "\n", flush=True)
        finally:
            stop_testbed(kind, bed.base)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
