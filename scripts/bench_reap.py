"""Reaper benchmarks (issue 4): purge expired sessions among live ones, against `find -delete` and Django.

For each directory given (default: a tmpfs and a local-disk directory), and
each size: N expired sessions among L live ones, built afresh for every
contender, then purged by
  * `find DIR -type f -mmin +M -delete` (the floor: no expiry logic, no locks),
  * the fssession reaper (`fssession.reaper.reap`, one process),
  * Django's file backend `SessionStore.clear_expired()` over N + L Django
    sessions (only for the first size: building Django's sessions is slow).
Reported: expired files removed per second (median of rounds), the ratio to
find, syscalls per expired file (strace -c -f, whole run divided by N), and
the reaper's peak memory (ru_maxrss of its own process) at each size.

Usage: scripts/bench reap [--dir DIR ...] [--sizes 100000,1000000] [--live 10000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fssession import SessionStore  # noqa: E402
from fssession.ids import file_name, new_session_id  # noqa: E402
from scripts.bench import FS_SYSCALLS, _parse_strace  # noqa: E402

KEY = "benchmark-secret-key-0123456789"
EXPIRED_AGE = 7200  # seconds: far past max_age, so both find -mmin and the reaper agree


def build_store(root: Path, expired: int, live: int) -> None:
    """A store with *expired* sessions idle for two hours and *live* fresh ones (real files, real headers)."""
    store = SessionStore(root, secret_key=KEY, max_age=1800)
    sid = store.create({"user": "alice", "n": 1})
    blob = Path(store._path(sid)).read_bytes()
    store.delete(sid)
    naming_key = bytes.fromhex((root / ".fssession-naming-key").read_text().strip())
    old = time.time() - EXPIRED_AGE
    for i in range(expired + live):
        name = file_name(new_session_id(), naming_key)
        path = f"{root}/{name[:2]}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            os.mkdir(os.path.dirname(path), 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, blob)
        os.close(fd)
        os.symlink("1", path + ".gen")  # what create() leaves beside every session
        if i < expired:
            os.utime(path, (old, old))
            os.utime(path + ".gen", (old, old), follow_symlinks=False)
    # The naming key must not look expired to find -mmin.
    os.utime(root / ".fssession-naming-key")


def build_django(root: Path, expired: int, live: int) -> None:
    """Django file-backend sessions: *expired* with an expiry in the past, *live* ones fresh."""
    code = f"""
import sys, datetime
from django.conf import settings
settings.configure(SECRET_KEY="{KEY}", SESSION_ENGINE="django.contrib.sessions.backends.file",
                   SESSION_FILE_PATH=sys.argv[1], USE_TZ=True, INSTALLED_APPS=["django.contrib.sessions"])
import django; django.setup()
from django.contrib.sessions.backends.file import SessionStore
for i in range({expired + live}):
    s = SessionStore()
    s["user"] = "alice"; s["n"] = 1
    if i < {expired}:
        s.set_expiry(-3600)
    s.create()
