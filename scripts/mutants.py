"""Prove that the tests can fail: break each safety property in turn, run its tests, expect red.

Usage: .venv/bin/python scripts/mutants.py [NAME-SUBSTRING]
(restores every file afterwards, whatever happens).  The "local clock"
mutant needs the sshfs testbed (root, FUSE); without it its tests are
skipped and it reports so.  A mutant whose tests hang (a FIFO opened
blocking) counts as caught once the run exceeds its time limit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = "fssession/_lockcore.py"
STORE = "fssession/_storecore.py"
REAPER = "fssession/reaper.py"
LIMIT = 900  # seconds for one mutant's tests

# name -> (file, [(original text, broken text)], pytest selection)
MUTANTS: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "no recognition of our own renames whose reply was lost": (
        CORE,
        [
            ("        if marker.name in state.mine:\n", "        if False:\n"),
            ("        if exc.errno in _fs.AMBIGUOUS and state.directory.exists(ours):", "        if False:"),
            (
                "        if name in state.mine:\n            return _hold(state, name)",
                "        if False:\n            pass",
            ),
        ],
        "tests/lock/test_processes.py tests/lock/test_review.py -k 'reply_was_lost or unknown_answer'",
    ),
    "no lease check (live holders taken over)": (
        CORE,
        [("    if watched > lease or (age is not None and age > lease):", "    if True:")],
        "tests/lock/test_api.py tests/lock/test_processes.py -k 'live_holder or stopped'",
    ),
    "a recorded lease trusted without a bound": (
        CORE,
        [("    lease = min(recorded, settings.lease_cap) * (1 + DRIFT)", "    lease = recorded * (1 + DRIFT)")],
        "tests/lock/test_api.py -k max_lease",
    ),
    "acquire and take over by delete-and-create instead of an exact-name rename": (
        CORE,
        [
            (
                "        state.directory.rename(source, ours)",
                "        state.directory.unlink_quietly(source)\n        state.directory.symlink('x', ours)",
            )
        ],
        "tests/lock/test_processes.py -k 'double_break or slow_breaker or exclusion'",
    ),
    "release without the exact-name rename": (
        CORE,
        [
            (
                '    _move(hold, free_name(hold.prefix, value), "release")',
                "    hold.directory.unlink_quietly(hold.marker)\n"
                "    hold.directory.symlink('x', free_name(hold.prefix, value))",
            )
        ],
        "tests/lock/test_processes.py tests/lock/test_api.py -k 'stopped or release_of_lost'",
    ),
    "judge a holder's age by the local clock": (
        CORE,
        [("        now = state.clock()\n", "        now = state.clock()\n        now = __import__('time').time()\n")],
        "tests/lock/test_shared.py -k 'skew and sshfs'",
    ),
    "an edit trusts its first read under the lock (no stale-read check)": (
        STORE,
        [("            if found is None or found.header.generation >= wanted:", "            if True:")],
        "tests/store/test_store.py -k 'rereads or lost_the_lock'",
    ),
    "no fence before the commit": (
        STORE,
        [("            _lockcore.fence(hold, value)\n", "            pass\n")],
        "tests/store/test_store.py -k lost_the_lock_writes_nothing",
    ),
    "a file not bound to its session id": (
        "fssession/fileformat.py",
        [
            (
                '    mac = hmac.new(key.mac, _DOMAIN + sid + b"\\0", "sha256")',
                '    mac = hmac.new(key.mac, _DOMAIN, "sha256")',
            ),
            ("    for key in keyring.candidates(header.hint, sid):", "    for key in [keyring.signing]:"),
        ],
        "tests/store/test_store.py tests/core/test_fileformat.py -k 'moved_onto or own_session'",
    ),
    "the reaper removes without judging the session again under its lock": (
        REAPER,
        [("        if not self._expired(None, idle, expires, st.st_mtime):", "        if False:")],
        "tests/reaper/test_reaper.py -k touched_since",
    ),
    "the reaper ignores session locks": (
        REAPER,
        [
            (
                "            hold = self._lock(name).acquire(guesses, 0, blocking=False)",
                "            self.dir.unlink(name)\n            self.stats.removed += 1\n            return",
            )
        ],
        "tests/reaper/test_reaper.py -k held_session",
    ),
    "a login racing end_sessions is not re-checked": (
        "fssession/store.py",
        [
            (
                "        self._publish_new(name, blob, header)\n        self._still_listed(tag, name)",
                "        self._publish_new(name, blob, header)",
            )
        ],
        "tests/store/test_owners.py -k racing",
    ),
    "the cookie's generation is ignored (rollbacks accepted)": (
        "fssession/websession.py",
        [("min_generation=self._cookie_generation)", "min_generation=0)")],
        "tests/web/test_wsgi.py tests/web/test_flask.py tests/web/test_asgi.py -k restoring",
    ),
    "a web commit writes the whole session, not just this request's keys": (
        "fssession/websession.py",
        [
            (
                "                        apply_changes(stored, sets, deleted)",
                "                        stored.clear(); stored.update(self._data)",
            )
        ],
        "tests/web/test_wsgi.py tests/web/test_flask.py tests/web/test_django.py tests/web/test_asgi.py "
        "tests/web/test_websession.py -k overlap",
    ),
    "a Django save writes the whole session, not just this request's keys": (
        "fssession/django.py",
        [
            (
                "                    apply_changes(stored, sets, deleted)",
                "                    stored.clear(); stored.update(data)",
            )
        ],
        "tests/web/test_django.py -k overlap",
    ),
    "files opened without O_NONBLOCK (a planted FIFO hangs)": (
        "fssession/_fs.py",
        [
            (
                "O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC",
                "O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC",
            )
        ],
        "tests/store/test_store.py -k fifo",
    ),
    "directories opened following symlinks": (
        "fssession/_fs.py",
        [
            (
                "O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC",
                "O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC",
            )
        ],
        "tests/store/test_store.py tests/reaper/test_reaper.py -k 'symlinks_are_never_followed or fifo_or_symlink'",
    ),
    "a load takes ENOENT for a miss though the name is there (GlusterFS logs users out)": (
        "fssession/_sessionfile.py",
        [("                if bucket.exists(name) is True and retry.stale():", "                if False:")],
        "tests/store/test_store.py -k enoent",
    ),
    "a removed file still open on a FUSE mount taken for garbage": (
        "fssession/layout.py",
        [('_STILL_OPEN = (".nfs", ".fuse_hidden")', '_STILL_OPEN = (".nfs",)')],
        "tests/reaper/test_reaper.py -k still_open",
    ),
}


def _run(selection: str) -> tuple[bool, str]:
    try:
        r = subprocess.run(
            f"{sys.executable} -m pytest -q -x -p no:cacheprovider {selection}",
            shell=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LIMIT,
        )
    except subprocess.TimeoutExpired:
        return True, f"hung past {LIMIT} s (what the property prevents)"
    last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    return r.returncode == 1, last


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    originals = {f: (ROOT / f).read_text() for f, _, _ in MUTANTS.values()}
    survived = 0
    try:
        for name, (file, edits, selection) in MUTANTS.items():
            if only not in name:
                continue
            text = originals[file]
            for old, new in edits:
                if old not in text:
                    print(f"{name}: cannot apply (the code changed); update scripts/mutants.py")
                    return 2
                text = text.replace(old, new)
            (ROOT / file).write_text(text)
            caught, last = _run(selection)
            survived += not caught
            print(f"{'caught  ' if caught else 'SURVIVED'} {name}: {last}", flush=True)
            (ROOT / file).write_text(originals[file])
    finally:
        for file, text in originals.items():
            (ROOT / file).write_text(text)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
