"""Test applications for the WSGI and Flask adapters, and a real threaded HTTP server to run them in.

Run as ``python -m tests.web.apps --kind wsgi|flask --path DIR``: serves on
127.0.0.1 on a free port, prints ``PORT <n>`` and serves until killed.

Routes (the web contract's, tests/web/contract.py; the same for both kinds)::

    /noop                  does not touch the session
    /get                   {"data": dict(session), "new": session.new}
    /set?k=v&...           sets keys; ?hold=1 then waits for the test (see below)
    /del?k=...             deletes keys
    /append?v=x            appends to session["list"] in place (no explicit set)
    /login?user=u          rotate() then session["user"] = u
    /logout                invalidate()
    /incr?key=n            locked read-modify-write of one counter
    /lifetime?s=N          session.max_age = N

``hold``: in-process tests pass a callable; the server process instead
creates ``<path>/.hold-entered`` and waits for ``<path>/.hold-release``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fssession import SessionStore
from fssession.websession import Session
from fssession.wsgi import SessionMiddleware, StartResponse, WSGIEnviron

Hold = Callable[[], None]


def handle(session: Session, path: str, params: list[tuple[str, str]], hold: Hold | None) -> tuple[int, Any]:
    """The routes, framework-neutral: (status, JSON body)."""
    args = dict(params)
    if path == "/noop":
        return 200, "ok"
    if path == "/get":
        return 200, {"data": dict(session), "new": session.new}
    if path == "/set":
        for key, value in params:
            if key != "hold":
                session[key] = value
        if args.get("hold") and hold is not None:
            hold()
        return 200, dict(session)
    if path == "/del":
        for key, _ in params:
            session.pop(key, None)
        return 200, dict(session)
    if path == "/append":
        session["list"].append(args["v"])  # in place: found at commit by comparing values
        return 200, dict(session)
    if path == "/login":
        session.rotate()
        session["user"] = args["user"]
        return 200, "welcome"
    if path == "/logout":
        session.invalidate()
        return 200, "bye"
    if path == "/incr":
        key = args.get("key", "n")
        with session.locked() as data:
            data[key] = data.get(key, 0) + 1
            value = data[key]
        return 200, value
    if path == "/lifetime":
        session.max_age = int(args["s"])
        return 200, "ok"
    return 404, "not found"


def wsgi_app(hold: Hold | None = None) -> Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]:
    """The routes as a bare WSGI application (to be wrapped in SessionMiddleware)."""

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        session: Session = environ["fssession.session"]
        params = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        status, body = handle(session, environ.get("PATH_INFO", "/"), params, hold)
        payload = json.dumps(body).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def flask_app(config: dict[str, Any], hold: Hold | None = None) -> Any:
    """The routes as a Flask application using fssession.flask."""
    from flask import Flask, request, session

    from fssession.flask import FSSession

    app = Flask("fssession_test")
    app.config.update(config)
    FSSession(app)

    @app.route("/<path:name>")
    def route(name: str) -> Any:
        status, body = handle(session, "/" + name, list(request.args.items(multi=True)), hold)  # type: ignore[arg-type]
        return app.response_class(json.dumps(body), status=status, mimetype="application/json")

    return app


def _file_hold(root: Path) -> Hold:
    def hold() -> None:
        (root / ".hold-entered").touch()
        deadline = time.monotonic() + 20
        while not (root / ".hold-release").exists():  # another process decides: poll its flag
            if time.monotonic() > deadline:
                raise RuntimeError("never released")
            time.sleep(0.005)

    return hold


def main() -> None:
    """Serve one of the test applications on 127.0.0.1 with a threaded werkzeug server."""
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["wsgi", "flask"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--secret", required=True)
    opts = parser.parse_args()
    root = Path(opts.path)
    hold = _file_hold(root.parent)
    if opts.kind == "wsgi":
        store = SessionStore(root, opts.secret)
        app: Any = SessionMiddleware(wsgi_app(hold), store, secure=False)
    else:
        app = flask_app(
            {"SECRET_KEY": opts.secret, "FSSESSION_PATH": str(root), "FSSESSION_COOKIE_SECURE": False}, hold
        )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"PORT {server.server_port}", flush=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server.serve_forever()


if __name__ == "__main__":
    main()
