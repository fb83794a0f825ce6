"""The web contract: what every adapter promises, written once and run against WSGI, Flask, Django and ASGI.

Each adapter's test module supplies a :class:`Driver` (an application with
the routes below on that adapter, a test client, reading and setting the
session cookie) and runs the contract with a class of its own::

    class TestContract(WebContract):
        driver_class = WSGIDriver

Routes every driver's application serves (JSON bodies)::

    /noop                  does not touch the session
    /get                   {"data": dict(session), "new": the session was not read from the store}
    /set?k=v&...           sets keys; with hold=1 it then calls the test's hold() (see Overlap)
    /del?k=...             deletes keys
    /append?v=x            appends to session["list"] in place
    /login?user=u          rotates the id, then sets session["user"]
    /logout                ends the session
    /incr                  a locked read-modify-write of session["n"]
    /lifetime?s=N          this session's idle lifetime is N seconds

Adapter-specific behaviour (configuration, framework hooks, async details)
stays in the adapter's own test module.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fssession import LockTimeout, SessionStore
from fssession.websession import split_cookie
from tests.support import OTHER_KEY, Clock
from tests.web.helpers import Overlap, count_calls, make_store, run_threads, session_file, tamper, unknown_id

Cookie = tuple[str, str, dict[str, str]]  # name, value, attributes with lower-case names


@dataclass
class Reply:
    """What a request got back: status, JSON body, the Set-Cookie headers (parsed), the Vary header."""

    status: int
    json: Any
    cookies: list[Cookie] = field(default_factory=list)
    vary: str | None = None


class WebClient(ABC):
    """A test client with its own cookie jar, on one driver's application."""

    cookie_name: str

    @abstractmethod
    def get(self, path: str) -> Reply:
        """GET *path* (with the jar's cookies); exceptions the application lets out propagate."""

    @abstractmethod
    def cookie(self) -> str | None:
        """The session cookie's value in the jar (None if absent or cleared)."""

    @abstractmethod
    def set_cookie(self, value: str) -> None:
        """Put *value* in the jar as the session cookie, replacing any."""

    def sid(self) -> str | None:
        """The session id the jar's cookie names."""
        return split_cookie(self.cookie())[0]

    def data(self) -> dict[str, Any]:
        """The session's data, as ``/get`` shows it."""
        return dict(self.get("/get").json["data"])


class Driver(ABC):
    """One adapter: its stores, its application with the contract's routes, its test client."""

    cookie_name: ClassVar[str]
    secure: ClassVar[bool]  # the session cookie is Secure in this driver's set-up
    refreshes_cookie: ClassVar[bool]  # a request that only reads a session sends its cookie again
    malformed_log: ClassVar[str]  # logged for a malformed cookie
    refused_log: ClassVar[str]  # logged for a file that fails verification
    incr_routes: ClassVar[tuple[str, ...]] = ("/incr",)  # the ways an app can do a locked increment
    loads_eagerly: ClassVar[bool] = False  # a request with a cookie is read before the application runs

    def __init__(self) -> None:
        self._cleanups: list[AbstractContextManager[Any]] = []

    def open_store(self, root: Path, clock: Clock, **options: Any) -> SessionStore:
        """The store at *root* the application uses (with the test key and *clock*)."""
        return make_store(root, clock, **options)

    @abstractmethod
    def client(self, store: SessionStore, hold: Callable[[], None] | None = None) -> WebClient:
        """A new client (empty jar) on an application using *store*; ``/set?hold=1`` calls *hold*."""

    def enter(self, context: AbstractContextManager[Any]) -> Any:
        """Enter *context* until the test ends (settings overrides, ...)."""
        value = context.__enter__()
        self._cleanups.append(context)
        return value

    def close(self) -> None:
        """Leave what :meth:`enter` entered, newest first."""
        while self._cleanups:
            self._cleanups.pop().__exit__(None, None, None)


