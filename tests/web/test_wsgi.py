"""The WSGI middleware, through werkzeug's test client: the web contract, then what only WSGI has.

Real servers (two processes on one directory) are in test_servers.py; the
framework-neutral Session in test_websession.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from fssession import LockTimeout, SessionStore
from fssession.wsgi import SessionMiddleware
from tests.support import KEY, Clock
from tests.web.apps import wsgi_app
from tests.web.contract import Cookie, Driver, GenerationContract, Reply, WebClient, WebContract
from tests.web.helpers import count_calls, make_store, parse_set_cookie

COOKIE = "fssession"


def set_cookies(response: TestResponse) -> list[Cookie]:
    """The response's Set-Cookie headers, parsed."""
    return [parse_set_cookie(h) for h in response.headers.getlist("Set-Cookie")]


class WSGIClient(WebClient):
    """werkzeug's test client on the middleware (plain HTTP, as werkzeug's client sends Secure cookies anyway)."""

    cookie_name = COOKIE

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, path: str) -> Reply:
        response = self.client.get(path)
        return Reply(response.status_code, response.json, set_cookies(response), response.headers.get("Vary"))

    def cookie(self) -> str | None:
        found = self.client.get_cookie(COOKIE)
        return found.value if found else None

    def set_cookie(self, value: str) -> None:
        self.client.set_cookie(COOKIE, value)


def client_for(store: SessionStore, hold: Callable[[], None] | None = None, **options: Any) -> Client:
    """werkzeug's client on the contract's routes wrapped in the middleware with *options*."""
    return Client(SessionMiddleware(wsgi_app(hold), store, **options))


class WSGIDriver(Driver):
    """The middleware with its defaults."""

    cookie_name = COOKIE
    secure = True
    refreshes_cookie = True
    malformed_log = "malformed session cookie"
    refused_log = "refusing"

    def client(self, store: SessionStore, hold: Callable[[], None] | None = None) -> WebClient:
        return WSGIClient(client_for(store, hold))


class TestContract(WebContract, GenerationContract):
    driver_class = WSGIDriver


# ---------------------------------------------------------------- WSGI only


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return make_store(tmp_path / "sessions", Clock())


def test_without_refresh_reading_a_stored_session_sends_and_writes_nothing(store: SessionStore) -> None:
    client = client_for(store, refresh_each_request=False)
    client.get("/set?a=1")
    calls = count_calls(store)
    response = client.get("/get")
    assert response.json == {"data": {"a": "1"}, "new": False}
    assert calls == ["load"]
    assert response.headers.getlist("Set-Cookie") == []


def test_cookie_attributes_are_configurable(store: SessionStore) -> None:
    client = client_for(
        store,
        cookie_name="sid",
        cookie_path="/app",
        cookie_domain="example.org",
        secure=False,
        httponly=False,
        samesite="Strict",
        persistent=False,
    )
    response = client.get("/set?a=1", base_url="http://www.example.org/app")
    [(name, _, attrs)] = set_cookies(response)
    assert name == "sid"
    assert attrs == {"path": "/app", "domain": "example.org", "samesite": "Strict"}


class FailsOnce(SessionStore):
    """A store whose first locked edit times out (another node held the lock too long), then works."""

    failed = False

    def edit(self, sid: str, *, max_age: int | None = None, owner: str | None = None) -> Any:
        if not self.failed:
            self.failed = True
            raise LockTimeout(self.layout.path_for(sid) + ".lock", None, 10.0)
        return super().edit(sid, max_age=max_age, owner=owner)


def test_a_commit_that_failed_is_not_stored_behind_the_error_page(tmp_path: Path) -> None:
    store = FailsOnce(tmp_path / "s", KEY)
    sid = store.create({"a": "1"})

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["fssession.session"]["b"] = "2"
        try:
            start_response("200 OK", [("Content-Type", "text/plain")])
        except LockTimeout:
            # The application reports the failure with an error page, on the same start_response.
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"try again"]
        return [b"ok"]

    client = Client(SessionMiddleware(app, store, secure=False))
    client.set_cookie(COOKIE, sid, domain="localhost")
    response = client.get("/")
    assert response.status_code == 500
    response.close()
    assert store.load(sid) == {"a": "1"}, "the change was stored although the client was told it failed"
