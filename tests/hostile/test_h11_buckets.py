"""Attack 11: buckets (``PATH/ab/``) that a group member replaced by symlinks must never be followed.

* by the store: a web worker would write sessions into the attacker's
  directory, where she reads them at leisure;
* by the reaper run as root: it would sweep a victim tree (here: another
  application's store, root's) and remove its expired sessions and litter;
* by ``fssession stats``: it would count what is not in the store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.hostile.conftest import Lab, owned_dir
from tests.support.users import MALLORY, WEB_A
from tests.support.victim import Victim

# Mallory: every bucket, existing or not, becomes a symlink to TARGET (existing ones are renamed aside).
SWAP_BUCKETS = """
import os, sys
root, target = sys.argv[1:]
for i in range(256):
    bucket = os.path.join(root, f"{i:02x}")
    if os.path.lexists(bucket):
        os.rename(bucket, os.path.join(root, f"mallory-{i:02x}"))
    os.symlink(target, bucket)
print("swapped", flush=True)
"""

WORK = """
import sys
from tests.hostile.agent import attempt, emit, shared_store
root, sid = sys.argv[1:]
store = shared_store(root, lock_timeout=5.0)
def edit():
    with store.edit(sid) as data:
        data["n"] = 1
emit([attempt(lambda: store.create({"secret": "card number"})), attempt(edit), attempt(lambda: store.load(sid)),
      attempt(lambda: store.delete(sid))])
"""

CREATE = """
import sys
from tests.hostile.agent import emit, shared_store
store = shared_store(sys.argv[1])
emit([store.create({"n": i}) for i in range(int(sys.argv[2]))])
"""


def swap_buckets(lab: Lab, store: Path, target: Path) -> None:
    """As Mallory: all 256 buckets become symlinks to *target*."""
    assert lab.run(MALLORY, SWAP_BUCKETS, str(store), str(target)).ok().out.strip() == "swapped"


def test_the_store_never_writes_through_a_symlinked_bucket(lab: Lab, store_path: Path, workspace: Path) -> None:
    (sid,) = json.loads(lab.run(WEB_A, CREATE, str(store_path), "1").ok().out)
    trap = owned_dir(lab, workspace / "mallory-trap", MALLORY, 0o777)  # any web worker may write there
    swap_buckets(lab, store_path, trap)
    outcomes = json.loads(lab.run(WEB_A, WORK, str(store_path), sid).ok().out)
    leaked = os.listdir(trap)
    assert not leaked, f"the store wrote into the attacker's directory: {leaked}"
    for outcome in outcomes:
        assert "error" not in outcome or outcome["typed"], outcomes


@pytest.mark.parametrize("extra", [[], ["--allow-root"]], ids=["default", "allow-root"])
def test_a_root_reaper_never_sweeps_a_symlinked_bucket(
    lab: Lab, store_path: Path, root_victim: Victim, extra: list[str]
) -> None:
    lab.run(WEB_A, CREATE, str(store_path), "3").ok()
    swap_buckets(lab, store_path, root_victim.tree)
    result = lab.cli(None, "reap", str(store_path), "--grace", "2", *extra)
    root_victim.assert_untouched()
    assert result.rc in (0, 1) and "Traceback" not in result.err, result


def test_stats_never_counts_through_a_symlinked_bucket(lab: Lab, store_path: Path, root_victim: Victim) -> None:
    lab.run(WEB_A, CREATE, str(store_path), "2").ok()
    free = next(f"{i:02x}" for i in range(256) if not (store_path / f"{i:02x}").exists())
    lab.run(MALLORY, "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(root_victim.tree),
            str(store_path / free)).ok()  # fmt: skip
    result = lab.cli(None, "stats", "--json", str(store_path))
    assert result.rc == 0, result
    counted = json.loads(result.out)["sessions"]
    assert counted == 2, f"stats counted {counted} sessions in a store of 2 (it followed a symlinked bucket)"
    root_victim.assert_untouched()
