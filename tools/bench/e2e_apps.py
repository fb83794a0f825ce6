"""The web applications the end-to-end benchmark serves, one registered factory per session backend.

Every backend serves the same three endpoints, each a few lines in its
framework's usual style:

* ``GET /read``: loads the session and answers how many keys it holds;
* ``POST /write?KEY=VALUE``: sets those keys in the session (created if new);
* ``GET /keys``: the session's keys, as JSON (the check for lost keys).

A factory takes the session directory and the signing key and returns a
WSGI application; each backend runs with its library's defaults except where
a setting is needed to run at all (paths, plain-HTTP cookies).  The demo's
store settings (:mod:`tools.demo.config`) are fssession's for the WSGI
middleware, as in the demo cluster.  Registration order is the plot's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fssession import SessionStore
from fssession.wsgi import ENVIRON_KEY, SessionMiddleware
from tools.demo.config import FS_SLACK, LEASE, LOCK_TIMEOUT, MAX_AGE

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Factory = Callable[[Path, str], WSGIApp]
BACKENDS: dict[str, Factory] = {}
COOKIES: dict[str, str] = {}  # backend -> the name of its session cookie


def backend(name: str, cookie: str) -> Callable[[Factory], Factory]:
    """Register the decorated ``(path, secret) -> WSGI app`` as backend *name*, whose cookie is *cookie*."""

    def register(factory: Factory) -> Factory:
        BACKENDS[name] = factory
        COOKIES[name] = cookie
        return factory

    return register


def _answer(start_response: Callable[..., Any], body: Any, status: str = "200 OK") -> list[bytes]:
    raw = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))])
    return [raw]


# ------------------------------------------------------------ fssession, WSGI


@backend("fssession (WSGI)", "fssession")
def fssession_wsgi(path: Path, secret: str) -> WSGIApp:
    """fssession's WSGI middleware with the demo cluster's store settings."""
    store = SessionStore(path, secret, max_age=MAX_AGE, lease=LEASE, lock_timeout=LOCK_TIMEOUT, fs_slack=FS_SLACK)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        session = environ[ENVIRON_KEY]
        where = environ.get("PATH_INFO", "")
        if where == "/write":
            session.update(parse_qsl(environ.get("QUERY_STRING", "")))
            return _answer(start_response, {"n": len(session)})
        if where == "/keys":
            return _answer(start_response, sorted(session.keys()))
        return _answer(start_response, {"n": len(session)})

    return SessionMiddleware(app, store, secure=False)


# ------------------------------------------------------------------ Flask


def _flask_app(configure: Callable[[Any], None], secret: str) -> WSGIApp:
    """A Flask app with the three endpoints, its session set up by *configure(app)*."""
    from flask import Flask, jsonify, request, session

    app = Flask("fssession-bench")
    app.config["SECRET_KEY"] = secret
    configure(app)

    @app.get("/read")
    def read() -> Any:
        return jsonify(n=len(session))

    @app.post("/write")
    def write() -> Any:
        for key, value in request.args.items():
            session[key] = value
        return jsonify(n=len(session))

    @app.get("/keys")
    def keys() -> Any:
        return jsonify(sorted(session.keys()))

    return app


@backend("Flask-Session (cachelib)", "session")
def flask_session(path: Path, secret: str) -> WSGIApp:
    """Flask-Session's file backend: cachelib's FileSystemCache (threshold 500, as its documentation shows).

    With its defaults (SESSION_REFRESH_EACH_REQUEST) it writes the session on
    every request, reads included.
    """

    def configure(app: Any) -> None:
        from cachelib import FileSystemCache
        from flask_session import Session

        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(str(path), threshold=500))
        Session(app)

    return _flask_app(configure, secret)


@backend("fssession (Flask)", "session")
def fssession_flask(path: Path, secret: str) -> WSGIApp:
    """fssession's Flask extension."""

    def configure(app: Any) -> None:
        from fssession.flask import FSSession

        app.config["FSSESSION_PATH"] = str(path)
        FSSession(app)

    return _flask_app(configure, secret)


# ----------------------------------------------------------------- Django


def _django_app(engine: str, path: Path, secret: str) -> WSGIApp:
    """A Django project of one module: the three views behind Django's session middleware and *engine*."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY=secret,
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        INSTALLED_APPS=["django.contrib.sessions"],
        SESSION_ENGINE=engine,
        SESSION_FILE_PATH=str(path),
        FSSESSION_PATH=str(path),
        USE_TZ=True,
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()  # type: ignore[no-any-return]


def _django_views() -> list[Any]:
    """The URL patterns of the Django project (imported by Django through ROOT_URLCONF)."""
    from django.http import JsonResponse
    from django.urls import path

    def read(request: Any) -> Any:
        return JsonResponse({"n": len(request.session.keys())})

    def write(request: Any) -> Any:
        for key, value in request.GET.items():
            request.session[key] = value
        return JsonResponse({"n": len(request.session.keys())})

    def keys(request: Any) -> Any:
        return JsonResponse(sorted(request.session.keys()), safe=False)

    return [path("read", read), path("write", write), path("keys", keys)]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` from ROOT_URLCONF (this module) only once it is set up.
    if name == "urlpatterns":
        return _django_views()
    raise AttributeError(name)


@backend("Django file", "sessionid")
def django_file(path: Path, secret: str) -> WSGIApp:
    """Django's file session backend."""
    return _django_app("django.contrib.sessions.backends.file", path, secret)


@backend("fssession (Django)", "sessionid")
def fssession_django(path: Path, secret: str) -> WSGIApp:
    """fssession's Django session engine."""
    return _django_app("fssession.django", path, secret)
