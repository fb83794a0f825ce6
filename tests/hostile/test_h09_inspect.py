"""Attack 9: ``fssession inspect`` and what others can see or plant around it.

* The session id is a bearer credential: on argv every local user reads it
  in the process list.  ``inspect`` takes it from stdin (first line) or
  ``$FSSESSION_SID``; argv is still accepted, with a warning on stderr.
* An id that starts with "-" (about 1 in 64) must work too.
* A naming key replaced by a FIFO or a symlink to /dev/zero must give an
  error message, not a hang or a traceback.
* A session file grown to 8 GiB (sparse) by a group member must be refused
  after reading at most max_size (the process is capped at 1 GiB of memory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.agent import KEY, session_files
from tests.hostile.conftest import Lab
from tests.support.users import MALLORY, WEB_A

MEMORY = 1 << 30
OPERATOR_ENV = {"FSSESSION_SECRET_KEY": KEY}

# A session to inspect; with "dash", one whose id starts with "-" (tries bounded; P(fail) < 1e-13).
CREATE = """
import sys
from tests.hostile.agent import emit, shared_store
store = shared_store(sys.argv[1])
for _ in range(2000):
    sid = store.create({"marker": "inspect-me"})
    if sys.argv[2] != "dash" or sid.startswith("-"):
        break
    store.delete(sid)
emit(sid)
"""


def create(lab: Lab, store: Path, kind: str = "any") -> str:
    """A session holding {"marker": "inspect-me"}; its id."""
    sid: str = json.loads(lab.run(WEB_A, CREATE, str(store), kind).ok().out)
    assert kind != "dash" or sid.startswith("-")
    return sid


@pytest.mark.parametrize("kind", ["any", "dash"], ids=["id", "id-starting-with-dash"])
def test_inspect_takes_the_id_from_stdin_or_the_environment(lab: Lab, store_path: Path, kind: str) -> None:
    sid = create(lab, store_path, kind)
    from_stdin = lab.cli(WEB_A, "inspect", str(store_path), stdin=sid + "\n", env=OPERATOR_ENV)
    assert from_stdin.rc == 0 and "inspect-me" in from_stdin.out, f"id on stdin: {from_stdin}"
    from_env = lab.cli(WEB_A, "inspect", str(store_path), env=OPERATOR_ENV | {"FSSESSION_SID": sid})
    assert from_env.rc == 0 and "inspect-me" in from_env.out, f"id in $FSSESSION_SID: {from_env}"
    if kind == "any":
        on_argv = lab.cli(WEB_A, "inspect", str(store_path), sid, env=OPERATOR_ENV)
        assert on_argv.rc == 0 and "inspect-me" in on_argv.out, f"id on argv: {on_argv}"
        assert on_argv.err.strip(), "an id on the command line must draw a warning on stderr"


PLANT_KEY = """
import os, sys
root, kind = sys.argv[1:]
tmp = os.path.join(root, "mallory-key")
if kind == "fifo":
    os.mkfifo(tmp, 0o666)
else:
    os.symlink(kind, tmp)
os.rename(tmp, os.path.join(root, ".fssession-naming-key"))
"""


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"], ids=["fifo", "dev-zero"])
def test_inspect_never_reads_a_planted_naming_key(lab: Lab, store_path: Path, kind: str) -> None:
    sid = create(lab, store_path)
    lab.run(MALLORY, PLANT_KEY, str(store_path), kind).ok()
    # The id on argv (still accepted): what is under test here is the naming key, not how the id comes in.
    result = lab.cli(WEB_A, "inspect", str(store_path), sid, env=OPERATOR_ENV, memory=MEMORY)
    assert result.rc != 0 and "Traceback" not in result.err and result.err.strip(), result
    assert "inspect-me" not in result.out


GROW = """
import os, sys
os.truncate(sys.argv[1], 8 << 30)  # sparse: no disk space used
"""


def test_inspect_reads_at_most_max_size(lab: Lab, store_path: Path) -> None:
    before = set(session_files(str(store_path)))
    sid = create(lab, store_path)
    (name,) = set(session_files(str(store_path))) - before
    lab.run(MALLORY, GROW, str(store_path / name)).ok()
    result = lab.cli(WEB_A, "inspect", str(store_path), sid, env=OPERATOR_ENV, memory=MEMORY)
    assert result.rc in (1, 2) and "Traceback" not in result.err and result.err.strip(), result
    assert "inspect-me" not in result.out
