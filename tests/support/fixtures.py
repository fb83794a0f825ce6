"""Pytest pieces several folders share: skipping what cannot start, and filesystems that refuse writes.

The fixtures (``readonly_fs``, ``full_fs``, ``unwritable_dir``) are registered
by the root conftest, so any test can ask for them by name.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.fsbed import REQUIRE_ENV, require_shared


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason; under FSSESSION_REQUIRE_SHARED=1 (CI, run as root) fail instead, as the testbeds do."""
    if require_shared():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1, so this is a failure]", pytrace=False)
    pytest.skip(reason)


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {r.stderr.strip()}")


def _read_only_mount(src: Path, mnt: Path) -> Iterator[Path]:
    """Bind *src* on *mnt* read-only for the test (root only); unmounted afterwards."""
    _mount(["--bind", str(src), str(mnt)])
    try:
        _mount(["-o", "remount,bind,ro", str(mnt)])
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount of an empty directory."""
    if os.geteuid() != 0:
        unavailable("a read-only bind mount needs root")
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    yield from _read_only_mount(src, mnt)


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write: mode 0500, or, for root (who ignores modes), a read-only mount."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o500)
        yield target
        target.chmod(0o700)
        return
    src = tmp_path / "src"
    src.mkdir()
    yield from _read_only_mount(src, target)


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
        while True:  # use up every inode
            try:
                (mnt / f"filler{n}").mkdir()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
            n += 1
        yield mnt / "sessions"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
