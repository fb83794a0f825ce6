"""The framework-neutral Session under every adapter: commits, locked(), invalidate(), the cookie policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from fssession import SessionStore
from fssession.websession import CookiePolicy, Session
from tests.support import Clock
from tests.web.helpers import Overlap, make_store


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return make_store(tmp_path / "sessions", Clock())


def test_a_bad_cookie_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        CookiePolicy(samesite="None", secure=False)
    with pytest.raises(ValueError):
        CookiePolicy(name="bad name")


def test_data_stored_after_invalidate_goes_to_a_new_id(store: SessionStore) -> None:
    session = Session(store, store.create({"user": "alice"}))
    old = session.sid
    session.invalidate()
    session["flash"] = "logged out"
    session.commit()
    assert session.sid not in (None, old)
    assert old is not None and store.load(old) is None
    assert session.sid is not None and store.load(session.sid) == {"flash": "logged out"}


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
