"""One demo node's process: ``python -m tools.demo.node NAME PATH PEERS_FILE`` (the key in $FSSESSION_DEMO_SECRET).

It serves :class:`~tools.demo.app.NodeApp` over the session directory
*PATH* on 127.0.0.1, a free port, and prints ``PORT <n> PID <p> HOST <h>``
once it accepts connections; :mod:`tools.demo.cluster` starts it, inside a
simulated host where it can.  With $FSSESSION_DEMO_METRICS set, its store
reports to a :class:`~fssession.prometheus.PrometheusObserver` and the node
serves the metrics at ``/metrics`` (outside the session middleware: a
scrape makes no session).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from fssession import SessionStore
from fssession.events import Observer
from fssession.wsgi import SessionMiddleware
from tools import python_module

from .app import NodeApp
from .config import FS_SLACK, LEASE, LOCK_TIMEOUT, MAX_AGE, METRICS_ENV, SECRET_ENV


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
    observer, metrics = _metrics() if os.environ.get(METRICS_ENV) else (None, None)
    store = SessionStore(
        path, secret, max_age=MAX_AGE, lease=LEASE, lock_timeout=LOCK_TIMEOUT, fs_slack=FS_SLACK, on_event=observer
    )
    # secure=False, explicitly: the demo is plain http on 127.0.0.1, where a
    # browser would never send back a Secure cookie.  The default is Secure.
    app: WSGIApplication = SessionMiddleware(NodeApp(name, peers_file), store, secure=False)
    if metrics is not None:
        app = _serving_metrics(app, metrics)
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    print(f"PORT {server.server_port} PID {os.getpid()} HOST {socket.gethostname()}", flush=True)
    server.serve_forever()


def _metrics() -> tuple[Observer, WSGIApplication]:
    """An observer for the store, and the WSGI application that serves what it counted."""
    from prometheus_client import CollectorRegistry, make_wsgi_app

    from fssession.prometheus import PrometheusObserver

    registry = CollectorRegistry()
    return PrometheusObserver(registry), make_wsgi_app(registry)


def _serving_metrics(app: WSGIApplication, metrics: WSGIApplication) -> WSGIApplication:
    """*app*, except that ``/metrics`` is answered by *metrics*."""

    def dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return metrics(environ, start_response)
        return app(environ, start_response)

    return dispatch


def command(name: str, path: Path, peers_file: Path) -> list[str]:
    """The argv that starts node *name* on *path* (run it with ``cwd=tools.REPO``); parsed by :func:`main`."""
    return python_module("tools.demo.node", name, str(path), str(peers_file))


def main(argv: list[str]) -> None:
    """Run the node that :func:`command` describes."""
    if len(argv) != 3:
        sys.exit("usage: python -m tools.demo.node NAME PATH PEERS_FILE (started by the demo, not by hand)")
    # fssession's package logger has only a NullHandler (a library's manners):
    # a node is an application, and its warnings (a refused file, a rollback)
    # belong on its stderr, which the demo shows.
    logging.basicConfig(level=logging.WARNING, format=f"{argv[0]} %(name)s %(levelname)s %(message)s")
    run_node(argv[0], Path(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
