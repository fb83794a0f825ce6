"""The filesystem layer: every operation on a store goes through a directory descriptor held here.

A :class:`Dir` is an open directory (``O_DIRECTORY|O_NOFOLLOW``).  Its methods
take one *name* inside it, never a path, and use the ``*at()`` system calls
relative to the descriptor: whatever someone renames or swaps in the store,
fssession acts on the directory it opened and never walks a path it checked
a moment ago.  Nothing is followed (``O_NOFOLLOW``, ``follow_symlinks=False``),
nothing blocks (files are opened ``O_NONBLOCK``: a planted FIFO reads as "not
a regular file"), nothing is read past a bound.

The errno classes of the filesystems fssession runs on (NFS, GlusterFS,
sshfs, local disks) live here too, once.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from ._identity import process_umask

__all__ = [
    "AMBIGUOUS",
    "FATAL",
    "OCCUPIED",
    "STALE_HANDLE",
    "Dir",
    "NotRegular",
    "TooLarge",
    "boot_clock",
    "rename_exact",
]

log = logging.getLogger("fssession.fs")

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# rename onto an occupied name: POSIX says EEXIST or ENOTEMPTY; sshfs (SFTP v3
# has one generic failure code) says EPERM.
OCCUPIED = frozenset(
    {errno.EEXIST, errno.ENOTEMPTY, errno.EPERM, errno.EACCES, errno.EBUSY, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}
)
# The operation may have happened although an error came back (lost reply,
# retransmitted request, replaced file handle): look before deciding.
AMBIGUOUS = frozenset({errno.ENOENT, errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.EINTR})
# The storage's failures, not a lock's or a session's: report them at once.
FATAL = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG})
# A handle to a version another host replaced: NFS and GlusterFS say ESTALE;
# GlusterFS also says EBADFD from fstat.
STALE_HANDLE = frozenset({errno.ESTALE, errno.EBADFD})
# What removing a leftover may meet when others got there first.
_GONE = frozenset({errno.ENOENT, errno.ESTALE})


def boot_clock() -> float:
    """Seconds on a clock that keeps counting while the host is suspended (leases count on it)."""
    return time.clock_gettime(_BOOTTIME)


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


class NotRegular(OSError):
    """An entry that should be a regular file is something else (symlink, FIFO, device, directory)."""

    def __init__(self, name: str, mode: int) -> None:
        super().__init__(errno.EINVAL, f"not a regular file (mode {stat.filemode(mode)})", name)
        self.mode = mode


class TooLarge(OSError):
    """A file is larger than the reader's bound; nothing past the bound was read."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"{size} bytes, more than the {limit} allowed", name)
        self.size = size
        self.limit = limit


def _check_name(name: str) -> str:
    # Every method acts on ONE entry of its directory: a slash would make the
    # kernel walk (and follow) intermediate components.
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"not a single directory entry name: {name!r}")
    return name


