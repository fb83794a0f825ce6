"""What many tests share: the test key, an injectable clock, finding session files in a store.

The hostile-directory lab (real users, real processes) lives beside this, in
``users.py``, ``runtime.py``, ``procs.py`` and ``victim.py``.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
KEY = "test-secret-key-0123456789"


class Clock:
    """A clock a test moves by hand (``clock.t += 60``), injected as ``SessionStore(..., clock=clock)``."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def session_files(root: Path) -> list[Path]:
    """The session files of the store at *root* (regular files named by 64 hex digits, in buckets)."""
    return sorted(
        p
        for b in root.iterdir()
        if b.is_dir() and len(b.name) == 2 and not b.is_symlink()
        for p in b.iterdir()
        if len(p.name) == 64 and p.is_file() and not p.is_symlink()
    )
