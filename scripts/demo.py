"""The fssession cluster demo: three web nodes, one shared session directory, one user followed across them.

Run it through ``scripts/demo`` (which sets up the virtualenv).  It starts
three web nodes, real HTTP servers in their own processes on 127.0.0.1, each
wrapped in :class:`fssession.wsgi.SessionMiddleware` over the same session
directory: a fresh temporary directory on local disk by default, or
``--path DIR`` (a shared mount; give ``--path`` twice for two mounts of one
export, and the nodes are spread over both).  Where it can (root, Linux
namespaces) each node is a simulated host of its own (``scripts/testbed/
hostsim``: own hostname and PID namespace), so a node's locks are foreign to
the others and a dead node's lock is freed only by its lease running out.

Then a client logs in and sends a few hundred requests round-robin and
concurrently over the nodes (disjoint keys, and a counter incremented in the
session's locked block), one node is killed with SIGKILL while it holds the
session's lock in the middle of an increment, the other nodes carry on, and
the reaper removes the sessions of visitors that expired.  The report says
what each step showed; the exit status is 0 only if every check passed.

``--serve`` only starts the nodes and prints their URLs, for trying the
little page (login, counter, logout) in a browser.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import html
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fssession import SessionStore  # noqa: E402  (after the path fix-up, so a bare checkout works)
from fssession.websession import Session  # noqa: E402
from fssession.wsgi import SessionMiddleware, StartResponse, WSGIEnviron  # noqa: E402

HOSTSIM = REPO / "scripts" / "testbed" / "hostsim"
SECRET_ENV = "FSSESSION_DEMO_SECRET"  # the key reaches the nodes by environment, not argv (ps shows argv)
NODE_HEADER = "X-Fssession-Node"
SESSION_HEADER = "X-Fssession-Session"

# The demo store's settings.  A short lease, so that a node killed while it
# holds a session's lock is replaced within seconds: a node on another host
# cannot be probed, only waited out (a node on this host is noticed at once).
LEASE = 3.0
FS_SLACK = 1.0  # the store's default: client caches of the mount are assumed at most this stale
LOCK_TIMEOUT = 10.0  # a request waits this long for a session's lock: more than a lease, so a dead holder is outlived
MAX_AGE = 600  # idle lifetime of the demo user's session (and the cookie's Max-Age)
VISITOR_TTL = 1  # idle lifetime of the throwaway visitors' sessions: gone by the time the reaper runs
GRACE = 2 * FS_SLACK  # the reaper's grace (the least it allows): it removes sessions expired longer than this
NODE_NAMES = ("web-1", "web-2", "web-3")
VICTIM = 1  # index of the node killed in the middle of an update


def fingerprint(sid: str | None) -> str | None:
    """A short hash of a session id, safe to show: the id itself stays in the HttpOnly cookie."""
    return None if sid is None else hashlib.blake2b(sid.encode(), digest_size=6).hexdigest()


# =====================================================================
# The web node: a tiny WSGI application behind SessionMiddleware.
# =====================================================================


class NodeApp:
    """The demo page and its JSON API, served by one node.

    Page (for people): ``GET /``; ``POST /login`` (form field ``user``),
    ``POST /incr``, ``POST /logout``, each answered with a redirect to ``/``.
    API (for the scenario): ``GET /api/whoami[?exact=1]`` (exact: read under
    the lock); ``POST /api/login?user=U[&ttl=S]``, ``POST /api/set?KEY=VALUE...``,
    ``POST /api/incr``, ``POST /api/logout``; and the debug endpoint
    ``GET /api/hold``, which enters the locked block, increments in memory,
    says so and then never finishes (the demo kills the node there).
    """

    def __init__(self, name: str, peers_file: Path | None) -> None:
        self.name = name
        self.peers_file = peers_file

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        session: Session = environ["fssession.session"]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if path == "/api/hold":
            return self._hold(session, start_response)
        if method == "POST":
            params.update(self._form(environ))
        try:
            status, headers, body = self.route(session, method, path, params)
        except Exception as exc:  # a failed commit (LockTimeout, StorageError): say which node and why
            status, headers, body = "500 Internal Server Error", [], self._json({"error": repr(exc)})
            headers.append(("Content-Type", "application/json"))
        headers += [(NODE_HEADER, self.name), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        if session.loaded and session.sid is not None:
            headers.append((SESSION_HEADER, fingerprint(session.sid) or ""))
        start_response(status, headers)
        return [body]

    @staticmethod
    def _form(environ: WSGIEnviron) -> dict[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))

    @staticmethod
    def _json(value: Any) -> bytes:
        return json.dumps(value).encode()

    def _state(self, session: Session) -> dict[str, Any]:
        return {
            "node": self.name,
            "host": socket.gethostname(),
            "session": fingerprint(session.sid),
            "user": session.get("user"),
            "counter": session.get("counter", 0),
            "data": dict(session),
        }

    def route(
        self, session: Session, method: str, path: str, params: dict[str, str]
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Dispatch one request: (status, headers, body)."""
        json_ct = [("Content-Type", "application/json")]
        if path == "/" and method == "GET":
            return "200 OK", [("Content-Type", "text/html; charset=utf-8")], self.page(session).encode()
        if method != "POST" and path != "/api/whoami":
            return "405 Method Not Allowed", [("Content-Type", "text/plain")], b"use POST\n"
        if path in ("/login", "/api/login"):
            user = params.get("user", "").strip()[:40] or "guest"
            session.rotate()  # a fresh id at login: a planted id (session fixation) is worth nothing
            session["user"] = user
            if params.get("ttl"):
                session.max_age = int(params["ttl"])
        elif path in ("/incr", "/api/incr"):
            t0 = time.monotonic()
            with session.locked() as data:  # exact: the read, +1 and write happen under the session's lock
                waited = time.monotonic() - t0
                data["counter"] = data.get("counter", 0) + 1
            if path == "/api/incr":
                return "200 OK", json_ct, self._json({**self._state(session), "wait_ms": waited * 1000})
        elif path in ("/logout", "/api/logout"):
            session.invalidate()
        elif path == "/api/set":
            for key, value in params.items():
                session[key] = value
            t0 = time.monotonic()
            session.commit()  # timed here (the middleware would do it anyway): lock, re-read, merge, write
            took = time.monotonic() - t0
            return "200 OK", json_ct, self._json({**self._state(session), "commit_ms": took * 1000})
        elif path == "/api/whoami" and params.get("exact") and session.get("user"):
            # A plain load takes no lock, and a client cache of the mount may
            # serve the version before another node's last commit for up to
            # fs_slack; a read in the locked block sees the last commit.  (It
            # also rewrites the session: fine for a check, not for every page.)
            with session.locked():
                pass
        elif path != "/api/whoami":
            return "404 Not Found", [("Content-Type", "text/plain")], b"not found\n"
        if path.startswith("/api/"):
            session.commit()  # now rather than in the middleware, so that the answer shows the (new) session id
            return "200 OK", json_ct, self._json(self._state(session))
        return "303 See Other", [("Location", "/")], b""

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
        user = session.get("user")
        esc = html.escape
        links = " ".join(
            f'<a href="{esc(url)}" class="peer">{esc(name)}</a>' for name, url in self.peers() if name != self.name
        )
        if user:
            body = f"""
<p>Logged in as <b id="user">{esc(str(user))}</b>, session <code id="session">{fingerprint(session.sid)}</code>
 <small>(a hash of its id: the id itself stays in the HttpOnly cookie)</small></p>
<form method="post" action="/incr"><p>Counter: <b id="counter">{int(session.get("counter", 0))}</b>
 <button id="incr" type="submit">+1</button></p></form>
<form method="post" action="/logout"><button id="logout" type="submit">Log out</button></form>"""
        else:
            body = """
<p id="anonymous">Not logged in.</p>
<form method="post" action="/login"><input id="user-input" name="user" placeholder="your name" required>
 <button id="login" type="submit">Log in</button></form>"""
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fssession demo: {esc(self.name)}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}} .node{{font-size:2em}}</style></head>
<body>
<p class="node">Served by <b id="node">{esc(self.name)}</b> <small>(host {esc(socket.gethostname())})</small></p>
{body}
<p>Other nodes: {links or "(none known)"}. They share one session directory: the session follows you.</p>
<p id="cookie-note"><small>Session cookie: HttpOnly; SameSite=Lax; Path=/; Max-Age={MAX_AGE}.
 <b>Secure is off in this demo</b> (<code>secure=False</code>, set explicitly because it is served over plain
 http on 127.0.0.1); fssession's default is on: serve it over HTTPS.</small></p>
