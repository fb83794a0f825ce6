"""Shared pieces of the web adapter tests: a movable clock, stores, cookie parsing, overlap drivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fssession import SessionStore
from fssession.ids import new_session_id

SECRET = "web-test-secret-key-0123456789abcdef"
OTHER_SECRET = "some-other-key-0123456789abcdefghij"
WAIT = 20.0  # a deadlock guard, never a timing assertion: waits end on an event long before this


class Clock:
    """A clock the test moves by hand (the store's ``clock=``)."""

    def __init__(self, start: float | None = None) -> None:
        # Start at the real time: the store stamps a commit with this clock
        # just after the rename, and a concurrent load in between sees the
        # real mtime (see the report: a store fix is asked for).
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_store(path: Path, clock: Clock | None = None, **options: Any) -> SessionStore:
    """A store on *path* with the test key (and the test's clock, if given)."""
    return SessionStore(path, SECRET, clock=clock, **options)


class CountingStore(SessionStore):
    """A store that counts what the adapters ask of it (to prove laziness: no read, no write)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def load_versioned(self, sid: str, *, min_generation: int = 0) -> tuple[dict[str, Any], int] | None:
        self.calls.append("load")
        return super().load_versioned(sid, min_generation=min_generation)

    def create(self, data: Any = None, *, max_age: int | None = None, owner: str | None = None) -> str:
        self.calls.append("create")
        return super().create(data, max_age=max_age, owner=owner)

    def edit(self, sid: str, *, max_age: int | None = None, owner: str | None = None) -> Any:
        self.calls.append("edit")
        return super().edit(sid, max_age=max_age, owner=owner)

    def delete(self, sid: str) -> bool:
        self.calls.append("delete")
        return super().delete(sid)

    def rotate(self, sid: str) -> str:
        self.calls.append("rotate")
        return super().rotate(sid)


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-case names) of one ``Set-Cookie`` value."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attrs: dict[str, str] = {}
    for item in rest:
        key, _, val = item.partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def session_file(store: SessionStore, sid: str) -> Path:
    """The file that holds *sid* (a white-box helper for the tampering tests)."""
    return Path(store.layout.path_for(sid))


def tamper(store: SessionStore, sid: str) -> None:
    """Flip one byte in the payload of *sid*'s file, keeping its length."""
    path = session_file(store, sid)
    blob = bytearray(path.read_bytes())
    blob[50] ^= 0x01
    path.write_bytes(bytes(blob))


def unknown_id() -> str:
    """A well-formed id that no store issued."""
    return new_session_id()


class Overlap:
    """Two requests of one user in flight at once: the first is held inside its view until the second finished.

    The first request's view calls :meth:`hold` after changing the session;
    it signals that it is in flight, then waits until the test has run the
    second request to completion.  If the second request waited for the
    first one's lock or request, it never completes while the first is
    held; the guard then records that instead of hanging.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.failures: list[str] = []

    def hold(self) -> None:
        """Called by the first request's view, after it changed the session."""
        self.entered.set()
        if not self.release.wait(WAIT):
            self.failures.append("the second request did not finish while the first was in flight")

    def run(self, first: Callable[[], object], second: Callable[[], object]) -> None:
        """Run *first* in a thread, *second* here while *first* is held, then let *first* finish."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                first()
            except BaseException as exc:  # surfaced below, in the test's thread
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        assert self.entered.wait(WAIT), "the first request never reached its view"
        try:
            second()
        finally:
            self.release.set()
            thread.join(WAIT)
        assert not thread.is_alive()
        if errors:
            raise errors[0]
        assert not self.failures, self.failures


def run_threads(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in *n* threads started together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(WAIT)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
