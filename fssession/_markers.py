"""Lock markers: their names, and how a name found in a directory is read back.

A marker is a symlink whose *name* is the record (its target is a fixed
label, never read or followed)::

    <prefix>f,<value>                                   free
    <prefix>o,<token>,<beat>,<lease_ms>,<pid>,<start>,<host_id>,<value>,<hostname>
                                                        held
    <prefix>c,<same fields>                             held, committing <value>

The prefix is ``"<session file name>."`` for a session's lock (markers live
in the session's bucket) and empty for an :class:`~fssession.MkdirLock`
(markers live in the lock's own directory).  Names found in a store are
untrusted: parsing never raises, and :meth:`Owner.describe` escapes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._identity import ProcessIdentity, current_identity
from ._text import printable

__all__ = ["COMMITTING", "FREE", "HELD", "TARGET", "UNKNOWN", "Marker", "Owner", "free_name", "owner_name", "parse"]

FREE = "f"
HELD = "o"
COMMITTING = "c"
TARGET = "fssession-lock"
UNKNOWN = "u"  # a value nobody can vouch for (taken over from a holder that was committing)

_VALUE_RE = re.compile(r"[0-9A-Za-z._-]{0,40}")
_HOST_KEEP = re.compile(r"[^0-9A-Za-z._-]")


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds (or held) a lock, as its marker's name records it."""

    token: str
    beat: int
    lease: float
    identity: ProcessIdentity

    def describe(self) -> str:
        """Host and PID, for people (escaped: the record comes from the directory)."""
        where = "this host" if self.identity.host_id == current_identity().host_id else "another host"
        return f"pid {self.identity.pid} on {printable(self.identity.hostname, 64)} ({where})"


@dataclass(frozen=True, slots=True)
class Marker:
    """One marker found in a directory.  ``owner`` is None for a free marker or an unreadable record."""

    name: str
    kind: str  # FREE, HELD or COMMITTING
    value: str
    owner: Owner | None = None

    @property
    def held(self) -> bool:
        """Whether this marker says the lock is held (an owner or committing marker)."""
        return self.kind != FREE

    def describe(self) -> str:
        """Who holds it, for people."""
        return (
            self.owner.describe()
            if self.owner is not None
            else f"an unreadable holder record {printable(self.name, 80)}"
        )


def check_value(value: str) -> str:
    """A value must be short and made of ``[0-9A-Za-z._-]`` (it becomes part of a file name)."""
    if not _VALUE_RE.fullmatch(value):
        raise ValueError(f"invalid lock value {value!r}")
    return value


def free_name(prefix: str, value: str) -> str:
    """The free marker that hands *value* to the next holder."""
    return f"{prefix}{FREE},{check_value(value)}"


def owner_name(prefix: str, kind: str, token: str, beat: int, lease: float, who: ProcessIdentity, value: str) -> str:
    """An owner (or committing) marker's name."""
    host = _HOST_KEEP.sub("_", who.hostname)[:40] or "unknown"
    return (
        f"{prefix}{kind},{token},{beat},{int(lease * 1000)},{who.pid},{who.start_time},"
        f"{who.host_id},{check_value(value)},{host}"
    )


def parse(prefix: str, name: str) -> Marker | None:
    """The marker *name* is, for a lock with this *prefix*; None when it is not one."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    kind, sep, record = rest.partition(",")
    if not sep or kind not in (FREE, HELD, COMMITTING):
        return None
    if kind == FREE:
        return Marker(name, FREE, record) if _VALUE_RE.fullmatch(record) else None
    parts = record.split(",", 7)
    if len(parts) != 8:
        return Marker(name, kind, UNKNOWN)
    token, beat, lease_ms, pid, start, host_id, value, hostname = parts
    try:
        owner = Owner(
            token, int(beat), int(lease_ms) / 1000.0, ProcessIdentity(host_id, hostname, int(pid), int(start))
        )
    except ValueError:
        return Marker(name, kind, UNKNOWN)
    if owner.lease <= 0 or not _VALUE_RE.fullmatch(value):
        return Marker(name, kind, UNKNOWN)
    return Marker(name, kind, value, owner)
