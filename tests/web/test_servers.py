"""End to end: two real threaded HTTP servers (WSGI, Flask) in their own processes on one session directory.

One client cookie, a request held in flight on one server while the other
serves, then a burst of overlapping requests over both.  The applications
are tests/web/apps.py's, the contract's routes.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fssession import SessionStore
from tests.support import KEY, REPO
from tests.web.helpers import WAIT, parse_set_cookie, run_threads


def _start_server(kind: str, root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.web.apps", "--kind", kind, "--path", str(root), "--secret", KEY],
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
    SessionStore(root, KEY)  # one naming key before two processes race to make it
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
