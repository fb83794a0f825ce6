"""What a doctor run knows: its options, the store's directory held open, its work directory, what it measured."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field

from .._fs import Dir
from ._mount import Mount
from ._work import WorkDir

__all__ = ["Context", "Options"]


@dataclass
class Options:
    """The doctor's settings (``fssession doctor`` options)."""

    path: str
    fs_slack: float = 1.0
    lease: float = 30.0
    uids: list[int] = field(default_factory=list)  # the users the web nodes run as; empty: this user
    sessions: int = 100_000
    session_size: int = 1024
    peer_wait: float | None = None  # None: 3 s on network filesystems, 0 on local ones


@dataclass
class Context:
    """One run's state, shared by the checks."""

    options: Options
    root: Dir
    work: WorkDir
    mount: Mount | None
    host: str = field(default_factory=socket.gethostname)
    writable: bool = False
    write_errno: int | None = None
    skew: tuple[float, float] | None = None  # (server - local, uncertainty)
    children: list[int] = field(default_factory=list)
    peer: dict[str, str] | None = None  # the peer doctor this one paired with: host, token

    @property
    def token(self) -> str:
        """This doctor's random token (its work directory's name ends with it)."""
        return self.work.token

    def reap_children(self) -> None:
        """Kill and wait for every child process a check left running (interrupted)."""
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        self.children.clear()
