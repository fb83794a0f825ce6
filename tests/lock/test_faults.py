"""The lock on filesystems that refuse: full (no inodes), read-only.  StorageError, never a hang or a spin."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fssession import LockTimeout, MkdirLock, StorageError

REQUIRE = os.environ.get("FSSESSION_REQUIRE_SHARED") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(reason)
    pytest.skip(reason)


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        _unavailable(f"cannot mount ({' '.join(args)}): {r.stderr.strip()}")


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for a handful of inodes, then filled."""
    if os.geteuid() != 0:
        _unavailable("mounting a tiny tmpfs needs root")
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


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        _unavailable("a read-only bind mount needs root")
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    _mount(["--bind", str(src), str(mnt)])
    try:
        _mount(["-o", "remount,bind,ro", str(mnt)])
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_filesystem_is_a_storage_error(full_fs: Path) -> None:
    with pytest.raises(StorageError) as info:
        MkdirLock(full_fs / "s.lock").acquire(timeout=1)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(full_fs) == [], "nothing half-made is left"


def test_read_only_filesystem_is_a_storage_error(readonly_fs: Path) -> None:
    with pytest.raises(StorageError) as info:
        MkdirLock(readonly_fs / "s.lock").acquire(timeout=1)
    assert info.value.errno == errno.EROFS


def test_mount_that_says_eexist_for_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sshfs on a full or read-only export answers mkdir with EEXIST: report it, do not spin."""

    def lying_mkdir(path: object, mode: int = 0o777, **kw: object) -> None:
        raise FileExistsError(errno.EEXIST, "File exists", path)

    monkeypatch.setattr(os, "mkdir", lying_mkdir)
    with pytest.raises(StorageError) as info:
        MkdirLock(tmp_path / "s.lock").acquire(timeout=1)
    assert not isinstance(info.value, LockTimeout)
