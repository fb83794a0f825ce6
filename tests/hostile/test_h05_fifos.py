"""Attack 5: FIFOs and device links planted in the store must never hang a worker, a reaper or a node's start.

An open() of a FIFO without O_NONBLOCK waits for a writer that never comes;
a read of /dev/zero never ends.  Mallory plants them where fssession opens
files: a session's path, the reaper's cursor, a reaper's ``.reap`` claim (and
other names a reaper meets), the naming key.  Every call must return or
raise one of fssession's typed errors under the hang guard (a process seen
blocked in a FIFO open is hung for certain), and reading /dev/zero must
give a StorageError, not exhaust memory (the process is capped at 1 GiB so
that an unbounded read fails fast instead of eating the machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.agent import session_files
from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A

MEMORY = 1 << 30

CREATE = """
import sys
from tests.hostile.agent import emit, shared_store
emit([shared_store(sys.argv[1]).create({"n": i}) for i in range(int(sys.argv[2]))])
"""

# Mallory replaces entries of the store by FIFOs or symlinks to a device.
PLANT = """
import os, sys
root = sys.argv[1]
for spec in sys.argv[2:]:
    kind, rel = spec.split(":", 1)
    path = os.path.join(root, rel)
    tmp = os.path.join(os.path.dirname(path), "mallory-planting")
    if kind == "fifo":
        os.mkfifo(tmp, 0o666)
    else:
        os.symlink(kind, tmp)
    os.rename(tmp, path)
print("planted", flush=True)
"""

# One store call in a web worker's process; prints its outcome.
CALL = """
import sys
from tests.hostile.agent import attempt, emit, shared_store
root, op, sid = sys.argv[1:]
store = shared_store(root, lock_timeout=5.0)
def edit():
    with store.edit(sid) as data:
        data["x"] = 1
    return "edited"
calls = {"load": lambda: store.load(sid), "exists": lambda: store.exists(sid), "edit": edit}
emit(attempt(calls[op]))
"""


def plant(lab: Lab, store: Path, *specs: str) -> None:
    """As Mallory: put FIFOs (``fifo:REL``) or symlinks (``TARGET:REL``) at paths of the store."""
    assert lab.run(MALLORY, PLANT, str(store), *specs).ok().out.strip() == "planted"


def test_a_fifo_or_device_at_a_session_path_never_hangs_a_worker(lab: Lab, store_path: Path) -> None:
    before = set(session_files(str(store_path)))
    sids = json.loads(lab.run(WEB_A, CREATE, str(store_path), "2").ok().out)
    files = sorted(set(session_files(str(store_path))) - before)
    # Which file is whose does not matter: both sessions get something planted.
    plant(lab, store_path, f"fifo:{files[0]}", f"/dev/zero:{files[1]}")
    for sid in sids:
        for op in ("load", "exists", "edit"):
            outcome = json.loads(lab.run(WEB_A, CALL, str(store_path), op, sid, memory=MEMORY).ok().out)
            assert "error" not in outcome or outcome["typed"], f"{op}: {outcome}"
            assert outcome.get("ok") in (None, False), f"{op} found a session in a FIFO or device: {outcome}"


def test_a_fifo_cursor_never_hangs_the_reaper(lab: Lab, store_path: Path) -> None:
    lab.run(WEB_A, CREATE, str(store_path), "5").ok()
    plant(lab, store_path, "fifo:.fssession-reaper-cursor")
    for _ in range(2):  # a run that reads the cursor, and one after it may have written one
        result = lab.cli(WEB_A, "reap", str(store_path), "--max-seconds", "0.001")
        assert result.rc in (0, 1) and "Traceback" not in result.err, result


# The reaper through the store's API with a clock two hours ahead, so that a
# claim planted just now looks like one a killed reaper left long ago.
REAP_LATER = """
import sys, time
from tests.hostile.agent import attempt, emit, shared_store
store = shared_store(sys.argv[1], clock=lambda: time.time() + 7200)
outcome = attempt(lambda: store.reap(grace=2.0).as_dict())
emit(outcome)
"""


def test_fifos_wherever_the_reaper_looks_never_hang_it(lab: Lab, store_path: Path) -> None:
    lab.run(WEB_A, CREATE, str(store_path), "3").ok()
    files = session_files(str(store_path))
    bucket, name = files[0].split("/")
    # A claim whose session is gone (so no rename of the session replaces it first).
    orphan = bucket + "f" * 62
    specs = [f"fifo:{bucket}/{orphan}.reap", f"fifo:{files[1]}", f"fifo:{bucket}/{name}.tmp-0", "fifo:mallory-fifo"]
    plant(lab, store_path, *specs)
    outcome = json.loads(lab.run(WEB_A, REAP_LATER, str(store_path)).ok().out)
    assert "ok" in outcome, f"the reaper failed on planted FIFOs: {outcome}"


MAKE_STORE = """
import sys
from tests.hostile.agent import attempt, emit, shared_store
emit(attempt(lambda: shared_store(sys.argv[1]) and "opened"))
"""


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"], ids=["fifo", "dev-zero"])
def test_a_planted_naming_key_never_hangs_or_exhausts_a_node(lab: Lab, store_path: Path, kind: str) -> None:
    plant(lab, store_path, f"{kind}:.fssession-naming-key")
    outcome = json.loads(lab.run(WEB_A, MAKE_STORE, str(store_path), memory=MEMORY).ok().out)
    expected = ("StorageError",) if kind == "/dev/zero" else ("StorageError", "TamperedSession")
    assert outcome.get("error") in expected, f"a {kind} naming key: {outcome}"
