"""The Flask adapter through Flask's own test client: the web contract, then Flask's configuration and hooks.

The real-server test is in test_servers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from fssession import LockTimeout, SessionStore
from fssession.flask import FlaskSession, FSSession
from fssession.websession import split_cookie
from tests.support import KEY, OTHER_KEY, Clock
from tests.web.apps import flask_app
from tests.web.contract import Cookie, Driver, GenerationContract, Reply, WebClient, WebContract
from tests.web.helpers import make_store, parse_set_cookie

HTTPS = "https://localhost/"


def app_for(store: SessionStore, hold: Callable[[], None] | None = None, **config: Any) -> Flask:
    """The contract's routes on Flask with fssession, using *store*, with *config* added."""
    app: Flask = flask_app({"SECRET_KEY": KEY, "FSSESSION_STORE": store, **config}, hold)
    app.testing = True
    return app


def set_cookies(response: TestResponse) -> list[Cookie]:
    """The response's Set-Cookie headers, parsed."""
    return [parse_set_cookie(h) for h in response.headers.getlist("Set-Cookie")]


class FlaskContractClient(WebClient):
    """Flask's test client, over HTTPS (where Flask's default makes the cookie Secure)."""

    cookie_name = "session"

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str) -> Reply:
        response = self.client.get(path, base_url=HTTPS)
        return Reply(response.status_code, response.json, set_cookies(response), response.headers.get("Vary"))

    def cookie(self) -> str | None:
        found = self.client.get_cookie(self.cookie_name)
        return found.value if found else None

    def set_cookie(self, value: str) -> None:
        self.client.set_cookie(self.cookie_name, value)


class FlaskDriver(Driver):
    """FSSession with a ready-made store and Flask's defaults otherwise; exceptions propagate (testing)."""

    cookie_name = "session"
    secure = True
    refreshes_cookie = True
    malformed_log = "malformed session cookie"
    refused_log = "refusing"

    def client(self, store: SessionStore, hold: Callable[[], None] | None = None) -> WebClient:
        return FlaskContractClient(app_for(store, hold).test_client())


class TestContract(WebContract, GenerationContract):
    driver_class = FlaskDriver


# ---------------------------------------------------------------- Flask only


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SessionStore:
    return make_store(tmp_path / "sessions", clock)


def sid_of(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("session")
    return split_cookie(cookie.value)[0] if cookie else None


def test_configured_from_app_config(tmp_path: Path) -> None:
    app = Flask("cfg")
    app.config.update(
        SECRET_KEY=KEY,
        SECRET_KEY_FALLBACKS=[OTHER_KEY],
        FSSESSION_PATH=str(tmp_path / "s"),
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=5),
        FSSESSION_STORE_OPTIONS={"lock_timeout": 3.0},
    )
    ext = FSSession()
    ext.init_app(app)
    assert ext.store is not None
    assert ext.store.root == tmp_path / "s"
    assert ext.store.max_age == 300
    assert ext.store.lock_timeout == 3.0
    # SECRET_KEY signs; a fallback still verifies what an older key signed.
    old = SessionStore(tmp_path / "s", OTHER_KEY)
    sid = old.create({"user": "alice"})
    assert ext.store.load(sid) == {"user": "alice"}
    assert app.extensions["fssession"] is ext


def test_missing_configuration_is_reported() -> None:
    app = Flask("cfg")
    app.config["SECRET_KEY"] = KEY
    with pytest.raises(RuntimeError, match="FSSESSION_PATH"):
        FSSession(app)


def test_a_short_key_is_named(tmp_path: Path) -> None:
    def init(**config: Any) -> None:
        app = Flask("cfg")
        app.config.update(FSSESSION_PATH=str(tmp_path / "s"), **config)
        FSSession(app)

    with pytest.raises(RuntimeError, match=r"SECRET_KEY_FALLBACKS\[1\] is 5 bytes"):
        init(SECRET_KEY=KEY, SECRET_KEY_FALLBACKS=[OTHER_KEY, "short"])
    with pytest.raises(RuntimeError, match=r"^FSSession: SECRET_KEY is 3 bytes"):
        init(SECRET_KEY="abc")
    with pytest.raises(RuntimeError, match=r"FSSESSION_SECRET_KEY is 3 bytes"):
        init(SECRET_KEY=KEY, FSSESSION_SECRET_KEY="abc")
    init(SECRET_KEY="abc", FSSESSION_SECRET_KEY=KEY, SECRET_KEY_FALLBACKS=["short"])  # ours: fallbacks unused


def test_the_session_is_ours(store: SessionStore) -> None:
    app = app_for(store)
    with app.test_request_context("/"):
        assert isinstance(session._get_current_object(), FlaskSession)  # type: ignore[attr-defined]


