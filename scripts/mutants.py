"""Prove that the tests can fail: break each safety property in turn, run its tests, expect red.

Usage: .venv/bin/python scripts/mutants.py [NAME-SUBSTRING]
(restores every file afterwards, whatever happens).  The "local clock"
mutant needs the sshfs testbed (root, FUSE); without it its tests are
skipped and it reports so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "fssession/lock.py"

# name -> (file, [(original text, broken text)], pytest selection)
MUTANTS: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "no token read-back (lost replies)": (
        LOCK,
        [
            ("            if name in ctx.mine:  # a publish or take-over of ours", "            if False:  # mutant"),
            ("                there = _exists(os.path.join(self._path, marker))\n", "                there = False\n"),
            ("        names = _listing(self._path)\n        for name in names or ():", "        for name in ():"),
        ],
        "tests/test_lock_processes.py -k lost",
    ),
    "no lease check (take over live holders)": (
        LOCK,
        [
            (
                "        if is_dead_here(owner.owner) or watched > lease or (age is not None and age > lease):",
                "        if True:",
            )
        ],
        "tests/test_lock_processes.py -k 'live_holder or stopped'",
    ),
    "break a stale lock by deleting it": (
        LOCK,
        [
            (
                "            os.rename(os.path.join(self._path, owner.name), os.path.join(self._path, ours))",
                "            _remove_tree_quietly(self._path)\n            return 'retry-now'",
            )
        ],
        "tests/test_lock_processes.py -k 'double_break or slow_breaker'",
    ),
    "release without the exact-name rename": (
        LOCK,
        [
            (
                "                self._rename_marker(marker, released_name)",
                "                _remove_tree_quietly(self._path); os.mkdir(self._path); os.symlink('x', released)",
            )
        ],
        "tests/test_lock_processes.py -k 'stopped or release_of_lost'",
    ),
    "judge age by the local clock": (
        LOCK,
        [
            (
                "        server_now_ns = stage_ns + int((now - stamped_after) * 1e9)",
                "        server_now_ns = time.time_ns()",
            )
        ],
        "tests/test_lock_shared.py -k 'skew and sshfs'",
    ),
    "edit trusts its first read under the lock (no beacon check)": (
        "fssession/store.py",
        [("            if found[0].generation >= claimed:", "            if True:")],
        "tests/test_store.py -k rereads",
    ),
    "reaper removes what it claimed without judging it again": (
        "fssession/reaper.py",
        [
            (
                "        if header is not None and header.expired(self.now(), st.st_mtime, self.grace):",
                "        if True:",
            )
        ],
        "tests/test_reaper.py -k 'touched_since or claims'",
    ),
    "reaper ignores session locks": (
        "fssession/reaper.py",
        [("        if not _lexists(entry.path + LOCK_SUFFIX):", "        if True:")],
        "tests/test_reaper.py -k locked_session",
    ),
    "web commit writes the whole session, not just this request's keys": (
        "fssession/websession.py",
        [
            (
                "                        apply_changes(stored, sets, deleted)",
                "                        stored.clear(); stored.update(self._data)",
            )
        ],
        "tests/test_web_wsgi.py -k overlap",
    ),
}


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
            r = subprocess.run(
                f"{sys.executable} -m pytest -q -x -p no:cacheprovider {selection}",
                shell=True,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
            caught = r.returncode == 1
            survived += not caught
            print(f"{'caught  ' if caught else 'SURVIVED'} {name}: {last}")
            (ROOT / file).write_text(originals[file])
    finally:
        for file, text in originals.items():
            (ROOT / file).write_text(text)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
