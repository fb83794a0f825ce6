"""Victim trees: files outside the store that an attack tries to get fssession to change, and their snapshots.

A victim tree belongs to someone the attacker cannot write as (root, or the
web user whose process is tricked), and looks like what an operator has
lying around, including another application's fssession store, so that
every clean-up rule of the reaper and the lock finds something to act on if
it is ever pointed there::

    /tmp/fss-victim-XXXX/            the tree's root
        secret                       0600 file: the target of file swaps
        tree/                        the target of directory swaps
            keep.txt  hello  renamed  sub/deep.txt
            <64 hex>                 an expired session of another store
            <64 hex>.tmp-0           an old temp file
            <64 hex>.lock/x          a lock directory without an owner
            .fssession-trash-bait/x  "trash"
            old.stage-<32 hex>/      an abandoned lock stage

:meth:`Victim.assert_untouched` compares everything but times, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Victim", "make_victim"]

_OLD = time.time() - 30 * 86400
BAIT_NAME = hashlib.sha256(b"fssession victim bait").hexdigest()


def _write(path: Path, data: bytes, mode: int = 0o644, old: bool = False) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    if old:
        os.utime(path, (_OLD, _OLD))


def _expired_session(into: Path) -> None:
    """A genuine session file of another store, expired long ago, copied under *into*."""
    from fssession import SessionStore

    other = Path(tempfile.mkdtemp(prefix="fss-victim-store-"))
    try:
        store = SessionStore(other, "victim-store-key-0123456789", max_age=60, clock=lambda: _OLD)
        store.create({"victim": "data"})
        files = [p for p in other.glob("??/*") if len(p.name) == 64 and p.is_file()]
        assert len(files) == 1, files
        shutil.copy2(files[0], into / BAIT_NAME)
    finally:
        shutil.rmtree(other)


@dataclass
class Victim:
    """A victim tree and its snapshot taken right after it was made."""

    root: Path
    uid: int
    gid: int
    before: dict[str, tuple[object, ...]] = field(default_factory=dict)

    @property
    def secret(self) -> Path:
        """The victim file (the target of swapped files)."""
        return self.root / "secret"

    @property
    def tree(self) -> Path:
        """The victim directory (the target of swapped directories)."""
        return self.root / "tree"

    def names(self) -> list[str]:
        """The names directly in ``tree/``: what a lure directory imitates."""
        return sorted(os.listdir(self.tree))

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """Every entry under the root: type, mode, owner, size and content (or link target); no times."""
        shot: dict[str, tuple[object, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [".", *dirnames, *filenames]:
                path = os.path.normpath(os.path.join(dirpath, name))
                st = os.lstat(path)
                extra: object = None
                if stat.S_ISREG(st.st_mode):
                    extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    extra = os.readlink(path)
                rel = os.path.relpath(path, self.root)
                shot[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, extra)
        return shot

    def assert_untouched(self) -> None:
        """Fail, listing the differences, unless the tree is exactly as it was made."""
        now = self.snapshot()
        gone = sorted(set(self.before) - set(now))
        added = sorted(set(now) - set(self.before))
        changed = sorted(k for k in set(now) & set(self.before) if now[k] != self.before[k])
        assert not (gone or added or changed), (
            f"victim tree {self.root} was changed: removed {gone}, added {added}, changed {changed}"
        )

    def remove(self) -> None:
        """Remove the tree (at the end of a test)."""
        shutil.rmtree(self.root, ignore_errors=True)


def make_victim(uid: int = 0, gid: int = 0) -> Victim:
    """A fresh victim tree owned by *uid*:*gid* (root by default), private to its owner."""
    root = Path(tempfile.mkdtemp(prefix="fss-victim-", dir="/tmp"))
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    _write(root / "secret", b"root-only secret: must never change\n", 0o600)
    _write(tree / "keep.txt", b"keep me\n")
    _write(tree / "hello", b"not the doctor's hello\n")
    _write(tree / "renamed", b"not the doctor's file\n")
    _write(tree / "sub" / "deep.txt", b"deep\n")
    _expired_session(tree)
    _write(tree / f"{BAIT_NAME}.tmp-0", b"an old temp file\n", old=True)
    for name in (f"{BAIT_NAME}.lock", ".fssession-trash-bait", f"old.stage-{'0' * 32}"):
        (tree / name).mkdir()
        _write(tree / name / "x", b"inside\n")
        os.utime(tree / name, (_OLD, _OLD))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid)
    os.chown(root, uid, gid)
    os.chmod(root, 0o700)
    victim = Victim(root, uid, gid)
    victim.before = victim.snapshot()
    return victim
