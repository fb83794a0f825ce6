"""StoreLayout: the one owner of names and places in a store's directory.

::

    PATH/.fssession-naming-key          the key that turns ids into file names
    PATH/.fssession-reaper.lock/        the reaper's MkdirLock
    PATH/.fssession-reaper-cursor       where a reaper stopped by --max-seconds resumes
    PATH/.fssession-clock-<hex>         a server-clock probe
    PATH/<name>.stage-<32 hex>/         an MkdirLock's stage (litter when old)
    PATH/.fssession-doctor-<16 hex>/    a doctor's work directory
    PATH/.fssession-owners/ab/<tag>/<N> the owner index (owners.py)
    PATH/ab/                            256 buckets, never removed
    PATH/ab/N                           a session file (N: 64 hex, a keyed hash of the id)
    PATH/ab/N.f,... N.o,... N.c,...     its lock marker (see _markers.py)
    PATH/ab/N.tmp-<16 hex>              a write in progress
    PATH/ab/.nfsXXXX, .fuse_hiddenXXXX  a removed file still open somewhere: NFS's and
                                        FUSE's (sshfs) name for it until it is closed

Everything reaches the store through this class: the store, the reaper,
``stats``, ``inspect``, the doctor and the tests.  It holds the store's root
and its buckets open as directory descriptors (``_fs.Dir``) and builds every
lock (:meth:`lock_for`, :meth:`root_lock`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from . import _fs, _lockcore
from ._clock import PROBE_PREFIX, ServerClock
from ._fs import Dir
from ._markers import FREE, Marker, parse
from .errors import StorageError, TamperedSession
from .events import Observer
from .fileformat import HEADER_SIZE, Header, read_header
from .ids import file_name
from .lock import STAGE_INFIX, MkdirLock
from .settings import LockSettings

__all__ = [
    "BUCKETS",
    "CURSOR_FILE",
    "NAMING_KEY_FILE",
    "REAPER_LOCK",
    "Kind",
    "Name",
    "SessionLock",
    "StoreLayout",
    "classify",
    "classify_root",
    "session_value",
]

NAMING_KEY_FILE = ".fssession-naming-key"
REAPER_LOCK = ".fssession-reaper.lock"
CURSOR_FILE = ".fssession-reaper-cursor"
DOCTOR_PREFIX = ".fssession-doctor-"
OWNERS_DIR = ".fssession-owners"
TMP_INFIX = ".tmp-"
NAME_LENGTH = 64
BUCKETS = tuple(f"{i:02x}" for i in range(256))
_HEX = frozenset("0123456789abcdef")
_KEY_BYTES = 32


class Kind(enum.Enum):
    """What an entry of a store is."""

    SESSION = "session"
    MARKER = "lock marker"
    TEMP = "temp file"
    NFS_SILLY = "removed file still open (NFS/FUSE silly rename)"
    FOREIGN = "foreign"
    # in the root only
    BUCKET = "bucket"
    NAMING_KEY = "naming key"
    REAPER_LOCK = "reaper lock"
    CURSOR = "reaper cursor"
    CLOCK_PROBE = "clock probe"
    STAGE = "lock stage"
    DOCTOR = "doctor work directory"
    OWNERS = "owner index"


@dataclass(frozen=True, slots=True)
class Name:
    """What :func:`classify` says of a bucket entry: its kind, the session it belongs to, its marker."""

    kind: Kind
    session: str | None = None
    marker: Marker | None = None


_FOREIGN = Name(Kind.FOREIGN)
# What the NFS client (silly rename) and the FUSE kernel module (without
# hard_remove) call a file removed while a process on that host holds it
# open; its client removes it at the last close.
_STILL_OPEN = (".nfs", ".fuse_hidden")


def _is_session_name(name: str) -> bool:
    return len(name) == NAME_LENGTH and _HEX.issuperset(name)


def classify(name: str) -> Name:
    """What the bucket entry *name* is (never raises; anything unknown is FOREIGN)."""
    if _is_session_name(name):
        return Name(Kind.SESSION, name)
    if name.startswith(_STILL_OPEN):
        return Name(Kind.NFS_SILLY)
    session, dot, rest = name[:NAME_LENGTH], name[NAME_LENGTH : NAME_LENGTH + 1], name[NAME_LENGTH + 1 :]
    if dot != "." or not _is_session_name(session):
        return _FOREIGN
    if rest.startswith(TMP_INFIX[1:]) and len(rest) == len(TMP_INFIX) - 1 + 16:
        return Name(Kind.TEMP, session)
    marker = parse(session + ".", name)
    if marker is not None:
        return Name(Kind.MARKER, session, marker)
    return _FOREIGN


def classify_root(name: str) -> Kind:
    """What the root entry *name* is."""
    if name in BUCKETS:
        return Kind.BUCKET
    fixed = {
        NAMING_KEY_FILE: Kind.NAMING_KEY,
        REAPER_LOCK: Kind.REAPER_LOCK,
        CURSOR_FILE: Kind.CURSOR,
        OWNERS_DIR: Kind.OWNERS,
    }
    if name in fixed:
        return fixed[name]
    if name.startswith(PROBE_PREFIX):
        return Kind.CLOCK_PROBE
    if name.startswith(DOCTOR_PREFIX):
        return Kind.DOCTOR
    head, sep, token = name.rpartition(STAGE_INFIX)
    if sep and head and len(token) == 32:
        return Kind.STAGE
    if name.startswith(NAMING_KEY_FILE + TMP_INFIX):
        return Kind.TEMP
    return Kind.FOREIGN


# ------------------------------------------------------------ lock values
def session_value(generation: int, idle_timeout: int, expires_at: float) -> str:
    """What a session's free marker carries: ``<generation>.<idle timeout>.<absolute expiry>``."""
    return f"{generation}.{idle_timeout}.{int(expires_at)}"


