"""The contenders of "one session, P processes incrementing it", each one registered class: name -> incrementer.

A contender is a class built from a directory and, in the worker processes,
the key of the session the parent created; ``increment()`` adds 1 to the
session's ``n`` under the contender's lock and returns two readings of
``time.monotonic`` (one clock for every process on the machine): just
after its lock was taken and just before it was given back.  A correct lock
never lets the next hold start before the previous one's "given back"
reading, so handover gaps measured from them are never negative.  Where the
library takes and gives back its lock inside a larger call (fssession's
edit, beaker's namespace), the benchmark wraps the library's own lock
calls in the worker process to read the clock at those two points.
``value()`` reads ``n``.

Each contender does what its users would do with it: its own lock with its
own waiting policy (sleeps, back-off) left at the library's defaults, around
a read, +1 and an atomic write (temp file and rename) of a pickled session.
Registration order is table order; :data:`FLOOR` is what the others are
divided by.  The third-party libraries come with the ``bench`` extra.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import filelock

from fssession import MkdirLock, SessionStore

KEY = "benchmark-secret-key-0123456789"
FLOOR = "bare mkdir floor"
CONTROL = "no lock (control)"  # expected to lose updates: proves the count can see a loss
SESSION = {"user": "alice", "n": 0, "blob": "x" * 200}


class Incrementer(Protocol):
    """What the benchmark does with a contender."""

    key: str

    def increment(self) -> tuple[float, float]:
        """Add 1 under the lock: (just after the lock was taken, just before it was given back)."""

    def value(self) -> int:
        """The session's ``n`` now."""


C = TypeVar("C", bound=type[Incrementer])
INCREMENTERS: dict[str, Callable[[Path, str | None], Incrementer]] = {}


def contender(name: str) -> Callable[[C], C]:
    """Register the decorated class, built as ``cls(root, key)`` (key None: create the session), as *name*."""

    def register(cls: C) -> C:
        INCREMENTERS[name] = cls
        return cls

    return register


# ------------------------------------------------------- a pickled session file


def read_session(path: Path) -> dict[str, Any]:
    """The pickled session at *path*."""
    with open(path, "rb") as f:
        return pickle.load(f)  # type: ignore[no-any-return]


