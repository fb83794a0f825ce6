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
  cookie's Max-Age for permanent sessions.  Flask's default is 31 days;
  a sliding lifetime, so an idle session ends after it (e.g.
  ``timedelta(hours=8)``).
* ``SESSION_PERMANENT`` (default True, as in Flask-Session): whether the
  cookie carries a Max-Age.  ``session.permanent`` overrides it per session.
* ``SESSION_COOKIE_NAME``, ``_DOMAIN``, ``_PATH``, ``_HTTPONLY``,
  ``_PARTITIONED``, ``SESSION_REFRESH_EACH_REQUEST``: as in Flask.
* ``SESSION_COOKIE_SECURE``: ``True`` makes the cookie ``Secure`` always.
  Flask's default, ``False`` (left unset or set explicitly: the two cannot
  be told apart), gives a cookie that is ``Secure`` exactly when the request
  came over HTTPS: ``request.is_secure``, or a proxy's ``X-Forwarded-Proto:
  https`` / ``Forwarded: proto=https`` (trusted only to *add* ``Secure``,
  which no forged header can make unsafe).  So plain-HTTP development and
  staging work, and an HTTPS site gets ``Secure`` cookies.  Behind a proxy
  that terminates TLS and sends neither header, set it to ``True``.
  ``FSSESSION_COOKIE_SECURE`` (``True`` / ``False``), when present, decides
  instead of the request (``SESSION_COOKIE_SECURE = True`` still wins).
* ``SESSION_COOKIE_SAMESITE``: ``"Lax"``, ``"Strict"`` or ``"None"`` as given
  (``"None"`` also makes the cookie ``Secure``: browsers drop it otherwise).
  Flask's default, ``None``, gives ``SameSite=Lax``; to send no ``SameSite``
  attribute at all, set ``FSSESSION_COOKIE_SAMESITE = None`` (an explicit
  ``SESSION_COOKIE_SAMESITE = None`` is Flask's default value and so also
  gives ``Lax``).
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

try:
    from flask import Flask, Request, Response, has_request_context, request
    from flask.sessions import SessionInterface, SessionMixin
except ModuleNotFoundError as exc:  # say which extra brings it, not just which module is missing
    raise ModuleNotFoundError(
        f"fssession.flask needs Flask ({exc.name} is not installed): pip install 'fssession[flask]'", name=exc.name
    ) from exc

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


_MIN_KEY_BYTES = 16  # what the store requires of every key; said here with the setting's name


def _came_over_https(req: Request) -> bool:
    """Whether *req* reached us over HTTPS, directly or (as a proxy says) through a proxy that ended TLS.

    The proxy headers are trusted only because they can only add ``Secure``:
    a forged one makes a cookie stricter, never weaker.
    """
    if req.is_secure:
        return True
    forwarded_proto = req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded_proto == "https":
        return True
    first_hop = req.headers.get("Forwarded", "").split(",")[0]
    return any(part.strip().lower() == "proto=https" for part in first_hop.split(";"))


def _seconds(lifetime: timedelta | int | float) -> int:
    if isinstance(lifetime, timedelta):
        return max(1, int(lifetime.total_seconds()))
    return max(1, int(lifetime))


class FSSessionInterface(SessionInterface):
    """Flask's session interface on a :class:`~fssession.SessionStore`."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def get_cookie_secure(self, app: Flask) -> bool:
        """Whether the session cookie is ``Secure`` for the current request (see the module's docstring)."""
        config = app.config
        if config["SESSION_COOKIE_SECURE"] or self.get_cookie_samesite(app) == "None":
            return True
        if "FSSESSION_COOKIE_SECURE" in config:
            return bool(config["FSSESSION_COOKIE_SECURE"])
        # Flask's default (False, set or not): Secure exactly when the request
        # came over HTTPS, where Secure protects and costs nothing; over plain
        # HTTP a Secure cookie would never come back and no login would stick.
        return not has_request_context() or _came_over_https(request)

    def get_cookie_samesite(self, app: Flask) -> str | None:
        """``SESSION_COOKIE_SAMESITE`` as set, Lax for Flask's default (None); ``FSSESSION_COOKIE_SAMESITE`` wins."""
        if "FSSESSION_COOKIE_SAMESITE" in app.config:
            value = app.config["FSSESSION_COOKIE_SAMESITE"]
        else:
            value = app.config["SESSION_COOKIE_SAMESITE"] or "Lax"
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
        attributes: dict[str, Any] = {
            "domain": domain,
            "path": path,
            "secure": secure,
            "httponly": httponly,
            "samesite": samesite,
            "partitioned": partitioned,
        }
        if action == "clear":
            response.delete_cookie(name, **attributes)
        elif action is not None:
            max_age = session.max_age if session.permanent else None
            response.set_cookie(name, action[1], max_age=max_age, **attributes)


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
        own = bool(app.config.get("FSSESSION_SECRET_KEY"))
        name = "FSSESSION_SECRET_KEY" if own else "SECRET_KEY"
        key = app.config.get(name)
        if not key:
            raise RuntimeError("FSSession: set SECRET_KEY (or FSSESSION_SECRET_KEY) to sign sessions")
        named: list[tuple[str, str | bytes]] = [(name, key)]
        if not own:
            # Fallbacks belong to SECRET_KEY; with a key of our own they do not apply.
            fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
            named += [(f"SECRET_KEY_FALLBACKS[{i}]", k) for i, k in enumerate(fallbacks) if k]
        for setting, value in named:
            size = len(value.encode() if isinstance(value, str) else value)
            if size < _MIN_KEY_BYTES:
                raise RuntimeError(f"FSSession: {setting} is {size} bytes; every signing key needs at least 16")
        keys = [value for _, value in named]
        options: dict[str, Any] = dict(app.config.get("FSSESSION_STORE_OPTIONS") or {})
        options.setdefault("max_age", _seconds(app.permanent_session_lifetime))
        options.setdefault("serializer", app.config.get("FSSESSION_SERIALIZER", "pickle"))
        return SessionStore(path, keys, **options)