def header_value(header: Header) -> str:
    """The free-marker value that describes the version with *header*."""
    return session_value(header.generation, header.idle_timeout, header.expires_at)


def parse_session_value(value: str) -> tuple[int, int, int] | None:
    """(generation, idle timeout, absolute expiry) from a marker's value; None if it is not one."""
    parts = value.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 19 for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def successors(value: str) -> Sequence[str]:
    """The free values a holder of *value* can publish: the same (nothing written) or the next generation."""
    parsed = parse_session_value(value)
    if parsed is None:
        return (value,)
    generation, idle, expires = parsed
    return (value, f"{generation + 1}.{idle}.{expires}")


class SessionLock:
    """The lock of one session: markers ``N.*`` in its bucket (built by :meth:`StoreLayout.lock_for`)."""

    __slots__ = ("bucket", "clock", "name", "observer", "settings")

    def __init__(
        self,
        bucket: Dir,
        name: str,
        settings: LockSettings,
        clock: ServerClock | None,
        observer: Observer | None = None,
    ) -> None:
        self.bucket = bucket
        self.name = name
        self.settings = settings
        self.clock = clock
        self.observer = observer

    @property
    def prefix(self) -> str:
        """The markers' name prefix."""
        return self.name + "."

    def acquire(self, guesses: Sequence[str], timeout: float, *, blocking: bool = True) -> _lockcore.Hold:
        """Acquire, guessing the free values in *guesses* first; ``NoMarker`` if the session has no marker."""
        return _lockcore.acquire(
            self.bucket,
            self.prefix,
            self.settings,
            guesses=guesses,
            successors=successors,
            hint=self._hint,
            timeout=timeout,
            blocking=blocking,
            clock=self.clock if self.settings.server_clock else None,
            label=self.bucket.path(self.prefix + "lock"),
            observer=self.observer,
        )

    def _hint(self) -> Sequence[str]:
        """What a waiter polls: the free values the session's header implies now (3 calls, no listing)."""
        try:
            header = read_header(self.bucket.read_head(self.name, HEADER_SIZE))
        except (OSError, TamperedSession):
            return ()
        return successors(header_value(header))

    def markers(self) -> list[Marker]:
        """The markers this session has now (normally one; a listing of the whole bucket)."""
        prefix = self.prefix
        return [m for m in (parse(prefix, n) for n in self.bucket.listdir() if n.startswith(prefix)) if m is not None]


