"""The workloads whose syscalls the benchmarks count, each run in a process of its own under strace.

``python -m tools.bench.cycles lock NAME PATH N``: N acquire+release of lock contender NAME;
``python -m tools.bench.cycles store OP DIR N``: N loads, edits or creates of fssession's store.
Each warms up first, so that a run of N minus a run of 0 is what N operations cost.
:func:`argv` builds these commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools import python_module

from .locks import make_lock
from .stores import FSSESSION, STORES, payload


def argv(workload: str, *args: str | int | Path) -> list[str]:
    """The command that runs *workload* (``lock`` or ``store``) with *args*; start it from the repository's root."""
    # Paths made absolute: the child runs from the repository's root, not necessarily the caller's directory.
    return python_module(
        "tools.bench.cycles", workload, *(str(a.absolute() if isinstance(a, Path) else a) for a in args)
    )


def lock_cycles(name: str, path: str, n: int) -> None:
    """*n* uncontended acquire+release of a lock of contender *name*, after one more."""
    lock = make_lock(name, path)
    lock.acquire()
    lock.release()
    for _ in range(n):
        lock.acquire()
        lock.release()


def store_cycles(op: str, root: Path, n: int) -> None:
    """*n* operations *op* (load, edit, create) on 200-byte sessions of fssession's store, after one of each."""
    store = STORES[FSSESSION](root)
    keys = [store.create(payload(200)) for _ in range(5)]
    store.load(keys[0])
    store.edit(keys[0])
    for i in range(n):
        key = keys[i % 5]
        if op == "load":
            store.load(key)
        elif op == "edit":
            store.edit(key)
        else:
            store.create(payload(200))


def main(args: list[str]) -> None:
    """Run the workload that :func:`argv` describes."""
    workload, what, where, n = args
    if workload == "lock":
        lock_cycles(what, where, int(n))
    else:
        store_cycles(what, Path(where), int(n))


if __name__ == "__main__":
    main(sys.argv[1:])
