"""Attack 10: names a group member chooses must not reach terminals and logs raw.

A lock holder's record and every file name in the store are text the
attacker controls.  With terminal escapes in them (clear the screen, set the
window title, ring the bell) and a carriage return and a newline followed by
a fake log line, they must come out escaped wherever fssession prints or logs
them: in a LockTimeout's message and the lock's log lines, in ``fssession
inspect``, and in ``fssession reap -v``.

The holder record is planted without knowing its format: a real holder
(another "host": a UTS namespace named HOST) holds a session's lock, and
Mallory renames every entry of the store whose name or symlink target
carries HOST so that it carries EVIL instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile.agent import KEY
from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A

HOST = "fsslabholder"
EVIL = "fsslab\x1b[2J\x1b]0;pwned\x07\rFAKE\nFAKE LOG LINE: all good"
EVIL_FILE = "zz\x1b]0;pwned\x07\rFAKE\nerror: FAKE LOG LINE"


def raw_controls(text: str) -> list[str]:
    """Control characters other than newline and tab, and any line the attacker injected."""
    found = sorted({repr(c) for c in text if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127})
    found += [line for line in text.splitlines() if line.startswith(("FAKE", "error: FAKE"))]
    return found


CREATE = """
import sys
from tests.hostile.agent import emit, shared_store
emit(shared_store(sys.argv[1]).create({"n": 0}))
"""

HOLD = """
import sys
from tests.hostile.agent import emit, shared_store
with shared_store(sys.argv[1]).edit(sys.argv[2]):
    emit("holding")
    sys.stdin.readline()
"""

# Mallory: every entry whose name or link target names the holder's host now names EVIL.
REWRITE = """
import os, sys
root, host, evil = sys.argv[1:]
changed = 0
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        target = os.readlink(path) if os.path.islink(path) else None
        if host not in name and (target is None or host not in target):
            continue
        new = os.path.join(dirpath, name.replace(host, evil))
        if target is not None and host in target:
            tmp = os.path.join(dirpath, "mallory-link")
            os.symlink(target.replace(host, evil), tmp)
            os.rename(tmp, new)
            if new != path:
                os.unlink(path)
        else:
            os.rename(path, new)
        changed += 1
print(changed, flush=True)
"""

CONTEND = """
import logging, sys
from tests.hostile.agent import attempt, emit, shared_store
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(self.format(record))
handler = Keep(logging.DEBUG)
logging.getLogger("fssession").addHandler(handler)
logging.getLogger("fssession").setLevel(logging.DEBUG)
store = shared_store(sys.argv[1], lock_timeout=3.0)
def edit():
    with store.edit(sys.argv[2]) as data:
        data["n"] += 1
emit({"outcome": attempt(edit), "logs": records})
"""


def plant_evil_holder(lab: Lab, store: Path) -> str:
    """A session whose lock is held by a live holder whose record now carries EVIL; its id."""
    sid: str = json.loads(lab.run(WEB_A, CREATE, str(store)).ok().out)
    holder = lab.python(WEB_A, HOLD, str(store), sid, hostname=HOST, what="holder")
    assert json.loads(holder.readline()) == "holding"
    changed = int(lab.run(MALLORY, REWRITE, str(store), HOST, EVIL).ok().out)
    assert changed, f"no entry of the store names the holder's host {HOST!r}: nothing to plant"
    return sid


def test_a_planted_holder_name_is_escaped_in_lock_timeouts_and_logs(lab: Lab, store_path: Path) -> None:
    sid = plant_evil_holder(lab, store_path)
    report = json.loads(lab.run(WEB_A, CONTEND, str(store_path), sid).ok().out)
    outcome = report["outcome"]
    assert outcome.get("error") == "LockTimeout", f"a live holder's lock was not respected: {outcome}"
    assert not raw_controls(outcome["detail"]), f"raw in the LockTimeout message: {outcome['detail']!r}"
    for line in report["logs"]:
        assert not raw_controls(line), f"raw in a log line: {line!r}"


def test_a_planted_holder_name_is_escaped_by_inspect(lab: Lab, store_path: Path) -> None:
    sid = plant_evil_holder(lab, store_path)
    result = lab.cli(WEB_A, "inspect", str(store_path), sid, env={"FSSESSION_SECRET_KEY": KEY})
    assert "Traceback" not in result.err, result.err
    assert not raw_controls(result.out + result.err), f"raw in inspect's output: {result}"


PLANT_NAMES = """
import os, sys
root, evil = sys.argv[1:]
buckets = [b for b in os.listdir(root) if len(b) == 2]
for directory in [root, os.path.join(root, buckets[0])]:
    os.close(os.open(os.path.join(directory, evil), os.O_CREAT | os.O_WRONLY, 0o666))
"""


def test_planted_file_names_are_escaped_by_reap_verbose(lab: Lab, store_path: Path) -> None:
    lab.run(WEB_A, CREATE, str(store_path)).ok()
    lab.run(MALLORY, PLANT_NAMES, str(store_path), EVIL_FILE).ok()
    result = lab.cli(WEB_A, "reap", "-v", str(store_path))
    assert result.rc in (0, 1) and "Traceback" not in result.err, result
    assert "pwned" in result.out + result.err, "reap -v must still list the foreign file (escaped)"
    assert not raw_controls(result.out + result.err), f"raw in reap -v: {result}"
