"""The web application each demo node serves, behind :class:`fssession.wsgi.SessionMiddleware`.

Page (for people): ``GET /``; ``POST /login`` (form field ``user``),
``POST /incr``, ``POST /logout``, each answered with a redirect to ``/``.
API (for the demo's story): ``GET /api/whoami[?exact=1]`` (exact: read under
the lock); ``POST /api/login?user=U[&ttl=S]``, ``POST /api/set?KEY=VALUE...``,
``POST /api/incr``, ``POST /api/logout``; and the debug endpoint
``GET /api/hold``, which enters the locked block, increments in memory, says
so and then never finishes (the demo kills the node there).
"""

from __future__ import annotations

import html
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse
from wsgiref.types import WSGIEnvironment as WSGIEnviron

from fssession.websession import Session
from fssession.wsgi import ENVIRON_KEY

from .config import MAX_AGE, NODE_HEADER, SESSION_HEADER, fingerprint

Answer = tuple[str, list[tuple[str, str]], bytes]  # status, headers, body
# An action changes the session; it returns None when the answer still has
# to commit, or the extra fields of a JSON answer when it committed itself.
Action = Callable[[Session, dict[str, str]], dict[str, Any] | None]
JSON = ("Content-Type", "application/json")


def _login(session: Session, params: dict[str, str]) -> None:
    session.rotate()  # a fresh id at login: a planted id (session fixation) is worth nothing
    session["user"] = params.get("user", "").strip()[:40] or "guest"
    if params.get("ttl"):
        session.max_age = int(params["ttl"])


