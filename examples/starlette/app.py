"""A Starlette app on fssession: log in, count with a locked increment, log out.

Run two of it on one session directory (each could be on its own node)::

    python3 -m venv venv && venv/bin/pip install 'fssession[asgi]' uvicorn
    export SECRET_KEY=a-long-random-secret FSSESSION_PATH=/srv/sessions
    venv/bin/uvicorn app:app --port 8001 &
    venv/bin/uvicorn app:app --port 8002 &

``DEBUG=1`` serves plain-HTTP development: the cookie is then not ``Secure``.
"""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fssession import SessionStore
from fssession.asgi import SessionMiddleware

DEBUG = os.environ.get("DEBUG") == "1"
store = SessionStore(
    os.environ["FSSESSION_PATH"],  # the directory every node mounts
    os.environ["SECRET_KEY"],  # at least 16 bytes, the same on every node
    max_age=8 * 3600,  # 8 hours of idleness (the default is 30 minutes)
)


async def index(request: Request) -> JSONResponse:
    session = request.session
    return JSONResponse({"user": session.get("user"), "count": session.get("count", 0), "pid": os.getpid()})


async def login(request: Request) -> JSONResponse:
    user = (await request.json())["user"]
    request.session.rotate()  # a fresh session id at login
    request.session["user"] = user
    return JSONResponse({"user": user})


async def count(request: Request) -> JSONResponse:
    async with request.session.locked() as data:  # exact, even when requests on several nodes overlap
        data["count"] = data.get("count", 0) + 1
        return JSONResponse({"count": data["count"]})


async def logout(request: Request) -> JSONResponse:
    request.session.invalidate()
    return JSONResponse({"user": None})


app = Starlette(
    debug=DEBUG,
    routes=[
        Route("/", index),
        Route("/login", login, methods=["POST"]),
        Route("/count", count, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ],
    middleware=[Middleware(SessionMiddleware, store=store, secure=not DEBUG)],
)
