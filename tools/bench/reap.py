"""Reaper benchmarks (issue 4): purge expired sessions among live ones, against `find -delete` and Django.

For each directory given (default: a tmpfs and a local-disk directory), and
each size: N expired sessions among L live ones, built afresh for every
contender, then purged by
  * `find DIR -mmin +M ( -type f -o -type l ) -delete` (the floor: no expiry
    logic, no locks; it removes the expired sessions' lock markers too,
    which are symlinks as old as their files),
  * the fssession reaper (`fssession.reaper.reap`), one job and two,
  * Django's file backend `SessionStore.clear_expired()` over N + L Django
    sessions.
The sizes after the first (default 1M) run find and the one-job reaper only,
once: they are for memory and scaling.  Reported: expired sessions removed
per second (median of rounds), the ratio to find, syscalls per expired
session (strace -c -f, whole run divided by N), and the peak memory of the
purging process (VmHWM) at each size.

Usage: scripts/bench reap [--dir DIR ...] [--sizes 100000,1000000] [--live 10000] [--rounds 3] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import default_json, fs_type, have_strace, machine, save_results, table
from .reapers import BASELINE, CONTENDERS, Contender, Result


def measure(base: Path, kinds: list[str], expired: int, live: int, rounds: int, strace: bool) -> list[dict[str, Any]]:
    """Purge with each of *kinds*, each round on a fresh store; the figures of each.

    The contenders take turns round by round, so that the machine's load
    (and on a disk, its writeback) hits them alike; then, if *strace*, one
    more round of each runs under strace for the syscall counts.
    """
    runs: dict[str, list[Result]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds:
            runs[kind].append(_run(CONTENDERS[kind], base / f"{kind}-{expired}-{r}", expired, live, False))
    traced_runs = {k: _run(CONTENDERS[k], base / f"{k}-{expired}-s", expired, live, True) for k in kinds if strace}
    return [_summary(k, runs[k], traced_runs.get(k), expired, live) for k in kinds]


def _summary(kind: str, timed: list[Result], traced_run: Result | None, expired: int, live: int) -> dict[str, Any]:
    """One contender's figures from its timed rounds (medians) and its traced round."""
    seconds = statistics.median(r["seconds"] for r in timed)
    out: dict[str, Any] = {
        "kind": kind,
        "expired": expired,
        "live": live,
        "seconds": round(seconds, 3),
        "files_per_s": round(expired / seconds),
        "rounds_per_s": [round(expired / r["seconds"]) for r in timed],
        "removed": [r["removed"] for r in timed],
        "complete": all(r["removed"] == expired for r in timed),
    }
    if "maxrss_kb" in timed[0]:
        out["peak_mb"] = round(max(r["maxrss_kb"] for r in timed) / 1024, 1)
    if traced_run is not None:
        out["syscalls_per_file"] = round(traced_run["syscalls"] / expired, 1)
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
    row = {r["kind"]: r for r in measure(base, kinds, size, live, rounds, strace)}
    for r in row.values():
        r["fs"] = fs  # the filesystem's type
        r["ratio_to_find"] = round(r["files_per_s"] / row[BASELINE]["files_per_s"], 2)
    return list(row.values())


def line(r: dict[str, Any]) -> str:
    """One result as the report prints it."""
    extra = f", {r['syscalls_per_file']} syscalls/session" if "syscalls_per_file" in r else ""
    extra += "" if r["complete"] else f", INCOMPLETE: removed {r['removed']}"
    mem = f", peak {r['peak_mb']} MB" if "peak_mb" in r else ""
    return (
        f"{r['fs']:>6} {r['expired']:>8} expired + {r['live']} live  {r['kind']:>8}: {r['files_per_s']:>8} sessions/s "
        f"({r['ratio_to_find']:.2f}x find){extra}{mem}"
    )


