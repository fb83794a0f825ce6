"""Fixtures for the operator tools' tests (CLI, doctor, reports): the command as a process, real users, odd mounts.

``LocalUsers`` creates real accounts with ``useradd`` (root only; removed
afterwards): two web users, one whose primary group is the shared group and
one who is only a member of it, and an outsider.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fsbed import require_shared
from tests.support import REPO

KEY = "test-secret-key-0123456789"


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


def unavailable(reason: str) -> None:
    """Skip (fail under FSSESSION_REQUIRE_SHARED=1, as CI runs the suite as root)."""
    if require_shared():
        pytest.fail(reason)
    pytest.skip(reason)


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {r.stderr.strip()}")


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount of an empty directory."""
    if os.geteuid() != 0:
        unavailable("a read-only bind mount needs root")
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    _mount(["--bind", str(src), str(mnt)])
    try:
        _mount(["-o", "remount,bind,ro", str(mnt)])
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs whose inodes are all used up; yields an (empty) directory on it."""
    if os.geteuid() != 0:
        unavailable("mounting a tiny tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=64k,nr_inodes=16", "fss-full", str(mnt)])
    try:
        (mnt / "sessions").mkdir()
        n = 0
        while True:
            try:
                (mnt / f"filler{n}").mkdir()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
            n += 1
        yield mnt / "sessions"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


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


def _run(*argv: str) -> None:
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")


@pytest.fixture
def local_users() -> Iterator[LocalUsers]:
    """Create the accounts (root only), remove them afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates real users with useradd")
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        unavailable("useradd/groupadd not installed")
    tag = secrets.token_hex(3)
    group, web1, web2, outsider = f"fsg{tag}", f"fsa{tag}", f"fsb{tag}", f"fsc{tag}"
    created: list[tuple[str, str]] = []
    try:
        _run("groupadd", group)
        created.append(("groupdel", group))
        _run("useradd", "-M", "-N", "-g", group, "-s", "/usr/sbin/nologin", web1)
        created.append(("userdel", web1))
        _run("useradd", "-M", "-U", "-G", group, "-s", "/usr/sbin/nologin", web2)
        created.append(("userdel", web2))
        _run("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", outsider)
        created.append(("userdel", outsider))
        import grp

        yield LocalUsers(group, grp.getgrnam(group).gr_gid, web1, web2, outsider)
    finally:
        for command, name in reversed(created):
            subprocess.run([command, name], capture_output=True)


def _site_packages() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory other local users can reach (pytest's tmp_path is private to root)."""
    path = Path(f"/tmp/fss-ops-{secrets.token_hex(4)}")
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
