"""WSGI middleware: a lazy, merge-on-commit :class:`~fssession.websession.Session` per request.

::

    from fssession import SessionStore
    from fssession.wsgi import SessionMiddleware

    store = SessionStore("/srv/sessions", secret_key=SECRET)
    app = SessionMiddleware(app, store)

    # in the application
    session = environ["fssession.session"]
    session["user"] = "alice"

The session is committed when the application calls ``start_response``, so
that a new or rotated id can still go out in ``Set-Cookie``.  An error while
committing (:class:`~fssession.LockTimeout`, :class:`~fssession.StorageError`)
is raised from ``start_response`` into the application; an application that
wants to handle it in its own view calls ``session.commit()`` there first.
Changes made after ``start_response`` (while the body is generated) are
committed when the response is closed, if the session already has an id.

Sessions live for the store's ``max_age`` (default 30 minutes of idleness),
or the middleware's ``max_age=`` for the sessions it creates.  The cookie is
``Secure``, ``HttpOnly`` and ``SameSite=Lax`` unless told otherwise
(``secure=False`` for plain-HTTP development).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Unpack

from .store import SessionStore
from .websession import MiddlewareBase, Options, Session, response_headers

__all__ = ["ENVIRON_KEY", "SessionMiddleware"]

log = logging.getLogger("fssession.web")

ENVIRON_KEY = "fssession.session"

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIEnviron = dict[str, Any]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]


class SessionMiddleware(MiddlewareBase):
    """Wrap a WSGI application so that each request has ``environ["fssession.session"]``.

    The cookie options build a :class:`~fssession.websession.CookiePolicy`
    (or pass ``policy=`` to give one directly).  ``max_age`` sets the idle
    lifetime of sessions created through this middleware (default: the
    store's); the cookie's Max-Age follows it.
    """

    def __init__(self, app: WSGIApp, store: SessionStore, *, environ_key: str = ENVIRON_KEY, **kw: Unpack[Options]):
        super().__init__(app, store, kw)
        self.environ_key = environ_key

    def make_session(self, environ: WSGIEnviron) -> Session:
        """The (not yet loaded) session for this request."""
        return Session(self.store, self.policy.read(environ.get("HTTP_COOKIE")), max_age=self.max_age)

    def session_headers(self, session: Session) -> list[tuple[str, str]]:
        """Commit *session* and return the headers to add (Set-Cookie, Vary)."""
        return response_headers(session, self.policy)

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        """Run the application with a session, committing it as the response starts."""
        session = self.make_session(environ)
        environ[self.environ_key] = session
        state = {"started": False}

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if exc_info is not None and exc_info[0] is not None:
                # The application is reporting an error: a session failure
                # must not replace it, so it is only logged here.
                try:
                    extra = self.session_headers(session)
                except Exception:
                    log.exception("could not commit the session of a failed request")
                    extra = []
            else:
                extra = self.session_headers(session)
            state["started"] = True
            return start_response(status, [*headers, *extra], exc_info)

        result = self.app(environ, session_start_response)

        def after() -> None:
            if state["started"]:
                session.commit_after_response()

        return _ClosingIterable(result, after)


class _ClosingIterable:
    """Pass the body through, then run *after* once the server closes the response."""

    def __init__(self, result: Iterable[bytes], after: Callable[[], None]) -> None:
        self._result = result
        self._after = after

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        """Close the application's iterable (as WSGI requires), then run the late commit."""
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after()