def test_login_cookie_attributes(tmp_path: Path) -> None:
    app = flask_app(
        {
            "SECRET_KEY": KEY,
            "FSSESSION_PATH": str(tmp_path / "s"),
            "PERMANENT_SESSION_LIFETIME": timedelta(minutes=10),
        }
    )
    store = app.extensions["fssession"].store
    client = app.test_client()
    response = client.get("/login?user=alice", base_url="https://localhost")
    [(name, value, attrs)] = set_cookies(response)
    assert name == "session"
    assert store.load(split_cookie(value)[0]) == {"user": "alice"}
    assert attrs["max-age"] == "600"
    assert {"httponly", "secure"} <= attrs.keys()  # Secure over HTTPS although Flask's own default is off
    assert attrs["samesite"] == "Lax"
    assert attrs["path"] == "/"
    assert response.headers["Vary"] == "Cookie"


def test_flask_cookie_settings_are_honoured(store: SessionStore) -> None:
    app = app_for(
        store,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN="example.org",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        FSSESSION_COOKIE_SECURE=False,
        SESSION_PERMANENT=False,
    )
    client = app.test_client()
    response = client.get("/set?a=1", base_url="http://www.example.org")
    [(name, _, attrs)] = set_cookies(response)
    assert name == "sid"
    assert attrs == {"domain": "example.org", "path": "/", "samesite": "Strict"}  # a browser-session cookie


def cookie_attrs(store: SessionStore, url: str = "http://localhost/", headers: Any = None, **config: Any) -> Any:
    """The attributes of the cookie that logging in sets, with this config, at this URL."""
    client = app_for(store, **config).test_client()
    [(_, _, attrs)] = set_cookies(client.get("/login?user=alice", base_url=url, headers=headers or {}))
    return attrs


def test_flask_secure_setting_is_honoured(store: SessionStore) -> None:
    # Left at Flask's default: Secure exactly when the request came over HTTPS.
    assert "secure" not in cookie_attrs(store)
    assert "secure" in cookie_attrs(store, HTTPS)
    # An explicit False is Flask's default value: plain HTTP gets a cookie that comes back.
    assert "secure" not in cookie_attrs(store, SESSION_COOKIE_SECURE=False)
    assert "secure" in cookie_attrs(store, SESSION_COOKIE_SECURE=True)
    # A proxy that ended TLS says so; such a header can only make the cookie stricter.
    assert "secure" in cookie_attrs(store, headers={"X-Forwarded-Proto": "https"})
    assert "secure" in cookie_attrs(store, headers={"Forwarded": "for=192.0.2.1;proto=https"})
    assert "secure" not in cookie_attrs(store, headers={"X-Forwarded-Proto": "http"})
    # FSSESSION_COOKIE_SECURE decides instead of the request; Flask's True still wins.
    assert "secure" not in cookie_attrs(store, HTTPS, FSSESSION_COOKIE_SECURE=False)
    assert "secure" in cookie_attrs(store, FSSESSION_COOKIE_SECURE=True)
    assert "secure" in cookie_attrs(store, SESSION_COOKIE_SECURE=True, FSSESSION_COOKIE_SECURE=False)


def test_flask_samesite_setting_is_honoured(store: SessionStore) -> None:
    assert cookie_attrs(store)["samesite"] == "Lax"  # Flask's default (None) gets Lax
    assert cookie_attrs(store, SESSION_COOKIE_SAMESITE="Strict")["samesite"] == "Strict"
    cross_site = cookie_attrs(store, SESSION_COOKIE_SAMESITE="None")
    assert cross_site["samesite"] == "None" and "secure" in cross_site  # browsers refuse it without Secure
    assert "samesite" not in cookie_attrs(store, FSSESSION_COOKIE_SAMESITE=None)
    ours_win = cookie_attrs(store, FSSESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SAMESITE="Lax")
    assert ours_win["samesite"] == "Strict"


def test_logout_clears_the_cookie_with_the_same_attributes(store: SessionStore) -> None:
    client = app_for(store, SESSION_COOKIE_SAMESITE="Strict").test_client()
    client.get("/login?user=alice", base_url=HTTPS)
    [(_, value, attrs)] = set_cookies(client.get("/logout", base_url=HTTPS))
    assert value == "" and attrs["max-age"] == "0"
    assert "secure" in attrs and attrs["samesite"] == "Strict"


def test_permanent_flag_is_stored_per_session(store: SessionStore) -> None:
    app = app_for(store, SESSION_PERMANENT=False)

    @app.route("/remember")
    def remember() -> str:
        session.permanent = True
        return "ok"

    client = app.test_client()
    [(_, _, attrs)] = set_cookies(client.get("/set?a=1"))
    assert "max-age" not in attrs
    [(_, _, attrs)] = set_cookies(client.get("/remember"))
    assert attrs["max-age"] == str(store.max_age)


def test_lock_timeout_at_commit_is_visible_to_the_app(tmp_path: Path, clock: Clock) -> None:
    store = make_store(tmp_path / "s", clock, lock_timeout=0.2)
    app = app_for(store)
    app.testing = False
    seen: list[BaseException | None] = []

    @app.errorhandler(500)
    def on_500(error: Any) -> tuple[str, int]:
        seen.append(error.original_exception)
        return "busy", 503

    client = app.test_client()
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    with make_store(tmp_path / "s", clock).edit(sid):
        response = client.get("/set?a=2")
    assert response.status_code == 503
    assert isinstance(seen[0], LockTimeout)
    assert store.load(sid) == {"a": "1"}
