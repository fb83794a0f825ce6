"""The examples (``examples/flask``, ``examples/django``, ``examples/starlette``) as real servers.

Each example runs as two server processes on one session directory, the
way two web nodes would: Flask's development server twice, Django's
``runserver`` beside gunicorn, uvicorn twice.  A client with a real cookie
jar (which, like a browser, never sends a ``Secure`` cookie over plain HTTP)
logs in on one, is logged in on the other, increments the locked counter
from several threads on both (every value 1..N comes back exactly once),
and logs out on one, which logs it out of both.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import KEY, REPO
from tests.web.helpers import WAIT, run_threads

EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
START = 60.0  # a hang guard for a server to come up, never a timing assertion

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class ServerKind:
    """How to start one kind of server on a free port, and the log line that says which."""

    name: str
    cwd: Path
    argv: Callable[[], list[str]]
    listening: str  # regex with one group: the port


def _bin(name: str) -> str:
    found = BIN / name
    if not found.exists():
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e '.[test]')")
    return str(found)


FLASK_DEV = ServerKind(
    "flask run",
    EXAMPLES / "flask",
    lambda: [_bin("flask"), "--app", "app", "run", "--host", "127.0.0.1", "--port", "0"],
    r"Running on http://127\.0\.0\.1:(\d+)",
)
DJANGO_RUNSERVER = ServerKind(
    "manage.py runserver",
    EXAMPLES / "django",
    lambda: [sys.executable, "manage.py", "runserver", "127.0.0.1:0", "--noreload"],
    r"Starting development server at http://127\.0\.0\.1:(\d+)/",
)
DJANGO_GUNICORN = ServerKind(
    "gunicorn",
    EXAMPLES / "django",
    lambda: [_bin("gunicorn"), "mysite.wsgi", "--bind", "127.0.0.1:0", "--threads", "4"],
    r"Listening at: http://127\.0\.0\.1:(\d+)",
)
UVICORN = ServerKind(
    "uvicorn",
    EXAMPLES / "starlette",
    lambda: [_bin("uvicorn"), "app:app", "--host", "127.0.0.1", "--port", "0"],
    r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
)


class Server:
    """One server process (in a process group of its own, so that its workers go with it)."""

    def __init__(self, kind: ServerKind, env: dict[str, str], log: Path) -> None:
        self.kind = kind
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                kind.argv(),
                cwd=kind.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.port = self._wait_for_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START
        while time.monotonic() < deadline:
            found = re.search(self.kind.listening, self.log.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)  # the server is another process: poll its log
        self.stop()
        pytest.fail(f"{self.kind.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """End the server and its workers (only this process group: nothing else is touched)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Browser:
    """A client with a real cookie jar: it returns cookies as a browser would (no Secure ones over HTTP)."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(self, url: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=WAIT) as response:
            return json.loads(response.read())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[ServerKind, ServerKind, dict[str, str]], tuple[Server, Server]]]:
    started: list[Server] = []

    def start(first: ServerKind, second: ServerKind, extra_env: dict[str, str]) -> tuple[Server, Server]:
        env = {**os.environ, "SECRET_KEY": KEY, "FSSESSION_PATH": str(tmp_path / "sessions"), **extra_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        for n, kind in enumerate((first, second)):
            started.append(Server(kind, env, tmp_path / f"server{n}.log"))
        return started[-2], started[-1]

    yield start
    for server in started:
        server.stop()


def login_follows_and_counter_is_exact(one: Server, two: Server) -> None:
    """The scenario every example must pass, over two server processes."""
    browser = Browser()
    assert browser.call(one.url + "/")["user"] is None
    assert browser.call(one.url + "/login", {"user": "alice"}) == {"user": "alice"}
    seen = browser.call(two.url + "/")
    assert seen["user"] == "alice", "the login did not follow to the other server"
    assert seen["pid"] != browser.call(one.url + "/")["pid"], "both answers came from one process"

    threads, rounds = 4, 10
    values: list[int] = []

    def work(i: int) -> None:
        for j in range(rounds):
            server = (one, two)[(i + j) % 2]
            values.append(browser.call(server.url + "/count", {})["count"])

    run_threads(threads, work)
    total = threads * rounds
    assert sorted(values) == list(range(1, total + 1)), "a locked increment was lost or repeated"
    assert browser.call(two.url + "/") == {"user": "alice", "count": total, "pid": seen["pid"]}

    assert browser.call(two.url + "/logout", {}) == {"user": None}
    assert browser.call(one.url + "/")["user"] is None, "the logout did not follow to the other server"
    assert browser.call(two.url + "/")["user"] is None


def test_flask_example_on_two_dev_servers(servers: Any) -> None:
    # Nothing about cookies is configured: over plain HTTP the cookie must not be Secure.
    one, two = servers(FLASK_DEV, FLASK_DEV, {})
    login_follows_and_counter_is_exact(one, two)


def test_django_example_on_runserver_and_gunicorn(servers: Any) -> None:
    one, two = servers(DJANGO_RUNSERVER, DJANGO_GUNICORN, {"DEBUG": "1"})
    login_follows_and_counter_is_exact(one, two)


def test_starlette_example_on_two_uvicorn_servers(servers: Any) -> None:
    one, two = servers(UVICORN, UVICORN, {"DEBUG": "1"})
    login_follows_and_counter_is_exact(one, two)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLES / "django",
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_django_example_manage_py_check(tmp_path: Path) -> None:
    good = manage("check", env={"SECRET_KEY": KEY, "FSSESSION_PATH": str(tmp_path / "s")})
    assert good.returncode == 0 and "no issues" in good.stdout, good.stderr
    assert not (tmp_path / "s").exists(), "manage.py check must not create the store"

    unset = manage("check", env={"SECRET_KEY": KEY, "FSSESSION_PATH": ""})
    assert unset.returncode == 1 and "fssession.E001" in unset.stderr, unset.stderr
    short = manage("check", env={"SECRET_KEY": "short-key", "FSSESSION_PATH": str(tmp_path / "s")})
    assert short.returncode == 1 and "fssession.E002" in short.stderr, short.stderr
    (tmp_path / "file").write_text("")
    not_a_dir = manage("check", env={"SECRET_KEY": KEY, "FSSESSION_PATH": str(tmp_path / "file")})
    assert not_a_dir.returncode == 1 and "fssession.E004" in not_a_dir.stderr, not_a_dir.stderr


def test_the_readme_code_compiles() -> None:
    """Every Python block of README.md is valid Python."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 5
    for n, block in enumerate(blocks):
        compile(block, f"README.md python block {n}", "exec")
