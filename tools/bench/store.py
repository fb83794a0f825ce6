"""Store benchmarks (issues 14, 15): SessionStore against a bare-Python floor, Django's file backend and cachelib.

Every figure is a median of interleaved rounds; ratios are taken within one run.
  * load / edit / create / delete per second, single process, 200-byte and
    20 KB sessions, for every contender in :mod:`.stores`:
    - the bare floor, only the necessary work (load: open+read+unpickle;
      edit: mkdir a lock, read, write a temp file, rename, rmdir; create:
      write a temp file, rename; delete: unlink),
    - fssession, signed (the default) and sealed (``encrypt=True``),
    - Django's file session backend (its unlocked save as "edit"),
    - cachelib's FileSystemCache (get; get+set as "edit"; set; delete);
    a delete removes the sessions the round's create made, timed alone;
  * filesystem syscalls per operation (strace -c -f, a run of N minus a run of 0),
    against the issue's targets (edit <= 12, create <= 5, delete <= 6, load = 4);
  * the event hook's cost: load and edit with ``on_event=None`` against a
    no-op observer, in alternating rounds;
  * with --more: P processes each editing their own sessions, P = 1, 2, 4, and
    load and edit with 10k and with --large sessions present.

Usage: scripts/bench store [--dir DIR ...] [--rounds R] [--quick] [--more] [--large N] [--json OUT]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import storemore
from .common import FS_SYSCALLS, default_json, fs_type, have_strace, machine, per_operation, rate, save_results, scratch
from .common import table as md_table
from .cycles import argv as cycles_argv
from .stores import FLOOR, FSSESSION, SEALED, STORES, Observed, Ours, Store, payload

OPS = ("load", "edit", "create", "delete")
SIZES = (200, 20_000)
TARGETS = {"edit": 12, "create": 5, "delete": 6, "load": 4}  # filesystem calls per operation (issue 14)
RATIO_TARGETS = {"edit": 2.0, "create": 1.5}  # at most this many times the floor's time, tmpfs (issue 14)
COUNTED = (FSSESSION, FLOOR, "django file", "cachelib")  # whose syscalls are counted


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
    """One round of every operation on one contender; the sessions its create made are what its delete removes."""
    rates["load"].append(rate(lambda: impl.load(rng.choice(keys)), seconds))
    rates["edit"].append(rate(lambda: impl.edit(rng.choice(keys)), seconds))
    made: list[str] = []
    rates["create"].append(rate(lambda: made.append(impl.create(payload(size))), seconds))
    t0 = time.perf_counter()
    for key in made:
        impl.delete(key)
    rates["delete"].append(len(made) / (time.perf_counter() - t0))


WARM = 2000  # sessions made before counting: every one of fssession's 256 buckets exists and is open


def syscalls(directory: Path, name: str, op: str, n: int) -> dict[str, float]:
    """Contender *name*'s filesystem syscalls per *op* (200-byte sessions), in a store already in use.

    A store a web node has used for a while has made and opened its
    buckets; the first session in a bucket costs a ``mkdir`` and an
    ``open`` more, once per process.  The runs of 0 and of *n* operations
    both start from :data:`WARM` sessions, so those first-use costs cancel out.
    """
    setup = max(WARM, n)
    with scratch(directory, "fss-bench-sc-") as work:
        per = per_operation(lambda cycles: cycles_argv("store", name, op, work / str(cycles), cycles, setup), n)
    return {k: v for k, v in per.items() if k in FS_SYSCALLS}


def syscall_table(directory: Path, n: int) -> dict[str, dict[str, dict[str, float]]]:
    """Filesystem syscalls per operation of each counted contender ({} without strace)."""
    if not have_strace():
        print("strace is missing: no syscall counts", file=sys.stderr)
        return {}
    return {name: {op: syscalls(directory, name, op, n) for op in OPS} for name in COUNTED}


def events(directory: Path, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Load and edit per second with no observer and with a no-op one, alternating rounds.

    The medians of each, and (``ratio``) the median over rounds of the two
    rates' ratio taken within the round, which drifts of the machine's load
    between rounds do not move.
    """
    found: dict[str, dict[str, list[float]]] = {"none": {"load": [], "edit": []}, "no-op": {"load": [], "edit": []}}
    with scratch(directory, "fss-bench-events-") as work:
        stores: dict[str, Store] = {"none": Ours(work / "none"), "no-op": Observed(work / "noop")}
        keys = {k: _filled(k, s, 200) for k, s in stores.items()}
        rng = random.Random(4)
        for _ in range(rounds):
            for k, s in stores.items():
                found[k]["load"].append(rate(_op(s.load, keys[k], rng), seconds))
                found[k]["edit"].append(rate(_op(s.edit, keys[k], rng), seconds))
    out = {k: {op: statistics.median(v) for op, v in d.items()} for k, d in found.items()}
    out["ratio"] = {
        op: statistics.median(a / b for a, b in zip(found["none"][op], found["no-op"][op], strict=True))
        for op in ("load", "edit")
    }
    return out


def _op(fn: Callable[[str], object], keys: list[str], rng: random.Random) -> Callable[[], object]:
    """A call of *fn* on a random one of *keys*."""
    return lambda: fn(rng.choice(keys))


# ------------------------------------------------------------------- reports