class WebContract:
    """The behaviour every adapter shares.  Subclasses set ``driver_class``."""

    driver_class: ClassVar[type[Driver]]

    @pytest.fixture
    def driver(self) -> Iterator[Driver]:
        driver = self.driver_class()
        try:
            yield driver
        finally:
            driver.close()

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def store(self, driver: Driver, tmp_path: Path, clock: Clock) -> SessionStore:
        return driver.open_store(tmp_path / "sessions", clock)

    # ------------------------------------------------------------ laziness

    def test_a_request_that_does_not_touch_the_session_reads_and_writes_nothing(
        self, driver: Driver, store: SessionStore
    ) -> None:
        calls = count_calls(store)
        client = driver.client(store)
        reply = client.get("/noop")  # no cookie
        assert calls == [] and reply.cookies == []
        client.get("/set?a=1")
        calls.clear()
        reply = client.get("/noop")  # a cookie, never looked at
        if driver.loads_eagerly:
            assert calls == ["load"]  # read before the application runs, but never written
        else:
            assert calls == []
            assert reply.cookies == []
            assert reply.vary is None

    def test_reading_an_absent_session_creates_nothing(self, driver: Driver, store: SessionStore) -> None:
        calls = count_calls(store)
        reply = driver.client(store).get("/get")
        assert reply.json == {"data": {}, "new": True}
        assert reply.cookies == []
        assert reply.vary == "Cookie"
        assert calls == []  # no cookie: nothing to read, nothing to write
        assert not [p for p in store.root.rglob("*") if p.is_file() and not p.name.startswith(".")]

    def test_reading_a_stored_session_writes_nothing(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/set?a=1")
        sid = client.sid()
        calls = count_calls(store)
        reply = client.get("/get")
        assert reply.json == {"data": {"a": "1"}, "new": False}
        assert calls == ["load"]
        if driver.refreshes_cookie:  # sent again (a new expiry), without writing the file
            [(_, value, _)] = reply.cookies
            assert split_cookie(value)[0] == sid
        else:
            assert reply.cookies == []

    # ------------------------------------------------------------ cookie and lifecycle

    def test_login_sets_a_cookie_with_the_safe_attributes(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        reply = client.get("/login?user=alice")
        [(name, value, attrs)] = reply.cookies
        assert name == driver.cookie_name
        sid = split_cookie(value)[0]
        assert sid is not None and store.load(sid) == {"user": "alice"}
        assert attrs["path"] == "/"
        assert attrs["max-age"] == str(store.max_age)
        assert "expires" in attrs
        assert "httponly" in attrs
        assert ("secure" in attrs) == driver.secure
        assert attrs["samesite"] == "Lax"
        assert client.data() == {"user": "alice"}

    def test_modify_and_delete_keys_keep_the_id(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/set?a=1&b=2")
        sid = client.sid()
        client.get("/set?a=3")
        client.get("/del?b=")
        assert client.data() == {"a": "3"}
        assert client.sid() == sid  # changes keep the id
        assert sid is not None and store.load(sid) == {"a": "3"}

    def test_an_in_place_change_is_saved(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/set?a=1")
        sid = client.sid()
        assert sid is not None
        with store.edit(sid) as data:
            data["list"] = []
        client.get("/append?v=x")
        client.get("/append?v=y")
        assert client.data()["list"] == ["x", "y"]
        assert store.load(sid) == {"a": "1", "list": ["x", "y"]}

    def test_login_rotates_the_id_and_keeps_the_data(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/set?cart=apples")
        before = client.sid()
        client.get("/login?user=alice")
        after = client.sid()
        assert before is not None and after is not None and after != before
        assert store.load(before) is None  # the pre-login id (perhaps planted by an attacker) is dead
        assert store.load(after) == {"cart": "apples", "user": "alice"}
        client.get("/set?page=2")
        assert client.data() == {"cart": "apples", "user": "alice", "page": "2"}

    def test_logout_deletes_the_stored_session_and_clears_the_cookie(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/login?user=alice")
        sid = client.sid()
        assert sid is not None
        [(_, value, attrs)] = client.get("/logout").cookies
        assert value == "" and attrs["max-age"] == "0"
        assert store.load(sid) is None
        assert client.sid() is None
        assert client.data() == {}
        # The old id, replayed, is an empty new session and is not brought back.
        client.set_cookie(sid)
        assert client.get("/get").json == {"data": {}, "new": True}
        assert store.load(sid) is None

    def test_expiry_follows_the_store_idle_lifetime(self, driver: Driver, store: SessionStore, clock: Clock) -> None:
        client = driver.client(store)
        client.get("/set?a=1")
        clock.advance(store.max_age - 10)
        assert client.data() == {"a": "1"}  # used in time: the idle clock restarts
        clock.advance(store.max_age - 10)
        assert client.data() == {"a": "1"}
        clock.advance(store.max_age + 1)
        reply = client.get("/get")
        assert reply.json == {"data": {}, "new": True}
        [(_, value, attrs)] = reply.cookies
        assert value == "" and attrs["max-age"] == "0"

    def test_a_per_session_lifetime_is_kept_in_the_store_and_the_cookie(
        self, driver: Driver, store: SessionStore, clock: Clock
    ) -> None:
        client = driver.client(store)
        client.get("/set?a=1")
        [(_, _, attrs)] = client.get("/lifetime?s=60").cookies
        assert attrs["max-age"] == "60"
        clock.advance(50)
        assert client.data()["a"] == "1"  # used within its 60 s: alive (Django keeps its expiry among the data)
        clock.advance(61)
        assert client.data() == {}

    # ------------------------------------------------------------ bad input

    def test_a_malformed_cookie_gets_a_fresh_session_and_a_warning(
        self, driver: Driver, store: SessionStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = driver.client(store)
        client.set_cookie("../../etc/passwd")
        with caplog.at_level(logging.WARNING):
            reply = client.get("/get")
        assert reply.status == 200 and reply.json == {"data": {}, "new": True}
        assert driver.malformed_log in caplog.text
        client.set_cookie("../../etc/passwd")
        reply = client.get("/set?a=1")
        assert reply.status == 200
        [(_, value, _)] = reply.cookies
        sid = split_cookie(value)[0]
        assert sid not in (None, "../../etc/passwd") and store.load(sid) == {"a": "1"}
        assert client.sid() == sid

    def test_an_unknown_id_is_never_adopted(self, driver: Driver, store: SessionStore) -> None:
        planted = unknown_id()
        client = driver.client(store)
        client.set_cookie(planted)
        assert client.get("/get").json == {"data": {}, "new": True}
        client.get("/set?a=1")
        sid = client.sid()
        assert sid is not None and sid != planted
        assert store.load(planted) is None and not store.exists(planted)
        assert store.load(sid) == {"a": "1"}

    def test_an_unknown_id_is_not_adopted_at_login(self, driver: Driver, store: SessionStore) -> None:
        planted = unknown_id()
        client = driver.client(store)
        client.set_cookie(planted)
        [(_, value, _)] = client.get("/login?user=alice").cookies
        sid = split_cookie(value)[0]
        assert sid is not None and sid != planted
        assert store.load(planted) is None and not store.exists(planted)
        assert store.load(sid) == {"user": "alice"}

    def test_an_unknown_id_that_is_not_used_gets_its_cookie_cleared(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.set_cookie(unknown_id())
        [(_, value, attrs)] = client.get("/get").cookies
        assert value == "" and attrs["max-age"] == "0"

    def test_a_tampered_file_gets_a_fresh_session_and_a_warning(
        self, driver: Driver, store: SessionStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = driver.client(store)
        client.get("/login?user=alice")
        sid = client.sid()
        assert sid is not None
        tamper(store, sid)
        with caplog.at_level(logging.WARNING):
            reply = client.get("/get")
        assert reply.status == 200
        assert reply.json == {"data": {}, "new": True}
        assert driver.refused_log in caplog.text
        client.get("/set?a=1")
        assert client.sid() not in (None, sid)

    def test_a_file_signed_with_another_key_is_refused(self, driver: Driver, store: SessionStore, clock: Clock) -> None:
        sid = SessionStore(store.root, OTHER_KEY, clock=clock).create({"user": "mallory"})
        client = driver.client(store)
        client.set_cookie(sid)
        assert client.get("/get").json == {"data": {}, "new": True}

    def test_lock_timeout_at_commit_reaches_the_app(self, driver: Driver, tmp_path: Path, clock: Clock) -> None:
        store = driver.open_store(tmp_path / "s", clock, lock_timeout=0.2)
        client = driver.client(store)
        client.get("/set?a=1")
        sid = client.sid()
        assert sid is not None
        holder = make_store(tmp_path / "s", clock)
        # Another node is in the middle of a commit of this session.
        with holder.edit(sid), pytest.raises(LockTimeout):
            client.get("/set?a=2")
        assert store.load(sid) == {"a": "1"}

    # ------------------------------------------------------------ concurrency

    def test_overlapping_requests_changing_different_keys_keep_both(self, driver: Driver, store: SessionStore) -> None:
        overlap = Overlap()
        first = driver.client(store, hold=overlap.hold)
        first.get("/set?base=0")
        sid = first.sid()
        assert sid is not None
        second = driver.client(store)
        second.set_cookie(sid)
        # The first request loads, sets a and is held; the second loads the
        # same (old) version, sets b and must finish meanwhile.
        overlap.run(lambda: first.get("/set?a=1&hold=1"), lambda: second.get("/set?b=2"))
        assert store.load(sid) == {"base": "0", "a": "1", "b": "2"}

    def test_locked_counter_is_exact_under_threads(self, driver: Driver, store: SessionStore) -> None:
        client = driver.client(store)
        client.get("/set?a=1")
        sid = client.sid()
        assert sid is not None
        threads, per_thread = 6, 15
        routes = driver.incr_routes

        def work(i: int) -> None:
            own = driver.client(store)
            own.set_cookie(sid)
            for j in range(per_thread):
                assert own.get(routes[(i + j) % len(routes)]).status == 200

        run_threads(threads, work)
        assert store.load(sid) == {"a": "1", "n": threads * per_thread}


class GenerationContract:
    """What the adapters whose cookie carries the session's generation (``<id>.<generation>``) add."""

    def test_restoring_an_old_copy_of_someone_elses_session_file_does_not_restore_it(
        self, driver: Driver, store: SessionStore
    ) -> None:
        """The cookie carries the generation the browser saw: an older file is a rollback, refused."""
        victim = driver.client(store)
        victim.get("/set?role=admin")
        sid = victim.sid()
        assert sid is not None
        old = session_file(store, sid).read_bytes()
        victim.get("/set?role=user")  # a downgrade
        session_file(store, sid).write_bytes(old)  # a writer of the store puts the old copy back
        assert victim.data().get("role") != "admin", "the rolled-back session was accepted"
