"""fssession: one shared session store for a cluster of web servers, on a shared directory.

The public face of the package; everything else is an implementation detail.
"""

import logging

from .errors import (
    InvalidSessionId,
    LockError,
    LockLost,
    LockTimeout,
    SessionError,
    SessionNotFound,
    SessionTooLarge,
    StorageError,
    TamperedSession,
)
from .lock import MkdirLock
from .store import SessionStore

__all__ = [
    "InvalidSessionId",
    "LockError",
    "LockLost",
    "LockTimeout",
    "MkdirLock",
    "SessionError",
    "SessionNotFound",
    "SessionStore",
    "SessionTooLarge",
    "StorageError",
    "TamperedSession",
]
__version__ = "0.1.0"

# A library leaves logging set-up to the application: without this, warnings
# would print through Python's last-resort handler in apps that configure none.
logging.getLogger(__name__).addHandler(logging.NullHandler())