def ops_table(size: int, r: dict[str, dict[str, float]]) -> list[str]:
    """The operations table for one session size, each rate also as the floor's time over its own."""
    floor = r[FLOOR]
    rows = [[name, *(f"{v[op]:,.0f} ({floor[op] / v[op]:.2f}x)" for op in OPS)] for name, v in r.items()]
    head = f"{size:,}-byte sessions, operations per second (in brackets: time per operation, x the floor's):"
    return [head, "", *md_table(["backend", *OPS], rows), ""]


def syscalls_table(sc: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Filesystem syscalls per operation, each contender a row; fssession's detail below."""
    if not sc:
        return []
    rows = [[name, *(f"{sum(per[op].values()):.1f}" for op in OPS)] for name, per in sc.items()]
    rows.append(["issue 14's target for fssession", *(f"<= {TARGETS[op]}" for op in OPS)])
    lines = ["Filesystem syscalls per operation (200-byte sessions, strace -c -f, N ops minus 0 ops):", ""]
    lines += md_table(["backend", *OPS], rows)
    lines += ["", "fssession, which calls:", ""]
    lines += [f"- {op}: {_detail(sc[FSSESSION][op])}" for op in OPS]
    return [*lines, ""]


def _detail(per: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))


def sealed_table(by_size: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    """Sealed against signed-only load and edit, per size (from the operations tables)."""
    rows = []
    for size, r in by_size.items():
        for op in ("load", "edit"):
            signed, sealed = r[FSSESSION][op], r[SEALED][op]
            rows.append([f"{size:,} B", op, f"{signed:,.0f}", f"{sealed:,.0f}", f"{signed / sealed:.2f}x"])
    head = ["size", "operation", "signed /s", "sealed /s", "sealed's time, x signed"]
    return ["Sealed (encrypt=True) against signed-only:", "", *md_table(head, rows), ""]


def events_table(ev: dict[str, dict[str, float]]) -> list[str]:
    """The event hook's cost: rates with no observer and a no-op one, the ratio within rounds, the time it adds."""
    rows = []
    for op in ("load", "edit"):
        none, noop, ratio = ev["none"][op], ev["no-op"][op], ev["ratio"][op]
        extra_us = (ratio - 1) / none * 1e6
        rows.append([op, f"{none:,.0f}", f"{noop:,.0f}", f"{ratio:.3f}x", f"{extra_us:+.1f}"])
    head = ["operation", "on_event=None /s", "no-op observer /s", "time, x None (median of rounds)", "µs added"]
    return ["The event hook (200-byte sessions, alternating rounds):", "", *md_table(head, rows), ""]


def verdicts(by_size: dict[int, dict[str, dict[str, float]]], sc: dict[str, Any], fs: str) -> list[str]:
    """Issue 14's store targets, each met or missed, with the figure that decides it."""
    lines = []
    if sc:
        for op, limit in TARGETS.items():
            got = sum(sc[FSSESSION][op].values())
            ok = got <= limit + 0.05 if op != "load" else abs(got - limit) < 0.05
            want = f"= {limit}" if op == "load" else f"<= {limit}"
            lines.append(f"- {fs}: {op} in {want} filesystem calls: {got:.1f}: **{'met' if ok else 'missed'}**")
    if fs == "tmpfs":
        for op, most in RATIO_TARGETS.items():
            r = by_size[200]
            x = r[FLOOR][op] / r[FSSESSION][op]
            lines.append(f"- {fs}: single-process {op} within {most}x the floor's (200 B): {x:.2f}x: "
                         f"**{'met' if x <= most else 'missed'}**")  # fmt: skip
    return ["Issue 14's store targets:", "", *lines, ""] if lines else []


def bench_dir(d: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every store figure for one directory, printed as it is done."""
    seconds = 0.3 if args.quick else 1.0
    rounds = args.rounds or (1 if args.quick else 3)
    fs = fs_type(d)
    print(f"### {fs} ({d})\n", flush=True)
    by_size: dict[int, dict[str, dict[str, float]]] = {}
    for size in SIZES:
        by_size[size] = ops(d, size, rounds, seconds)
        print("\n".join(ops_table(size, by_size[size])), flush=True)
    sc = syscall_table(d, 100 if args.quick else 300)
    ev = events(d, 3 if args.quick else 15, seconds)
    print("\n".join(syscalls_table(sc) + sealed_table(by_size) + events_table(ev) + verdicts(by_size, sc, fs)))
    result: dict[str, Any] = {"dir": str(d), "fs": fs, "ops": by_size, "syscalls": sc, "events": ev}
    if args.more:
        result["more"] = storemore.run(d, args.quick, args.large, seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    """Benchmark every directory asked for (default: tmpfs, /dev/shm); write the JSON."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench store", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, action="append", help="directory to run in (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short, one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per figure (default 3; --quick 1)")
    parser.add_argument("--more", action="store_true", help="also scaling over processes and a large population")
    parser.add_argument("--large", type=int, default=200_000, help="the large population (default 200000)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench-results/)")
    args = parser.parse_args(argv)
    info = machine()
    results = [bench_dir(d, args) for d in args.dir or [Path("/dev/shm")]]
    save_results(args.json or default_json("store", args.quick), "store", ["store", *sys.argv[1:]], info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
