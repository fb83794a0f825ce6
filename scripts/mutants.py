"""Prove that the lock's tests can fail: break each property in fssession/lock.py, run its tests, expect red.

Usage: .venv/bin/python scripts/mutants.py   (restores lock.py afterwards, whatever happens)
The last mutant needs the sshfs testbed (root, FUSE); without it its tests are skipped and it reports so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "fssession" / "lock.py"

# name -> ([(original text, broken text)], pytest selection)
MUTANTS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "no token read-back (lost replies)": (
        [
            ("            if name in ctx.mine:  # a publish or take-over of ours", "            if False:  # mutant"),
            ("                there = _exists(os.path.join(self._path, marker))\n", "                there = False\n"),
            ("        names = _listing(self._path)\n        for name in names or ():", "        for name in ():"),
        ],
        "tests/test_lock_processes.py -k lost",
    ),
    "no lease check (take over live holders)": (
        [
            (
                "        if is_dead_here(owner.owner) or watched > lease or (age is not None and age > lease):",
                "        if True:",
            )
        ],
        "tests/test_lock_processes.py -k 'live_holder or stopped'",
    ),
    "break a stale lock by deleting it": (
        [
            (
                "            os.rename(os.path.join(self._path, owner.name), os.path.join(self._path, ours))",
                "            _remove_tree_quietly(self._path)\n            return 'retry-now'",
            )
        ],
        "tests/test_lock_processes.py -k 'double_break or slow_breaker'",
    ),
    "release without the exact-name rename": (
        [
            (
                "                self._rename_marker(marker, released_name)",
                "                _remove_tree_quietly(self._path); os.mkdir(self._path); os.symlink('x', released)",
            )
        ],
        "tests/test_lock_processes.py -k 'stopped or release_of_lost'",
    ),
    "judge age by the local clock": (
        [
            (
                "        server_now_ns = stage_ns + int((now - stamped_after) * 1e9)",
                "        server_now_ns = time.time_ns()",
            )
        ],
        "tests/test_lock_shared.py -k 'skew and sshfs'",
    ),
}


def main() -> int:
    original = LOCK.read_text()
    survived = 0
    try:
        for name, (edits, selection) in MUTANTS.items():
            text = original
            for old, new in edits:
                if old not in text:
                    print(f"{name}: cannot apply (the code changed); update scripts/mutants.py")
                    return 2
                text = text.replace(old, new)
            LOCK.write_text(text)
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
    finally:
        LOCK.write_text(original)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
