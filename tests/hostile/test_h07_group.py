"""Attack 7 (a self-inflicted one): the README's group set-up must keep working for two web users.

fss-weba (primary group fss-share) and fss-webb (primary group fss-webb,
fss-share only as a supplementary group) share a store root owned by
fss-weba:fss-share, mode 2770, with ``file_mode=0o660, dir_mode=0o770``,
under umask 077 and under 022.  Both must create, edit each other's
sessions, take over each other's dead locks (a holder killed with SIGKILL),
and reap, including after a root reaper was killed while it held the
reaper's lock.  Every directory the store, its locks and the reaper create
must keep the setgid bit and dir_mode (group fss-share), every file the
group's read and write bits; a store root the store creates itself must get
dir_mode whatever the umask.
"""

from __future__ import annotations

import grp
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from tests.hostile.conftest import Lab, init_store, make_shared_root
from tests.support.users import GROUP, WEB_A, WEB_B

pytestmark = pytest.mark.slow

UMASKS = [0o077, 0o022]
# A server-clock probe lives for one mkdir and rmdir; one that a SIGKILL left behind is empty and any
# group member may remove it, so its mode is not part of what the group needs (and when the kill lands
# in that instant is luck, which a test must not depend on).
CLOCK_PROBE = ".fssession-clock-"

# Each step of one web user, as its own process; prints the outcome.
STEP = """
import sys
from tests.hostile.agent import attempt, emit, shared_store
root, op, arg = sys.argv[1:]
store = shared_store(root, lock_timeout=20.0)
def edit():
    with store.edit(arg) as data:
        data["n"] = data.get("n", 0) + 1
    return store.load(arg)
ops = {"create": lambda: store.create({"n": 0, "by": arg}), "edit": edit, "load": lambda: store.load(arg)}
emit(attempt(ops[op]))
"""

HOLD = """
import sys
from tests.hostile.agent import emit, shared_store
store = shared_store(sys.argv[1])
with store.edit(sys.argv[2]) as data:
    emit("holding")
    sys.stdin.readline()
"""

MANY = """
import sys
from tests.hostile.agent import shared_store
store = shared_store(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.create({"i": i})
"""


def group_problems(root: Path) -> list[str]:
    """Directories without setgid and dir_mode in group fss-share, files without the group's rw bits."""
    share = grp.getgrnam(GROUP).gr_gid
    problems = []
    for dirpath, _dirnames, filenames in os.walk(root):  # each directory is checked as a dirpath
        if os.path.basename(dirpath).startswith(CLOCK_PROBE):
            continue
        for name in [".", *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                if st.st_gid != share or not mode & stat.S_ISGID or mode & 0o770 != 0o770:
                    problems.append(f"dir {path}: {oct(mode)} gid {st.st_gid}")
            elif stat.S_ISREG(st.st_mode) and (st.st_gid != share or mode & 0o660 != 0o660):
                problems.append(f"file {path}: {oct(mode)} gid {st.st_gid}")
    return problems


class Users:
    """The two web users acting on one store, under one umask; every failed step is kept."""

    def __init__(self, lab: Lab, store: Path, umask: int) -> None:
        self.lab, self.store, self.umask = lab, store, umask
        self.failures: list[str] = []

    def step(self, user: str, op: str, arg: str) -> object:
        """One store call as *user*; its value (or None, with the failure recorded)."""
        out = self.lab.run(user, STEP, str(self.store), op, arg, umask=self.umask).ok().out
        outcome = json.loads(out)
        if "ok" not in outcome:
            self.failures.append(f"{user} {op}: {outcome}")
            return None
        return outcome["ok"]

    def killed_holder(self, user: str, sid: str) -> None:
        """*user* starts an edit of *sid* and is killed with SIGKILL while holding its lock."""
        holder = self.lab.python(user, HOLD, str(self.store), sid, umask=self.umask, what=f"{user} holder")
        assert json.loads(holder.readline()) == "holding"
        self.failures += [f"while {user} held a lock: {p}" for p in group_problems(self.store)]
        holder.kill()

    def reap(self, user: str) -> None:
        """``fssession reap`` as *user*: it must complete."""
        result = self.lab.cli(user, "reap", str(self.store), "--json", umask=self.umask)
        if result.rc != 0 or not json.loads(result.out or "{}").get("complete"):
            self.failures.append(f"{user} reap: {result}")


def crash_a_root_reaper(lab: Lab, store: Path) -> None:
    """Run ``fssession reap`` as root and SIGKILL it while it holds the reaper's lock (bounded tries)."""
    lock = store / ".fssession-reaper.lock"
    for _ in range(40):
        reaper = lab.spawn(None, ["-m", "fssession.cli", "reap", str(store)], what="root reaper")
        while reaper.popen.poll() is None and not os.path.lexists(lock):
            time.sleep(0.0005)
        reaper.signal(signal.SIGKILL)
        reaper.close()
        if os.path.lexists(lock):
            return
    pytest.fail("never caught a root reaper holding its lock in 40 runs")


@pytest.mark.parametrize("umask", UMASKS, ids=["umask077", "umask022"])
def test_two_web_users_with_different_primary_groups_share_one_store(lab: Lab, workspace: Path, umask: int) -> None:
    store = make_shared_root(lab, workspace / "store")
    init_store(lab, store, umask=umask)
    users = Users(lab, store, umask)
    a = users.step(WEB_A, "create", "a")
    b = users.step(WEB_B, "create", "b")
    for user, sid in ((WEB_B, a), (WEB_A, b), (WEB_A, a), (WEB_B, b)):
        if isinstance(sid, str):
            users.step(user, "edit", sid)
    for holder, taker in ((WEB_A, WEB_B), (WEB_B, WEB_A)):
        sid = users.step(holder, "create", holder)
        if isinstance(sid, str):
            users.killed_holder(holder, sid)
            if users.step(taker, "edit", sid) is None:
                users.failures.append(f"{taker} could not take over the dead lock of {holder}")
    users.reap(WEB_A)
    users.reap(WEB_B)
    lab.run(WEB_A, MANY, str(store), "300", umask=umask).ok()  # a sweep long enough to be caught in
    crash_a_root_reaper(lab, store)
    users.reap(WEB_B)
    users.reap(WEB_A)
    problems = group_problems(store)
    assert not users.failures and not problems, "\n".join((users.failures + problems)[:40])


CREATE_ROOT = """
import sys
from tests.hostile.agent import shared_store
shared_store(sys.argv[1]).create({"first": True})
"""


@pytest.mark.parametrize("umask", UMASKS, ids=["umask077", "umask022"])
def test_a_store_root_the_store_creates_gets_dir_mode(lab: Lab, workspace: Path, umask: int) -> None:
    parent = make_shared_root(lab, workspace / "shared")
    root = parent / "sessions"
    lab.run(WEB_A, CREATE_ROOT, str(root), umask=umask).ok()
    mode = stat.S_IMODE(os.lstat(root).st_mode)
    assert mode & 0o777 == 0o770, f"store root created under umask {umask:03o} is {mode:o}, not dir_mode 0770"
    outcome = json.loads(lab.run(WEB_B, STEP, str(root), "create", "b", umask=umask).ok().out)
    assert "ok" in outcome, f"the other web user cannot use the store: {outcome}"
