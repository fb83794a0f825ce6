"""The ASGI middleware through Starlette's TestClient: the web contract, then what only ASGI has.

Every file operation is checked to run off the event loop (the store is an
``OffLoopStore``, in the contract too).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
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

from fssession import LockTimeout, SessionStore
from fssession.asgi import AsyncSession, SessionMiddleware
from fssession.websession import split_cookie
from tests.support import KEY, Clock
from tests.web.contract import Driver, GenerationContract, Reply, WebClient, WebContract
from tests.web.helpers import WAIT, count_calls, parse_set_cookie


class OffLoopStore(SessionStore):
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


# The contract's /set?hold=1 calls HOLD["hold"]; /locked-probe calls HOLD["probe"].
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


async def del_keys(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()
    for key in request.query_params:
        session.pop(key, None)
    return JSONResponse({})


async def append(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()
    session["list"].append(request.query_params["v"])  # in place: found at commit by comparing values
    return JSONResponse({})


async def lifetime(request: Request) -> JSONResponse:
    session = session_of(request)
    await session.aload()
    session.max_age = int(request.query_params["s"])
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


def make_app(store: SessionStore, **options: Any) -> Starlette:
    routes = [
        Route("/get", get),
        Route("/set", set_keys),
        Route("/del", del_keys),
        Route("/append", append),
        Route("/lifetime", lifetime),
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


def client_for(store: SessionStore, **options: Any) -> TestClient:
    # https base: the cookie is Secure, and httpx honours that.
    return TestClient(make_app(store, **options), base_url="https://testserver")


class ASGIClient(WebClient):
    """Starlette's TestClient (httpx) over HTTPS."""

    cookie_name = "fssession"

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, path: str) -> Reply:
        response = self.client.get(path)
        cookies = [parse_set_cookie(h) for h in response.headers.get_list("set-cookie")]
        return Reply(response.status_code, response.json(), cookies, response.headers.get("vary"))

    def cookie(self) -> str | None:
        return self.client.cookies.get(self.cookie_name) or None

    def set_cookie(self, value: str) -> None:
        self.client.cookies.delete(self.cookie_name)
        self.client.cookies.set(self.cookie_name, value, domain="testserver.local")


class ASGIDriver(Driver):
    """The middleware with its defaults (eager loading) on async views; the store checks it is off the loop."""

    cookie_name = "fssession"
    secure = True
    refreshes_cookie = True
    malformed_log = "malformed session cookie"
    refused_log = "refusing"
    incr_routes = ("/incr", "/incr-fn", "/sync-incr")  # async with, alocked(fn), and with in a sync view
    loads_eagerly = True  # the middleware's default (eager=True)

    def open_store(self, root: Path, clock: Clock, **options: Any) -> SessionStore:
        return OffLoopStore(root, KEY, clock=clock, **options)

    def client(self, store: SessionStore, hold: Callable[[], None] | None = None) -> WebClient:
        if hold is not None:
            HOLD["hold"] = hold
        return ASGIClient(client_for(store))

    def close(self) -> None:
        HOLD.clear()
        super().close()


class TestContract(WebContract, GenerationContract):
    driver_class = ASGIDriver


# ---------------------------------------------------------------- ASGI only


@pytest.fixture
def store(tmp_path: Path) -> OffLoopStore:
    return OffLoopStore(tmp_path / "sessions", KEY, clock=Clock())


def sid_of(client: TestClient) -> str | None:
    return split_cookie(client.cookies.get("fssession"))[0]


def data_of(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/get").json()["data"])


def test_a_lazy_session_does_no_io_on_an_untouched_request(store: OffLoopStore) -> None:
    lazy = client_for(store, eager=False)
    lazy.get("/set?a=1")
    calls = count_calls(store)
    lazy.get("/noop")
    assert calls == []


def test_lazy_session_refuses_to_block_the_event_loop(store: OffLoopStore) -> None:
    client = client_for(store, eager=False)
    client.get("/set?a=1")
    assert "event loop" in client.get("/touch-unloaded").json()["error"]
    client.get("/sync-set")
    assert data_of(client) == {"a": "1", "sync": "yes"}


def test_async_locked_holds_the_lock_for_the_whole_block(store: OffLoopStore) -> None:
    other = OffLoopStore(store.root, KEY, lock_timeout=0.2)

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
    store = OffLoopStore(tmp_path / "s", KEY)
    sid = store.create({"n": 0})
    held, release = threading.Event(), threading.Event()

    def other_request() -> None:  # another request holds the session's lock meanwhile
        with OffLoopStore(tmp_path / "s", KEY).edit(sid):
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
    with OffLoopStore(tmp_path / "s", KEY, lock_timeout=WAIT).edit(sid) as data:  # free again
        assert data == {"n": 0}, "a cancelled block wrote"
