"""A Flask app on fssession: log in, count with a locked increment, log out.

Run two of it on one session directory (each could be on its own node)::

    python3 -m venv venv && venv/bin/pip install 'fssession[flask]'
    export SECRET_KEY=a-long-random-secret FSSESSION_PATH=/srv/sessions
    venv/bin/flask --app app run --port 5001 &
    venv/bin/flask --app app run --port 5002 &

A login on one is a login on the other; ``POST /count`` on both adds up exactly.
"""

import os

from flask import Flask, request, session

from fssession.flask import FSSession

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"],  # at least 16 bytes, the same on every node
    FSSESSION_PATH=os.environ["FSSESSION_PATH"],  # the directory every node mounts
)
FSSession(app)


@app.get("/")
def index() -> dict[str, object]:
    return {"user": session.get("user"), "count": session.get("count", 0), "pid": os.getpid()}


@app.post("/login")
def login() -> dict[str, object]:
    session.rotate()  # a fresh session id at login
    session["user"] = request.get_json()["user"]
    return {"user": session["user"]}


@app.post("/count")
def count() -> dict[str, object]:
    with session.locked() as data:  # exact, even when requests on several nodes overlap
        data["count"] = data.get("count", 0) + 1
        return {"count": data["count"]}


@app.post("/logout")
def logout() -> dict[str, object]:
    session.invalidate()
    return {"user": None}