def report(results: list[dict[str, Any]], with_verdicts: bool = True) -> list[str]:
    """The Markdown table of every result, and (*with_verdicts*) issue 14's reaper targets met or missed."""
    django = {(r["fs"], r["expired"]): r["files_per_s"] for r in results if r["kind"] == "django"}
    rows = []
    for r in results:
        d = django.get((r["fs"], r["expired"]))
        rows.append([
            r["fs"], f"{r['expired']:,} + {r['live']:,}", r["kind"], f"{r['files_per_s']:,}",
            f"{r['ratio_to_find']:.2f}", f"{r['files_per_s'] / d:.2f}" if d else "-",
            r.get("syscalls_per_file", "-"), r.get("peak_mb", "-"), "yes" if r["complete"] else "NO",
        ])  # fmt: skip
    head = ["fs", "expired + live", "purger", "sessions/s", "x find", "x django", "syscalls/session", "peak MB"]
    lines = [*table([*head, "all removed"], rows), ""]
    return lines + (["Issue 14's reaper targets:", "", *verdicts(results), ""] if with_verdicts else [])


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The one-job reaper at least 0.5x find and 2x Django on each filesystem; its memory flat up to the last size."""
    lines = []
    for fs in dict.fromkeys(r["fs"] for r in results):
        first = min(r["expired"] for r in results if r["fs"] == fs)
        row = {r["kind"]: r for r in results if r["fs"] == fs and r["expired"] == first}
        ours = row.get("reaper")
        if ours is None:
            continue
        x = ours["ratio_to_find"]
        lines.append(f"- {fs}, {first:,}: reaper at least 0.5x find: {x:.2f}x: **{'met' if x >= 0.5 else 'missed'}**")
        if "django" in row:
            xd = ours["files_per_s"] / row["django"]["files_per_s"]
            lines.append(
                f"- {fs}, {first:,}: reaper at least 2x Django: {xd:.2f}x: **{'met' if xd >= 2 else 'missed'}**"
            )
        big = [r for r in results if r["fs"] == fs and r["kind"] == "reaper" and r["expired"] > first]
        for b in big:
            grow = b["peak_mb"] / ours["peak_mb"]
            flat = grow <= 1.25  # "flat": the peak grows by at most a quarter for ten times the sessions
            lines.append(
                f"- {fs}: reaper memory flat from {first:,} to {b['expired']:,} (peak at most 1.25x): "
                f"{ours['peak_mb']} -> {b['peak_mb']} MB ({grow:.2f}x): **{'met' if flat else 'missed'}**"
            )
    return lines


def bench_base(base: Path, args: argparse.Namespace, strace: bool) -> list[dict[str, Any]]:
    """Every size in directory *base*: the first with every contender, rounds and strace; the rest once."""
    base.mkdir(parents=True, exist_ok=True)
    fs = fs_type(base)
    results = []
    for i, size in enumerate(int(s) for s in args.sizes.split(",")):
        rounds = args.rounds if i == 0 else 1  # the large size is for memory and scaling, once
        for r in bench_size(base, fs, size, args.live, rounds, strace and i == 0, first=i == 0):
            results.append(r)
            print(line(r), flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> None:
    """Benchmark every directory asked for; a line per result as it comes; the JSON at the end."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench reap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", action="append", help="where to build the stores (repeatable)")
    parser.add_argument("--sizes", help="expired-session counts, comma-separated (default 100000,1000000)")
    parser.add_argument("--live", type=int, help="live sessions among them (default 10000)")
    parser.add_argument("--rounds", type=int, help="rounds at the first size (default 3)")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3000 expired among 500 live, one round")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench-results/)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ("3000" if args.quick else "100000,1000000")
    args.live = args.live if args.live is not None else (500 if args.quick else 10000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    default_dirs = [Path("/dev/shm/fss-bench-reap"), Path("/var/tmp/fss-bench-reap")]  # tmpfs, local disk
    dirs = [Path(d).absolute() for d in args.dir] if args.dir else default_dirs
    strace = not args.no_strace and have_strace()
    info = machine()
    results = [r for base in dirs for r in bench_base(base, args, strace)]
    print("\n".join(["", *report(results)]))
    save_results(args.json or default_json("reap", args.quick), "reap", ["reap", *sys.argv[1:]], info, results)


if __name__ == "__main__":
    main()
