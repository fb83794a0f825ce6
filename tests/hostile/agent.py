"""Helpers imported by the snippets that lab processes run (``from tests.hostile.agent import ...``).

Kept to the standard library and fssession's public API, so that a lab user's
process needs nothing else.  Every result is printed as one JSON line.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import traceback
from collections.abc import Callable
from typing import Any

from fssession import SessionError, SessionStore

__all__ = ["KEY", "attempt", "emit", "session_files", "shared_store"]

# The web nodes' secret.  The attacker's snippets never import it.
KEY = "hostile-lab-web-secret-0123456789"


def shared_store(path: str, **options: Any) -> SessionStore:
    """The store as the README's group set-up has it: files 0660, directories 0770 (setgid root)."""
    options.setdefault("file_mode", 0o660)
    options.setdefault("dir_mode", 0o770)
    return SessionStore(path, KEY, **options)


def emit(obj: object) -> None:
    """Print one JSON line and flush (the test reads it)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def attempt(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run *fn*: {"ok": value} or {"error": class, "typed": is a SessionError, "detail": ...}."""
    try:
        return {"ok": fn()}
    except SessionError as exc:
        return {"error": type(exc).__name__, "typed": True, "detail": str(exc)[:300]}
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
        return {"error": type(exc).__name__, "typed": False, "detail": detail}


def session_files(path: str) -> list[str]:
    """``bucket/name`` of every session-shaped regular file in real (not symlinked) buckets."""
    found = []
    for bucket in sorted(os.listdir(path)):
        full = os.path.join(path, bucket)
        if len(bucket) != 2 or not stat.S_ISDIR(os.lstat(full).st_mode):
            continue
        for name in sorted(os.listdir(full)):
            if len(name) == 64 and stat.S_ISREG(os.lstat(os.path.join(full, name)).st_mode):
                found.append(f"{bucket}/{name}")
    return found
