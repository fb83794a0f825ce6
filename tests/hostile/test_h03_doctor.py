"""Attack 3: ``fssession doctor`` run as root on a store a group member can write.

The doctor makes its work directory ``PATH/.fssession-doctor-<16 hex>`` and
then creates and writes files in it by path.  Mallory watches the store's
root and swaps every work directory she sees for a symlink to a root-owned
victim directory (she can rename it: the root is group-writable and not
sticky); she also leaves old-looking "litter" of a killed doctor that is a
symlink, or holds one.  The victim tree must come through unchanged and the
doctor must finish with its report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A
from tests.support.victim import Victim

# Mallory's targeted racer: every doctor work directory becomes a symlink into the victim tree.
SWAPPER = """
import json, os, sys, time
root, target, stop = sys.argv[1:4]
old = time.time() - 86400
litter = os.path.join(root, ".fssession-doctor-" + "ab" * 8)
os.symlink(target, litter)
os.utime(litter, (old, old), follow_symlinks=False)
held = os.path.join(root, ".fssession-doctor-" + "cd" * 8)
os.mkdir(held, 0o777)
os.symlink(target, os.path.join(held, "inside"))
os.utime(held, (old, old))
print(json.dumps("racing"), flush=True)
swaps, n, owners = 0, 0, set()
end = time.monotonic() + 300
while time.monotonic() < end and not os.path.exists(stop):
    for entry in os.scandir(root):
        if entry.name.startswith(".fssession-doctor-") and entry.is_dir(follow_symlinks=False) and entry.path != held:
            try:
                owners.add(entry.stat(follow_symlinks=False).st_uid)
                os.rename(entry.path, os.path.join(root, f"mallory-{n}"))
                n += 1
                os.symlink(target, entry.path)
                swaps += 1
            except OSError:
                pass
print(json.dumps({"swaps": swaps, "owners": sorted(owners)}), flush=True)
"""


@pytest.mark.parametrize("extra", [[], ["--allow-root"]], ids=["default", "allow-root"])
def test_root_doctor_never_writes_through_a_swapped_work_directory(
    lab: Lab, store_path: Path, root_victim: Victim, workspace: Path, extra: list[str]
) -> None:
    stop = workspace / "stop"
    swapper = lab.python(MALLORY, SWAPPER, str(store_path), str(root_victim.tree), str(stop), what="doctor swapper")
    assert json.loads(swapper.readline()) == "racing"
    result = lab.cli(None, "doctor", str(store_path), "--peer-wait", "0", *extra, timeout=180)
    stop.touch()
    swapped = json.loads(swapper.finish().ok().out.strip().splitlines()[-1])
    root_victim.assert_untouched()
    assert "Traceback" not in result.err, result.err
    assert "result:" in result.out, f"the doctor gave no report: {result}"
    assert swapped["swaps"] > 0, "the work directory was never swapped: the attack did not happen"
    if not extra:  # run as root on a store others can write, the doctor works as the store's owner
        assert swapped["owners"] == [lab.user(WEB_A).uid], f"work directories owned by {swapped['owners']}"
