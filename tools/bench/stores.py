"""The session stores the store benchmark compares, each one registered class: name -> a store at a directory.

A contender is a class built from a directory, with ``create(data) -> key``,
``load(key) -> data``, ``edit(key)`` (increment ``data["n"]``: read,
modify, write, locked if the store locks) and ``delete(key)``, decorated
with :func:`contender`.
Registration order is table order; :data:`FLOOR` is what the others are
divided by.  Django and cachelib are imported only when their contender is
built (``scripts/bench store`` installs them).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fssession import SessionStore
from fssession.events import Event

KEY = "benchmark-secret-key-0123456789"
FLOOR = "bare floor"
FSSESSION = "fssession"
SEALED = "fssession sealed"


class Store(Protocol):
    """What the benchmark does with a store."""

    def create(self, data: dict[str, Any]) -> str:
        """Store a new session; its key."""

    def load(self, key: str) -> dict[str, Any] | None:
        """The session's data."""

    def edit(self, key: str) -> None:
        """Increment the session's ``n``."""

    def delete(self, key: str) -> None:
        """Remove the session."""


S = TypeVar("S", bound=type[Store])
STORES: dict[str, Callable[[Path], Store]] = {}


def contender(name: str) -> Callable[[S], S]:
    """Register the decorated class (built from a directory) as the contender *name*."""

    def register(cls: S) -> S:
        STORES[name] = cls
        return cls

    return register


def payload(size: int) -> dict[str, Any]:
    """A session's data, about *size* bytes of it."""
    return {"user": "alice", "n": 0, "blob": "x" * size}


@contender(FLOOR)
class Bare:
    """The floor: only the work any file session store must do.

    load: open+read+unpickle; edit: mkdir a lock, read, write a temp file,
    rename, rmdir; create: write a temp file, rename; delete: unlink.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def create(self, data: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        self._write(self.root / key, pickle.dumps(data))
        return key

    def _write(self, path: Path, blob: bytes) -> None:
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, blob)
        os.close(fd)
        os.rename(tmp, path)

    def load(self, key: str) -> dict[str, Any]:
        fd = os.open(self.root / key, os.O_RDONLY)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        return pickle.loads(b"".join(chunks))  # type: ignore[no-any-return]

    def edit(self, key: str) -> None:
        lock = f"{self.root / key}.lock"
        os.mkdir(lock)
        data = self.load(key)
        data["n"] += 1
        self._write(self.root / key, pickle.dumps(data))
        os.rmdir(lock)

    def delete(self, key: str) -> None:
        os.unlink(self.root / key)


@contender(FSSESSION)
class Ours:
    """fssession's SessionStore (its edit and delete take the session's lock), signed files."""

    options: dict[str, Any] = {}  # noqa: RUF012 (read only: what a variant passes to SessionStore)

    def __init__(self, root: Path) -> None:
        self.store = SessionStore(root, secret_key=KEY, max_age=3600, **self.options)

    def create(self, data: dict[str, Any]) -> str:
        return self.store.create(data)

    def load(self, key: str) -> dict[str, Any] | None:
        return self.store.load(key)

    def edit(self, key: str) -> None:
        with self.store.edit(key) as data:
            data["n"] += 1

    def delete(self, key: str) -> None:
        self.store.delete(key)


@contender(SEALED)
class Sealed(Ours):
    """fssession with ``encrypt=True``: AES-256-GCM sealed files (issue 15)."""

    options = {"encrypt": True}  # noqa: RUF012


def _no_op(event: Event) -> None:
    """An observer that does nothing: what the event hook costs when someone listens."""


class Observed(Ours):
    """fssession with a no-op ``on_event`` observer (issue 15); not in the main table (see store.events)."""

    def __init__(self, root: Path) -> None:
        self.store = SessionStore(root, secret_key=KEY, max_age=3600, on_event=_no_op)


@contender("django file")
class Django:
    """Django's file session backend; its "edit" is an unlocked read, modify and save."""

    def __init__(self, root: Path) -> None:
        import django
        from django.conf import settings

        root.mkdir(parents=True, exist_ok=True)
        if not settings.configured:
            settings.configure(SECRET_KEY=KEY, SESSION_FILE_PATH=str(root), USE_TZ=True)
            django.setup()
        settings.SESSION_FILE_PATH = str(root)
        from django.contrib.sessions.backends.file import SessionStore as DjangoFile

        self.cls = DjangoFile
        self.cls._storage_path = str(root)  # Django caches the path per class

    def create(self, data: dict[str, Any]) -> str:
        s = self.cls()
        s.update(data)
        s.create()
        return str(s.session_key)

    def load(self, key: str) -> dict[str, Any]:
        return dict(self.cls(session_key=key).load())

    def edit(self, key: str) -> None:
        s = self.cls(session_key=key)
        s["n"] = s.get("n", 0) + 1
        s.save()

    def delete(self, key: str) -> None:
        self.cls(session_key=key).delete()


@contender("cachelib")
class Cachelib:
    """cachelib's FileSystemCache; its "edit" is a get and a set (no lock)."""

    def __init__(self, root: Path) -> None:
        from cachelib import FileSystemCache

        self.cache = FileSystemCache(str(root), threshold=0, default_timeout=3600)

    def create(self, data: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        self.cache.set(key, data)
        return key

    def load(self, key: str) -> dict[str, Any]:
        return self.cache.get(key)  # type: ignore[no-any-return]

    def edit(self, key: str) -> None:
        data = self.cache.get(key)
        data["n"] += 1
        self.cache.set(key, data)

    def delete(self, key: str) -> None:
        self.cache.delete(key)
