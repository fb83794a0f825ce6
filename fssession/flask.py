"""Flask integration: server-side sessions on a shared directory, configured like Flask-Session.

::

    from flask import Flask, session
    from fssession.flask import FSSession

    app = Flask(__name__)
    app.config.update(SECRET_KEY="...", FSSESSION_PATH="/srv/sessions")
    FSSession(app)            # or: ext = FSSession(); ext.init_app(app)

    @app.post("/login")
    def login():
        session.rotate()      # fresh id at login
        session["user"] = "alice"
        ...

    with session.locked() as data:   # exact read-modify-write of one key
        data["n"] = data.get("n", 0) + 1

Configuration (``app.config``):

* ``FSSESSION_PATH`` (required): the store's directory.
* ``FSSESSION_SECRET_KEY``: the signing key; default ``SECRET_KEY``.  Keys in
  ``SECRET_KEY_FALLBACKS`` still verify existing sessions.
* ``PERMANENT_SESSION_LIFETIME``: the sessions' idle lifetime, and the
  cookie's Max-Age for permanent sessions.
* ``SESSION_PERMANENT`` (default True, as in Flask-Session): whether the
  cookie carries a Max-Age.  ``session.permanent`` overrides it per session.
* ``SESSION_COOKIE_NAME``, ``_DOMAIN``, ``_PATH``, ``_HTTPONLY``,
  ``_PARTITIONED``, ``SESSION_REFRESH_EACH_REQUEST``: as in Flask.
* ``SESSION_COOKIE_SECURE`` / ``SESSION_COOKIE_SAMESITE``: Flask's defaults
  (False / None) are unsafe, so when they are left unset the cookie is
  ``Secure`` and ``SameSite=Lax`` anyway; turn those off explicitly with
  ``FSSESSION_COOKIE_SECURE = False`` (plain-HTTP development) or
  ``FSSESSION_COOKIE_SAMESITE = None``.
* ``FSSESSION_STORE_OPTIONS``: extra keyword arguments for
  :class:`~fssession.SessionStore` (``lock_timeout``, ``absolute_max_age``, ...);
  or ``FSSESSION_STORE``: a ready store, which overrides all of the above
  (its own ``max_age`` then is the sessions' lifetime).

The session is committed in ``save_session``.  A failure there
(:class:`~fssession.LockTimeout`, :class:`~fssession.StorageError`) becomes a
500 that the app sees in ``@app.errorhandler(500)`` as
``e.original_exception``; to handle it in the view instead, call
``session.commit()`` there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from .store import SessionStore
from .websession import Session

__all__ = ["FSSession", "FSSessionInterface", "FlaskSession"]


# SessionMixin declares new/modified/accessed as plain class flags; ours are computed properties.
class FlaskSession(Session, SessionMixin):  # type: ignore[override]
    """The object behind ``flask.session``: a :class:`~fssession.websession.Session` with Flask's mixin."""

    def __init__(
        self, store: SessionStore, cookie_sid: str | None, *, max_age: int | None, permanent_default: bool
    ) -> None:
        super().__init__(store, cookie_sid, max_age=max_age)
        self._permanent_default = permanent_default

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser session (``SESSION_PERMANENT`` unless set)."""
        return bool(self.get("_permanent", self._permanent_default))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)


def _seconds(lifetime: timedelta | int | float) -> int:
    if isinstance(lifetime, timedelta):
        return max(1, int(lifetime.total_seconds()))
    return max(1, int(lifetime))


class FSSessionInterface(SessionInterface):
    """Flask's session interface on a :class:`~fssession.SessionStore`."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def get_cookie_secure(self, app: Flask) -> bool:
        """``SESSION_COOKIE_SECURE``, or Secure unless ``FSSESSION_COOKIE_SECURE`` is False."""
        return bool(app.config["SESSION_COOKIE_SECURE"] or app.config.get("FSSESSION_COOKIE_SECURE", True))

    def get_cookie_samesite(self, app: Flask) -> str | None:
        """``SESSION_COOKIE_SAMESITE``, or ``FSSESSION_COOKIE_SAMESITE`` (default Lax)."""
        value = app.config["SESSION_COOKIE_SAMESITE"] or app.config.get("FSSESSION_COOKIE_SAMESITE", "Lax")
        return str(value) if value else None

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        """The session for *request*; nothing is read until the view uses it."""
        return FlaskSession(
            self.store,
            request.cookies.get(self.get_cookie_name(app)),
            # The store was built with PERMANENT_SESSION_LIFETIME (or, given
            # ready-made, brings its own lifetime): sessions use the store's.
            max_age=None,
            permanent_default=bool(app.config.get("SESSION_PERMANENT", True)),
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Commit the session's changes and set or clear the cookie."""
        if not isinstance(session, FlaskSession):
            return
        session.commit()
        if not session.loaded:
            return
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        secure = self.get_cookie_secure(app)
        httponly = self.get_cookie_httponly(app)
        samesite = self.get_cookie_samesite(app)
        partitioned = self.get_cookie_partitioned(app)
        if session.accessed:
            response.vary.add("Cookie")
        refresh = bool(app.config["SESSION_REFRESH_EACH_REQUEST"]) and session.sid is not None and session.permanent
        action = session.cookie_action(refresh=refresh)
        if action == "clear":
            response.delete_cookie(
                name,
                domain=domain,
                path=path,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
                partitioned=partitioned,
            )
        elif action is not None:
            max_age = session.max_age if session.permanent else None
            response.set_cookie(
                name,
                action[1],
                max_age=max_age,
                domain=domain,
                path=path,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
                partitioned=partitioned,
            )


class FSSession:
    """The Flask extension: ``FSSession(app)`` or ``FSSession().init_app(app)``."""

    def __init__(self, app: Flask | None = None) -> None:
        self.store: SessionStore | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the store from ``app.config`` and install the session interface."""
        store = app.config.get("FSSESSION_STORE")
        if store is None:
            store = self._make_store(app)
        elif not isinstance(store, SessionStore):
            raise TypeError("FSSESSION_STORE must be a fssession.SessionStore")
        self.store = store
        app.session_interface = FSSessionInterface(store)
        app.extensions["fssession"] = self

    @staticmethod
    def _make_store(app: Flask) -> SessionStore:
        path = app.config.get("FSSESSION_PATH")
        if not path:
            raise RuntimeError("FSSession: set FSSESSION_PATH to the shared session directory")
        key = app.config.get("FSSESSION_SECRET_KEY") or app.config.get("SECRET_KEY")
        if not key:
            raise RuntimeError("FSSession: set SECRET_KEY (or FSSESSION_SECRET_KEY) to sign sessions")
        keys: list[str | bytes] = [key]
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
        if not app.config.get("FSSESSION_SECRET_KEY"):
            # Fallbacks belong to SECRET_KEY; with a key of our own they do not apply.
            keys += [k for k in fallbacks if k]
        options: dict[str, Any] = dict(app.config.get("FSSESSION_STORE_OPTIONS") or {})
        options.setdefault("max_age", _seconds(app.permanent_session_lifetime))
        return SessionStore(path, keys, **options)
