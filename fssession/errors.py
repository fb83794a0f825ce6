"""The exceptions fssession raises.

Every exception is a :class:`SessionError`, so an application can catch the
library's failures in one place; each also derives from the built-in type a
caller would naturally expect (``filelock.Timeout`` for a lock timeout,
``OSError`` for a storage failure).
"""

from __future__ import annotations

import errno as _errno
import os

import filelock


class SessionError(Exception):
    """Base class of every exception raised by fssession."""


class InvalidSessionId(SessionError, ValueError):
    """The value is not a session id this library could have issued."""


class SessionNotFound(SessionError, KeyError):
    """No such session, or it expired (from operations that need one to exist)."""


class TamperedSession(SessionError):
    """A session file failed verification: forged, altered, truncated, empty or unreadable as a session.

    Such a file is never unpickled.  ``path`` names it and ``reason`` says what failed.
    """

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(f"{reason}: {path}" if path else reason)
        self.reason = reason
        self.path = path


class SessionTooLarge(SessionError):
    """A session is larger than the store's size limit (when writing, or a file found when reading)."""


class LockError(SessionError):
    """Base class of the lock's own failures."""


class LockTimeout(filelock.Timeout, LockError):
    """The lock could not be acquired in time; the message names the holder.

    A subclass of :class:`filelock.Timeout`, so code written for filelock
    catches it unchanged.
    """

    def __init__(self, lock_file: str, holder: str | None = None, waited: float | None = None) -> None:
        super().__init__(lock_file, holder)
        self.holder = holder
        self.waited = waited

    def __str__(self) -> str:
        waited = "" if self.waited is None else f" within {self.waited:.3g} s"
        message = f"The lock {self.lock_file!r} could not be acquired{waited}"
        if self.holder:
            return f"{message}: it is held by {self.holder}."
        return f"{message}."

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.__class__, (self.lock_file, self.holder, self.waited)


class LockLost(LockError):
    """The caller believed it held the lock, but another holder took it over.

    Raised by :meth:`MkdirLock.refresh`, :meth:`MkdirLock.release` and by
    anything that commits under the lock, once the lease ran out and a
    contender took the lock over.  Nothing of the new holder's was removed.
    """


class StorageError(SessionError, OSError):
    """The shared directory refused an operation (full, read-only, vanished, denied).

    Carries the filesystem's ``errno`` and the path, like any ``OSError``.
    """

    @classmethod
    def from_oserror(cls, exc: OSError, path: str | os.PathLike[str] | None = None) -> StorageError:
        """Wrap *exc*, keeping its errno, message and path."""
        code = exc.errno if exc.errno is not None else _errno.EIO
        message = exc.strerror or os.strerror(code)
        target = path if path is not None else exc.filename
        err = cls(code, message, os.fspath(target) if target is not None else None)
        err.__cause__ = exc
        return err
