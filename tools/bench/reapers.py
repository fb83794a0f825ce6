"""The ways to purge expired sessions that the reaper benchmark compares, and how their stores are built.

A contender is a function ``purge(root, strace) -> result`` that empties the
store at *root* of its expired sessions in a fresh process and says how long
it took (``seconds``), how much it removed (``removed``), if it can its peak
memory (``maxrss_kb``) and, when *strace* is set, its filesystem calls
(``syscalls``); it is decorated with :func:`contender`, naming the builder
of the store it purges.  Registration order is the order of the lines;
:data:`BASELINE` is what the others are divided by.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fssession import SessionStore
from fssession.ids import new_session_id
from tools import REPO

from .common import fs_calls, traced

KEY = "benchmark-secret-key-0123456789"
EXPIRED_AGE = 7200  # seconds: far past max_age, so both find -mmin and the reaper agree
BASELINE = "find"

Result = dict[str, Any]
Builder = Callable[[Path, int, int], None]  # (root, expired, live)
Purge = Callable[[Path, bool], Result]  # (root, strace)


@dataclass(frozen=True)
class Contender:
    """A way to purge, the store it purges, and whether it runs only at the first (smallest) size."""

    name: str
    purge: Purge
    build: Builder
    first_size_only: bool


def count_entries(root: Path) -> tuple[int, int]:
    """(regular files, symlinks) under *root*, symlinks not followed."""
    files = links = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_symlink():
                    links += 1
                elif e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    files += 1
    return files, links


CONTENDERS: dict[str, Contender] = {}


# ------------------------------------------------------------------- builders


def session_path(store: SessionStore, sid: str) -> str:
    """The file that holds session *sid* in *store*: the one place the benchmarks use the store's layout."""
    return store.layout.path_for(sid)


