"""Log in, count with a locked increment, log out: the session follows the user from node to node."""

import json
import os

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST


@require_GET
def index(request: HttpRequest) -> JsonResponse:
    session = request.session
    return JsonResponse({"user": session.get("user"), "count": session.get("count", 0), "pid": os.getpid()})


@require_POST
def login(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()  # a fresh session id at login (django.contrib.auth.login does this too)
    request.session["user"] = json.loads(request.body)["user"]
    return JsonResponse({"user": request.session["user"]})


@require_POST
def count(request: HttpRequest) -> JsonResponse:
    with request.session.locked() as data:  # exact, even when requests on several nodes overlap
        data["count"] = data.get("count", 0) + 1
        return JsonResponse({"count": data["count"]})


@require_POST
def logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({"user": None})