</body></html>
"""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request stuck in /api/hold must not keep the process alive
    request_queue_size = 64  # a burst of concurrent requests is not refused


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request; errors still go to stderr through wsgiref's own handler


def run_node(name: str, path: Path, peers_file: Path | None) -> None:
    """Serve the demo application on 127.0.0.1 (a free port): prints ``PORT <n> PID <p> HOST <h>``."""
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        sys.exit(f"{name}: {SECRET_ENV} is not set")
    store = SessionStore(path, secret, max_age=MAX_AGE, lease=LEASE, lock_timeout=LOCK_TIMEOUT, fs_slack=FS_SLACK)
    # secure=False, explicitly: the demo is plain http on 127.0.0.1, where a
    # browser would never send back a Secure cookie.  The default is Secure.
    app = SessionMiddleware(NodeApp(name, peers_file), store, secure=False)
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    print(f"PORT {server.server_port} PID {os.getpid()} HOST {socket.gethostname()}", flush=True)
    server.serve_forever()


# =====================================================================
# Starting and stopping nodes.
# =====================================================================


def _die_with_parent() -> None:
    """In the child: SIGKILL when the demo dies, whatever kills it (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def hostsim_works() -> tuple[bool, str]:
    """Whether nodes can run as simulated hosts here; else why not."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "needs root (namespaces)"
    if not all(shutil.which(tool) for tool in ("unshare", "setpriv", "bash")):
        return False, "unshare, setpriv or bash is missing"
    try:
        probe = subprocess.run(
            [str(HOSTSIM), "demo-probe", "--", "hostname"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"hostsim did not run: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != "demo-probe":
        return False, f"hostsim failed: {probe.stderr.strip()[-200:]}"
    return True, ""


@dataclass
class Node:
    """One running web node."""

    name: str
    path: Path
    proc: subprocess.Popen[str]
    port: int = 0
    pid: int = 0  # as the node sees it (in a simulated host, its own PID namespace)
    host: str = ""
    alive: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def start_node(name: str, path: Path, peers_file: Path, simulate: bool, timeout: float = 30.0) -> Node:
    """Start one node and wait for it to say which port it serves."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--node", name, "--path", str(path)]
    argv += ["--peers-file", str(peers_file)]
    if simulate:
        argv = [str(HOSTSIM), name, "--", *argv]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
    )
    node = Node(name, path, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if line.startswith("PORT "):
            _, port, _, pid, _, host = line.split()
            node.port, node.pid, node.host = int(port), int(pid), host
            return node
        if not ready or not line:
            stop_node(node)
            raise RuntimeError(f"{name} did not start (exit status {proc.poll()}); see its errors above")


def stop_node(node: Node, sig: int = signal.SIGTERM) -> None:
    """Stop a node (SIGTERM, then SIGKILL if it lingers); a simulated host's whole namespace goes with it."""
    if node.proc.poll() is None:
        node.proc.send_signal(sig)
        try:
            node.proc.wait(5)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
    node.alive = False


def wait_port_closed(port: int, timeout: float = 10.0) -> bool:
    """Wait until nothing accepts connections on *port* (a killed host's processes die a moment after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.02)
    return False


# =====================================================================
# The client.
# =====================================================================


@dataclass
class Reply:
    """One answered request, as the client saw it."""

    node: str  # from the node header
    status: int
    body: dict[str, Any]
    elapsed: float


class Client:
    """A user agent with a cookie jar, used from many threads at once (CookieJar locks itself)."""

    def __init__(self) -> None:
        self.jar = CookieJar()
        # No proxies (127.0.0.1 must not go through $http_proxy); cookies kept across ports, as browsers do.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def call(
        self,
        node: Node,
        path: str,
        params: dict[str, str] | None = None,
        *,
        cookie: str | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """One request; POST for everything but whoami.  HTTP errors are returned, not raised.

        *cookie* sends that session id instead of the jar's (which drops a
        cookie once its Max-Age is over, as a browser does: to show what the
        server does with an old id, it must be sent by hand).
        """
        url = node.url.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        data = None if path == "/api/whoami" else b""
        request = urllib.request.Request(url, data=data)
        opener = self.opener
        if cookie is not None:
            request.add_header("Cookie", f"fssession={cookie}")
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        t0 = time.monotonic()
        try:
            with opener.open(request, timeout=timeout) as resp:
                status, headers, raw = resp.status, resp.headers, resp.read()
        except HTTPError as exc:
            status, headers, raw = exc.code, exc.headers, exc.read()
        except OSError as exc:  # refused, reset, timed out: a failed check, not a traceback
            return Reply("?", 0, {"error": f"{url}: {exc}"}, time.monotonic() - t0)
        elapsed = time.monotonic() - t0
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"error": raw[:200].decode("utf-8", "replace")}
        return Reply(headers.get(NODE_HEADER, "?"), status, body, elapsed)

    def cookie(self) -> str | None:
        """The session cookie's value, if the jar holds one."""
        return next((c.value for c in self.jar if c.name == "fssession"), None)

    def open_stream(self, node: Node, path: str) -> Any:
        """Start a request whose answer is read line by line (the hold endpoint)."""
        return self.opener.open(node.url.rstrip("/") + path, timeout=30)


