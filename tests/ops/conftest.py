"""Fixtures for the operator tools' tests: real local users, and a directory they can reach.

``local_users`` creates real accounts with ``useradd`` (root only; removed
afterwards): two web users, one whose primary group is the shared group and
one who is only a member of it, and an outsider.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.helpers import LocalUsers
from tests.support.fixtures import unavailable


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
