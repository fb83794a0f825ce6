"""The lock on filesystems that refuse: full (no inodes), read-only.  StorageError, never a hang or a spin."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fssession import LockTimeout, MkdirLock, StorageError


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