def _template(store: SessionStore) -> list[tuple[str, bytes | None, str | None]]:
    """What create() leaves on disk for one session: (suffix after the file's name, content, or symlink target)."""
    sid = store.create({"user": "alice", "n": 1})
    folder, name = os.path.split(session_path(store, sid))
    parts: list[tuple[str, bytes | None, str | None]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.startswith(name):
            continue
        if entry.is_symlink():
            parts.append((entry.name[len(name) :], None, os.readlink(entry.path)))
        elif entry.is_file(follow_symlinks=False):
            parts.append((entry.name[len(name) :], Path(entry.path).read_bytes(), None))
        else:
            raise RuntimeError(f"{entry.path}: a session's files are no longer only files and symlinks")
    store.delete(sid)
    return parts


def _plant(path: str, parts: list[tuple[str, bytes | None, str | None]], mtime: float | None) -> None:
    """A copy of the template's files under *path*, last changed at *mtime* (None: now)."""
    for suffix, blob, target in parts:
        if target is not None:
            os.symlink(target, path + suffix)
        else:
            try:
                fd = os.open(path + suffix, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                os.mkdir(os.path.dirname(path), 0o700)
                fd = os.open(path + suffix, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, blob or b"")
            os.close(fd)
        if mtime is not None:
            os.utime(path + suffix, (mtime, mtime), follow_symlinks=False)


def build_store(root: Path, expired: int, live: int) -> None:
    """A store with *expired* sessions idle for two hours and *live* fresh ones (real files, real headers).

    Creating a million sessions through the store would take longer than
    purging them, so one is made that way and copied under fresh ids.
    """
    store = SessionStore(root, secret_key=KEY, max_age=1800)
    parts = _template(store)
    old = time.time() - EXPIRED_AGE
    for i in range(expired + live):
        _plant(session_path(store, new_session_id()), parts, old if i < expired else None)


def build_django(root: Path, expired: int, live: int) -> None:
    """Django file-backend sessions: *expired* with an expiry in the past, *live* ones fresh.

    Django makes one of each (its own encoding and signature); they are
    copied under fresh session keys, as :func:`build_store` does, since
    making 100k through Django takes longer than clearing them.
    """
    code = f"""
import sys
from django.conf import settings
settings.configure(SECRET_KEY="{KEY}", SESSION_ENGINE="django.contrib.sessions.backends.file",
                   SESSION_FILE_PATH=sys.argv[1], USE_TZ=True, INSTALLED_APPS=["django.contrib.sessions"])
import django; django.setup()
from django.contrib.sessions.backends.file import SessionStore
for name, expiry in (("expired", -3600), ("live", None)):
    s = SessionStore()
    s["user"] = "alice"; s["n"] = 1
    if expiry is not None:
        s.set_expiry(expiry)
    s.create()
    print(name, s.session_key)
"""
    root.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", code, str(root)], check=True, cwd=REPO, capture_output=True, text=True)
    prefix = "sessionid"  # Django's file names: SESSION_COOKIE_NAME + the session key
    made = dict(line.split() for line in out.stdout.splitlines())
    blobs = {kind: (root / (prefix + key)).read_bytes() for kind, key in made.items()}
    for key in made.values():
        (root / (prefix + key)).unlink()
    old = time.time() - EXPIRED_AGE
    for i in range(expired + live):
        path = root / (prefix + _django_key())
        path.write_bytes(blobs["expired" if i < expired else "live"])
        if i < expired:
            os.utime(path, (old, old))


def _django_key() -> str:
    """A fresh key as Django's file backend accepts one (32 of lowercase letters and digits)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(32))


# ------------------------------------------------------------------- purging


def contender(name: str, build: Builder = build_store, *, first_size_only: bool = False) -> Callable[[Purge], Purge]:
    """Register the decorated ``purge(root, strace)`` as the contender *name*, on stores made by *build*."""

    def register(purge: Purge) -> Purge:
        CONTENDERS[name] = Contender(name, purge, build, first_size_only)
        return purge

    return register


def run_child(body: str, root: Path, strace: bool) -> Result:
    """Run the Python statements *body* in a fresh process (``root = sys.argv[1]``), timed; they set ``removed``.

    The process reports its own peak memory; its syscalls are counted if *strace*.
    """
    code = (
        "import json, os, sys, time\n"
        "def _hwm_kb():\n"
        "    # VmHWM: this process's peak resident memory (ru_maxrss survives exec: the parent's would show)\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "t0 = time.perf_counter()\n"
        f"{body}\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'removed': removed, "
        "'maxrss_kb': _hwm_kb()}))\n"
    )
    argv = [sys.executable, "-c", code, str(root), KEY]  # run from the repository's root: its fssession
    if not strace:
        out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=REPO).stdout
        return dict(json.loads(out.splitlines()[-1]))
    counts, out = traced(argv)
    result = dict(json.loads(out.splitlines()[-1]))
    result["syscalls"] = fs_calls(counts)
    return result


@contender(BASELINE)
def find(root: Path, strace: bool) -> Result:
    """The floor: ``find DIR -mmin +N ( -type f -o -type l ) -delete`` (no expiry logic, no locks).

    ``-type f`` alone would leave every expired session's lock marker (a
    symlink) behind, doing half the reaper's removals: the markers of the
    expired sessions are as old as their files, so ``-type l`` removes them
    and nothing live.  ``removed`` counts session files, as the reaper does.
    """
    before = count_entries(root)
    argv = ["find", str(root), "-mmin", f"+{EXPIRED_AGE // 120}", "(", "-type", "f", "-o", "-type", "l", ")", "-delete"]
    t0 = time.perf_counter()
    if strace:
        counts, _ = traced(argv)
    else:
        subprocess.run(argv, check=True)
    seconds = time.perf_counter() - t0
    after = count_entries(root)
    result: Result = {"seconds": seconds, "removed": before[0] - after[0], "markers_removed": before[1] - after[1]}
    if strace:
        result["syscalls"] = fs_calls(counts)
    return result


@contender("reaper")
def reaper(root: Path, strace: bool) -> Result:
    """fssession's reaper, one process."""
    body = "from fssession.reaper import reap; s = reap(sys.argv[1], grace=60); removed = s.removed"
    return run_child(body, root, strace)


@contender("reaper-2", first_size_only=True)  # the large size measures memory: one job is enough
def reaper_2(root: Path, strace: bool) -> Result:
    """fssession's reaper, two jobs."""
    body = "from fssession.reaper import reap; s = reap(sys.argv[1], grace=60, jobs=2); removed = s.removed"
    return run_child(body, root, strace)


@contender("django", build_django, first_size_only=True)  # building Django's sessions is slow
def django(root: Path, strace: bool) -> Result:
    """Django's file backend, ``SessionStore.clear_expired()``."""
    body = (
        "from django.conf import settings; "
        "settings.configure(SECRET_KEY=sys.argv[2], SESSION_ENGINE='django.contrib.sessions.backends.file', "
        "SESSION_FILE_PATH=sys.argv[1], USE_TZ=True, INSTALLED_APPS=['django.contrib.sessions']); "
        "import django; django.setup(); "
        "from django.contrib.sessions.backends.file import SessionStore; "
        "n0 = len(os.listdir(sys.argv[1])); SessionStore.clear_expired(); removed = n0 - len(os.listdir(sys.argv[1]))"
    )
    return run_child(body, root, strace)
