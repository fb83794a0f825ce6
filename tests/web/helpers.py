"""Shared pieces of the web adapter tests: stores, counting what they are asked, cookies, overlapping requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fssession import SessionStore
from fssession.ids import new_session_id
from tests.support import KEY, Clock

WAIT = 20.0  # a deadlock guard, never a timing assertion: waits end on an event long before this


def make_store(path: Path, clock: Clock | None = None, **options: Any) -> SessionStore:
    """A store on *path* with the test key (and the test's clock, if given)."""
    return SessionStore(path, KEY, clock=clock, **options)


# What the adapters may ask of a store, and the name each call is counted under.
COUNTED = {"load_versioned": "load", "create": "create", "edit": "edit", "delete": "delete", "rotate": "rotate"}


def count_calls(store: SessionStore) -> list[str]:
    """Record, from now on, each read or write the adapters ask of *store* (to prove laziness).

    The methods are wrapped on this instance only, so a store an adapter
    built itself (Django's, from settings) is counted the same way.
    """
    calls: list[str] = []
    for method, name in COUNTED.items():
        original = getattr(store, method)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(store, method, counted)
    return calls


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