class Dir:
    """An open directory; every method acts on one name inside it, never following a link.

    ``label`` is only for messages (the path it was opened as).  Close it, or
    use it as a context manager.
    """

    __slots__ = ("fd", "label")

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label

    # ----------------------------------------------------------- opening
    @classmethod
    def open_path(cls, path: str | os.PathLike[str]) -> Dir:
        """Open a directory by its configured path (the operator's: symlinks on the way are theirs)."""
        text = os.fspath(path)
        return cls(os.open(text, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), text)

    def opendir(self, name: str) -> Dir:
        """Open the subdirectory *name* (``ELOOP``/``ENOTDIR`` if it is a symlink or not a directory)."""
        return Dir(os.open(_check_name(name), O_DIR, dir_fd=self.fd), f"{self.label}/{name}")

    def reopen(self) -> Dir:
        """A fresh descriptor of this directory (for listing: never share a listing offset)."""
        return Dir(os.open(".", O_DIR, dir_fd=self.fd), self.label)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError as exc:  # a directory descriptor holds nothing to flush
                log.debug("closing %s: %s", self.label, exc)

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def path(self, name: str) -> str:
        """A path for messages only (never used to reach the file)."""
        return f"{self.label}/{name}"

    # ----------------------------------------------------------- looking
    def stat(self) -> os.stat_result:
        """``fstat`` of the directory itself."""
        return os.fstat(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        """``fstatat`` of *name*, not following a symlink."""
        return os.stat(_check_name(name), dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name: str) -> bool | None:
        """True or False when the filesystem says so; None when it cannot tell (EIO, ESTALE...)."""
        try:
            self.lstat(name)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return None
        return True

    def listdir(self) -> list[str]:
        """The names in the directory, through a fresh descriptor."""
        with self.reopen() as fresh:
            return os.listdir(fresh.fd)

    @contextmanager
    def entries(self) -> Iterator[Iterator[os.DirEntry[str]]]:
        """Stream the directory's entries (``DirEntry.stat`` is an ``fstatat`` on the fresh descriptor)."""
        with self.reopen() as fresh, os.scandir(fresh.fd) as it:
            yield it

    def readlink(self, name: str) -> str:
        """The target of the symlink *name* (read, never followed)."""
        return os.readlink(_check_name(name), dir_fd=self.fd)

    # ----------------------------------------------------------- reading
    def read(self, name: str, limit: int) -> tuple[bytes, os.stat_result]:
        """The whole regular file *name* and its ``fstat``, reading at most *limit* bytes.

        ``NotRegular`` for anything else (a FIFO opens without blocking and is
        refused here), ``TooLarge`` beyond *limit*.  One ``read`` normally
        suffices; when the file turns out longer than ``fstat`` said (sshfs
        can serve one version's size with another's contents), the rest is
        read, still within *limit*.
        """
        fd = os.open(_check_name(name), O_READ, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular(self.path(name), st.st_mode)
            if st.st_size > limit:
                raise TooLarge(self.path(name), st.st_size, limit)
            blob = os.read(fd, st.st_size + 1)
            if len(blob) > st.st_size:
                blob = _read_rest(fd, blob, limit, self.path(name))
        finally:
            _close_read_only(fd)
        return blob, st

    def read_head(self, name: str, size: int) -> bytes:
        """The first *size* bytes of *name* (for headers; no ``fstat``).

        A FIFO gives nothing (``O_NONBLOCK``), a directory ``EISDIR``: the
        caller's parser refuses what is not a session.
        """
        fd = os.open(_check_name(name), O_READ, dir_fd=self.fd)
        try:
            return os.read(fd, size)
        except BlockingIOError:
            return b""  # a FIFO with a writer but nothing written
        finally:
            _close_read_only(fd)

    # ----------------------------------------------------------- writing
    def write_new(
        self,
        prefix: str,
        data: bytes,
        mode: int,
        *,
        chmod: bool = False,
        times: tuple[float, float] | None = None,
        fsync: bool = False,
    ) -> str:
        """Write *data* to a new file ``<prefix><16 random hex>`` (``O_EXCL``) and return its name.

        ``chmod`` sets *mode* exactly (the umask may have taken bits away),
        ``times`` sets atime and mtime before the file becomes visible
        anywhere else.  On any failure the file is removed and the error
        raised.
        """
        name, fd = self._create(prefix, mode)
        try:
            try:
                if chmod:
                    os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if times is not None:
                    os.utime(fd, times)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.unlink_quietly(name)
            raise
        return name

    def _create(self, prefix: str, mode: int) -> tuple[str, int]:
        for _ in range(3):
            name = _check_name(f"{prefix}{secrets.token_hex(8)}")
            try:
                return name, os.open(name, O_NEW, mode, dir_fd=self.fd)
            except FileExistsError:
                continue  # 64 random bits taken: a lost reply, or a mount that says EEXIST for everything
        raise OSError(errno.EIO, "the filesystem refuses to create files (says they exist)", self.path(prefix))

    def mkdir(self, name: str, mode: int) -> None:
        """Create the directory *name* with exactly *mode*, keeping the setgid bit it inherited.

        ``mkdir`` applies the umask, which would strip the group bits a store
        shared by several users of one group needs; the new directory is then
        opened (never following) and ``fchmod``-ed on its own descriptor.
        """
        os.mkdir(_check_name(name), mode, dir_fd=self.fd)
        if not mode & process_umask() and not mode & ~0o1777:
            return  # nothing taken away; an inherited setgid bit stays by itself
        with self.opendir(name) as made:
            have = made.stat().st_mode
            want = mode | (have & stat.S_ISGID)
            if stat.S_IMODE(have) != want:
                os.fchmod(made.fd, want)

    def rename(self, src: str, dst: str, dst_dir: Dir | None = None) -> None:
        """``renameat`` of *src* here to *dst* here (or in *dst_dir*)."""
        target = self if dst_dir is None else dst_dir
        os.rename(_check_name(src), _check_name(dst), src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def link(self, src: str, dst: str) -> None:
        """A hard link *dst* to *src* (never following *src* if it is a symlink); fails if *dst* exists."""
        os.link(_check_name(src), _check_name(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def symlink(self, target: str, name: str) -> None:
        """Create the symlink *name* (its target is a label, never followed by fssession)."""
        os.symlink(target, _check_name(name), dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove the entry *name* (not a directory)."""
        os.unlink(_check_name(name), dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        """Remove the empty directory *name* (``ENOTDIR`` if it is a symlink: nothing is followed)."""
        os.rmdir(_check_name(name), dir_fd=self.fd)

    def utime(self, name: str, times: tuple[float, float] | None = None) -> None:
        """Set atime and mtime of *name* itself (a symlink's own, never its target's).

        ``None`` stamps the current time, which the file server takes from
        its own clock, and which needs only write permission (explicit times
        need ownership: a group-shared store's other users could not).
        """
        os.utime(_check_name(name), times, dir_fd=self.fd, follow_symlinks=False)

    def fsync(self) -> None:
        """``fsync`` the directory (some filesystems cannot: that is not an error)."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise

    def unlink_quietly(self, name: str) -> bool:
        """Remove *name* if it is there; True if this call removed it.  Unexpected errors are logged."""
        try:
            self.unlink(name)
        except OSError as exc:
            if exc.errno not in _GONE:
                log.warning("could not remove %s: %s", self.path(name), exc)
            return False
        return True

    def remove_tree(self, name: str, max_depth: int = 4) -> int:
        """Remove the directory *name* and what is inside it, walking descriptors; returns entries removed.

        Each level is opened with ``O_NOFOLLOW`` and must be on the same
        device: a symlink swapped in anywhere is removed as a symlink (or
        refused), never followed.  Deeper than *max_depth* is left alone.
        Raises OSError only for the top-level entry itself.
        """
        try:
            child = self.opendir(name)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                self.unlink(name)  # a symlink or file where a directory was: just the entry
                return 1
            raise
        removed = 0
        with child:
            if child.stat().st_dev != self.stat().st_dev:
                raise OSError(errno.EXDEV, "refusing to remove a directory on another device", self.path(name))
            removed += child._empty(max_depth - 1)
        self.rmdir(name)
        return removed + 1

    def _empty(self, depth: int) -> int:
        removed = 0
        for entry in self.listdir():
            try:
                self.unlink(entry)
                removed += 1
                continue
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.EPERM):
                    if exc.errno not in _GONE:
                        log.warning("could not remove %s: %s", self.path(entry), exc)
                    continue
            if depth <= 0:
                log.warning("not removing %s: nested too deep", self.path(entry))
                continue
            try:
                removed += self.remove_tree(entry, depth)
            except OSError as exc:
                if exc.errno not in _GONE:
                    log.warning("could not remove %s: %s", self.path(entry), exc)
        return removed

    def __repr__(self) -> str:
        return f"Dir({self.label!r}, fd={self.fd})"


def _read_rest(fd: int, head: bytes, limit: int, label: str) -> bytes:
    chunks, total = [head], len(head)
    while total <= limit:
        chunk = os.read(fd, limit + 1 - total)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise TooLarge(label, total, limit)


def _close_read_only(fd: int) -> None:
    """Close a descriptor we only read from: an error here (GlusterFS: ESTALE) cannot lose data."""
    try:
        os.close(fd)
    except OSError as exc:
        log.debug("closing a read-only descriptor: %s", exc)


def rename_exact(directory: Dir, src: str, dst: str, patience: float) -> None:
    """Rename *src* (an entry other hosts also rename) to *dst*; OSError only if it truly failed.

    Seen on GlusterFS under contention: a rename fails with ENOENT for a
    second or two although the entry is there, because this client resolves
    the name through a cached entry of one another host replaced.  A fresh
    lookup (``lstat``) makes the kernel look the name up again, and a listing
    refreshes the entries too; so ENOENT is believed only when the target is
    absent (a lost reply would have put it there) and two listings taken apart
    both lack the source.  Otherwise the rename is retried, for up to
    *patience* seconds.
    """
    deadline = boot_clock() + patience
    absent = 0
    while True:
        for attempt in range(2):
            try:
                directory.rename(src, dst)
                return
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
                failure = exc
            if directory.exists(dst) is True:
                return  # it happened; the reply was lost
            if attempt or directory.exists(src) is not True:
                break
        names = _listing(directory)
        if names is not None and dst in names:
            return
        absent = absent + 1 if names is not None and src not in names else 0
        if absent >= 2 or boot_clock() > deadline:
            raise failure
        time.sleep(0.05)


def _listing(directory: Dir) -> list[str] | None:
    try:
        return directory.listdir()
    except OSError:
        return None
