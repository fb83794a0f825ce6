"""One node of the end-to-end benchmark: ``python -m tools.bench.e2e_node BACKEND NAME PATH`` (key in the environment).

Serves backend *BACKEND*'s application (:mod:`.e2e_apps`) over the session
directory *PATH* on 127.0.0.1, a free port, with the demo nodes' threaded
server, and prints ``PORT <n> PID <p> HOST <h>`` once it accepts
connections, as a demo node does (:mod:`tools.demo.node`).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from wsgiref.simple_server import make_server

from tools.demo.config import SECRET_ENV
from tools.demo.node import _QuietHandler, _ThreadingWSGIServer

from .e2e_apps import BACKENDS


def command(backend: str, name: str, path: Path) -> list[str]:
    """The argv that starts a node (run it with ``cwd=tools.REPO``)."""
    return [sys.executable, "-m", "tools.bench.e2e_node", backend, name, str(path)]


def main(argv: list[str]) -> None:
    """Serve until killed."""
    backend, name, path = argv
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        sys.exit(f"{name}: {SECRET_ENV} is not set")
    app = BACKENDS[backend](Path(path), secret)
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    print(f"PORT {server.server_port} PID {os.getpid()} HOST {socket.gethostname()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
