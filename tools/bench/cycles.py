"""The workloads whose syscalls the benchmarks count, each run in a process of its own under strace.

``python -m tools.bench.cycles lock NAME PATH N``: N acquire+release of lock contender NAME;
``python -m tools.bench.cycles store NAME OP DIR N SETUP``: N loads, edits, creates or deletes on
store contender NAME, with SETUP sessions made first (a delete needs them; give the same SETUP to
the run of 0, so that making them cancels out).
Each warms up first, so that a run of N minus a run of 0 is what N operations cost.
:func:`argv` builds these commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools import python_module

from .locks import make_lock
from .stores import STORES, payload


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


def store_cycles(name: str, op: str, root: Path, n: int, setup: int) -> None:
    """*n* operations *op* (load, edit, create, delete) on 200-byte sessions of store *name*, after one of each."""
    store = STORES[name](root)
    keys = [store.create(payload(200)) for _ in range(max(6, setup + 1))]
    store.load(keys[-1])
    store.edit(keys[-1])
    store.delete(keys.pop())
    for i in range(n):
        if op == "load":
            store.load(keys[i % 5])
        elif op == "edit":
            store.edit(keys[i % 5])
        elif op == "delete":
            store.delete(keys[i])
        else:
            store.create(payload(200))


def main(args: list[str]) -> None:
    """Run the workload that :func:`argv` describes."""
    if args[0] == "lock":
        lock_cycles(args[1], args[2], int(args[3]))
    else:
        store_cycles(args[1], args[2], Path(args[3]), int(args[4]), int(args[5]))


if __name__ == "__main__":
    main(sys.argv[1:])
