"""What the event hook costs (issue 15): load and edit with ``on_event=None``, a no-op observer and Prometheus.

Every contender is a :class:`~fssession.SessionStore` over the *same*
directory and the same 200 sessions, so they do the same I/O.  Work is
timed in small batches (about 3 ms), the contenders' batches interleaved in
a shuffled order, on this process's CPU clock (a shared machine's other
load then costs no contender anything; the kernel's work for our I/O still
counts); each contender's median and fastest decile of batch times are
divided by those of the store without an observer.  A second store without
an observer ("none again") shows how far two identical contenders differ:
the noise floor.

* load: the normal path emits no event (the run checks: an observer that
  counts sees none), so an observer can only cost the ``is None`` tests.
* edit: emits one ``lock_acquired`` per edit, so this is what an observer
  costs when it is called.
* the observer call alone: ``PrometheusObserver(event)`` per call, in a loop.

Usage: scripts/bench events [--dir DIR ...] [--batches N]
(needs prometheus_client: the ``prometheus`` extra).
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

from prometheus_client import CollectorRegistry

from fssession import SessionStore
from fssession.events import Event, Observer
from fssession.prometheus import PrometheusObserver

from .common import rate, scratch, table

KEY = "benchmark-secret-key-0123456789"
BASE = "none"


class Counting:
    """An observer that only counts the events it is told (proves what a path emits)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, event: Event) -> None:
        """Count one event."""
        self.seen += 1


def _noop(event: Event) -> None:
    """An observer that does nothing: the cost of being called at all."""


def contenders() -> dict[str, Observer | None]:
    """The observers compared, by name; :data:`BASE` first (the others are divided by it)."""
    return {
        BASE: None,
        "none again": None,
        "no-op": _noop,
        "prometheus": PrometheusObserver(CollectorRegistry()),
    }


# Operations per batch: about 3 ms each on local disk.
BATCH = {"load": 100, "edit": 20}


def measure(directory: Path, batches: int) -> tuple[dict[str, dict[str, list[float]]], int, int]:
    """Per operation and contender, the CPU seconds per operation of each batch; and the events emitted."""
    with scratch(directory, "fss-bench-events-") as work:
        stores = {name: SessionStore(work, KEY, on_event=obs) for name, obs in contenders().items()}
        sids = [stores[BASE].create({"user": "u", "blob": "x" * 200}) for _ in range(200)]
        rng = random.Random(1)
        ops: dict[str, Callable[[SessionStore, str], object]] = {"load": SessionStore.load, "edit": _edit}
        times: dict[str, dict[str, list[float]]] = {op: {name: [] for name in stores} for op in ops}
        order = list(stores)
        for _ in range(batches):
            for op, call in ops.items():
                rng.shuffle(order)
                for name in order:
                    picked = rng.choices(sids, k=BATCH[op])
                    times[op][name].append(_batch(call, stores[name], picked))
        loads, edits = _events_emitted(work, sids)
    return times, loads, edits


def _batch(call: Callable[[SessionStore, str], object], store: SessionStore, sids: list[str]) -> float:
    """CPU seconds per call of *call* over *sids*."""
    t0 = time.process_time()
    for sid in sids:
        call(store, sid)
    return (time.process_time() - t0) / len(sids)


def _edit(store: SessionStore, sid: str) -> None:
    with store.edit(sid) as data:
        data["n"] = data.get("n", 0) + 1


def _events_emitted(work: Path, sids: list[str]) -> tuple[int, int]:
    """How many events 1000 loads, then 100 edits, told an observer."""
    counting = Counting()
    store = SessionStore(work, KEY, on_event=counting)
    for i in range(1000):
        store.load(sids[i % len(sids)])
    loads = counting.seen
    for i in range(100):
        _edit(store, sids[i % len(sids)])
    return loads, counting.seen - loads


def observer_call(seconds: float) -> float:
    """Seconds per ``PrometheusObserver(event)`` for a lock-wait event."""
    observer = PrometheusObserver(CollectorRegistry())
    event = Event("lock_acquired", 0.00004, "at once")
    return 1 / rate(lambda: observer(event), seconds)


def report(directory: Path, batches: int) -> list[str]:
    """The Markdown lines for one directory."""
    t0 = time.monotonic()
    times, loads, edits = measure(directory, batches)
    lines = [f"### {directory} ({batches} interleaved batches per contender and operation, CPU time)", ""]
    rows = []
    for op, by_name in times.items():
        base_median, base_fast = _median_and_fast(by_name[BASE])
        for name, found in by_name.items():
            median, fast = _median_and_fast(found)
            rows.append((op, name, f"{median * 1e6:.1f}", f"{median / base_median:.3f}", f"{fast / base_fast:.3f}"))
    lines += table(("operation", "on_event", "us per op (median)", "/ none (median)", "/ none (fastest 10%)"), rows)
    per_call = observer_call(0.3)
    lines += [
        "",
        f"events emitted: {loads} in 1000 loads, {edits} in 100 edits; "
        f"one PrometheusObserver call: {per_call * 1e6:.2f} us ({time.monotonic() - t0:.0f} s in all)",
        "",
    ]
    return lines


def _median_and_fast(found: list[float]) -> tuple[float, float]:
    """The median, and the median of the fastest tenth (batches nothing else disturbed)."""
    ordered = sorted(found)
    return statistics.median(ordered), statistics.median(ordered[: max(1, len(ordered) // 10)])


def main(argv: list[str] | None = None) -> int:
    """Measure in every directory asked for (default: the temporary directory)."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench events", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, action="append")
    parser.add_argument("--batches", type=int, default=400, help="per contender and operation (400)")
    args = parser.parse_args(argv)
    for d in args.dir or [Path(tempfile.gettempdir())]:
        print("\n".join(report(d, args.batches)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
