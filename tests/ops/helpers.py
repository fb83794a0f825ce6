"""Helpers for the operator tools' tests (CLI, doctor, reports): the command as a process, as another user.

The fixtures that create real users and a directory they can reach are in
this folder's conftest.py; the mounts that refuse writes in the root one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.support import REPO
from tests.support.fixtures import unavailable


def fssession(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    user: int | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fssession ARGS`` as an operator would (a fresh process, stdin not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "fssession", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO if user is None else "/",
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        user=user,
    )


@dataclass
class LocalUsers:
    """Real local accounts for one test: web users sharing ``group``, and an outsider."""

    group: str
    gid: int
    web1: str  # primary group: the shared one
    web2: str  # primary group: its own; a member of the shared one
    outsider: str  # not in the shared group

    def uid(self, name: str) -> int:
        """The account's uid."""
        import pwd

        return pwd.getpwnam(name).pw_uid


def _site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _interpreter(uid: int) -> tuple[str, str]:
    """(python, PYTHONPATH) that *uid* can run fssession with."""
    python = sys.executable
    path = [str(REPO)]
    try:
        usable = subprocess.run([python, "-c", "pass"], capture_output=True, **_identity(uid)).returncode == 0
    except PermissionError:
        usable = False
    if not usable:
        # This interpreter lives where only root can read (e.g. /root/.pyenv):
        # the system's, of the same version, with this environment's packages.
        python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        if not os.access(python, os.X_OK):
            unavailable(f"no Python {sys.version_info.major}.{sys.version_info.minor} that uid {uid} can run")
        path += _site_packages()
    return python, ":".join(path)


def python_as(
    uid: int, *args: str, input: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` as *uid*, with fssession importable."""
    python, path = _interpreter(uid)
    return subprocess.run(
        [python, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env=dict(os.environ, PYTHONPATH=path, **(env or {})),
        **_identity(uid),
    )


def _identity(uid: int) -> dict[str, Any]:
    """subprocess's user, group and extra_groups for *uid* (a login would set all three)."""
    import pwd

    entry = pwd.getpwuid(uid)
    return {"user": uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}


def root_with_python_for(
    uid: int, *args: str, input: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fssession ARGS`` as root, with an interpreter *uid* can also run (root switches to it)."""
    python, path = _interpreter(uid)
    return subprocess.run(
        [python, "-m", "fssession", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env=dict(os.environ, PYTHONPATH=path, **(env or {})),
    )


def as_user(
    uid: int, *args: str, input: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fssession ARGS`` as *uid*."""
    return python_as(uid, "-m", "fssession", *args, input=input, env=env)
