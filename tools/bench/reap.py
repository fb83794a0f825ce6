"""Reaper benchmarks (issue 4): purge expired sessions among live ones, against `find -delete` and Django.

For each directory given (default: a tmpfs and a local-disk directory), and
each size: N expired sessions among L live ones, built afresh for every
contender, then purged by
  * `find DIR -type f -mmin +M -delete` (the floor: no expiry logic, no locks),
  * the fssession reaper (`fssession.reaper.reap`, one process),
  * Django's file backend `SessionStore.clear_expired()` over N + L Django
    sessions (only for the first size: building Django's sessions is slow).
Reported: expired files removed per second (median of rounds), the ratio to
find, syscalls per expired file (strace -c -f, whole run divided by N), and
the reaper's peak memory (ru_maxrss of its own process) at each size.

Usage: scripts/bench reap [--dir DIR ...] [--sizes 100000,1000000] [--live 10000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .common import have_strace
from .reapers import BASELINE, CONTENDERS, Contender, Result


def measure(base: Path, kind: str, expired: int, live: int, rounds: int, strace: bool) -> dict[str, Any]:
    """Purge with contender *kind*, each round on a fresh store; one more round under strace if *strace*."""
    contender = CONTENDERS[kind]
    runs = [_run(contender, base / f"{kind}-{expired}-{r}", expired, live, False) for r in range(rounds)]
    if strace:
        runs.append(_run(contender, base / f"{kind}-{expired}-{rounds}", expired, live, True))
    timed = runs[:rounds]
    seconds = statistics.median(r["seconds"] for r in timed)
    # find removes the beacons too (they are files to it): count sessions only.
    out: dict[str, Any] = {
        "kind": kind,
        "expired": expired,
        "live": live,
        "seconds": round(seconds, 3),
        "files_per_s": round(expired / seconds),
        "removed": [r["removed"] for r in timed],
    }
    if "maxrss_kb" in timed[0]:
        out["peak_mb"] = round(max(r["maxrss_kb"] for r in timed) / 1024, 1)
    if strace:
        out["syscalls_per_file"] = round(runs[-1]["syscalls"] / expired, 1)
    return out


def _run(contender: Contender, root: Path, expired: int, live: int, strace: bool) -> Result:
    """One round: build the store at *root*, flush it to disk, purge it, remove what is left."""
    shutil.rmtree(root, ignore_errors=True)
    contender.build(root, expired, live)
    subprocess.run(["sync"], check=False)
    try:
        return contender.purge(root, strace)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_size(
    base: Path, fs: str, size: int, live: int, rounds: int, strace: bool, first: bool
) -> list[dict[str, Any]]:
    """Every contender (those for the first size only if *first*) at one size, with its ratio to the baseline."""
    kinds = [k for k, c in CONTENDERS.items() if first or not c.first_size_only]
    row = {k: measure(base, k, size, live, rounds, strace) for k in kinds}
    for r in row.values():
        r["fs"] = fs  # the filesystem's type
        r["ratio_to_find"] = round(r["files_per_s"] / row[BASELINE]["files_per_s"], 2)
    return list(row.values())


def line(r: dict[str, Any]) -> str:
    """One result as the report prints it."""
    extra = f", {r['syscalls_per_file']} syscalls/file" if "syscalls_per_file" in r else ""
    mem = f", peak {r['peak_mb']} MB" if "peak_mb" in r else ""
    return (
        f"{r['fs']:>6} {r['expired']:>8} expired + {r['live']} live  {r['kind']:>6}: {r['files_per_s']:>8} files/s "
        f"({r['ratio_to_find']:.2f}x find){extra}{mem}"
    )


def bench_base(base: Path, args: argparse.Namespace, strace: bool) -> list[dict[str, Any]]:
    """Every size in directory *base*: the first with every contender, rounds and strace; the rest once."""
    base.mkdir(parents=True, exist_ok=True)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True, text=True).stdout.strip()
    results = []
    for i, size in enumerate(int(s) for s in args.sizes.split(",")):
        rounds = args.rounds if i == 0 else 1  # the large size is for memory and scaling, once
        for r in bench_size(base, fs, size, args.live, rounds, strace and i == 0, first=i == 0):
            results.append(r)
            if not args.json:
                print(line(r), flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> None:
    """Benchmark every directory asked for; a line per result as it comes, or JSON at the end."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench reap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", action="append", help="where to build the stores (repeatable)")
    parser.add_argument("--sizes", default="100000,1000000", help="expired-session counts (comma-separated)")
    parser.add_argument("--live", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    default_dirs = [Path("/dev/shm/fss-bench-reap"), Path("/var/tmp/fss-bench-reap")]  # tmpfs, local disk
    dirs = [Path(d).absolute() for d in args.dir] if args.dir else default_dirs
    strace = not args.no_strace and have_strace()
    results = [r for base in dirs for r in bench_base(base, args, strace)]
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
