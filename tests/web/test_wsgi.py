"""The WSGI middleware and the framework-neutral Session, through werkzeug's test client.

Ends with an end-to-end test: two real threaded HTTP servers in their own
processes on one session directory, one client cookie, overlapping requests.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from fssession import LockTimeout, SessionStore
from fssession.websession import CookiePolicy, Session, split_cookie
from fssession.wsgi import SessionMiddleware
from tests.support import REPO
from tests.web.apps import wsgi_app
from tests.web.helpers import (
    SECRET,
    WAIT,
    Clock,
    CountingStore,
    Overlap,
    make_store,
    parse_set_cookie,
    run_threads,
    session_file,
    tamper,
    unknown_id,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SessionStore:
    return make_store(tmp_path / "sessions", clock)


def client_for(store: SessionStore, overlap: Overlap | None = None, **options: Any) -> Client:
    return Client(SessionMiddleware(wsgi_app(overlap.hold if overlap else None), store, **options))


def set_cookies(response: TestResponse) -> list[tuple[str, str, dict[str, str]]]:
    return [parse_set_cookie(h) for h in response.headers.getlist("Set-Cookie")]


def sid_of(client: Client) -> str | None:
    cookie = client.get_cookie("fssession")
    return split_cookie(cookie.value)[0] if cookie else None


def data_of(client: Client) -> dict[str, Any]:
    body = client.get("/get").json
    assert body is not None
    return dict(body["data"])


# ---------------------------------------------------------------- laziness


def test_a_request_that_does_not_touch_the_session_reads_and_writes_nothing(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s", SECRET)
    client = client_for(store)
    client.get("/set?a=1")
    store.calls.clear()
    response = client.get("/noop")
    assert store.calls == []
    assert response.headers.getlist("Set-Cookie") == []
    assert "Vary" not in response.headers


def test_reading_an_absent_session_creates_nothing(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s", SECRET)
    client = client_for(store)
    response = client.get("/get")
    assert response.json == {"data": {}, "new": True}
    assert response.headers.getlist("Set-Cookie") == []
    assert response.headers["Vary"] == "Cookie"
    assert store.calls == []  # no cookie: nothing to read, nothing to write
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_reading_a_stored_session_does_not_write_it(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s", SECRET)
    client = client_for(store, refresh_each_request=False)
    client.get("/set?a=1")
    store.calls.clear()
    response = client.get("/get")
    assert response.json == {"data": {"a": "1"}, "new": False}
    assert store.calls == ["load"]
    assert response.headers.getlist("Set-Cookie") == []


# ---------------------------------------------------------------- cookie


def test_login_sets_a_cookie_with_the_safe_attributes(store: SessionStore) -> None:
    client = client_for(store)
    response = client.get("/login?user=alice")
    [(name, value, attrs)] = set_cookies(response)
    assert name == "fssession"
    assert store.load(split_cookie(value)[0]) == {"user": "alice"}
    assert attrs["path"] == "/"
    assert attrs["max-age"] == str(store.max_age)
    assert "expires" in attrs
    assert {"httponly", "secure"} <= attrs.keys()
    assert attrs["samesite"] == "Lax"
    assert data_of(client) == {"user": "alice"}


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


def test_cookie_max_age_follows_the_sessions_own_lifetime(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    [(_, _, attrs)] = set_cookies(client.get("/lifetime?s=120"))
    assert attrs["max-age"] == "120"
    with pytest.raises(ValueError):
        CookiePolicy(samesite="None", secure=False)
    with pytest.raises(ValueError):
        CookiePolicy(name="bad name")


def test_refresh_each_request_resends_the_cookie_without_writing(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s", SECRET)
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    store.calls.clear()
    [(_, value, _)] = set_cookies(client.get("/get"))
    assert split_cookie(value)[0] == sid
    assert store.calls == ["load"]


# ---------------------------------------------------------------- lifecycle


def test_modify_and_delete_keys(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/set?a=1&b=2")
    sid = sid_of(client)
    client.get("/set?a=3")
    client.get("/del?b=")
    assert data_of(client) == {"a": "3"}
    assert sid_of(client) == sid  # changes keep the id
    assert sid is not None and store.load(sid) == {"a": "3"}


def test_in_place_mutation_is_saved_without_marking_it(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    with store.edit(sid) as data:
        data["list"] = []
    client.get("/append?v=x")
    client.get("/append?v=y")
    assert data_of(client)["list"] == ["x", "y"]


def test_login_rotates_the_id_and_keeps_the_data(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/set?cart=apples")
    before = sid_of(client)
    client.get("/login?user=alice")
    after = sid_of(client)
    assert before is not None and after is not None and after != before
    assert store.load(before) is None  # the pre-login id (perhaps planted by an attacker) is dead
    assert store.load(after) == {"cart": "apples", "user": "alice"}


def test_logout_deletes_the_stored_session_and_clears_the_cookie(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/login?user=alice")
    sid = sid_of(client)
    assert sid is not None
    response = client.get("/logout")
    [(_, value, attrs)] = set_cookies(response)
    assert value == "" and attrs["max-age"] == "0"
    assert store.load(sid) is None
    assert sid_of(client) is None
    # The old id, replayed, is an empty new session and is not brought back.
    client.set_cookie("fssession", sid)
    assert client.get("/get").json == {"data": {}, "new": True}
    assert store.load(sid) is None


def test_data_stored_after_invalidate_goes_to_a_new_id(store: SessionStore) -> None:
    session = Session(store, store.create({"user": "alice"}))
    old = session.sid
    session.invalidate()
    session["flash"] = "logged out"
    session.commit()
    assert session.sid not in (None, old)
    assert old is not None and store.load(old) is None
    assert session.sid is not None and store.load(session.sid) == {"flash": "logged out"}


def test_expiry_follows_the_store_idle_lifetime(store: SessionStore, clock: Clock) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    clock.advance(store.max_age - 10)
    assert data_of(client) == {"a": "1"}  # used in time: the idle clock restarts
    clock.advance(store.max_age - 10)
    assert data_of(client) == {"a": "1"}
    clock.advance(store.max_age + 1)
    response = client.get("/get")
    assert response.json == {"data": {}, "new": True}
    [(_, value, attrs)] = set_cookies(response)
    assert value == "" and attrs["max-age"] == "0"


def test_a_per_session_lifetime_is_kept_in_the_store(store: SessionStore, clock: Clock) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    client.get("/lifetime?s=60")
    clock.advance(61)
    assert data_of(client) == {}


# ---------------------------------------------------------------- bad input


def test_a_malformed_cookie_gets_a_fresh_session_and_a_warning(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store)
    client.set_cookie("fssession", "../../etc/passwd")
    with caplog.at_level(logging.WARNING, logger="fssession.web"):
        response = client.get("/set?a=1")
    assert response.status_code == 200
    assert "malformed session cookie" in caplog.text
    [(_, value, _)] = set_cookies(response)
    assert value != "../../etc/passwd" and store.load(split_cookie(value)[0]) == {"a": "1"}


def test_an_unknown_id_is_never_adopted(store: SessionStore) -> None:
    planted = unknown_id()
    client = client_for(store)
    client.set_cookie("fssession", planted)
    assert client.get("/get").json == {"data": {}, "new": True}
    response = client.get("/login?user=alice")
    [(_, value, _)] = set_cookies(response)
    assert value != planted
    assert store.load(planted) is None and not store.exists(planted)
    assert store.load(split_cookie(value)[0]) == {"user": "alice"}


def test_an_unknown_id_that_is_not_used_gets_its_cookie_cleared(store: SessionStore) -> None:
    client = client_for(store)
    client.set_cookie("fssession", unknown_id())
    [(_, value, attrs)] = set_cookies(client.get("/get"))
    assert value == "" and attrs["max-age"] == "0"


def test_a_tampered_file_gets_a_fresh_session_and_a_warning(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store)
    client.get("/login?user=alice")
    sid = sid_of(client)
    assert sid is not None
    tamper(store, sid)
    with caplog.at_level(logging.WARNING):
        response = client.get("/get")
    assert response.status_code == 200
    assert response.json == {"data": {}, "new": True}
    assert "refusing" in caplog.text
    response = client.get("/set?a=1")
    assert sid_of(client) not in (None, sid)


def test_a_file_signed_with_another_key_is_refused(tmp_path: Path, clock: Clock) -> None:
    other = SessionStore(tmp_path / "s", "another-key-0123456789abcdefghijkl", clock=clock)
    sid = other.create({"user": "mallory"})
    client = client_for(make_store(tmp_path / "s", clock))
    client.set_cookie("fssession", sid)
    assert client.get("/get").json == {"data": {}, "new": True}


def test_lock_timeout_at_commit_reaches_the_caller(tmp_path: Path, clock: Clock) -> None:
    store = make_store(tmp_path / "s", clock, lock_timeout=0.2)
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    holder = make_store(tmp_path / "s", clock)
    # Another node is in the middle of a commit of this session.
    with holder.edit(sid), pytest.raises(LockTimeout):
        client.get("/set?a=2")
    assert store.load(sid) == {"a": "1"}


# ---------------------------------------------------------------- concurrency


def test_overlapping_requests_changing_different_keys_keep_both(store: SessionStore) -> None:
    overlap = Overlap()
    first = client_for(store, overlap)
    first.get("/set?base=0")
    sid = sid_of(first)
    assert sid is not None
    second = client_for(store)
    second.set_cookie("fssession", sid)
    # The first request loads, sets a, deletes base and is held; the second
    # loads the same (old) version, sets b and must finish meanwhile.
    overlap.run(lambda: first.get("/set?a=1&hold=1"), lambda: second.get("/set?b=2"))
    assert store.load(sid) == {"base": "0", "a": "1", "b": "2"}


def test_overlapping_set_and_delete_of_different_keys(store: SessionStore) -> None:
    sid = store.create({"x": 1, "y": 2})
    overlap = Overlap()

    def first() -> None:
        session = Session(store, sid)
        del session["x"]
        overlap.hold()
        session.commit()

    def second() -> None:
        session = Session(store, sid)
        session["y"] = 3
        session.commit()

    overlap.run(first, second)
    assert store.load(sid) == {"y": 3}


def test_locked_counter_is_exact_under_threads(store: SessionStore) -> None:
    client = client_for(store)
    client.get("/set?a=1")
    sid = sid_of(client)
    assert sid is not None
    threads, per_thread = 6, 15

    def work(_: int) -> None:
        own = client_for(store)
        own.set_cookie("fssession", sid)
        for _ in range(per_thread):
            assert own.get("/incr").status_code == 200

    run_threads(threads, work)
    assert store.load(sid) == {"a": "1", "n": threads * per_thread}


def test_unlocked_read_modify_write_loses_updates_the_locked_one_does_not(store: SessionStore) -> None:
    """The control for the counter test: the same overlap without locked() loses an increment."""
    sid = store.create({"n": 0})
    overlap = Overlap()

    def increment_unlocked(hold: bool) -> None:
        session = Session(store, sid)
        session["n"] = session["n"] + 1
        if hold:
            overlap.hold()
        session.commit()

    overlap.run(lambda: increment_unlocked(True), lambda: increment_unlocked(False))
    assert store.load(sid) == {"n": 1}  # lost one: that is what locked() is for

    overlap = Overlap()

    def increment_locked(hold: bool) -> None:
        session = Session(store, sid)
        session.load()
        if hold:
            overlap.hold()
        with session.locked() as data:
            data["n"] += 1

    overlap.run(lambda: increment_locked(True), lambda: increment_locked(False))
    assert store.load(sid) == {"n": 3}


def test_locked_block_that_raises_writes_nothing(store: SessionStore) -> None:
    sid = store.create({"n": 1})
    session = Session(store, sid)
    with pytest.raises(RuntimeError), session.locked() as data:
        data["n"] = 99
        raise RuntimeError("abort")
    assert store.load(sid) == {"n": 1}
    assert session["n"] == 1


def test_locked_on_a_new_session_creates_it(store: SessionStore) -> None:
    session = Session(store, None)
    session["a"] = 1
    with session.locked() as data:
        data["n"] = 1
    assert session.sid is not None and session.new
    assert store.load(session.sid) == {"a": 1, "n": 1}
    assert dict(session) == {"a": 1, "n": 1}


def test_a_session_deleted_by_a_concurrent_logout_is_not_brought_back(store: SessionStore) -> None:
    sid = store.create({"user": "alice", "cart": "apples"})
    session = Session(store, sid)
    session["last_page"] = "/shop"
    store.delete(sid)  # the user logged out in another tab meanwhile
    session.commit()
    assert store.load(sid) is None
    assert session.sid not in (None, sid)
    assert session.sid is not None and store.load(session.sid) == {"last_page": "/shop"}


# ---------------------------------------------------------------- real servers


def _start_server(kind: str, root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.web.apps", "--kind", kind, "--path", str(root), "--secret", SECRET],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def _get(port: int, path: str, cookie: str | None) -> tuple[int, Any, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = json.loads(response.read())
        return response.status, body, response.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


@pytest.fixture
def two_servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, int, int]]:
    kind = request.param
    root = tmp_path / "sessions"
    SessionStore(root, SECRET)  # one naming key before two processes race to make it
    procs = []
    try:
        first, port1 = _start_server(kind, root)
        procs.append(first)
        second, port2 = _start_server(kind, root)
        procs.append(second)
        yield root, port1, port2
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("two_servers", ["wsgi", "flask"], indirect=True)
def test_two_server_processes_share_one_session(two_servers: tuple[Path, int, int]) -> None:
    root, port1, port2 = two_servers
    status, _, cookies = _get(port1, "/login?user=alice", None)
    assert status == 200
    name, value, _ = parse_set_cookie(cookies[0])
    sid = f"{name}={value}"  # the one cookie jar every request below sends
    assert _get(port2, "/get", sid)[1]["data"] == {"user": "alice"}

    # One request held in flight on server 1 while server 2 serves another: both keys kept.
    holder: list[Any] = []
    import threading

    held = threading.Thread(target=lambda: holder.append(_get(port1, "/set?a=1&hold=1", sid)))
    held.start()
    entered = root.parent / ".hold-entered"
    deadline = time.monotonic() + WAIT
    while not entered.exists():  # the server is another process: poll its flag
        assert time.monotonic() < deadline, "the held request never reached its view"
        time.sleep(0.005)
    assert _get(port2, "/set?b=2", sid)[0] == 200
    (root.parent / ".hold-release").touch()
    held.join(WAIT)
    assert holder and holder[0][0] == 200

    # A burst of overlapping requests over both servers: disjoint keys and a locked counter.
    rounds = 10

    def work(i: int) -> None:
        port = (port1, port2)[i % 2]
        for j in range(rounds):
            assert _get(port, f"/set?k{i}_{j}={j}", sid)[0] == 200
            assert _get(port, "/incr", sid)[0] == 200

    run_threads(4, work)
    data = _get(port2, "/get", sid)[1]["data"]
    expected = {"user": "alice", "a": "1", "b": "2", "n": 4 * rounds}
    expected.update({f"k{i}_{j}": str(j) for i in range(4) for j in range(rounds)})
    assert data == expected


class FailsOnce(SessionStore):
    """A store whose first locked edit times out (another node held the lock too long), then works."""

    failed = False

    def edit(self, sid: str, *, max_age: int | None = None, owner: str | None = None) -> Any:
        if not self.failed:
            self.failed = True
            raise LockTimeout(self.layout.path_for(sid) + ".lock", None, 10.0)
        return super().edit(sid, max_age=max_age, owner=owner)


def test_a_commit_that_failed_is_not_stored_behind_the_error_page(tmp_path: Path) -> None:
    store = FailsOnce(tmp_path / "s", SECRET)
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
    client.set_cookie("fssession", sid, domain="localhost")
    response = client.get("/")
    assert response.status_code == 500
    response.close()
    assert store.load(sid) == {"a": "1"}, "the change was stored although the client was told it failed"


def test_restoring_an_old_copy_of_someone_elses_session_file_does_not_restore_it(store: SessionStore) -> None:
    """The cookie carries the generation the browser saw: an older file is a rollback, refused."""
    victim = client_for(store)
    victim.get("/set?role=admin")
    sid = sid_of(victim)
    assert sid is not None
    old = session_file(store, sid).read_bytes()
    victim.get("/set?role=user")  # a downgrade
    session_file(store, sid).write_bytes(old)  # a writer of the store puts the old copy back
    assert data_of(victim).get("role") != "admin", "the rolled-back session was accepted"
