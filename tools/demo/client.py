"""The demo's user agent: an HTTP client with a cookie jar, as a browser would keep one across the nodes."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode

from .cluster import Node
from .config import NODE_HEADER


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
        return Reply(headers.get(NODE_HEADER, "?"), status, _parse(raw), elapsed)

    def cookie(self) -> str | None:
        """The session cookie's value, if the jar holds one."""
        return next((c.value for c in self.jar if c.name == "fssession"), None)

    def open_stream(self, node: Node, path: str) -> Any:
        """Start a request whose answer is read line by line (the hold endpoint)."""
        return self.opener.open(node.url.rstrip("/") + path, timeout=30)


def _parse(raw: bytes) -> dict[str, Any]:
    """A JSON answer's body; anything else as an error, briefly."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": raw[:200].decode("utf-8", "replace")}