def _incr(session: Session, params: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    with session.locked() as data:  # exact: the read, +1 and write happen under the session's lock
        waited = time.monotonic() - t0
        data["counter"] = data.get("counter", 0) + 1
    return {"wait_ms": waited * 1000}


def _logout(session: Session, params: dict[str, str]) -> None:
    session.invalidate()


def _set(session: Session, params: dict[str, str]) -> dict[str, Any]:
    for key, value in params.items():
        session[key] = value
    t0 = time.monotonic()
    session.commit()  # timed here (the middleware would do it anyway): lock, re-read, merge, write
    return {"commit_ms": (time.monotonic() - t0) * 1000}


def _whoami(session: Session, params: dict[str, str]) -> None:
    if params.get("exact") and session.get("user"):
        # A plain load takes no lock, and a client cache of the mount may
        # serve the version before another node's last commit for up to
        # fs_slack; a read in the locked block sees the last commit.  (It
        # also rewrites the session: fine for a check, not for every page.)
        with session.locked():
            pass


ACTIONS: dict[str, Action] = {
    "/login": _login,
    "/api/login": _login,
    "/incr": _incr,
    "/api/incr": _incr,
    "/logout": _logout,
    "/api/logout": _logout,
    "/api/set": _set,
    "/api/whoami": _whoami,
}


class NodeApp:
    """The demo page and its JSON API, served by the node called *name* (see the module docstring)."""

    def __init__(self, name: str, peers_file: Path | None) -> None:
        self.name = name
        self.peers_file = peers_file

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request, saying which node served it and (by a hash) which session."""
        session: Session = environ[ENVIRON_KEY]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if path == "/api/hold":
            return self._hold(session, start_response)
        if method == "POST":
            params.update(_form(environ))
        try:
            status, headers, body = self.route(session, method, path, params)
        except Exception as exc:  # a failed commit (LockTimeout, StorageError): say which node and why
            status, headers, body = "500 Internal Server Error", [JSON], _json({"error": repr(exc)})
        headers += [(NODE_HEADER, self.name), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        if session.loaded and session.sid is not None:
            headers.append((SESSION_HEADER, fingerprint(session.sid) or ""))
        start_response(status, headers)
        return [body]

    def route(self, session: Session, method: str, path: str, params: dict[str, str]) -> Answer:
        """Dispatch one request: (status, headers, body)."""
        if path == "/" and method == "GET":
            return "200 OK", [("Content-Type", "text/html; charset=utf-8")], self.page(session).encode()
        if method != "POST" and path != "/api/whoami":
            return "405 Method Not Allowed", [("Content-Type", "text/plain")], b"use POST\n"
        action = ACTIONS.get(path)
        if action is None:
            return "404 Not Found", [("Content-Type", "text/plain")], b"not found\n"
        extra = action(session, params)
        if not path.startswith("/api/"):
            return "303 See Other", [("Location", "/")], b""
        if extra is None:
            session.commit()  # now rather than in the middleware, so that the answer shows the (new) session id
        return "200 OK", [JSON], _json({**self.state(session), **(extra or {})})

    def state(self, session: Session) -> dict[str, Any]:
        """What the JSON API tells about the session (by a hash of its id) and who served it."""
        return {
            "node": self.name,
            "host": socket.gethostname(),
            "session": fingerprint(session.sid),
            "user": session.get("user"),
            "counter": session.get("counter", 0),
            "data": dict(session),
        }

    def _hold(self, session: Session, start_response: StartResponse) -> Iterator[bytes]:
        """Debug: enter the locked block, increment in memory, report it, and hang there until killed."""
        start_response("200 OK", [("Content-Type", "text/plain"), (NODE_HEADER, self.name)])
        with session.locked() as data:
            data["counter"] = data.get("counter", 0) + 1  # never written: the block never exits cleanly
            yield f"holding the lock of session {fingerprint(session.sid)} on {self.name}\n".encode()
            time.sleep(3600)

    def peers(self) -> list[tuple[str, str]]:
        """The other nodes' (name, URL), from the file the demo writes once every node is up."""
        if self.peers_file is None:
            return []
        try:
            nodes = json.loads(self.peers_file.read_text())
        except (OSError, ValueError):
            return []
        return [(n["name"], n["url"]) for n in nodes]

    def page(self, session: Session) -> str:
        """The demo page: who served it, the session (by a hash of its id), the counter, the forms."""
        esc = html.escape
        links = " ".join(
            f'<a href="{esc(url)}" class="peer">{esc(name)}</a>' for name, url in self.peers() if name != self.name
        )
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fssession demo: {esc(self.name)}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}} .node{{font-size:2em}}</style></head>
<body>
<p class="node">Served by <b id="node">{esc(self.name)}</b> <small>(host {esc(socket.gethostname())})</small></p>
{_page_body(session)}
<p>Other nodes: {links or "(none known)"}. They share one session directory: the session follows you.</p>
<p id="cookie-note"><small>Session cookie: HttpOnly; SameSite=Lax; Path=/; Max-Age={MAX_AGE}.
 <b>Secure is off in this demo</b> (<code>secure=False</code>, set explicitly because it is served over plain
 http on 127.0.0.1); fssession's default is on: serve it over HTTPS.</small></p>
</body></html>
"""


def _page_body(session: Session) -> str:
    """The page's middle: the counter and a logout button when logged in, else the login form."""
    user = session.get("user")
    if not user:
        return """
<p id="anonymous">Not logged in.</p>
<form method="post" action="/login"><input id="user-input" name="user" placeholder="your name" required>
 <button id="login" type="submit">Log in</button></form>"""
    return f"""
<p>Logged in as <b id="user">{html.escape(str(user))}</b>, session <code id="session">{fingerprint(session.sid)}</code>
 <small>(a hash of its id: the id itself stays in the HttpOnly cookie)</small></p>
<form method="post" action="/incr"><p>Counter: <b id="counter">{int(session.get("counter", 0))}</b>
 <button id="incr" type="submit">+1</button></p></form>
<form method="post" action="/logout"><button id="logout" type="submit">Log out</button></form>"""


def _form(environ: WSGIEnviron) -> dict[str, str]:
    """The fields of a urlencoded POST body."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
