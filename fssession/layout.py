"""The names fssession gives to what it keeps in a store's directory (shared by the store and the reaper).

::

    .fssession-naming-key          the key that turns ids into file names
    .fssession-reaper.lock         held by the reaper that is running (MkdirLock)
    .fssession-reaper-cursor       where a reaper stopped by --max-seconds resumes
    ab/                            256 fan-out directories (never removed)
    ab/<64 hex>                    a session file
    ab/<64 hex>.lock               its MkdirLock while an edit, delete, rotate or reap runs
    ab/<64 hex>.lock.stage-<32 hex>, .fssession-trash-*   the lock's own litter
    ab/<64 hex>.gen                its generation beacon (symlink -> last committed generation)
    ab/<64 hex>.gen-<token>        the beacon while an edit holds the lock
    ab/<64 hex>.tmp-<token>        a write in progress
    ab/<64 hex>.reap               an expired session a reaper claimed (removed, or put back if revived)
"""

from __future__ import annotations

__all__ = [
    "BUCKETS",
    "CURSOR_FILE",
    "GEN_CLAIM_INFIX",
    "GEN_SUFFIX",
    "LOCK_SUFFIX",
    "NAME_LENGTH",
    "NAMING_KEY_FILE",
    "REAPER_LOCK",
    "REAP_SUFFIX",
    "TMP_INFIX",
    "is_session_name",
]

NAMING_KEY_FILE = ".fssession-naming-key"
REAPER_LOCK = ".fssession-reaper.lock"
CURSOR_FILE = ".fssession-reaper-cursor"
LOCK_SUFFIX = ".lock"
GEN_SUFFIX = ".gen"
GEN_CLAIM_INFIX = ".gen-"
TMP_INFIX = ".tmp-"
REAP_SUFFIX = ".reap"
NAME_LENGTH = 64  # hex digits of a session file's name (a keyed BLAKE2b of its id)
BUCKETS = tuple(f"{i:02x}" for i in range(256))

_HEX = frozenset("0123456789abcdef")


def is_session_name(name: str) -> bool:
    """Whether *name* has the shape of a session file's name."""
    return len(name) == NAME_LENGTH and _HEX.issuperset(name)
