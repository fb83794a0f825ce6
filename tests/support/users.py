"""The lab's Unix accounts: two web nodes' users and an attacker, all in one shared group.

``fss-share``    the group the store is shared through (setgid store directory).
``fss-weba``     web node A; primary group fss-share.
``fss-webb``     web node B; primary group fss-webb (its own), fss-share only as a
                 supplementary group: files it creates outside a setgid directory
                 get the wrong group, which is what breaks naive group sharing.
``fss-mallory``  an unprivileged member of fss-share who knows no key; primary
                 group fss-mallory.

The accounts are system users without a home, a password or a login shell.
They are created once (as root) and reused by later runs: creation is
idempotent, checks what it finds, and repairs group memberships.  Nothing
else about the machine is changed.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["GROUP", "MALLORY", "WEB_A", "WEB_B", "LabUser", "ensure_accounts", "missing_tools"]

GROUP = "fss-share"
WEB_A = "fss-weba"
WEB_B = "fss-webb"
MALLORY = "fss-mallory"

# name -> (primary group, supplementary groups)
_PLAN: dict[str, tuple[str, tuple[str, ...]]] = {
    WEB_A: (GROUP, ()),
    WEB_B: (WEB_B, (GROUP,)),
    MALLORY: (MALLORY, (GROUP,)),
}
_TOOLS = ("groupadd", "useradd", "usermod", "setpriv", "unshare")
_NOLOGIN = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)), "/bin/false")


@dataclass(frozen=True)
class LabUser:
    """One lab account as the kernel sees it."""

    name: str
    uid: int
    gid: int  # primary group
    groups: tuple[int, ...]  # supplementary groups

    def setpriv(self) -> list[str]:
        """The argv prefix that runs a command as this user, with its groups from /etc/group."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]


def missing_tools() -> list[str]:
    """The account and privilege tools this machine lacks (the lab needs all of them)."""
    return [tool for tool in _TOOLS if shutil.which(tool) is None]


@contextmanager
def _serialised(lock_path: str) -> Iterator[None]:
    """One lab set-up at a time on this machine (two pytest runs may start together)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run(argv: list[str]) -> None:
    # useradd and friends take /etc/passwd.lock and fail at once if another
    # tool holds it: retry a little before calling it a failure.
    for attempt in range(20):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr.lower() or attempt == 19:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        time.sleep(0.2)


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run(["groupadd", "--system", name])
    return grp.getgrnam(name).gr_gid


def _ensure_user(name: str, primary: str, extra: tuple[str, ...]) -> None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", _NOLOGIN]
        argv += ["--gid", primary]
        if extra:
            argv += ["--groups", ",".join(extra)]
        _run([*argv, name])
        return
    if entry.pw_gid != grp.getgrnam(primary).gr_gid:
        _run(["usermod", "--gid", primary, name])
    for group in extra:
        if name not in grp.getgrnam(group).gr_mem:
            _run(["usermod", "--append", "--groups", group, name])


def _describe(name: str) -> LabUser:
    entry = pwd.getpwnam(name)
    groups = tuple(sorted(os.getgrouplist(name, entry.pw_gid)))
    return LabUser(name, entry.pw_uid, entry.pw_gid, groups)


def ensure_accounts(lock_path: str) -> dict[str, LabUser]:
    """Create (or check and repair) the lab's group and users; needs root.  Returns them by name."""
    with _serialised(lock_path):
        _ensure_group(GROUP)
        for name, (primary, extra) in _PLAN.items():
            if primary != GROUP:
                _ensure_group(primary)
            _ensure_user(name, primary, extra)
        users = {name: _describe(name) for name in _PLAN}
    share = grp.getgrnam(GROUP).gr_gid
    for user in users.values():
        if share not in user.groups or user.uid == 0:
            raise RuntimeError(f"lab account {user.name} is not what the lab needs: {user}")
    if users[WEB_B].gid == share or users[WEB_A].gid != share:
        raise RuntimeError("lab accounts: fss-weba must have fss-share as its primary group, fss-webb must not")
    return users
