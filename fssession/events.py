"""Events for metrics: what happened inside the store, the lock and the reaper, told to an observer.

``SessionStore(..., on_event=observer)`` calls ``observer(event)`` for each
:class:`Event`; with no observer nothing is built or called (a load pays
one ``is None`` test).  An observer must be quick and must not raise: it
runs inside the operation (an exception it raises is logged and dropped).
:mod:`fssession.prometheus` turns events into Prometheus metrics.

Event names (``Event.name``):

=====================  ==========================================================
``lock_acquired``      a lock was taken; ``seconds`` waited, ``detail`` "at once"
                       (the guess held) or "waited"
``lock_takeover``      a dead or frozen holder was replaced (``detail``: who)
``lock_timeout``       a lock stayed held past the caller's timeout (``seconds`` waited)
``lock_lost``          a holder found its lock taken over (``detail``: at which step)
``stale_read``         an edit read a version older than the last commit and read again
``load_retry``         a read was retried (``detail``: ESTALE, ENOENT, torn)
``rollback_refused``   a file older than its client's generation was refused
``tampered``           a file failed verification (``detail``: why)
``reap_run``           a reaper run ended; ``seconds`` it took, ``values`` its counts
=====================  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["EVENT_NAMES", "Event", "Observer", "emit"]

log = logging.getLogger("fssession.events")

EVENT_NAMES = (
    "lock_acquired",
    "lock_takeover",
    "lock_timeout",
    "lock_lost",
    "stale_read",
    "load_retry",
    "rollback_refused",
    "tampered",
    "reap_run",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened (see the module docstring for the names)."""

    name: str
    seconds: float = 0.0
    detail: str = ""
    values: Mapping[str, float] = field(default_factory=dict)


Observer = Callable[[Event], None]


def emit(observer: Observer | None, name: str, seconds: float = 0.0, detail: str = "", **values: float) -> None:
    """Tell *observer* about an event, if there is one; an observer's error never breaks the operation."""
    if observer is None:
        return
    try:
        observer(Event(name, seconds, detail, values))
    except Exception:
        log.exception("the on_event observer failed on %s", name)
