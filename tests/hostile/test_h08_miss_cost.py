"""Attack 8: a cookie holding a well-formed but unknown id must cost no sleep.

Anyone can send such cookies, as many as they like; a load that sleeps
before it believes "no such file" lets them tie up worker threads cheaply.
Measured without a clock: every sleep is counted, in-process (time.sleep
replaced by a counter) and, so that no other way of waiting escapes, as
sleeping system calls of a real process under strace (a run with N misses
minus a run with none).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fssession import SessionStore
from fssession.ids import new_session_id
from tests.hostile.conftest import unavailable

KEY = "miss-cost-test-key-0123456789"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every time.sleep() call from here on, recorded instead of slept."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


def test_loading_unknown_ids_never_sleeps(tmp_path: Path, sleeps: list[float]) -> None:
    store = SessionStore(tmp_path / "store", KEY)
    known = store.create({"a": 1})
    sleeps.clear()
    for _ in range(20):
        assert store.load(new_session_id()) is None
        assert store.exists(new_session_id()) is False
    assert store.load(known) == {"a": 1}
    assert sleeps == [], f"{len(sleeps)} sleeps ({sum(sleeps) * 1000:.1f} ms) for 40 unknown ids"


def test_a_request_with_an_unknown_id_cookie_never_sleeps(tmp_path: Path, sleeps: list[float]) -> None:
    from flask import Flask, session

    from fssession.flask import FSSession

    app = Flask("miss")
    app.config.update(SECRET_KEY=KEY, FSSESSION_PATH=str(tmp_path / "store"), FSSESSION_COOKIE_SECURE=False)
    FSSession(app)

    @app.route("/")
    def index() -> str:
        return str(session.get("user"))

    client = app.test_client()
    # A bare id, and one with a generation as the cookie will carry it ("<sid>.<gen>").
    for cookie in [new_session_id() for _ in range(10)] + [f"{new_session_id()}.1" for _ in range(10)]:
        client.set_cookie("session", cookie)
        response = client.get("/")
        assert response.status_code == 200 and response.text == "None"
    assert sleeps == [], f"{len(sleeps)} sleeps for 20 requests carrying unknown ids"


MISSES = """
import sys
from fssession import SessionStore
from fssession.ids import new_session_id
store = SessionStore(sys.argv[1], "miss-cost-test-key-0123456789")
for _ in range(int(sys.argv[2])):
    assert store.load(new_session_id()) is None
"""


def _sleeping_calls(store: Path, misses: int) -> int:
    out = subprocess.run(
        ["strace", "-f", "-c", "-e", "trace=nanosleep,clock_nanosleep", sys.executable, "-c", MISSES, str(store),
         str(misses)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0 and "ptrace" in out.stderr:
        unavailable(f"strace cannot trace here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    rows = [line.split() for line in out.stderr.splitlines()]
    return sum(int(row[3]) for row in rows if len(row) >= 5 and row[-1].endswith("sleep"))


def test_unknown_ids_make_no_sleeping_system_calls(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        unavailable("strace is not installed (it counts the sleeping system calls)")
    store = tmp_path / "store"
    SessionStore(store, KEY).create({"a": 1})
    baseline = _sleeping_calls(store, 0)
    with_misses = _sleeping_calls(store, 200)
    assert with_misses - baseline == 0, f"200 unknown ids made {with_misses - baseline} sleeping system calls"
