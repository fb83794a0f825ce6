"""Store benchmarks (issue 3): SessionStore against a bare-Python floor, Django's file backend and cachelib.

Every figure is a median of rounds; ratios are taken within one run.
  * load / edit / create per second, 200-byte and 20 KB sessions, against
    - a bare floor doing only the necessary work (load: open+read+unpickle;
      edit: mkdir a lock, read, write a temp file, rename, rmdir; create:
      write a temp file, rename),
    - Django's file session backend (load; its unlocked save as "edit"; create),
    - cachelib's FileSystemCache (get; get+set as "edit"; set);
  * filesystem syscalls per operation (strace -c -f, a run of N minus a run of 0);
  * P processes each editing their own sessions, P = 1, 2, 4;
  * load and edit with 10k and with --large sessions present.

Usage: scripts/bench store [--dir DIR ...] [--quick] [--large N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import FS_SYSCALLS, have_strace, in_parallel, per_operation, rate, scratch, table, wait_for_start
from .cycles import argv as cycles_argv
from .stores import FLOOR, FSSESSION, STORES, Store, payload

OPS = ("load", "edit", "create")


def ops(directory: Path, size: int, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Per contender and operation: the median rate, over *rounds* interleaved rounds."""
    out: dict[str, dict[str, list[float]]] = {b: {op: [] for op in OPS} for b in STORES}
    with scratch(directory, "fss-bench-store-") as work:
        impls = {name: make(work / name.replace(" ", "-")) for name, make in STORES.items()}
        keys = {name: _filled(name, impl, size) for name, impl in impls.items()}
        rng = random.Random(1)
        for _ in range(rounds):
            for name, impl in impls.items():  # interleaved, so noise hits every backend alike
                _sample(out[name], impl, keys[name], size, rng, seconds)
    return {b: {op: statistics.median(v) for op, v in d.items()} for b, d in out.items()}


def _filled(name: str, impl: Store, size: int) -> list[str]:
    """The keys of 200 sessions of *size* created in *impl*, which must really return the data it stored."""
    keys = [impl.create(payload(size)) for _ in range(200)]
    assert (impl.load(keys[0]) or {}).get("blob") == payload(size)["blob"], name
    return keys


def _sample(
    rates: dict[str, list[float]], impl: Store, keys: list[str], size: int, rng: random.Random, seconds: float
) -> None:
    """One round of every operation on one contender, each rate added to *rates*."""
    for op, found in rates.items():
        found.append(rate(_operation(impl, op, keys, size, rng), seconds))


def _operation(impl: Store, op: str, keys: list[str], size: int, rng: random.Random) -> Callable[[], object]:
    """One call of *op* on *impl*, on a random one of *keys* (create: a new session of *size*)."""
    if op == "load":
        return lambda: impl.load(rng.choice(keys))
    if op == "edit":
        return lambda: impl.edit(rng.choice(keys))
    return lambda: impl.create(payload(size))


def syscalls(directory: Path, op: str, n: int = 300) -> dict[str, float]:
    """fssession's filesystem syscalls per *op* (200-byte sessions)."""
    with scratch(directory, "fss-bench-sc-") as work:
        per = per_operation(lambda cycles: cycles_argv("store", op, work / str(cycles), cycles), n)
    return {k: v for k, v in per.items() if k in FS_SYSCALLS}


def _editor(root: str, keys: list[str], seconds: float, start_at: float, out: Any) -> None:  # pragma: no cover
    """A worker: edit its own sessions for *seconds*; put how many edits."""
    s = STORES[FSSESSION](Path(root))
    wait_for_start(start_at)
    n, end = 0, start_at + seconds
    while time.monotonic() < end:
        s.edit(keys[n % len(keys)])
        n += 1
    out.put(n)


def scaling(directory: Path, seconds: float) -> dict[int, float]:
    """Edits per second, all processes together, with 1, 2 and 4 processes each editing its own sessions."""
    with scratch(directory, "fss-bench-scale-") as work:
        s = STORES[FSSESSION](work)
        result = {}
        for procs in (1, 2, 4):
            keys = [[s.create(payload(200)) for _ in range(50)] for _ in range(procs)]
            counts = in_parallel(_editor, [(str(work), keys[i], seconds) for i in range(procs)], seconds + 60)
            result[procs] = sum(counts) / seconds
        return result


def population(directory: Path, counts: list[int], seconds: float) -> dict[int, dict[str, float]]:
    """load and edit rates with N sessions present, for each N in *counts*."""
    with scratch(directory, "fss-bench-pop-") as work:
        s = STORES[FSSESSION](work)
        made: list[str] = []
        result = {}
        for target in counts:
            while len(made) < target:
                made.append(s.create(payload(200)))
            sample = random.Random(2).sample(made, 200)
            rng = random.Random(3)
            loads = [rate(_operation(s, "load", sample, 200, rng), seconds) for _ in range(3)]
            edits = [rate(_operation(s, "edit", sample, 200, rng), seconds) for _ in range(3)]
            result[target] = {"load": statistics.median(loads), "edit": statistics.median(edits)}
        return result


# ------------------------------------------------------------------- reports


def print_ops(size: int, r: dict[str, dict[str, float]]) -> None:
    """The operations table for one session size, each rate also as a ratio to the floor's."""
    print(f"{size}-byte sessions, operations per second (x the bare floor):\n")
    floor = r[FLOOR]
    rows = [[name, *(f"{v[op]:,.0f} ({v[op] / floor[op]:.2f}x)" for op in OPS)] for name, v in r.items()]
    print("\n".join(table(["backend", *OPS], rows)))
    print()


def print_syscalls(d: Path) -> None:
    """fssession's filesystem syscalls per operation, if strace is there."""
    if not have_strace():
        return
    print("fssession filesystem syscalls per operation (200-byte sessions):\n")
    for op in OPS:
        per = syscalls(d, op)
        print(f"- {op}: {sum(per.values()):.1f}  {per}")
    print()


def print_scaling(sc: dict[int, float]) -> None:
    """Edits per second by process count, against one process."""
    cells = ", ".join(f"P={p}: {v:,.0f} edits/s ({v / sc[1]:.2f}x)" for p, v in sc.items())
    print(f"P processes editing their own sessions: {cells}\n")


def print_population(pop: dict[int, dict[str, float]]) -> None:
    """Load and edit rates with the smallest against the largest population."""
    small, large = min(pop), max(pop)
    lo, hi = pop[small], pop[large]
    print(
        f"with {small:,} vs {large:,} sessions present: load {lo['load']:,.0f} vs {hi['load']:,.0f}/s "
        f"({hi['load'] / lo['load']:.2f}x), edit {lo['edit']:,.0f} vs {hi['edit']:,.0f}/s "
        f"({hi['edit'] / lo['edit']:.2f}x)\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Benchmark every directory asked for (default: the temporary directory and /dev/shm)."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench store", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, action="append")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", type=int, default=200_000, help="the large population (default 200000)")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else 1.0
    for d in args.dir or [Path(tempfile.gettempdir()), Path("/dev/shm")]:
        print(f"### {d}\n")
        for size in (200, 20_000):
            print_ops(size, ops(d, size, 1 if args.quick else 3, seconds))
        print_syscalls(d)
        print_scaling(scaling(d, seconds * 2))
        print_population(population(d, [1_000, 10_000] if args.quick else [10_000, args.large], seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
