"""fssession: one shared session store for a cluster of web servers, on a shared directory.

The public face of the package; everything else is an implementation detail.
"""

from .errors import LockError, LockLost, LockTimeout, SessionError, StorageError
from .lock import MkdirLock

__all__ = [
    "LockError",
    "LockLost",
    "LockTimeout",
    "MkdirLock",
    "SessionError",
    "StorageError",
]
__version__ = "0.1.0"
