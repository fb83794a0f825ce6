"""The Django session engine, through Django's own test Client and its SessionMiddleware.

The web contract first, then what only Django has (the backend API,
expiry as Django's backends do it, clearsessions, the system checks).
Settings are configured here (this module is the URLconf too); each test
points ``FSSESSION_PATH`` at its own directory with ``override_settings``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from fssession import SessionStore as FileStore
from tests.support import KEY, Clock, session_files
from tests.web.contract import Driver, Reply, WebClient, WebContract
from tests.web.helpers import parse_set_cookie, unknown_id

if not settings.configured:
    settings.configure(
        SECRET_KEY=KEY,
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="fssession.django",
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from django.utils import timezone

from fssession.django import SessionStore, get_store
from fssession.django_checks import check_fssession
from fssession.layout import NAMING_KEY_FILE

# The contract's /set?hold=1 calls HOOKS["hold"] (a view cannot be handed a closure).
HOOKS: dict[str, Callable[[], None]] = {}


def view_noop(request: HttpRequest) -> JsonResponse:
    return JsonResponse("ok", safe=False)


def view_get(request: HttpRequest) -> JsonResponse:
    data = dict(request.session.items())
    # Django drops a key it could not load: no key after loading means a new session.
    return JsonResponse({"data": data, "new": request.session.session_key is None})


def view_set(request: HttpRequest) -> JsonResponse:
    for key, value in request.GET.items():
        if key != "hold":
            request.session[key] = value
    if request.GET.get("hold"):
        HOOKS["hold"]()
    return JsonResponse({})


def view_del(request: HttpRequest) -> JsonResponse:
    for key in request.GET:
        request.session.pop(key, None)
    return JsonResponse({})


def view_append(request: HttpRequest) -> JsonResponse:
    request.session["list"].append(request.GET["v"])
    request.session.modified = True  # Django's documented way for in-place changes
    return JsonResponse({})


def view_login(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()
    request.session["user"] = request.GET["user"]
    return JsonResponse({})


def view_logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({})


def view_lifetime(request: HttpRequest) -> JsonResponse:
    """``set_expiry``: idle seconds, or with ``at=1`` a date that many seconds ahead."""
    seconds = int(request.GET["s"])
    request.session.set_expiry(timedelta(seconds=seconds) if request.GET.get("at") else seconds)
    return JsonResponse({"age": request.session.get_expiry_age()})


def view_incr(request: HttpRequest) -> JsonResponse:
    with request.session.locked() as data:
        data["n"] = data.get("n", 0) + 1
    return JsonResponse({})


urlpatterns = [
    path("noop", view_noop),
    path("get", view_get),
    path("set", view_set),
    path("del", view_del),
    path("append", view_append),
    path("login", view_login),
    path("logout", view_logout),
    path("lifetime", view_lifetime),
    path("incr", view_incr),
]


def set_cookies(response: HttpResponse) -> list[tuple[str, str, dict[str, str]]]:
    """The response's cookies as (name, value, attributes), like a parsed Set-Cookie header."""
    found = []
    for name, morsel in response.cookies.items():
        attrs = parse_set_cookie(morsel.OutputString())[2]
        found.append((name, morsel.value, attrs))  # the value unquoted: "" for a deleted cookie
    return found


class DjangoClient(WebClient):
    """Django's test Client (plain HTTP; Django's default cookie is not Secure)."""

    cookie_name = "sessionid"

    def __init__(self) -> None:
        self.client = Client()

    def get(self, path: str) -> Reply:
        response = self.client.get(path)
        return Reply(response.status_code, response.json(), set_cookies(response), response.headers.get("Vary"))

    def cookie(self) -> str | None:
        morsel = self.client.cookies.get(self.cookie_name)
        return morsel.value if morsel is not None and morsel.value else None

    def set_cookie(self, value: str) -> None:
        self.client.cookies[self.cookie_name] = value


class DjangoDriver(Driver):
    """The engine with Django's default settings; the store is the one it builds from them."""

    cookie_name = "sessionid"
    secure = False
    refreshes_cookie = False  # SESSION_SAVE_EVERY_REQUEST is off by default
    malformed_log = "malformed session key"
    refused_log = "refused"

    def open_store(self, root: Path, clock: Clock, **options: Any) -> FileStore:
        self.enter(override_settings(FSSESSION_PATH=str(root), FSSESSION_STORE_OPTIONS={"clock": clock, **options}))
        return get_store()

    def client(self, store: FileStore, hold: Callable[[], None] | None = None) -> WebClient:
        if hold is not None:
            HOOKS["hold"] = hold
        return DjangoClient()

    def close(self) -> None:
        HOOKS.clear()
        super().close()


class TestContract(WebContract):
    driver_class = DjangoDriver


# ---------------------------------------------------------------- Django only


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[FileStore]:
    driver = DjangoDriver()
    try:
        yield driver.open_store(tmp_path / "sessions", clock)
    finally:
        driver.close()


def sid_of(client: Client) -> str | None:
    morsel = client.cookies.get("sessionid")
    return morsel.value if morsel is not None and morsel.value else None


