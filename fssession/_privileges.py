"""Not acting as root on a directory others can write.

A store is written by web nodes' users (and, group-shared, by every member
of its group).  Run as root there, a tool that someone tricked into
following a link could harm the whole machine; the directory-fd layer
(``_fs``) already refuses to follow anything, and on top of that the
operator tools switch to the store directory's owner before touching it, as
logrotate's ``su`` directive does.  A store that root owns but others may
write has no owner to switch to: the tools refuse it (``--allow-root``
overrides).
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
from collections.abc import Callable
from typing import TypeVar

from .errors import StorageError

__all__ = ["RootPolicy", "owner_switch_needed", "run_as_owner", "switch_to_owner"]

T = TypeVar("T")


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def owner_switch_needed(st: os.stat_result) -> bool:
    """Whether a root process must switch users before touching a store whose root has stat *st*.

    Raises :class:`StorageError` (EPERM) for a store that root owns but others
    may write: there is no owner to switch to.
    """
    if os.geteuid() != 0:
        return False
    if st.st_uid == 0:
        if _writable_by_others(st):
            raise StorageError(
                errno.EPERM,
                "the store belongs to root but others may write it; give it to the web server's user "
                "(chown -R) or pass --allow-root",
                None,
            )
        return False
    return True


def switch_to_owner(st: os.stat_result) -> None:
    """Become the owner of the directory with stat *st* (its uid and gid; no supplementary groups).

    Irreversible for this process: real, effective and saved ids all change.
    """
    os.setgroups([])
    os.setresgid(st.st_gid, st.st_gid, st.st_gid)
    os.setresuid(st.st_uid, st.st_uid, st.st_uid)


class RootPolicy:
    """What a tool does when run as root: switch to the store's owner unless *allow_root*."""

    def __init__(self, allow_root: bool = False) -> None:
        self.allow_root = allow_root

    def apply(self, root_fd: int) -> bool:
        """Switch this process to the owner of the open store directory *root_fd* if needed; True if it did."""
        if self.allow_root:
            return False
        st = os.fstat(root_fd)
        if not owner_switch_needed(st):
            return False
        switch_to_owner(st)
        return True


def run_as_owner(root_fd: int, work: Callable[[], T]) -> T:
    """Run *work* in a forked child that switched to the store's owner; return its result (or raise its error).

    For library calls made as root (``SessionStore.reap()`` from a root
    shell): the calling process keeps its identity.  The result travels back
    pickled through a pipe (our own child's, so trusted).
    """
    st = os.fstat(root_fd)
    if not owner_switch_needed(st):
        return work()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            switch_to_owner(st)
            outcome: tuple[bool, object] = (True, work())
        except BaseException as exc:
            outcome = (False, exc)
        try:
            data = pickle.dumps(outcome)
        except Exception as exc:
            data = pickle.dumps((False, RuntimeError(f"result could not be passed back: {exc}")))
        with os.fdopen(write_end, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as incoming:
        data = incoming.read()
    os.waitpid(pid, 0)
    if not data:
        raise StorageError(errno.EIO, "the reaper's child process died", None)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
