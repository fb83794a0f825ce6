"""Every tunable of fssession, once, with its default, its validation and what it means.

Three frozen dataclasses: :class:`LockSettings` (the lease lock),
:class:`StoreSettings` (a :class:`~fssession.SessionStore`, which embeds the
lock's) and :class:`ReapSettings` (the reaper).  The public constructors keep
keyword arguments as their friendly face and build these; a bad value raises
``ValueError`` with a message that names the setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar, overload

__all__ = [
    "DEFAULT_ABSOLUTE_MAX_AGE",
    "LockSettings",
    "ReapSettings",
    "Setting",
    "StoreSettings",
]

T = TypeVar("T")


class Setting(Generic[T]):
    """A read-only attribute of an object that shows one field of its ``settings`` (the value lives there, once)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> Setting[T] | T:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, "settings"), self.name)  # noqa: B009 (obj is any object with settings)
        return value


DEFAULT_LEASE = 30.0
DEFAULT_FS_SLACK = 1.0
DEFAULT_ABSOLUTE_MAX_AGE = 30 * 86400
# How many times its own lease a contender honours a lease recorded by a
# holder (a planted marker claiming a year must not wedge a lock for a year).
MAX_LEASE_FACTOR = 4.0


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'zero or ' if allow_zero else ''}positive, not {value!r}")


def _mode(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o7777:
        raise ValueError(f"{name} must be a permission mode such as 0o600, not {value!r}")


@dataclass(frozen=True, slots=True)
class LockSettings:
    """How a lease lock behaves.

    * ``lease``: seconds a hold is trusted without renewal; a holder that
      neither renews nor releases in time may be taken over.
    * ``max_lease``: the longest lease recorded by another holder that a
      contender honours (default ``4 * lease``); past it, the contender's own
      lease applies.
    * ``fs_slack``: how late the filesystem may show a change (its attribute
      cache, plus the clients' clock skew where clients stamp times); the
      holder stops trusting its lease that long before contenders may act.
    * ``timeout``: seconds ``acquire()`` waits by default (negative: for ever).
    * ``poll_interval`` / ``max_poll_interval``: the backoff's first and
      largest sleep.
    * ``server_clock``: judge a remote holder's age by timestamps the file
      server stamped (False: only by watching it for a whole lease).
    * ``mode``: permissions of directories the lock creates.
    """

    lease: float = DEFAULT_LEASE
    max_lease: float | None = None
    fs_slack: float = DEFAULT_FS_SLACK
    timeout: float = -1.0
    poll_interval: float = 0.001
    max_poll_interval: float = 0.05
    server_clock: bool = True
    mode: int = 0o700

    def __post_init__(self) -> None:
        _positive("lease", self.lease)
        _positive("fs_slack", self.fs_slack, allow_zero=True)
        if self.fs_slack >= self.lease:
            raise ValueError(f"fs_slack ({self.fs_slack}) must be smaller than the lease ({self.lease})")
        if self.max_lease is not None:
            _positive("max_lease", self.max_lease)
            if self.max_lease < self.lease:
                raise ValueError(f"max_lease ({self.max_lease}) must be at least the lease ({self.lease})")
        if not isinstance(self.timeout, (int, float)) or math.isnan(self.timeout):
            raise ValueError(f"timeout must be a number, not {self.timeout!r}")
        _positive("poll_interval", self.poll_interval)
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("max_poll_interval must be at least poll_interval")
        _mode("mode", self.mode)

    @property
    def lease_cap(self) -> float:
        """The longest recorded lease honoured (``max_lease`` or four leases)."""
        return self.max_lease if self.max_lease is not None else MAX_LEASE_FACTOR * self.lease

    def with_(self, **changes: Any) -> LockSettings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)