# =====================================================================
# The scenario.
# =====================================================================


@dataclass
class Report:
    """Checks as they pass or fail; printed as they happen."""

    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        mark = "ok  " if ok else "FAIL"
        print(f"   [{mark}] {what}" + (f": {detail}" if detail else ""))
        if not ok:
            self.failures.append(what + (f" ({detail})" if detail else ""))
        return ok


def ms(values: list[float]) -> str:
    """Median and max of durations in seconds, in milliseconds."""
    if not values:
        return "none"
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


Results = list[tuple[str, dict[str, str] | None, Reply]]


def traffic(client: Client, nodes: list[Node], count: int, threads: int, first: int) -> Results:
    """*count* requests round-robin over *nodes*, *threads* at a time: keys set, counter incremented, reads.

    Request *i* goes to node ``i % len(nodes)``; its kind rotates every
    round, so every node serves every kind.  Keys are ``k<first + i>``:
    disjoint across requests, so every one of them must survive the merge.
    """
    plan: list[tuple[str, Node, str, dict[str, str] | None]] = []
    for i in range(count):
        node = nodes[i % len(nodes)]
        kind = ("set", "incr", "read")[(i // len(nodes)) % 3]
        if kind == "set":
            plan.append((kind, node, "/api/set", {f"k{first + i}": f"v{first + i}"}))
        elif kind == "incr":
            plan.append((kind, node, "/api/incr", None))
        else:
            plan.append((kind, node, "/api/whoami", None))
    with ThreadPoolExecutor(threads) as pool:
        futures = [(kind, params, pool.submit(client.call, node, path, params)) for kind, node, path, params in plan]
        return [(kind, params, f.result()) for kind, params, f in futures]


def expected_keys(results: Results) -> dict[str, str]:
    """The keys that the successful set requests wrote, each its own."""
    keys: dict[str, str] = {}
    for kind, params, reply in results:
        if kind == "set" and params and reply.status == 200:
            keys.update(params)
    return keys


def scenario(nodes: list[Node], store: SessionStore, simulated: bool, requests: int, threads: int) -> Report:
    """Run the story and print its report as it goes."""
    report = Report()
    check = report.check
    victim = nodes[VICTIM]

    print(f"\n1. visitors: 4 people log in with a {VISITOR_TTL} s idle lifetime, then leave")
    visitors = [Client() for _ in range(4)]
    for i, v in enumerate(visitors):
        v.call(nodes[i % len(nodes)], "/api/login", {"user": f"visitor-{i + 1}", "ttl": str(VISITOR_TTL)})
    visitors_left = time.monotonic()
    visitor_ids = [v.cookie() for v in visitors]
    check(all(visitor_ids), "each visitor got a session cookie")

    print("\n2. alice logs in on web-1")
    alice = Client()
    login = alice.call(nodes[0], "/api/login", {"user": "alice"})
    sess = login.body.get("session")
    check(login.status == 200 and sess is not None, "logged in", f"session {sess} (a hash of its id)")

    print(f"\n3. {requests} requests from alice, round-robin over 3 nodes, {threads} at a time")
    t0 = time.monotonic()
    results = traffic(alice, nodes, requests, threads, first=0)
    took = time.monotonic() - t0
    per_node = Counter(r.node for _, _, r in results)
    print(f"   {requests} requests in {took:.1f} s; per node: " + ", ".join(f"{n} {per_node[n]}" for n in NODE_NAMES))
    failed = [r for _, _, r in results if r.status != 200]
    check(not failed, "every request answered 200", f"{len(failed)} failed: {failed[:2]}" if failed else "")
    check(
        all(per_node[n.name] == requests // 3 + (i < requests % 3) for i, n in enumerate(nodes)),
        "every node served its share",
    )
    seen = {r.body.get("session") for _, _, r in results if r.status == 200}
    served_by = {r.node for _, _, r in results if r.body.get("session") == sess}
    others = [r for _, _, r in results if r.status == 200 and r.body.get("session") != sess]
    detail = f"{sess} seen on {', '.join(sorted(served_by))}"
    if others:  # e.g. a node that could not read the session started a fresh one: the user was logged out
        detail += (
            f"; but {len(others)} replies showed another session or none (nodes: {sorted({r.node for r in others})})"
        )
    check(seen == {sess}, "the same session on every node", detail)
    check(
        all(r.body.get("user") == "alice" for _, _, r in results if r.status == 200),
        "alice stayed logged in throughout",
    )
    incr_waits = [r.body["wait_ms"] / 1000 for kind, _, r in results if kind == "incr" and r.status == 200]
    commits = [r.body["commit_ms"] / 1000 for kind, _, r in results if kind == "set" and r.status == 200]
    incrs = sum(1 for kind, _, r in results if kind == "incr" and r.status == 200)
    keys = expected_keys(results)
    sets = sum(1 for kind, _, r in results if kind == "set" and r.status == 200)
    state = alice.call(nodes[2], "/api/whoami", {"exact": "1"}).body
    got_keys = {k: v for k, v in state.get("data", {}).items() if k.startswith("k")}
    check(state.get("counter") == incrs, "counter exact", f"expected {incrs}, got {state.get('counter')}")
    check(
        got_keys == keys and len(keys) == sets,
        "every disjoint key kept (changes merged, none lost)",
        f"{len(got_keys)} of {sets} set",
    )
    print(f"   waiting for the session's lock, as measured on the nodes: locked increments {ms(incr_waits)};")
    print(f"   commits of a set (lock, re-read, merge, write) {ms(commits)}")
    print(f"   round trips seen by the client: {ms([r.elapsed for _, _, r in results])}")

    print(f"\n4. {victim.name} is killed with SIGKILL while it holds the session's lock in the middle of an increment")
    before = state.get("counter", 0)
    stream = alice.open_stream(victim, "/api/hold")
    line = stream.readline().decode().strip()
    check(line.startswith("holding the lock"), f"{victim.name} entered the locked block", line)
    where = f"host {victim.host}, pid {victim.pid}" if simulated else f"pid {victim.proc.pid}"
    os.kill(victim.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.proc.wait()
    victim.alive = False
    stream.close()
    check(wait_port_closed(victim.port), f"kill -9 {where}: {victim.name} is gone")
    survivors = [n for n in nodes if n.alive]
    after = alice.call(survivors[-1], "/api/incr")
    recovered = time.monotonic() - killed
    bound = LEASE + 2 * FS_SLACK + 1.0
    if simulated:
        why = (
            f"{victim.name} was another host, so its lock could be taken over only once its {LEASE:g} s lease ran out"
            f" (then one fs_slack, {FS_SLACK:g} s, to outwait client caches: the dead holder took the generation"
            f" beacon with it); bound {bound:g} s"
        )
    else:
        why = (
            f"{victim.name} ran on this host, so its dead PID was noticed at once (no need to wait for the lease;"
            f" then one fs_slack, {FS_SLACK:g} s, since the dead holder took the generation beacon with it)"
        )
    check(
        after.status == 200 and recovered <= bound,
        f"the next locked increment, on {after.node}, went through {recovered:.2f} s after the kill",
        why,
    )
    check(
        after.body.get("counter") == before + 1,
        f"{victim.name}'s half-done increment was never written",
        f"counter {before} -> {after.body.get('counter')}",
    )
    more = 60
    print(f"   the others carry on: {more} more requests round-robin over {', '.join(n.name for n in survivors)}")
    results2 = traffic(alice, survivors, more, threads, first=requests)
    per_node.update(r.node for _, _, r in results2)
    failed2 = [r for _, _, r in results2 if r.status != 200]
    check(not failed2, "every request answered 200", f"{len(failed2)} failed: {failed2[:2]}" if failed2 else "")
    incrs2 = 1 + sum(1 for kind, _, r in results2 if kind == "incr" and r.status == 200)
    keys.update(expected_keys(results2))
    incr_waits += [r.body["wait_ms"] / 1000 for kind, _, r in results2 if kind == "incr" and r.status == 200]
    final = alice.call(survivors[0], "/api/whoami", {"exact": "1"}).body
    got_keys = {k: v for k, v in final.get("data", {}).items() if k.startswith("k")}
    check(
        final.get("counter") == before + incrs2,
        "counter still exact",
        f"expected {before + incrs2}, got {final.get('counter')}",
    )
    check(got_keys == keys, "every key kept", f"{len(got_keys)} keys")

    print(f"\n5. the reaper runs (same as `fssession reap DIR --grace {GRACE:g} --lease {LEASE:g}`)")
    wait = visitors_left + VISITOR_TTL + GRACE + 1.5 - time.monotonic()
    if wait > 0:
        print(f"   (waiting {wait:.1f} s more for the visitors' sessions to be expired longer than the grace)")
        time.sleep(wait)
    stats = store.reap(grace=GRACE)
    print(f"   {stats.summary()}")
    for problem in stats.problems[:5]:
        print(f"      {problem}")
    check(
        stats.removed == len(visitors) and stats.errors == 0,
        "it removed exactly the visitors' expired sessions",
        f"{stats.removed} removed",
    )
    gone = [
        v.call(survivors[i % len(survivors)], "/api/whoami", cookie=sid).body.get("user")
        for i, (v, sid) in enumerate(zip(visitors, visitor_ids, strict=True))
    ]
    check(gone == [None] * len(visitors), "the visitors' old ids name no session any more")
    still = [alice.call(n, "/api/whoami").body for n in survivors]
    check(
        all(s.get("user") == "alice" and s.get("session") == sess for s in still),
        "alice is still logged in, on every surviving node",
    )

    print("\n6. alice logs out on web-1")
    out = alice.call(nodes[0], "/api/logout")
    check(out.status == 200 and alice.cookie() is None, "logged out: the cookie is cleared")
    last = alice.call(survivors[-1], "/api/whoami").body
    check(last.get("user") is None, f"{survivors[-1].name} no longer knows her", f"user {last.get('user')}")

    print("\nsummary")
    print("   requests per node: " + ", ".join(f"{n} {per_node[n]}" for n in NODE_NAMES))
    print(f"   session {sess} followed across {', '.join(sorted(served_by))}")
    print(f"   counter: expected {before + incrs2}, got {final.get('counter')}")
    print(f"   lock waits of locked increments: {ms(incr_waits)}; dead holder replaced after {recovered:.2f} s")
    print(f"   reaper removed {stats.removed} expired sessions ({stats.sessions_seen} seen, {stats.beacons} beacons)")
    return report


# =====================================================================
# Set-up: the directory, the nodes; the two modes.
# =====================================================================


def prepare_dirs(paths: list[Path]) -> tuple[list[Path], Callable[[], None]]:
    """The session directory, as seen through each given path, and how to remove it.

    With no path: a fresh temporary directory.  With paths: a fresh
    subdirectory of the first, which must appear under every other one
    (they are meant to be mounts of one export).
    """
    if not paths:
        tmp = Path(tempfile.mkdtemp(prefix="fssession-demo-"))
        return [tmp], lambda: shutil.rmtree(tmp, ignore_errors=True)
    for path in paths:
        if not path.is_dir():
            raise SystemExit(f"demo: --path {path} is not a directory")
    first = Path(tempfile.mkdtemp(prefix="fssession-demo-", dir=paths[0]))
    views = [first]
    for other in paths[1:]:
        view = other / first.name
        deadline = time.monotonic() + 30
        while not view.is_dir():
            if time.monotonic() > deadline:
                shutil.rmtree(first, ignore_errors=True)
                raise SystemExit(
                    f"demo: {other} does not show {first.name}: is it a mount of the same export as {paths[0]}?"
                )
            time.sleep(0.05)
        views.append(view)
    return views, lambda: shutil.rmtree(first, ignore_errors=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: stop the nodes, remove the directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--path",
        type=Path,
        action="append",
        default=[],
        help="where to keep the sessions (default: a fresh temporary directory); "
        "twice for two mounts of one export (the nodes are spread over them)",
    )
    parser.add_argument("--serve", action="store_true", help="only start the nodes, print their URLs, serve until ^C")
    parser.add_argument(
        "--hosts",
        choices=["auto", "sim", "local"],
        default="auto",
        help="sim: each node a simulated host (hostsim; needs root); local: plain processes; auto: sim if possible",
    )
    parser.add_argument("--requests", type=int, default=300, help="requests in the main burst (300)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    parser.add_argument("--node", help=argparse.SUPPRESS)  # internal: run one node
    parser.add_argument("--peers-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        run_node(args.node, args.path[0], args.peers_file)
        return 0

    start = time.monotonic()
    simulated = False
    if args.hosts != "local":
        simulated, why_not = hostsim_works()
        if not simulated and args.hosts == "sim":
            print(f"demo: cannot simulate hosts: {why_not}", file=sys.stderr)
            return 2
    views, remove = prepare_dirs(args.path)
    control = Path(tempfile.mkdtemp(prefix="fssession-demo-ctl-"))  # local, private: the nodes' URLs
    peers_file = control / "nodes.json"
    os.environ[SECRET_ENV] = secrets.token_hex(32)  # a fresh key per run, inherited by the nodes
    signal.signal(signal.SIGTERM, _on_sigterm)
    nodes: list[Node] = []
    try:
        print("fssession cluster demo")
        print(f"   session directory: {', '.join(map(str, views))}" + ("" if args.path else " (local disk)"))
        print(
            f"   store: lease {LEASE:g} s (short, for the demo: a dead node's lock is freed within seconds), "
            f"lock timeout {LOCK_TIMEOUT:g} s, max_age {MAX_AGE} s"
        )
        print("   cookie: HttpOnly, SameSite=Lax, Path=/, Max-Age; Secure is OFF (secure=False, set explicitly:")
        print("   plain http on 127.0.0.1). The default is Secure: in production serve over HTTPS.")
        if simulated:
            print(
                "   each node is a simulated host (own hostname and PID namespace): its locks are foreign to the others"
            )
        else:
            print("   the nodes are processes on this host (run as root for simulated hosts)")
        for i, name in enumerate(NODE_NAMES):
            nodes.append(start_node(name, views[i % len(views)], peers_file, simulated))
        peers_file.write_text(json.dumps([{"name": n.name, "url": n.url} for n in nodes]))
        for n in nodes:
            where = f"host {n.host}, pid {n.pid}" if simulated else f"pid {n.proc.pid}"
            print(f"   {n.name}  {n.url}  ({where}; sessions in {n.path})")
        if args.serve:
            print("\nserving: open any of the URLs above in a browser; Ctrl-C to stop", flush=True)
            while all(n.proc.poll() is None for n in nodes):
                time.sleep(0.5)
            print("demo: a node stopped", file=sys.stderr)
            return 1
        store = SessionStore(views[0], os.environ[SECRET_ENV], lease=LEASE, fs_slack=FS_SLACK)
        report = scenario(nodes, store, simulated, args.requests, args.threads)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 0 if args.serve else 130  # ^C is how --serve is meant to end
    except Exception as exc:  # the story could not go on: say where, briefly
        print(f"\nSOMETHING WENT WRONG: the demo stopped: {exc!r}")
        return 1
    finally:
        for n in nodes:
            stop_node(n)
        shutil.rmtree(control, ignore_errors=True)
        remove()
    print(f"   whole run: {time.monotonic() - start:.1f} s")
    if report.failures:
        print("\nSOMETHING WENT WRONG:")
        for failure in report.failures:
            print(f"   - {failure}")
        return 1
    print("\nall good")
    return 0


if __name__ == "__main__":
    sys.exit(main())
