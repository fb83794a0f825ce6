"""What the benchmarks share: syscall counts with strace, rates, scratch directories, worker processes, tables."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools import REPO

FORK = mp.get_context("fork")

# Syscalls that touch a filesystem (each can be a network round trip on NFS).
FS_SYSCALLS = {
    "open", "openat", "openat2", "creat", "close", "read", "pread64", "readv", "write", "pwrite64", "writev",
    "stat", "lstat", "fstat", "newfstatat", "statx", "fstatfs", "statfs", "access", "faccessat", "faccessat2",
    "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "unlink", "unlinkat", "link", "linkat",
    "symlink", "symlinkat", "readlink", "readlinkat", "getdents64", "fsync", "fdatasync", "utimensat",
    "futimesat", "ftruncate", "truncate", "flock", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat",
}  # fmt: skip


# ------------------------------------------------------------------ syscalls


def have_strace() -> bool:
    """Whether syscalls can be counted here."""
    return shutil.which("strace") is not None


def parse_strace(text: str) -> dict[str, int]:
    """Calls per syscall from the table ``strace -c`` writes."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                counts[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return counts


def traced(argv: list[str]) -> tuple[dict[str, int], str]:
    """Run *argv* under ``strace -c -f`` from the repository's root: (calls per syscall, its standard output)."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        proc = subprocess.run(
            ["strace", "-f", "-c", "-o", out.name, *argv], check=True, capture_output=True, text=True, cwd=REPO
        )
        return parse_strace(out.read()), proc.stdout


def fs_calls(counts: dict[str, int]) -> int:
    """How many of *counts* touch a filesystem."""
    return sum(v for k, v in counts.items() if k in FS_SYSCALLS)


def per_operation(argv_for: Callable[[int], list[str]], n: int) -> dict[str, float]:
    """Syscalls per operation: a traced run of *n* operations minus one of 0, over *n* (start-up cancels out).

    *argv_for(count)* is the command that does *count* operations; calls
    that come to less than 0.05 per operation are left out.
    """
    counts = [traced(argv_for(cycles))[0] for cycles in (0, n)]
    per = {k: (counts[1].get(k, 0) - counts[0].get(k, 0)) / n for k in set(counts[0]) | set(counts[1])}
    return {k: round(v, 2) for k, v in per.items() if v > 0.05}


# -------------------------------------------------------------------- timing


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of *fn* per second, calling it for about *seconds*."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


@contextmanager
def scratch(directory: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory inside *directory* (the filesystem under test), removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ processes


def in_parallel(target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float) -> list[Any]:
    """Run ``target(*a, start_at, out)`` in a forked process per *a*, all released at *start_at*; what each put.

    Each worker waits for *start_at* (:func:`wait_for_start`), works, and
    puts one result on the queue *out*; *timeout* guards each ``get``.
    """
    out = FORK.Queue()
    start_at = time.monotonic() + 0.3  # every worker forked and waiting before the first one starts
    workers = [FORK.Process(target=target, args=(*a, start_at, out)) for a in args]
    for w in workers:
        w.start()
    results = [out.get(timeout=timeout) for _ in workers]
    for w in workers:
        w.join()
    return results


def wait_for_start(start_at: float) -> None:
    """In a worker of :func:`in_parallel`: wait for the common start."""
    while time.monotonic() < start_at:
        time.sleep(0.0005)


# ------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values*: the smallest value with at least a share *q* at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


# ------------------------------------------------------------ machine, results


def machine() -> dict[str, Any]:
    """What the figures were measured on: date, host, CPU, cores, load, kernel, Python."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": os.getloadavg(),
        "started": time.time(),
        "commit": _commit(),
    }


def _commit() -> str:
    """The checkout's commit (with "+changes" when files differ from it): which code made the figures."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    if head.returncode != 0:
        return "?"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO
    )
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def fs_type(directory: Path) -> str:
    """The type of the filesystem *directory* is on: the mount's (ext4, tmpfs, fuse.sshfs), else ``stat -f``'s."""
    found = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(directory)], capture_output=True, text=True, check=False
    )
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.split()[-1]  # mounts stacked on one place: the last is the one in use
    out = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def save_results(path: Path, name: str, argv: Sequence[str], info: dict[str, Any], results: Any) -> None:
    """Write one benchmark's results as JSON: the command, the machine (with the load at the end), the figures."""
    info = {**info, "load_at_end": os.getloadavg(), "elapsed_s": round(time.time() - info["started"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "command": " ".join(["scripts/bench", *argv]), "machine": info, "results": results}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results written to {path}", file=sys.stderr)


def default_json(name: str, quick: bool) -> Path:
    """Where a run's results go unless --json says: bench-results/NAME[-quick].json (not committed)."""
    return REPO / "bench-results" / f"{name}{'-quick' if quick else ''}.json"


# --------------------------------------------------------------------- tables


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
