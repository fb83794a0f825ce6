"""Who this process is, and whether a recorded process is still alive.

A lock owner is identified by a *host id* (hostname, kernel boot id and PID
namespace, hashed) plus a PID and that process's start time.  Two records with
the same host id name processes in one PID space, so the recorded PID can be
probed through ``/proc``; a matching PID with a different start time is a
recycled PID, not the holder.  Nothing here touches the shared filesystem.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """What a lock record says about its owner."""

    host_id: str  # 16 hex digits: hash of hostname, boot id and PID namespace
    hostname: str  # for people: printed in timeouts, never used for decisions
    pid: int
    start_time: int  # clock ticks after boot (field 22 of /proc/PID/stat); 0 if unknown


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "?"


@lru_cache(maxsize=1)
def _boot_id() -> str:
    boot_id = _read_text("/proc/sys/kernel/random/boot_id")
    # Without a boot id a PID cannot be compared safely across reboots; a
    # random one makes every other process look foreign, so only the lease
    # can free our locks.  Safe, merely slower.
    return boot_id or os.urandom(16).hex()


def _proc_is_ours() -> bool:
    """Whether /proc shows our own PID namespace (not so after ``unshare -p`` without a new /proc)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _host_key() -> tuple[str, str]:
    # Recomputed for every new PID (see current_identity): a child may have
    # been moved to a new UTS or PID namespace by unshare() before fork().
    hostname = socket.gethostname()
    digest = hashlib.blake2b(f"{hostname}\0{_boot_id()}\0{_pid_namespace()}".encode(), digest_size=8)
    return digest.hexdigest(), hostname


def process_start_time(pid: int) -> int | None:
    """The start time of *pid* in clock ticks after boot; None if it is gone or a zombie."""
    raw = _read_text(f"/proc/{pid}/stat")
    if not raw:
        return None
    # The command name (field 2) may contain spaces and parentheses; the
    # fields after the last ')' are fixed: state is field 3, starttime 22.
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


_self_cache: dict[int, ProcessIdentity] = {}


def current_identity() -> ProcessIdentity:
    """This process's identity (recomputed after a fork, since the PID changes)."""
    pid = os.getpid()
    ident = _self_cache.get(pid)
    if ident is None:
        host_id, hostname = _host_key()
        probeable = _proc_is_ours()
        # Start time 0 means "never probe": with a /proc of another PID
        # namespace, a PID there is not ours to judge.
        ident = ProcessIdentity(host_id, hostname, pid, (process_start_time(pid) or 0) if probeable else 0)
        _self_cache.clear()
        _self_cache[pid] = ident
    return ident


def is_dead_here(owner: ProcessIdentity) -> bool:
    """True only when *owner* provably ran on this host, boot and PID namespace and is gone.

    A foreign owner, or one whose start time was not recorded, is never
    declared dead here: only its lease can free it.
    """
    me = current_identity()
    if owner.host_id != me.host_id or owner.start_time == 0 or me.start_time == 0:
        return False
    return process_start_time(owner.pid) != owner.start_time


@functools.cache
def process_umask() -> int:
    """This process's umask, read once (from /proc, since reading it with os.umask would change it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass  # no /proc: assume the common default
    return 0o022