def data_of(client: Client) -> dict[str, Any]:
    return dict(client.get("/get").json()["data"])


def test_engine_builds_its_store_from_settings(tmp_path: Path) -> None:
    with override_settings(FSSESSION_PATH=str(tmp_path / "s"), SESSION_COOKIE_AGE=600):
        store = get_store()
        assert store.root == tmp_path / "s" and store.max_age == 600
        assert get_store() is store  # one per configuration
    with override_settings(FSSESSION_PATH=str(tmp_path / "s"), SECRET_KEY="a-new-key-0123456789abcdefghijklm"):
        with override_settings(SECRET_KEY_FALLBACKS=[KEY]):
            sid = FileStore(tmp_path / "s", KEY).create({"a": 1})
            assert SessionStore(sid).load() == {"a": 1}  # a fallback verifies
        assert SessionStore(sid).load() == {}  # without it the old key's file is refused


def test_backend_contract(store: FileStore) -> None:
    session = SessionStore()
    assert session.session_key is None
    session["a"] = 1
    session.save()  # no key yet: create
    key = session.session_key
    assert key is not None and session.exists(key)
    assert store.load(key) == {"a": 1}
    assert not session.exists(unknown_id()) and not session.exists("short")

    again = SessionStore(key)
    assert again["a"] == 1
    again["b"] = 2
    again.save()
    assert store.load(key) == {"a": 1, "b": 2}

    again.cycle_key()
    new_key = again.session_key
    assert new_key != key and not session.exists(key)
    again.save()
    assert store.load(new_key) == {"a": 1, "b": 2}

    again.flush()
    assert again.session_key is None and not session.exists(new_key)
    assert dict(again.items()) == {}

    deleted = SessionStore(key)
    deleted.load()
    assert deleted.session_key is None  # an unknown key is dropped, never adopted

    gone = SessionStore(store.create({"x": 1}))
    gone["y"] = 2
    store.delete(gone.session_key)
    with pytest.raises(UpdateError):
        gone.save()  # Django's middleware turns this into SessionInterrupted

    created = SessionStore()
    created["x"] = 1
    created.save(must_create=True)
    assert store.load(created.session_key) == {"x": 1}


def test_set_expiry_is_what_get_expiry_age_says(store: FileStore) -> None:
    client = Client()
    client.get("/set?a=1")
    assert client.get("/lifetime?s=60").json()["age"] == 60


