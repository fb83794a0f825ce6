"""The ASGI middleware through Starlette's TestClient; every file operation is checked to run off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from fssession import LockTimeout
from fssession.asgi import AsyncSession, SessionMiddleware
from fssession.websession import split_cookie
from tests.web.helpers import (
    SECRET,
    WAIT,
    Clock,
    CountingStore,
    Overlap,
    parse_set_cookie,
    run_threads,
    tamper,
    unknown_id,
)


class OffLoopStore(CountingStore):
    """Fails the request if a file operation runs on an event loop thread."""

    def _off_loop(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise AssertionError("session file I/O on the event loop")

    def load_versioned(self, sid: str, *, min_generation: int = 0) -> tuple[dict[str, Any], int] | None:
        self._off_loop()
        return super().load_versioned(sid, min_generation=min_generation)

    def create(self, data: Any = None, *, max_age: int | None = None, owner: str | None = None) -> str:
        self._off_loop()
        return super().create(data, max_age=max_age, owner=owner)

    def edit(self, sid: str, *, max_age: int | None = None, owner: str | None = None) -> Any:
        self._off_loop()
        return super().edit(sid, max_age=max_age, owner=owner)

    def delete(self, sid: str) -> bool:
        self._off_loop()
        return super().delete(sid)

    def rotate(self, sid: str) -> str:
        self._off_loop()
        return super().rotate(sid)


HOLD: dict[str, Any] = {}


def session_of(request: Request) -> AsyncSession:
    session = request.scope["fssession.session"]
    assert isinstance(session, AsyncSession)
    assert request.session is session and request.state.session is session
    return session


async def get(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()  # a no-op when eager; required when lazy
    return JSONResponse({"data": dict(session), "new": session.new})


async def set_keys(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()
    for key, value in request.query_params.items():
        if key != "hold":
            session[key] = value
    if request.query_params.get("hold"):
        await anyio.to_thread.run_sync(HOLD["hold"])
    return JSONResponse({})


def sync_set(request: Request) -> JSONResponse:
    # A sync view runs in Starlette's thread pool: lazy loading may block here.
    session = request.scope["fssession.session"]
    session["sync"] = "yes"
    return JSONResponse({})


async def touch_unloaded(request: Request) -> JSONResponse:
    try:
        request.scope["fssession.session"].get("a")
    except RuntimeError as exc:
        return JSONResponse({"error": str(exc)})
    return JSONResponse({"error": None})


async def login(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()
    session.rotate()
    session["user"] = request.query_params["user"]
    return JSONResponse({})


async def logout(request: Request) -> JSONResponse:
    session_of(request).invalidate()
    return JSONResponse({})


async def incr(request: Request) -> JSONResponse:
    session = session_of(request)
    async with session.locked() as data:
        await asyncio.sleep(0)  # the block may await: the lock stays held by its own thread
        data["n"] = data.get("n", 0) + 1
        value = data["n"]
    return JSONResponse({"n": value})


async def incr_fn(request: Request) -> JSONResponse:
    session = session_of(request)
    value = await session.alocked(lambda data: data.__setitem__("n", data.get("n", 0) + 1) or data["n"])
    return JSONResponse({"n": value})


def sync_incr(request: Request) -> JSONResponse:
    with request.scope["fssession.session"].locked() as data:  # a sync view runs in a thread: plain with
        data["n"] = data.get("n", 0) + 1
    return JSONResponse({})


async def locked_fails(request: Request) -> JSONResponse:
    session = session_of(request)
    try:
        async with session.locked() as data:
            data["n"] = "never stored"
            raise KeyError("the block failed")
    except KeyError:
        pass
    return JSONResponse({"n": session.get("n")})


async def locked_probe(request: Request) -> JSONResponse:
    """Inside the block, another process's edit of this session must find it locked."""
    session = session_of(request)
    async with session.locked() as data:
        data["probe"] = await anyio.to_thread.run_sync(HOLD["probe"], session.sid)
    return JSONResponse({"probe": data["probe"]})


async def sync_with_on_the_loop(request: Request) -> JSONResponse:
    try:
        with session_of(request).locked():
            pass
    except RuntimeError as exc:
        return JSONResponse({"error": str(exc)})
    return JSONResponse({"error": None})


