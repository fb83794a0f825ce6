"""ASGI middleware (Starlette, FastAPI): sessions with all file I/O in worker threads.

::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from fssession.asgi import SessionMiddleware

    app = Starlette(routes=..., middleware=[Middleware(SessionMiddleware, store=store)])

    async def view(request):
        request.session["user"] = "alice"          # or request.state.session
        async with request.session.locked() as data:   # exact read-modify-write
            data["n"] = data.get("n", 0) + 1

The session (an :class:`AsyncSession`) is in ``scope["fssession.session"]``,
``scope["session"]`` (so Starlette's ``request.session`` works) and
``request.state.session``.

Reading the file happens before the application runs when the request
carries a session cookie (``eager=True``, the default), so the mapping can
be used synchronously in async views.  With ``eager=False`` nothing is read
until the application asks: ``await session.aload()`` first; touching an
unloaded session on the event loop raises :class:`RuntimeError` instead of
blocking it (sync views, which Starlette runs in a thread, may touch it
directly).  The commit runs in a thread as the response starts; an error
there (:class:`~fssession.LockTimeout`, ...) is raised from the
application's ``send`` of the response start.

``session.locked()`` works both ways: ``async with`` in async views (the
lock is taken, and the result written, in a worker thread that holds the
lock for the block), plain ``with`` in sync views.  ``await
session.alocked(fn)`` runs ``fn(data)`` under the lock in one go.

Sessions live for the store's ``max_age`` (default 30 minutes of
idleness), or the middleware's ``max_age=`` for the sessions it creates.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar, Unpack

try:
    import anyio.to_thread
except ModuleNotFoundError as exc:  # say which extra brings it, not just which module is missing
    raise ModuleNotFoundError(
        f"fssession.asgi needs Starlette's async support ({exc.name} is not installed): pip install 'fssession[asgi]'",
        name=exc.name,
    ) from exc

from .store import SessionStore
from .websession import MiddlewareBase, Options, Session, response_headers

__all__ = ["SCOPE_KEY", "AsyncSession", "SessionMiddleware"]

SCOPE_KEY = "fssession.session"

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AsyncSession(Session):
    """A :class:`~fssession.websession.Session` whose file I/O never runs on the event loop."""

    def _check_io(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: blocking I/O is fine here
        raise RuntimeError(
            "fssession: this would read or write the session file on the event loop; "
            "use `await session.aload()` / `await session.acommit()` / `async with session.locked()` in async code"
        )

    async def aload(self) -> None:
        """Read the session in a worker thread (no-op once loaded)."""
        if not self.loaded:
            data = await anyio.to_thread.run_sync(self._read_cookie_session)
            self._adopt_loaded(data)
        self.accessed = True

    async def acommit(self) -> None:
        """:meth:`~fssession.websession.Session.commit` in a worker thread."""
        await anyio.to_thread.run_sync(self.commit)

    async def alocked(self, update: Callable[[dict[str, Any]], T]) -> T:
        """Run ``update(data)`` under the session's lock in a worker thread and commit; returns its result.

        The async form of :meth:`~fssession.websession.Session.locked` (a lock
        is held by one thread, so the whole block runs in one).
        """

        def run() -> T:
            with Session.locked(self) as data:
                return update(data)

        return await anyio.to_thread.run_sync(run)

    def locked(self) -> _Locked:  # type: ignore[override]
        """Exact read-modify-write under the session's lock: ``async with`` in async code, ``with`` in a thread.

        ::

            async with session.locked() as data:
                data["n"] = data.get("n", 0) + 1

        As :meth:`~fssession.websession.Session.locked`: a fresh read, written
        when the block exits cleanly, nothing written if it raises.  Keep the
        block short: every other commit of this session waits for it.
        """
        return _Locked(self)


class _BlockRaised(Exception):
    """Raised inside the lock holder's ``with`` so that it writes nothing: the ``async with`` body failed."""


class _Locked:
    """``session.locked()`` of an :class:`AsyncSession`: a sync and an async context manager.

    The async form keeps a thread of its own in the locked block for as long
    as the ``async with`` body runs: the lock belongs to the thread that took
    it, and the event loop must not wait for it.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._sync: AbstractContextManager[dict[str, Any]] | None = None
        self._entered = threading.Event()
        self._leave = threading.Event()
        self._block_raised = False
        self._data: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------ sync: a sync view, in a worker thread
    def __enter__(self) -> dict[str, Any]:
        self._sync = Session.locked(self._session)
        return self._sync.__enter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._sync is not None
        return self._sync.__exit__(exc_type, exc, tb)

    # ------------------------------------------------ async: the block runs on the event loop
    def _hold(self) -> None:
        """The lock holder's thread: enter, hand the data over, wait for the block, write or not."""
        try:
            with Session.locked(self._session) as data:
                self._data = data
                self._entered.set()
                self._leave.wait()
                if self._block_raised:
                    raise _BlockRaised
        except _BlockRaised:
            pass
        except BaseException as exc:  # handed to the awaiting task, which raises it
            self._error = exc
        finally:
            self._entered.set()  # also when taking the lock failed: the waiter must wake up

    async def __aenter__(self) -> dict[str, Any]:
        self._thread = threading.Thread(target=self._hold, name="fssession-locked", daemon=True)
        self._thread.start()
        try:
            await anyio.to_thread.run_sync(self._entered.wait)
        except BaseException:
            # Cancelled (delivered once the wait is over): no block will run, so
            # the holder must leave now, writing nothing, or it keeps the lock.
            self._block_raised = True
            self._leave.set()
            raise
        if self._data is None:
            await anyio.to_thread.run_sync(self._thread.join)
            assert self._error is not None
            raise self._error
        return self._data

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._thread is not None
        self._block_raised = exc_type is not None
        self._leave.set()
        await anyio.to_thread.run_sync(self._thread.join)
        if self._error is not None and exc_type is None:
            raise self._error


class SessionMiddleware(MiddlewareBase):
    """Pure ASGI middleware giving each HTTP request an :class:`AsyncSession`.

    The options are those of :class:`fssession.wsgi.SessionMiddleware`, plus
    ``eager`` (see the module's docstring).
    """

    def __init__(self, app: ASGIApp, store: SessionStore, *, eager: bool = True, **kw: Unpack[Options]) -> None:
        super().__init__(app, store, kw)
        self.eager = eager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection; only HTTP requests get a session."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = "; ".join(
            value.decode("latin-1") for name, value in scope.get("headers", []) if name.lower() == b"cookie"
        )
        session = AsyncSession(self.store, self.policy.read(cookie), max_age=self.max_age)
        scope[SCOPE_KEY] = session
        scope["session"] = session
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["session"] = session
        if self.eager and session.cookie_sid is not None:
            await session.aload()
        started = False

        async def send_with_session(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                extra = await anyio.to_thread.run_sync(functools.partial(response_headers, session, self.policy))
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra),
                ]
                started = True
            await send(message)

        await self.app(scope, receive, send_with_session)
        if started and session.loaded:
            await anyio.to_thread.run_sync(session.commit_after_response)
