"""The store benchmark's extra figures (``scripts/bench store --more``): scaling over processes, a large population.

* P processes each editing their own sessions, P = 1, 2, 4: edits per second together;
* load and edit rates with a small and a large number of sessions present.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import in_parallel, rate, scratch, wait_for_start
from .stores import FSSESSION, STORES, payload


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
            loads = [rate(_on_one(s.load, sample, rng), seconds) for _ in range(3)]
            edits = [rate(_on_one(s.edit, sample, rng), seconds) for _ in range(3)]
            result[target] = {"load": statistics.median(loads), "edit": statistics.median(edits)}
        return result


def _on_one(fn: Callable[[str], object], keys: list[str], rng: random.Random) -> Callable[[], object]:
    """A call of *fn* on a random one of *keys*."""
    return lambda: fn(rng.choice(keys))


def run(directory: Path, quick: bool, large: int, seconds: float) -> dict[str, Any]:
    """Both figures, printed and returned."""
    sc = scaling(directory, seconds * 2)
    cells = ", ".join(f"P={p}: {v:,.0f} edits/s ({v / sc[1]:.2f}x)" for p, v in sc.items())
    print(f"P processes editing their own sessions: {cells}\n")
    pop = population(directory, [1_000, 10_000] if quick else [10_000, large], seconds)
    small, big = min(pop), max(pop)
    lo, hi = pop[small], pop[big]
    print(
        f"with {small:,} vs {big:,} sessions present: load {lo['load']:,.0f} vs {hi['load']:,.0f}/s "
        f"({hi['load'] / lo['load']:.2f}x), edit {lo['edit']:,.0f} vs {hi['edit']:,.0f}/s "
        f"({hi['edit'] / lo['edit']:.2f}x)\n",
        flush=True,
    )
    return {"scaling": sc, "population": pop}
