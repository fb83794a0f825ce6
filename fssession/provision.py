"""Creating a store on purpose, owned by the users who will use it (``fssession init``).

A store created as a side effect by the wrong user (a root ``clearsessions``,
a one-off script) ends up ``root:root 0700`` with a root-only naming key,
and every login then fails.  :func:`init_store` creates the directory and
its naming key with the owner, group and mode asked for: the directory
gets *mode* (``2770`` for users sharing a group: the setgid bit makes
everything created inside take the store's group), the key is read-only and
readable by whoever the directory's mode lets in.  Ownership is set through
descriptors (``fchown`` on the directory held open and on the key opened
without following), never by a path someone could swap.

An existing store is left alone when it already is as asked; one that
differs, or a non-empty directory that is not a store, is refused unless
*force* (then the directory, its key and its buckets are set as asked;
session files keep theirs).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from ._fs import O_READ, Dir
from .errors import SessionError, StorageError
from .layout import BUCKETS, NAMING_KEY_FILE, StoreLayout

__all__ = ["InitRefused", "InitResult", "init_store", "key_mode_for"]


class InitRefused(SessionError, ValueError):
    """The store was not (re)initialised: it exists and differs, or the request is unsafe."""


@dataclass
class InitResult:
    """What :func:`init_store` did."""

    path: str
    uid: int
    gid: int
    mode: int
    key_mode: int
    created: bool = False  # a naming key was written (a new store)
    changed: list[str] = field(default_factory=list)  # what was set on existing entries


def key_mode_for(mode: int) -> int:
    """The naming key's mode for a store directory with *mode*: read-only, readable by whoever may enter."""
    key = 0o400
    if mode & 0o050:
        key |= 0o040
    if mode & 0o005:
        key |= 0o004
    return key


def _differences(st: os.stat_result, uid: int, gid: int, mode: int, what: str) -> list[str]:
    found = []
    if st.st_uid != uid:
        found.append(f"{what} owner {st.st_uid} (wanted {uid})")
    if st.st_gid != gid:
        found.append(f"{what} group {st.st_gid} (wanted {gid})")
    if stat.S_IMODE(st.st_mode) != mode:
        found.append(f"{what} mode {stat.S_IMODE(st.st_mode):04o} (wanted {mode:04o})")
    return found


def _set(fd: int, st: os.stat_result, uid: int, gid: int, mode: int) -> bool:
    """Owner first (a chown may clear setgid), then mode; True if anything changed."""
    changed = False
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
        changed = True
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
        changed = True
    return changed


def _set_key(root: Dir, uid: int, gid: int, mode: int) -> bool:
    """Set the key's owner and mode through a descriptor: a regular file with one link, never followed."""
    fd = os.open(NAMING_KEY_FILE, O_READ, dir_fd=root.fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise InitRefused(f"{root.path(NAMING_KEY_FILE)} is not a regular file with a single link: refusing")
        return _set(fd, st, uid, gid, mode)
    finally:
        os.close(fd)


def _set_buckets(root: Dir, uid: int, gid: int, mode: int) -> int:
    changed = 0
    for name in BUCKETS:
        try:
            bucket = root.opendir(name)
        except FileNotFoundError:
            continue
        with bucket:
            changed += _set(bucket.fd, bucket.stat(), uid, gid, mode)
    return changed


def _existing(path: str) -> tuple[os.stat_result, os.stat_result | None, bool] | None:
    """(root's stat, the key's stat or None, whether the root holds anything), or None if there is no root."""
    try:
        root = Dir.open_path(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError.from_oserror(exc, path) from exc
    with root:
        try:
            key: os.stat_result | None = root.lstat(NAMING_KEY_FILE)
        except FileNotFoundError:
            key = None
        return root.stat(), key, bool(root.listdir())


def _check_existing(path: str, uid: int, gid: int, mode: int, key_mode: int, force: bool) -> tuple[bool, bool]:
    """(already as asked, has a key); raises InitRefused where an existing store differs and not *force*."""
    found = _existing(path)
    if found is None:
        return False, False
    root_st, key_st, occupied = found
    if key_st is None:
        if occupied and not force:
            raise InitRefused(f"{path} is not empty and is not an fssession store (--force to make it one)")
        return False, False
    differences = _differences(root_st, uid, gid, mode, "directory") + _differences(
        key_st, uid, gid, key_mode, "naming key"
    )
    if differences and not force:
        raise InitRefused(f"{path} is a store already, set up differently: {'; '.join(differences)} (--force)")
    return not differences, True


def init_store(
    path: str | os.PathLike[str],
    *,
    owner: int | None = None,
    group: int | None = None,
    mode: int = 0o700,
    force: bool = False,
) -> InitResult:
    """Create (or, with *force*, reset) the store at *path* for *owner* and *group* with *mode*.

    Run as root, *owner* must be given (a store root owns is the mistake this
    prevents; pass 0 to mean it).  Otherwise it defaults to this user, and
    *group* to this user's primary group.
    """
    text = os.fspath(path)
    if owner is None and os.geteuid() == 0:
        raise InitRefused("run as root, say which user the store belongs to (--owner USER: the web server's user)")
    if not 0 <= mode <= 0o7777:
        raise InitRefused(f"not a directory mode: {mode:o}")
    uid = os.geteuid() if owner is None else owner
    gid = os.getegid() if group is None else group
    result = InitResult(text, uid, gid, mode, key_mode_for(mode))
    already, has_key = _check_existing(text, uid, gid, mode, result.key_mode, force)
    if already:
        return result
    layout = StoreLayout(text, create=True, dir_mode=mode, file_mode=result.key_mode)
    try:
        result.created = not has_key
        _apply(layout.root, result, force)
    finally:
        layout.close()
    return result


def _apply(root: Dir, result: InitResult, force: bool) -> None:
    try:
        if _set(root.fd, root.stat(), result.uid, result.gid, result.mode):
            result.changed.append("directory")
        if _set_key(root, result.uid, result.gid, result.key_mode):
            result.changed.append("naming key")
        if force:
            buckets = _set_buckets(root, result.uid, result.gid, result.mode)
            if buckets:
                result.changed.append(f"{buckets} buckets")
    except PermissionError as exc:
        raise InitRefused(
            f"cannot give {result.path} to uid {result.uid}, gid {result.gid}: only root can give a store to another "
            "user or to a group this user is not in"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise StorageError(errno.EROFS, "not writable", result.path) from exc
        raise
