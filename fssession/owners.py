"""The owner index: which sessions belong to which user, so that "log out everywhere" works on files.

::

    PATH/.fssession-owners/ab/<tag>/          one directory per owner (tag: 32 hex, a keyed hash of the owner)
    PATH/.fssession-owners/ab/<tag>/<N>       an entry: a symlink named by the session's file name

The tag is a keyed BLAKE2b of the owner's name under the store's naming key,
so a listing reveals no user names; the session's header carries the same
tag, signed, so an entry is trusted only when the file it names agrees.

Consistency without a lock on the index (NOTES.md, "The owner index"):

* a session gets its entry *before* it exists (create, rotate, a change of
  owner), and loses it *after* it is gone (delete, the reaper): an entry may
  point at nothing for a while (a crash between the two steps; the reaper
  prunes those), but a live session is never missing from its owner's
  directory;
* :meth:`OwnerIndex.end_sessions` deletes each listed session, then its
  entry, and lists again until nothing is left but the session to keep; a
  create checks, after its file is in place, that its entry is still there,
  and if ``end_sessions`` removed it meanwhile, deletes the session it just
  made.  So every session whose first step (its entry) came before
  ``end_sessions``' last listing is ended; a login that starts later is a
  login after the call.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._fs import Dir
from .errors import StorageError, TamperedSession
from .fileformat import HEADER_SIZE, NO_OWNER, read_header
from .layout import OWNERS_DIR

__all__ = ["OWNERS_DIR", "OwnerIndex", "SessionInfo", "owner_tag", "prune"]

_TARGET = "fssession-owner"
_TAG_BYTES = 16


def owner_tag(owner: str, naming_key: bytes) -> bytes:
    """The 16-byte tag of *owner* (keyed: without the store's naming key it says nothing)."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("an owner is a non-empty string (a user id)")
    return hashlib.blake2b(owner.encode(), key=naming_key[:64], person=b"fss-owner", digest_size=_TAG_BYTES).digest()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What ``sessions_of`` tells about one session: never its id (a bearer credential)."""

    handle: str  # a short, non-secret name for this session (to end just this one)
    created: float
    last_seen: float
    expires: float  # inf: no expiry


class OwnerIndex:
    """The owner directories of one store (built by the store; its methods take file names, not ids)."""

    def __init__(self, root: Dir, naming_key: bytes, dir_mode: int) -> None:
        self._root = root
        self._key = naming_key
        self._mode = dir_mode

    def tag(self, owner: str) -> bytes:
        """The tag of *owner* under this store's key."""
        return owner_tag(owner, self._key)

    # ------------------------------------------------------------ directories
    def _dir(self, tag: bytes, *, create: bool) -> Dir | None:
        hexed = tag.hex()
        names = (OWNERS_DIR, hexed[:2], hexed)
        current = self._root
        opened: list[Dir] = []
        try:
            for name in names:
                try:
                    nxt = current.opendir(name)
                except FileNotFoundError:
                    if not create:
                        return None
                    with contextlib.suppress(FileExistsError):  # another node made it first
                        current.mkdir(name, self._mode)
                    nxt = current.opendir(name)
                opened.append(nxt)
                current = nxt
        except OSError as exc:
            for d in opened:
                d.close()
            raise StorageError.from_oserror(exc, self._root.path(OWNERS_DIR)) from exc
        for d in opened[:-1]:
            d.close()
        return opened[-1]

    # ------------------------------------------------------------ entries
    def add(self, tag: bytes, name: str) -> None:
        """Give session file *name* an entry under *tag* (before the session exists)."""
        directory = self._dir(tag, create=True)
        assert directory is not None
        with directory:
            try:
                directory.symlink(_TARGET, name)
            except FileExistsError:
                pass  # already there (a retried create, or the same owner again)
            except OSError as exc:
                raise StorageError.from_oserror(exc, directory.path(name)) from exc

    def has(self, tag: bytes, name: str) -> bool:
        """Whether *name*'s entry is (still) there; a create asks this after its file is in place."""
        directory = self._dir(tag, create=False)
        if directory is None:
            return False
        with directory:
            return directory.exists(name) is not False

    def remove(self, tag: bytes, name: str) -> None:
        """Drop *name*'s entry (after the session is gone)."""
        if tag == NO_OWNER:
            return
        directory = self._dir(tag, create=False)
        if directory is not None:
            with directory:
                directory.unlink_quietly(name)

    def names(self, tag: bytes) -> list[str]:
        """The session file names listed under *tag*."""
        directory = self._dir(tag, create=False)
        if directory is None:
            return []
        with directory:
            return [n for n in directory.listdir() if len(n) == 64]

    # ------------------------------------------------------------ queries
    def sessions(self, tag: bytes, bucket_of: Callable[[str], Dir | None], now: float) -> Iterator[SessionInfo]:
        """The live sessions listed under *tag* whose header carries the same tag (metadata only)."""
        for name in self.names(tag):
            bucket = bucket_of(name)
            if bucket is None:
                continue
            try:
                header = read_header(bucket.read_head(name, HEADER_SIZE))
                mtime = bucket.lstat(name).st_mtime
            except (OSError, TamperedSession):
                continue  # gone since it was listed, or not a session
            if header.owner_tag != tag or header.expired(now, mtime):
                continue
            yield SessionInfo(name[:16], header.created, mtime, header.expires(mtime))


def prune(root: Dir, session_exists: Callable[[str], bool | None], now: float, min_age: float) -> int:
    """The reaper's part: remove entries whose session is gone, once older than *min_age*; returns how many."""
    try:
        top = root.opendir(OWNERS_DIR)
    except FileNotFoundError:
        return 0
    removed = 0
    with top:
        for shard in top.listdir():
            removed += _prune_shard(top, shard, session_exists, now, min_age)
    return removed


def _prune_shard(top: Dir, shard: str, session_exists: Callable[[str], bool | None], now: float, min_age: float) -> int:
    removed = 0
    try:
        shard_dir = top.opendir(shard)
    except OSError:
        return 0  # not a directory (something planted): left alone
    with shard_dir:
        for owner in shard_dir.listdir():
            try:
                owner_dir = shard_dir.opendir(owner)
            except OSError:
                continue
            with owner_dir:
                for name in owner_dir.listdir():
                    if len(name) != 64 or session_exists(name) is not False:
                        continue
                    try:
                        st = owner_dir.lstat(name)
                    except OSError:
                        continue
                    if now - max(st.st_mtime, st.st_ctime) > min_age and owner_dir.unlink_quietly(name):
                        removed += 1
                if not owner_dir.listdir():
                    with contextlib.suppress(OSError):  # a login may have just added an entry
                        shard_dir.rmdir(owner)
    return removed
