"""The reaper's parallel sweep: forked workers taking buckets from a shared counter.

Buckets are independent (a session, its marker and its temp files share
one), so workers never meet.  Every bucket handed out is finished, so the
counter is also where the next run resumes.  Kept apart from ``reaper.py``
so that importing fssession never loads multiprocessing.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import time
from typing import TYPE_CHECKING, Any

from .errors import StorageError

if TYPE_CHECKING:
    from .reaper import _Reaper

__all__ = ["sweep_parallel"]


def sweep_parallel(reaper: _Reaper, order: list[str], deadline: float | None) -> int:
    """Sweep *order* with ``settings.jobs`` forked workers; returns how many buckets were done."""
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    pipes, workers = [], []
    for _ in range(reaper.settings.jobs):
        receive, send = ctx.Pipe(duplex=False)
        worker = ctx.Process(target=_worker, args=(reaper, order, deadline, counter, send), daemon=True)
        worker.start()
        send.close()
        pipes.append(receive)
        workers.append(worker)
    try:
        for receive, worker in zip(pipes, workers, strict=True):
            while not receive.poll(1.0):
                if not reaper.keep_lock():
                    with counter.get_lock():
                        counter.value = len(order)  # hand out nothing more
                if not worker.is_alive() and not receive.poll(0):
                    raise StorageError(
                        errno.EIO, f"reaper worker died (exit code {worker.exitcode})", reaper.layout.path
                    )
            reaper.stats.merge(receive.recv())
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    return min(int(counter.value), len(order))


def _worker(
    reaper: _Reaper, order: list[str], deadline: float | None, counter: Any, send: Any
) -> None:  # pragma: no cover - a forked child
    from .reaper import ReapStats, Sweep

    stats = ReapStats(path=reaper.layout.path)
    sweep = Sweep(reaper.layout, reaper.settings, reaper.clock, stats)
    while deadline is None or time.monotonic() < deadline or not stats.directories:
        with counter.get_lock():
            index = int(counter.value)
            if index >= len(order):
                break
            counter.value = index + 1
        sweep.bucket(order[index])
        stats.directories += 1
    send.send(stats)
    send.close()