def test_expiry_at_a_date(store: FileStore, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Django dates the expiry by its clock: the test's, like the store's, so
    # that no real time passing between the requests can move the date.
    monkeypatch.setattr(timezone, "now", lambda: datetime.fromtimestamp(clock(), UTC))
    client = Client()
    client.get("/set?a=1")
    client.get("/lifetime?s=100&at=1")  # an absolute date: activity does not extend it
    for _ in range(3):
        clock.advance(30)
        assert data_of(client)["a"] == "1"
    clock.advance(11)
    assert data_of(client) == {}


def test_clearsessions_uses_the_store_reaper(store: FileStore, clock: Clock) -> None:
    live = SessionStore()
    live["a"] = 1
    live.save()
    old = SessionStore()
    old["b"] = 1
    old.save()
    old_file = Path(store.layout.path_for(old.session_key))
    clock.advance(store.max_age - 1)
    assert store.load(live.session_key) == {"a": 1}
    clock.advance(2 + 60)  # past the reaper's default grace
    call_command("clearsessions")
    assert not old_file.exists()
    assert store.load(live.session_key) == {"a": 1}


# ---------------------------------------------------------------- expiry as Django's backends do it


def test_a_negative_expiry_expires_the_session(store: FileStore) -> None:
    client = Client()
    client.get("/set?a=1")
    key = sid_of(client)
    assert key is not None
    response = client.get("/lifetime?s=-3600")  # Django's own tests expire a session this way
    assert response.json()["age"] == -3600
    assert client.cookies["sessionid"]["max-age"] == -3600  # the browser drops it
    assert store.load(key) is None and session_files(store.root) == []
    client.cookies["sessionid"] = key  # a client that keeps sending it anyway
    assert data_of(client) == {}

    direct = SessionStore()
    direct["a"] = 1
    direct.set_expiry(-1)
    direct.save()
    assert direct.session_key is None and session_files(store.root) == []
    direct.set_expiry(None)  # saving it again, alive, starts a new session
    direct.save()
    assert store.load(direct.session_key) == {"a": 1}


def test_clearsessions_removes_what_expired_and_keeps_the_rest(store: FileStore, clock: Clock) -> None:
    # The scenario of Django's file-backend test, on this engine (its sessions are not named by key).
    with override_settings(SESSION_COOKIE_AGE=60):
        future = SessionStore()
        future["foo"] = "bar"
        future.set_expiry(3600)
        future.save()
        past = SessionStore()
        past["foo"] = "bar"
        past.set_expiry(-3600)
        past.save()
        present = SessionStore()  # no expiry of its own: SESSION_COOKIE_AGE's 60 s
        present["foo"] = "bar"
        present.save()
        assert len(session_files(get_store().root)) == 2  # the past one is gone already
        clock.advance(60 + 61)  # past the lifetime and the reaper's grace
        call_command("clearsessions")
        assert len(session_files(get_store().root)) == 1
        assert get_store().load(future.session_key) == {"foo": "bar", "_session_expiry": 3600}
        assert SessionStore(present.session_key).load() == {}


def test_an_emptied_session_is_saved_empty(store: FileStore) -> None:
    client = Client()
    client.get("/set?a=1")
    key = sid_of(client)
    assert key is not None
    session = SessionStore(key)
    del session["a"]
    session.save()
    assert session.session_key == key and store.load(key) == {}


# ---------------------------------------------------------------- system checks


def check_ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [message.id for message in check_fssession()]


def test_checks_pass_on_a_good_setup(tmp_path: Path) -> None:
    assert check_ids(FSSESSION_PATH=str(tmp_path / "s")) == []  # not made yet: creatable is fine
    FileStore(tmp_path / "s", KEY, dir_mode=0o770, file_mode=0o660)
    assert check_ids(FSSESSION_PATH=str(tmp_path / "s")) == []
    check_ids(FSSESSION_PATH=str(tmp_path / "t"))
    assert not (tmp_path / "t").exists(), "a check must never create the store"
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db"):
        assert check_ids(FSSESSION_PATH=None) == []  # another engine: nothing to check


def test_check_path_unset() -> None:
    assert check_ids(FSSESSION_PATH=None) == ["fssession.E001"]
    assert check_ids(FSSESSION_PATH="") == ["fssession.E001"]


def test_check_short_keys_name_the_setting(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    assert check_ids(FSSESSION_PATH=path, SECRET_KEY="short") == ["fssession.E002"]
    with override_settings(FSSESSION_PATH=path, SECRET_KEY_FALLBACKS=[KEY, "tiny"]):
        [message] = check_fssession()
        assert message.id == "fssession.E003"
        assert "SECRET_KEY_FALLBACKS[1] is 4 bytes" in message.msg and "SECRET_KEY itself is fine" in message.msg
        # The engine says the same at run time instead of the store's generic complaint.
        with pytest.raises(ImproperlyConfigured, match=r"SECRET_KEY_FALLBACKS\[1\] is 4 bytes"):
            SessionStore().save()


def test_check_unknown_store_option(tmp_path: Path) -> None:
    with override_settings(FSSESSION_PATH=str(tmp_path / "s"), FSSESSION_STORE_OPTIONS={"lock_timeot": 3}):
        [message] = check_fssession()
    assert message.id == "fssession.E006" and "'lock_timeot'" in message.msg and "lock_timeout" in message.hint


def test_check_a_path_that_is_not_a_usable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert check_ids(FSSESSION_PATH=str(tmp_path / "file")) == ["fssession.E004"]
    assert check_ids(FSSESSION_PATH=str(tmp_path / "file" / "below")) == ["fssession.E004"]


def test_check_an_unwritable_directory(unwritable_dir: Path) -> None:
    with override_settings(FSSESSION_PATH=str(unwritable_dir)):
        [message] = check_fssession()
    assert message.id == "fssession.E004" and "not readable and writable by this user" in message.msg
    assert check_ids(FSSESSION_PATH=str(unwritable_dir / "new")) == ["fssession.E004"]  # cannot be created


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a store that belongs to root")
def test_check_as_root_a_store_only_root_can_use(tmp_path: Path) -> None:
    root_only = tmp_path / "s"
    FileStore(root_only, KEY)  # what a root `clearsessions` on a fresh directory leaves: root:root 0700
    assert check_ids(FSSESSION_PATH=str(root_only)) == ["fssession.W001"]
    shared = tmp_path / "shared"
    FileStore(shared, KEY, dir_mode=0o770, file_mode=0o660)
    assert check_ids(FSSESSION_PATH=str(shared)) == []  # group-shared: fine


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a key another user cannot read")
def test_check_as_root_a_naming_key_the_owner_cannot_read(tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    os.chown(store, 65534, 65534)  # the web server's user owns the directory...
    FileStore(store, KEY)  # ...and root made the key in it: root:root 0600
    with override_settings(FSSESSION_PATH=str(store)):
        [message] = check_fssession()
    assert message.id == "fssession.W002" and "its owner cannot read the key" in message.msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file; the root variant is tested above")
def test_check_a_naming_key_this_user_cannot_read(tmp_path: Path) -> None:
    store = tmp_path / "s"
    FileStore(store, KEY)
    key = store / NAMING_KEY_FILE
    key.chmod(0)
    try:
        assert check_ids(FSSESSION_PATH=str(store)) == ["fssession.E005"]
    finally:
        key.chmod(0o600)


def test_clearsessions_never_creates_the_store(tmp_path: Path) -> None:
    """A root `manage.py clearsessions` before the app's first request must not make a root-only store."""
    missing = tmp_path / "not-yet"
    with override_settings(FSSESSION_PATH=str(missing)):
        call_command("clearsessions")
    assert not missing.exists()