_ABSENT: Any = object()
_LOCK_KEYWORDS = frozenset({"lease", "max_lease", "fs_slack", "server_clock"})


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """How a :class:`~fssession.SessionStore` behaves.

    * ``max_age``: seconds of idleness after which a session expires
      (per session with ``create(max_age=...)``).
    * ``absolute_max_age``: seconds after creation at which a session expires
      however it is used (signed in the file); default 30 days or
      ``max_age`` if longer; ``None`` turns it off (then a writer of the
      directory can keep a stolen session alive by touching its file).
    * ``lock_timeout``: seconds an edit, delete or rotate waits for the lock.
    * ``lock``: the lock's settings (lease, max_lease, fs_slack, ...).
    * ``max_size``: the largest payload, in bytes, written or read.
    * ``durable``: fsync each write and its directory.
    * ``file_mode`` / ``dir_mode``: permissions of what the store creates
      (0o660 / 0o770 with a setgid store directory for nodes running as
      different users of one group).
    * ``serializer``: a :class:`~fssession.serializers.Serializer` or its name
      (``"pickle"``, ``"json"``, ``"msgpack"``).
    * ``touch_interval``: a load refreshes a session's last-use time only when
      it is older than this (default ``max_age/20``, at most a minute).
    * ``encrypt``: seal new writes with AES-256-GCM (``sealing.py``; needs the
      ``sealed`` extra); sealed files are read whatever this says.
    """

    max_age: int = 1800
    absolute_max_age: int | None = _ABSENT
    lock_timeout: float = 10.0
    lock: LockSettings = field(default_factory=LockSettings)
    max_size: int = 1 << 20
    durable: bool = False
    file_mode: int = 0o600
    dir_mode: int = 0o700
    serializer: Any = "pickle"
    touch_interval: float | None = None
    encrypt: bool = False

    def __post_init__(self) -> None:
        _positive("max_age", self.max_age)
        if self.absolute_max_age is _ABSENT:
            object.__setattr__(self, "absolute_max_age", max(DEFAULT_ABSOLUTE_MAX_AGE, int(self.max_age)))
        elif self.absolute_max_age is not None:
            _positive("absolute_max_age", self.absolute_max_age)
        object.__setattr__(self, "max_age", int(self.max_age))
        if not isinstance(self.lock_timeout, (int, float)) or math.isnan(self.lock_timeout):
            raise ValueError(f"lock_timeout must be a number, not {self.lock_timeout!r}")
        if not isinstance(self.max_size, int) or self.max_size <= 0:
            raise ValueError(f"max_size must be a positive number of bytes, not {self.max_size!r}")
        _mode("file_mode", self.file_mode)
        _mode("dir_mode", self.dir_mode)
        if self.touch_interval is None:
            object.__setattr__(self, "touch_interval", min(60.0, self.max_age / 20))
        else:
            _positive("touch_interval", self.touch_interval, allow_zero=True)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every keyword ``SessionStore(...)`` accepts as a setting."""
        return frozenset({f.name for f in fields(cls)} - {"lock"} | _LOCK_KEYWORDS)

    @classmethod
    def from_keywords(cls, **options: Any) -> StoreSettings:
        """Build settings from the flat keywords of ``SessionStore(...)``.

        Lock keywords (``lease``, ``max_lease``, ``fs_slack``, ``server_clock``)
        go into :class:`LockSettings`; ``dir_mode`` is also the lock's mode.
        Unknown keywords raise ``TypeError``, as a function call would.
        """
        lock_names = _LOCK_KEYWORDS
        own = {f.name for f in fields(cls)} - {"lock"}
        unknown = set(options) - own - lock_names - {"lock"}
        if unknown:
            raise TypeError(f"unexpected store option(s): {', '.join(sorted(unknown))}")
        lock = options.pop("lock", None) or LockSettings()
        lock_changes = {k: options.pop(k) for k in list(options) if k in lock_names}
        lock_changes["mode"] = options.get("dir_mode", 0o700)
        return cls(lock=lock.with_(**lock_changes), **options)


@dataclass(frozen=True, slots=True)
class ReapSettings:
    """How a reaper run behaves.

    * ``grace``: a session is removed only when expired for longer than this
      (client caches may hide a recent use; at least ``2 * fs_slack``).
    * ``temp_age``: temp files and markers without a session older than this
      are crash leftovers (at least the lease: an edit's temp file lives while
      it holds the lock).
    * ``jobs``: processes sweeping buckets in parallel.
    * ``max_seconds``: stop after the current bucket once this much time has
      passed, and leave a cursor for the next run.
    * ``dry_run``: count what would be removed; change nothing.
    * ``lock``: the store's lock settings (lease, fs_slack).
    """

    grace: float = 60.0
    temp_age: float = 3600.0
    jobs: int = 1
    max_seconds: float | None = None
    dry_run: bool = False
    lock: LockSettings = field(default_factory=LockSettings)

    def __post_init__(self) -> None:
        _positive("grace", self.grace, allow_zero=True)
        _positive("temp_age", self.temp_age)
        if not isinstance(self.jobs, int) or isinstance(self.jobs, bool) or self.jobs < 1:
            raise ValueError(f"jobs must be a whole number of at least 1, not {self.jobs!r}")
        if self.max_seconds is not None:
            _positive("max_seconds", self.max_seconds)
        if self.grace < 2 * self.lock.fs_slack:
            raise ValueError(
                f"grace ({self.grace}) must be at least twice fs_slack ({self.lock.fs_slack}): "
                "client caches can hide a recent use of a session that long"
            )
        if self.temp_age < self.lock.lease:
            raise ValueError(
                f"temp_age ({self.temp_age}) must be at least the lease ({self.lock.lease}): "
                "an edit's temp file lives as long as it holds the lock"
            )