async def noop(request: Request) -> JSONResponse:
    return JSONResponse({})


def make_app(store: CountingStore, **options: Any) -> Starlette:
    routes = [
        Route("/get", get),
        Route("/set", set_keys),
        Route("/sync-set", sync_set),
        Route("/touch-unloaded", touch_unloaded),
        Route("/login", login),
        Route("/logout", logout),
        Route("/incr", incr),
        Route("/incr-fn", incr_fn),
        Route("/sync-incr", sync_incr),
        Route("/locked-fails", locked_fails),
        Route("/locked-probe", locked_probe),
        Route("/sync-with", sync_with_on_the_loop),
        Route("/noop", noop),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, store=store, **options)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> OffLoopStore:
    return OffLoopStore(tmp_path / "sessions", SECRET, clock=clock)


def client_for(store: CountingStore, **options: Any) -> TestClient:
    # https base: the cookie is Secure, and httpx honours that.
    return TestClient(make_app(store, **options), base_url="https://testserver")


def sid_of(client: TestClient) -> str | None:
    return split_cookie(client.cookies.get("fssession"))[0]


def data_of(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/get").json()["data"])


def test_login_modify_logout_rotate(store: OffLoopStore) -> None:
    client = client_for(store)
    client.get("/set?cart=apples")
    anonymous = sid_of(client)
    response = client.get("/login?user=alice")
    name, value, attrs = parse_set_cookie(response.headers["set-cookie"])
    sid = split_cookie(value)[0]
    assert name == "fssession" and anonymous is not None and sid != anonymous
    assert {"httponly", "secure"} <= attrs.keys() and attrs["samesite"] == "Lax"
    assert attrs["max-age"] == str(store.max_age) and attrs["path"] == "/"
    assert store.load(anonymous) is None
    client.get("/set?page=2")
    assert data_of(client) == {"cart": "apples", "user": "alice", "page": "2"}
    response = client.get("/logout")
    assert parse_set_cookie(response.headers["set-cookie"])[2]["max-age"] == "0"
    assert store.load(sid) is None
    assert data_of(client) == {}


def test_untouched_requests_do_no_io_even_when_eager(store: OffLoopStore) -> None:
    client = client_for(store)
    client.get("/noop")  # no cookie: nothing to read
    assert store.calls == []
    lazy = client_for(store, eager=False)
    lazy.get("/set?a=1")
    store.calls.clear()
    lazy.get("/noop")
    assert store.calls == []


def test_lazy_session_refuses_to_block_the_event_loop(store: OffLoopStore) -> None:
    client = client_for(store, eager=False)
    client.get("/set?a=1")
    assert "event loop" in client.get("/touch-unloaded").json()["error"]
    client.get("/sync-set")
    assert data_of(client) == {"a": "1", "sync": "yes"}


def test_expiry(store: OffLoopStore, clock: Clock) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    clock.advance(store.max_age + 1)
    assert data_of(client) == {}


def test_bad_cookie_unknown_id_tampered_file(store: OffLoopStore, caplog: pytest.LogCaptureFixture) -> None:
    client = client_for(store)
    client.cookies.set("fssession", "garbage", domain="testserver.local")
    with caplog.at_level(logging.WARNING):
        assert client.get("/get").status_code == 200
    assert "malformed session cookie" in caplog.text

    planted = unknown_id()
    client.cookies.clear()
    client.cookies.set("fssession", planted, domain="testserver.local")
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid not in (None, planted) and store.load(planted) is None

    assert sid is not None
    tamper(store, sid)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        response = client.get("/get")
    assert response.status_code == 200 and response.json() == {"data": {}, "new": True}
    assert "refusing" in caplog.text


def test_lock_timeout_at_commit_reaches_the_app(tmp_path: Path, clock: Clock) -> None:
    store = OffLoopStore(tmp_path / "s", SECRET, clock=clock, lock_timeout=0.2)
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    holder = OffLoopStore(tmp_path / "s", SECRET, clock=clock)
    with holder.edit(sid), pytest.raises(LockTimeout):
        client.get("/set?a=2")
    assert store.load(sid) == {"a": "1"}


def test_overlapping_requests_keep_both_keys(store: OffLoopStore) -> None:
    overlap = Overlap()
    HOLD["hold"] = overlap.hold
    first = client_for(store)
    first.get("/set?base=0")
    sid = sid_of(first)
    assert sid is not None
    second = client_for(store)
    second.cookies.set("fssession", sid, domain="testserver.local")
    overlap.run(lambda: first.get("/set?a=1&hold=1"), lambda: second.get("/set?b=2"))
    assert store.load(sid) == {"base": "0", "a": "1", "b": "2"}


def test_locked_counter_exact_under_threads(store: OffLoopStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    routes = ["/incr", "/incr-fn", "/sync-incr"]  # async with, alocked(fn), and with in a sync view

    def work(i: int) -> None:
        own = client_for(store)
        own.cookies.set("fssession", sid, domain="testserver.local")
        for j in range(15):
            assert own.get(routes[(i + j) % 3]).status_code == 200

    run_threads(6, work)
    assert store.load(sid) == {"a": "1", "n": 90}


def test_async_locked_holds_the_lock_for_the_whole_block(store: OffLoopStore) -> None:
    other = OffLoopStore(store.root, SECRET, lock_timeout=0.2)

    def probe(sid: str) -> str:
        try:
            with other.edit(sid):
                return "not locked"
        except LockTimeout:
            return "locked"

    HOLD["probe"] = probe
    client = client_for(store)
    client.get("/set?a=1")
    assert client.get("/locked-probe").json() == {"probe": "locked"}
    sid = sid_of(client)
    assert sid is not None and store.load(sid) == {"a": "1", "probe": "locked"}
    assert probe(sid) == "not locked"  # and released after it


def test_async_locked_block_that_raises_writes_nothing(store: OffLoopStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    assert client.get("/locked-fails").json() == {"n": None}
    sid = sid_of(client)
    assert sid is not None and store.load(sid) == {"a": "1"}
    assert client.get("/incr").json() == {"n": 1}  # the lock was given back


def test_a_sync_with_on_the_event_loop_says_what_to_use(store: OffLoopStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    assert "async with session.locked()" in client.get("/sync-with").json()["error"]


def test_the_test_client_uses_httpx2() -> None:
    """Starlette's test client deprecates httpx for httpx2, which the test extra installs."""
    import starlette.testclient

    assert starlette.testclient.httpx.__name__ == "httpx2"


def test_a_request_without_a_cookie_may_use_the_session_directly(store: OffLoopStore) -> None:
    """With no cookie there is nothing to read, so touching the session on the event loop is fine."""
    for eager in (True, False):
        client = client_for(store, eager=eager)
        assert client.get("/touch-unloaded").json()["error"] is None


def test_a_block_cancelled_while_waiting_for_the_lock_never_runs_and_leaves_the_lock_free(tmp_path: Path) -> None:
    store = OffLoopStore(tmp_path / "s", SECRET)
    sid = store.create({"n": 0})
    held, release = threading.Event(), threading.Event()

    def other_request() -> None:  # another request holds the session's lock meanwhile
        with OffLoopStore(tmp_path / "s", SECRET).edit(sid):
            held.set()
            release.wait(WAIT)

    holder = threading.Thread(target=other_request)
    holder.start()
    assert held.wait(WAIT)
    ran: list[bool] = []

    async def block(session: AsyncSession) -> None:
        async with session.locked() as data:
            ran.append(True)
            data["n"] = 99

    async def scenario() -> None:
        session = AsyncSession(store, sid)
        await session.aload()
        task = asyncio.create_task(block(session))
        while not any(t.name == "fssession-locked" for t in threading.enumerate()):
            await asyncio.sleep(0.001)  # until the block's thread is waiting for the lock
        task.cancel()
        release.set()  # the lock comes free while the cancelled task still waits for its thread
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    holder.join(WAIT)
    for thread in threading.enumerate():
        if thread.name == "fssession-locked":
            thread.join(WAIT)
            assert not thread.is_alive(), "the cancelled block's thread still holds the session's lock"
    assert not ran, "a cancelled block ran"
    with OffLoopStore(tmp_path / "s", SECRET, lock_timeout=WAIT).edit(sid) as data:  # free again
        assert data == {"n": 0}, "a cancelled block wrote"
