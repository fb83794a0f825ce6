"""What many tests share: the checkout's root, the test keys, a clock moved by hand, finding session files.

Kept light (no pytest): the clients run as separate processes import it too,
``lockworker.py``, ``storeworker.py`` and ``reapworker.py`` here.  The pytest
pieces (skipping what cannot start, the mounts that refuse writes) are in
``fixtures.py``; the root conftest registers its fixtures.  The
hostile-directory lab (real users, real processes) lives beside them, in
``users.py``, ``runtime.py``, ``procs.py`` and ``victim.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fssession.layout import Kind, classify

REPO = Path(__file__).resolve().parent.parent.parent
KEY = "test-secret-key-0123456789"
OTHER_KEY = "some-other-key-0123456789abcdefghij"


class Clock:
    """A clock a test moves by hand (``clock.advance(60)``), injected as ``SessionStore(..., clock=clock)``.

    Without *start* it starts at the real time: a store stamps a commit with
    its clock just after the rename, and a load by another thread in between
    sees the file's real mtime; the two must agree.  Several threads may read
    it while the test moves it.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        with self._lock:
            self._now += seconds


def session_files(root: Path) -> list[Path]:
    """The session files of the store at *root*: regular files the layout calls sessions, in real buckets."""
    return sorted(
        p
        for b in root.iterdir()
        if b.is_dir() and len(b.name) == 2 and not b.is_symlink()
        for p in b.iterdir()
        if classify(p.name).kind is Kind.SESSION and p.is_file() and not p.is_symlink()
    )
