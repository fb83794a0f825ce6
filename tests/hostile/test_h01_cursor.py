"""Attack 1: a root reaper writes its cursor through a symlink a group member planted.

The reaper's cursor (``PATH/.fssession-reaper-cursor``) was written through
a temp file with a predictable name (``...cursor.tmp-<pid>``) opened by
path.  Mallory, who can write the store's directory and see process ids,
plants that name, and the cursor itself, as symlinks to a root-only file.
A root ``fssession reap`` stopped by ``--max-seconds`` (so that it saves a
cursor) must leave that file untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A
from tests.support.victim import Victim

# Starts, says its pid, waits for the word, then becomes the command (same pid).
GATE = """
import os, sys
print(os.getpid(), flush=True)
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

PLANT = """
import os, sys
root, pid, target = sys.argv[1:]
for name in (f".fssession-reaper-cursor.tmp-{pid}", ".fssession-reaper-cursor"):
    os.symlink(target, os.path.join(root, name))
print("planted", flush=True)
"""

SESSIONS = """
import sys
from tests.hostile.agent import shared_store
store = shared_store(sys.argv[1])
for i in range(40):
    store.create({"i": i})
"""


@pytest.mark.parametrize("extra", [[], ["--allow-root"]], ids=["default", "allow-root"])
def test_root_reaper_never_writes_through_a_planted_cursor(
    lab: Lab, store_path: Path, root_victim: Victim, extra: list[str]
) -> None:
    lab.run(WEB_A, SESSIONS, str(store_path)).ok()
    reaper = lab.python(
        None, GATE, "-m", "fssession.cli", "reap", str(store_path), "--max-seconds", "0.001", *extra, what="root reap"
    )
    pid = int(reaper.readline())
    lab.run(MALLORY, PLANT, str(store_path), str(pid), str(root_victim.secret)).ok()
    reaper.send("go")
    result = reaper.finish()
    root_victim.assert_untouched()
    assert result.rc in (0, 1), f"reap failed: {result}"
    assert "Traceback" not in result.err, result.err


def test_root_reaper_works_as_the_store_owner(lab: Lab, store_path: Path) -> None:
    """Run as root on a store others can write, the reaper becomes the store directory's owner first."""
    lab.run(WEB_A, SESSIONS, str(store_path)).ok()
    lab.cli(None, "reap", str(store_path), "--max-seconds", "0.001").ok()
    cursor = store_path / ".fssession-reaper-cursor"
    owner = cursor.lstat().st_uid
    assert owner == lab.user(WEB_A).uid, f"the root reaper wrote its cursor as uid {owner}, not as the store's owner"