"""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(root)], check=True)


CHILD = {
    "reaper": "from fssession.reaper import reap; s = reap(sys.argv[1], grace=60); removed = s.removed",
    "reaper-2": "from fssession.reaper import reap; s = reap(sys.argv[1], grace=60, jobs=2); removed = s.removed",
    "django": (
        "from django.conf import settings; "
        "settings.configure(SECRET_KEY=sys.argv[2], SESSION_ENGINE='django.contrib.sessions.backends.file', "
        "SESSION_FILE_PATH=sys.argv[1], USE_TZ=True, INSTALLED_APPS=['django.contrib.sessions']); "
        "import django; django.setup(); "
        "from django.contrib.sessions.backends.file import SessionStore; "
        "n0 = len(os.listdir(sys.argv[1])); SessionStore.clear_expired(); removed = n0 - len(os.listdir(sys.argv[1]))"
    ),
}


def run_child(kind: str, root: Path, strace: bool) -> dict[str, Any]:
    """Purge with *kind* in a fresh process; returns seconds, removed, peak memory, syscalls."""
    body = CHILD[kind]
    code = (
        "import json, os, sys, time\n"
        "def _hwm_kb():\n"
        "    # VmHWM: this process's peak resident memory (ru_maxrss survives exec: the parent's would show)\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "t0 = time.perf_counter()\n"
        f"{body}\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'removed': removed, "
        "'maxrss_kb': _hwm_kb()}))\n"
    )
    argv = [sys.executable, "-c", code, str(root), KEY]
    if not strace:
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        return dict(json.loads(out.splitlines()[-1]))
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
        out = subprocess.run(
            ["strace", "-f", "-c", "-o", f.name, *argv], check=True, capture_output=True, text=True
        ).stdout
        result = dict(json.loads(out.splitlines()[-1]))
        counts = _parse_strace(f.read())
    result["syscalls"] = sum(v for k, v in counts.items() if k in FS_SYSCALLS)
    return result


def run_find(root: Path, strace: bool) -> dict[str, Any]:
    before = sum(1 for _ in root.rglob("*"))
    argv = ["find", str(root), "-type", "f", "-mmin", f"+{EXPIRED_AGE // 120}", "-delete"]
    t0 = time.perf_counter()
    if strace:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
            subprocess.run(["strace", "-f", "-c", "-o", f.name, *argv], check=True)
            counts = _parse_strace(f.read())
    else:
        subprocess.run(argv, check=True)
        counts = {}
    seconds = time.perf_counter() - t0
    removed = before - sum(1 for _ in root.rglob("*"))
    result: dict[str, Any] = {"seconds": seconds, "removed": removed}
    if strace:
        result["syscalls"] = sum(v for k, v in counts.items() if k in FS_SYSCALLS)
    return result


def measure(base: Path, kind: str, expired: int, live: int, rounds: int, strace: bool) -> dict[str, Any]:
    runs = []
    for r in range(rounds + (1 if strace else 0)):
        root = base / f"{kind}-{expired}-{r}"
        shutil.rmtree(root, ignore_errors=True)
        if kind == "django":
            build_django(root, expired, live)
        else:
            build_store(root, expired, live)
        subprocess.run(["sync"], check=False)
        traced = strace and r == rounds
        result = run_find(root, traced) if kind == "find" else run_child(kind, root, traced)
        shutil.rmtree(root, ignore_errors=True)
        runs.append(result)
    timed = runs[:rounds]
    seconds = statistics.median(r["seconds"] for r in timed)
    # find removes the beacons too (they are files to it): count sessions only.
    sessions_removed = expired
    out: dict[str, Any] = {
        "kind": kind,
        "expired": expired,
        "live": live,
        "seconds": round(seconds, 3),
        "files_per_s": round(sessions_removed / seconds),
        "removed": [r["removed"] for r in timed],
    }
    if "maxrss_kb" in timed[0]:
        out["peak_mb"] = round(max(r["maxrss_kb"] for r in timed) / 1024, 1)
    if strace:
        out["syscalls_per_file"] = round(runs[-1]["syscalls"] / expired, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", action="append", help="where to build the stores (repeatable)")
    parser.add_argument("--sizes", default="100000,1000000", help="expired-session counts (comma-separated)")
    parser.add_argument("--live", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    default_dirs = [Path("/dev/shm/fss-bench-reap"), Path("/var/tmp/fss-bench-reap")]  # tmpfs, local disk
    dirs = [Path(d) for d in args.dir] if args.dir else default_dirs
    sizes = [int(s) for s in args.sizes.split(",")]
    strace = not args.no_strace and shutil.which("strace") is not None
    results = []
    for base in dirs:
        base.mkdir(parents=True, exist_ok=True)
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True, text=True).stdout.strip()
        for i, size in enumerate(sizes):
            rounds = args.rounds if i == 0 else 1  # the large size is for memory and scaling, once
            kinds = ["find", "reaper", "reaper-2"] + (["django"] if i == 0 else [])
            row = {k: measure(base, k, size, args.live, rounds, strace and i == 0) for k in kinds}
            for k in kinds:
                row[k]["fs"] = fs
                row[k]["ratio_to_find"] = round(row[k]["files_per_s"] / row["find"]["files_per_s"], 2)
                results.append(row[k])
                if not args.json:
                    r = row[k]
                    extra = f", {r['syscalls_per_file']} syscalls/file" if "syscalls_per_file" in r else ""
                    mem = f", peak {r['peak_mb']} MB" if "peak_mb" in r else ""
                    print(
                        f"{fs:>6} {size:>8} expired + {args.live} live  {k:>6}: {r['files_per_s']:>8} files/s "
                        f"({r['ratio_to_find']:.2f}x find){extra}{mem}",
                        flush=True,
                    )
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