def write_session(path: Path, data: dict[str, Any]) -> None:
    """Replace the session at *path* atomically: a temp file of this process, renamed onto it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(pickle.dumps(data))
    os.rename(tmp, path)


class _FileSession:
    """A pickled session file at ``root/session`` and a lock beside it (subclasses: ``acquire``, ``release``)."""

    def __init__(self, root: Path, key: str | None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "session"
        self.key = "session"
        if key is None:
            write_session(self.path, dict(SESSION))

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def increment(self) -> tuple[float, float]:
        self.acquire()
        held = time.monotonic()
        data = read_session(self.path)
        data["n"] += 1
        write_session(self.path, data)
        releasing = time.monotonic()
        self.release()
        return held, releasing

    def value(self) -> int:
        return int(read_session(self.path)["n"])


class _Clock:
    """The last two readings a wrapped lock call took."""

    held = 0.0
    releasing = 0.0


def _probe_lockcore() -> _Clock:
    """Wrap fssession's lock protocol (``_lockcore.acquire``/``release``) in this process to read the clock.

    The store and MkdirLock call them through the module, so the wrappers
    see every acquire and release; one ``monotonic()`` each is all they add.
    """
    from fssession import _lockcore

    if getattr(_lockcore.acquire, "_bench_probe", None) is not None:
        return _lockcore.acquire._bench_probe  # type: ignore[attr-defined,no-any-return]
    clock = _Clock()
    acquire, release = _lockcore.acquire, _lockcore.release

    def timed_acquire(*args: Any, **kwargs: Any) -> Any:
        hold = acquire(*args, **kwargs)
        clock.held = time.monotonic()
        return hold

    def timed_release(*args: Any, **kwargs: Any) -> Any:
        clock.releasing = time.monotonic()
        return release(*args, **kwargs)

    timed_acquire._bench_probe = clock  # type: ignore[attr-defined]
    _lockcore.acquire, _lockcore.release = timed_acquire, timed_release
    return clock


# ------------------------------------------------------------------ contenders


@contender("fssession")
class Fssession:
    """fssession's ``SessionStore.edit``: the session's own lock, a signed file."""

    def __init__(self, root: Path, key: str | None) -> None:
        self.store = SessionStore(root, secret_key=KEY, max_age=3600, lock_timeout=60)
        self.key = key if key is not None else self.store.create(dict(SESSION))
        self.clock = _probe_lockcore()

    def increment(self) -> tuple[float, float]:
        with self.store.edit(self.key) as data:
            data["n"] += 1
        return self.clock.held, self.clock.releasing

    def value(self) -> int:
        return int((self.store.load(self.key) or {})["n"])


@contender("beaker (flock)")
class Beaker:
    """beaker's file namespace, as its file sessions store them: an flock'd lock file, a pickle of a dict."""

    def __init__(self, root: Path, key: str | None) -> None:
        from beaker.container import FileNamespaceManager

        self.ns = FileNamespaceManager("bench-session", data_dir=str(root))
        self.key = "bench-session"
        if key is None:
            self.ns.acquire_write_lock()
            self.ns["session"] = dict(SESSION)
            self.ns.release_write_lock()
        self.clock = _Clock()
        # Its flock is taken before the file is read and given back after it is
        # written, inside acquire/release_write_lock: read the clock there.
        sync = self.ns.access_lock
        take, give = sync.do_acquire_write_lock, sync.do_release_write_lock

        def timed_take(wait: bool) -> Any:
            got = take(wait)
            self.clock.held = time.monotonic()
            return got

        def timed_give() -> None:
            self.clock.releasing = time.monotonic()
            give()

        sync.do_acquire_write_lock, sync.do_release_write_lock = timed_take, timed_give

    def increment(self) -> tuple[float, float]:
        self.ns.acquire_write_lock()  # flock, then the file is read
        data = self.ns["session"]
        data["n"] += 1
        self.ns["session"] = data
        self.ns.release_write_lock()  # written (temp file, rename), then unlocked
        return self.clock.held, self.clock.releasing

    def value(self) -> int:
        self.ns.acquire_read_lock()
        try:
            return int(self.ns["session"]["n"])
        finally:
            self.ns.release_read_lock()


@contender("SoftFileLock")
class Soft(_FileSession):
    """filelock's SoftFileLock (an O_EXCL lock file; polls every 50 ms when busy, its default)."""

    def __init__(self, root: Path, key: str | None) -> None:
        super().__init__(root, key)
        self.lock = filelock.SoftFileLock(str(root / "session.lock"))

    def acquire(self) -> None:
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


@contender("lockfile MkdirLockFile")
class LockfileMkdir(_FileSession):
    """lockfile's MkdirLockFile (mkdir plus a file naming the holder; 0.1 s sleeps when busy, its default)."""

    def __init__(self, root: Path, key: str | None) -> None:
        super().__init__(root, key)
        from lockfile.mkdirlockfile import MkdirLockFile

        self.lock = MkdirLockFile(str(root / "session"))

    def acquire(self) -> None:
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


@contender("flufl.lock")
class Flufl(_FileSession):
    """flufl.lock (NFS-safe: a claim file hard-linked to the lock name; random 0.01-2 s sleeps when busy)."""

    def __init__(self, root: Path, key: str | None) -> None:
        super().__init__(root, key)
        from flufl.lock import Lock as FluflLock

        self.lock = FluflLock(str(root / "session.lck"))

    def acquire(self) -> None:
        self.lock.lock()

    def release(self) -> None:
        self.lock.unlock()


@contender("fssession MkdirLock")
class OurLock(_FileSession):
    """fssession's MkdirLock around a plain pickle file: the lock alone, without the store."""

    def __init__(self, root: Path, key: str | None) -> None:
        super().__init__(root, key)
        self.lock = MkdirLock(str(root / "session.mk"), lease=30)
        _probe_lockcore()  # not needed here (acquire/release are called directly), but costs the same

    def acquire(self) -> None:
        self.lock.acquire(timeout=60)

    def release(self) -> None:
        self.lock.release()


@contender(FLOOR)
class Floor(_FileSession):
    """The floor: mkdir to lock, rmdir to unlock, 1 ms sleeps while busy; no lease, no owner, no recovery."""

    def __init__(self, root: Path, key: str | None) -> None:
        super().__init__(root, key)
        self.lockdir = str(root / "session.bare")

    def acquire(self) -> None:
        while True:
            try:
                os.mkdir(self.lockdir)
                return
            except FileExistsError:
                time.sleep(0.001)

    def release(self) -> None:
        os.rmdir(self.lockdir)


@contender(CONTROL)
class NoLock(_FileSession):
    """No lock at all: the control that shows the lost-update count works (it must lose updates)."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass
