"""A real Flask app (tests/web/apps.py's routes on fssession.flask) in a web user's process, driven by the test.

``python -m tests.hostile.flaskdriver CONFIG_JSON`` reads one JSON command per
line on stdin and answers each with one JSON line:

    {"client": "admin", "get": "/login?user=admin"}  -> {"status": 200, "body": {...}}
    {"client": "bob", "cookie": true}                -> {"cookie": "<value>" or null}
    {"client": "thief", "set_cookie": "<value>"}     -> {"cookie": "<value>"}

Each client is a Flask test client with its own cookie jar (one browser).
A 500 is answered like any other status: the test decides what it means.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.web.apps import flask_app

COOKIE = "session"  # Flask's SESSION_COOKIE_NAME


def main() -> None:
    """Serve commands until stdin closes."""
    config: dict[str, Any] = json.loads(sys.argv[1])
    app = flask_app(config)
    app.testing = False  # errors become 500s, as in production, instead of propagating
    clients: dict[str, Any] = {}
    for line in sys.stdin:
        command = json.loads(line)
        client = clients.setdefault(command["client"], app.test_client())
        answer: dict[str, Any]
        if "get" in command:
            response = client.get(command["get"])
            answer = {"status": response.status_code, "body": response.get_json(silent=True)}
        elif "set_cookie" in command:
            client.set_cookie(COOKIE, command["set_cookie"])
            answer = {"cookie": command["set_cookie"]}
        else:
            cookie = client.get_cookie(COOKIE)
            answer = {"cookie": cookie.value if cookie is not None else None}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
