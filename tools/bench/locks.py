"""The locks the lock benchmark compares, each one registered function: name -> a lock at a path.

A contender is a function from a path prefix to a lock with ``acquire(timeout=...)``
and ``release()``, decorated with :func:`contender`; its keyword arguments
say which tables it joins.  Registration order is table order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import filelock

from fssession import MkdirLock

BASELINE = "bare mkdir+rmdir"  # what the uncontended times and the worst waits are divided by
SOFT = "SoftFileLock"  # what the contended throughput is divided by


class Lock(Protocol):
    """What the benchmark does with a lock."""

    def acquire(self, timeout: float | None = None) -> object:
        """Take the lock, waiting at most *timeout* seconds."""

    def release(self) -> None:
        """Give it back."""


@dataclass(frozen=True)
class Contender:
    """A lock implementation and the tables it is in (all take part in the uncontended one)."""

    name: str
    make: Callable[[str], Lock]
    syscalls: bool  # its syscalls per acquire+release are counted
    contended: bool  # it runs with 2, 4 and 8 processes


CONTENDERS: dict[str, Contender] = {}


def contender(
    name: str, *, syscalls: bool = True, contended: bool = True
) -> Callable[[Callable[[str], Lock]], Callable[[str], Lock]]:
    """Register the decorated ``path -> lock`` function as the contender *name*."""

    def register(make: Callable[[str], Lock]) -> Callable[[str], Lock]:
        CONTENDERS[name] = Contender(name, make, syscalls, contended)
        return make

    return register


def make_lock(name: str, path: str) -> Lock:
    """A fresh lock of contender *name* at *path* (plus its own suffix, so contenders never share a lock)."""
    return CONTENDERS[name].make(path)


class _NoopBaseLock(filelock.BaseFileLock):
    """The least a BaseFileLock subclass can cost: its own bookkeeping around an fd."""

    _lifetime_supported = False

    def _acquire(self) -> None:
        self._context.lock_file_fd = os.open(os.devnull, os.O_RDONLY)

    def _release(self) -> None:
        fd = self._context.lock_file_fd
        self._context.lock_file_fd = None
        if fd is not None:
            os.close(fd)


class _BareMkdir:
    """The baseline: mkdir to take, rmdir to give back, 1 ms sleeps while busy."""

    def __init__(self, path: str) -> None:
        self.path = path

    def acquire(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                os.mkdir(self.path)
                return
            except FileExistsError:
                if deadline is not None and time.monotonic() > deadline:
                    raise filelock.Timeout(self.path) from None
                time.sleep(0.001)

    def release(self) -> None:
        os.rmdir(self.path)


@contender(BASELINE)
def bare_mkdir(path: str) -> Lock:
    """Nothing but the atomic mkdir every directory lock is built on."""
    return _BareMkdir(path + ".bare")


@contender("MkdirLock")
def mkdir_lock(path: str) -> Lock:
    """fssession's lease lock."""
    return MkdirLock(path + ".mk", lease=30)


@contender(SOFT)
def soft_file_lock(path: str) -> Lock:
    """filelock's O_EXCL file lock, the one that works without flock."""
    return filelock.SoftFileLock(path + ".soft")


@contender("FileLock", syscalls=False, contended=False)
def file_lock(path: str) -> Lock:
    """filelock's flock lock (local only: flock does not reach across hosts on most shared filesystems)."""
    return filelock.FileLock(path + ".flock")


@contender("BaseFileLock (no-op subclass)", contended=False)
def noop_base_lock(path: str) -> Lock:
    """What building on filelock's BaseFileLock would cost at least."""
    return _NoopBaseLock(path + ".noop")
