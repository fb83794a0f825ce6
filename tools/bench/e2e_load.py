"""The end-to-end benchmark's clients: N concurrent users' requests round-robin over the nodes, and what they add up to.

Clients come in groups that share one session, as the tabs (or parallel
requests) of one browser share its cookie: each group's clients send the
cookie the group last received.  Every client, in a loop for a fixed time,
sends its next request to the next node (no sticky sessions): with
probability ``write_share`` a write of a key of its own (``POST
/write?<key>=1``), else a read (``GET /read``).  Each request is a new
connection (the nodes' server speaks HTTP/1.0).  A group's keys acknowledged
with 200 must all be in its session at the end; those that are not are lost.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from array import array
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

from .common import wait_for_start

TIMEOUT = 30.0  # a hang guard for one request, never a measure


@dataclass
class CookieBox:
    """The cookie of one group's session, shared by its clients (a browser's jar)."""

    name: str
    value: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def header(self) -> dict[str, str]:
        """The request header that sends it."""
        with self.lock:
            return {"Cookie": f"{self.name}={self.value}"}

    def update(self, response: http.client.HTTPResponse) -> None:
        """Keep what a Set-Cookie of the response says, unless it deletes the cookie."""
        for raw in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(raw)
            except CookieError:
                continue
            morsel = jar.get(self.name)
            if morsel is not None and morsel.value and morsel["max-age"] not in ("0", 0):
                with self.lock:
                    self.value = morsel.value


def request(port: int, method: str, path: str, box: CookieBox | None) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request on a new connection: (status, body, response); status 0 if it failed to get an answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers=box.header() if box else {})
        resp = conn.getresponse()
        body = resp.read()
        if box is not None:
            box.update(resp)
        return resp.status, body, resp
    finally:
        conn.close()


def new_session(port: int, cookie: str) -> str:
    """Create a session through the node on *port*: its cookie's value."""
    box = CookieBox(cookie, "")
    status, body, _ = request(port, "POST", "/write?init=1", box)
    if status != 200 or not box.value:
        raise RuntimeError(f"could not create a session (HTTP {status}): {body[:200]!r}")
    return box.value


@dataclass
class Record:
    """What one client saw: per request, when it finished, how long it took, whether a write, its status."""

    done: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))
    write: array[int] = field(default_factory=lambda: array("b"))
    status: array[int] = field(default_factory=lambda: array("h"))
    acked: list[str] = field(default_factory=list)  # keys written with 200


def client(cid: int, ports: list[int], box: CookieBox, end: float, write_share: float, rec: Record) -> None:
    """One client's loop until *end*."""
    rng = random.Random(cid)
    node = cid % len(ports)
    seq = 0
    while time.monotonic() < end:
        writing = rng.random() < write_share
        key = f"c{cid}s{seq}"
        seq += 1
        t0 = time.monotonic()
        try:
            status, _, _ = request(ports[node], *(("POST", f"/write?{key}=1") if writing else ("GET", "/read")), box)
        except (OSError, http.client.HTTPException):
            status = 0
        t1 = time.monotonic()
        rec.done.append(t1)
        rec.latency.append(t1 - t0)
        rec.write.append(writing)
        rec.status.append(status)
        if writing and status == 200:
            rec.acked.append(key)
        node = (node + 1) % len(ports)


def client_process(
    ports: list[int],
    cookie: str,
    groups: list[tuple[int, str]],
    per_group: int,
    seconds: float,
    write_share: float,
    start_at: float,
    out: Any,
) -> None:  # pragma: no cover (runs in a forked worker)
    """Run the clients of *groups* (group index, first cookie) as threads; put what they saw and each group's cookie."""
    boxes = {g: CookieBox(cookie, value) for g, value in groups}
    recs = {(g, i): Record() for g, _ in groups for i in range(per_group)}
    wait_for_start(start_at)
    end = start_at + seconds
    threads = [
        threading.Thread(target=client, args=(g * per_group + i, ports, boxes[g], end, write_share, rec))
        for (g, i), rec in recs.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [
        (g, r.done.tobytes(), r.latency.tobytes(), r.write.tobytes(), r.status.tobytes(), r.acked)
        for (g, _), r in recs.items()
    ]
    out.put((seen, {g: b.value for g, b in boxes.items()}, end))