class StoreLayout:
    """A store's directory, opened: names, buckets, the naming key and every lock.

    ``create``: make the root (with *dir_mode*) and the naming key if they do
    not exist.  Without it, a directory that is not a store raises
    :class:`StorageError`.  *lock* settings are used by :meth:`lock_for`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        dir_mode: int | None = None,
        file_mode: int | None = None,
        lock: LockSettings | None = None,
        need_key: bool = True,
        root: Dir | None = None,
    ) -> None:
        self.path = os.fspath(path)
        # *root*: the store's root already opened by the caller (the CLI opens
        # it once, switches users, and must not walk the path again).
        self.root = root if root is not None else self._open_root(create, dir_mode)
        root_mode = stat.S_IMODE(self.root.stat().st_mode)
        # A tool that was not told the store's modes (the reaper, stats) uses
        # the root's: a group-shared store stays group-shared.
        self.dir_mode = dir_mode if dir_mode is not None else root_mode
        self.file_mode = file_mode if file_mode is not None else self.dir_mode & 0o666
        self.lock_settings = (lock or LockSettings()).with_(mode=self.dir_mode & 0o777)
        self.clock = ServerClock(self.root, strict=False)
        self._buckets: dict[str, Dir] = {}
        self._guard = threading.Lock()
        self._names: dict[str, str] = {}
        self.naming_key = self._naming_key(create) if need_key else b""

    # ---------------------------------------------------------- the root
    def _open_root(self, create: bool, dir_mode: int | None) -> Dir:
        try:
            return Dir.open_path(self.path)
        except FileNotFoundError as exc:
            if not create:
                raise StorageError(errno.ENOENT, "no such store directory", self.path) from exc
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.path) from exc
        parent, name = os.path.split(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
            # (FileExistsError: another node made it first)
            with Dir.open_path(parent) as up, contextlib.suppress(FileExistsError):
                up.mkdir(name, 0o700 if dir_mode is None else dir_mode)
            return Dir.open_path(self.path)
        except OSError as exc:
            raise StorageError.from_oserror(exc, self.path) from exc

    def _naming_key(self, create: bool) -> bytes:
        for _ in range(3):
            try:
                blob, _st = self.root.read(NAMING_KEY_FILE, 256)
            except FileNotFoundError:
                if not create:
                    raise StorageError(
                        errno.ENOENT, f"not an fssession store (no {NAMING_KEY_FILE})", self.path
                    ) from None
                self._create_naming_key()
                continue
            except (_fs.NotRegular, _fs.TooLarge) as exc:
                raise StorageError(
                    errno.EINVAL,
                    f"the naming key is not a small regular file: {exc.strerror}",
                    self.root.path(NAMING_KEY_FILE),
                ) from exc
            except OSError as exc:
                raise StorageError.from_oserror(exc, self.root.path(NAMING_KEY_FILE)) from exc
            try:
                key = bytes.fromhex(blob.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                key = b""
            if len(key) < 16:
                raise StorageError(errno.EINVAL, "the naming key file is corrupt", self.root.path(NAMING_KEY_FILE))
            return key
        raise StorageError(errno.EIO, "could not read or create the naming key", self.root.path(NAMING_KEY_FILE))

    def _create_naming_key(self) -> None:
        """Write a fresh key beside its final name, then link it there: link fails if a racer's is there."""
        key = os.urandom(_KEY_BYTES).hex().encode() + b"\n"
        try:
            tmp = self.root.write_new(NAMING_KEY_FILE + TMP_INFIX, key, self.file_mode, chmod=True, fsync=True)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot initialise the store: {exc.strerror}", self.path
            ) from exc
        try:
            self.root.link(tmp, NAMING_KEY_FILE)
        except OSError as exc:
            if self.root.exists(NAMING_KEY_FILE) is not True:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise StorageError(
                        exc.errno or errno.EIO, f"cannot initialise the store: {exc.strerror}", self.path
                    ) from exc
                with self.root_lock(NAMING_KEY_FILE + ".lock"):  # no hard links here: serialise the rename
                    if self.root.exists(NAMING_KEY_FILE) is not True:
                        self.root.rename(tmp, NAMING_KEY_FILE)
        finally:
            self.root.unlink_quietly(tmp)

    # ---------------------------------------------------------- names
    def name_for(self, sid: str) -> str:
        """The file name (64 hex) of session *sid*; ``InvalidSessionId`` for anything that is not an id."""
        name = self._names.get(sid)
        if name is None:
            name = file_name(sid, self.naming_key)  # validates first
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[sid] = name
        return name

    def path_for(self, sid: str) -> str:
        """The session file's path (for people and tests; fssession itself never walks it)."""
        name = self.name_for(sid)
        return os.path.join(self.path, name[:2], name)

    # ---------------------------------------------------------- buckets
    def bucket(self, name: str, *, create: bool = False) -> Dir:
        """The bucket of a session file *name* (its first two hex digits), held open; made if *create*."""
        key = name[:2]
        found = self._buckets.get(key)
        if found is not None:
            return found
        with self._guard:
            found = self._buckets.get(key)
            if found is None:
                found = self._buckets[key] = self._open_bucket(key, create)
        return found

    def _open_bucket(self, key: str, create: bool) -> Dir:
        if key not in BUCKETS:
            raise ValueError(f"not a bucket: {key!r}")
        try:
            return self.root.opendir(key)
        except FileNotFoundError:
            if not create:
                raise
        with contextlib.suppress(FileExistsError):  # another node made it first
            self.root.mkdir(key, self.dir_mode)
        return self.root.opendir(key)

    def forget_bucket(self, name: str) -> None:
        """Close a cached bucket descriptor (after ESTALE: the next use reopens it)."""
        with self._guard:
            found = self._buckets.pop(name[:2], None)
        if found is not None:
            found.close()

    # ---------------------------------------------------------- locks
    def lock_for(self, name: str, *, create_bucket: bool = False, observer: Observer | None = None) -> SessionLock:
        """The lock of the session stored as *name* (the only way the store builds one)."""
        return SessionLock(self.bucket(name, create=create_bucket), name, self.lock_settings, self.clock, observer)

    def root_lock(self, name: str, settings: LockSettings | None = None) -> MkdirLock:
        """An MkdirLock in the store's root (the reaper's, the naming key's), with the store's mode."""
        chosen = (settings or self.lock_settings).with_(mode=self.dir_mode & 0o7777)
        return MkdirLock(os.path.join(self.path, name), settings=chosen, parent=self.root)

    def close(self) -> None:
        """Close every descriptor held."""
        with self._guard:
            buckets, self._buckets = list(self._buckets.values()), {}
        for bucket in buckets:
            bucket.close()
        self.root.close()

    def __repr__(self) -> str:
        return f"StoreLayout({self.path!r})"


def free_value(marker: Marker | None) -> str | None:
    """The value of a free marker, None for anything else."""
    return marker.value if marker is not None and marker.kind == FREE else None
