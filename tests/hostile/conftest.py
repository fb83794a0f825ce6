"""The hostile-directory lab (issue 10): real users, real processes, a store others can write.

Fixtures
    lab           session scope: the accounts (tests/support/users.py), an
                  interpreter and a root-owned copy of the code they can run
                  (tests/support/runtime.py), and every process started, so
                  that each is ended by its id at the end of its test.
    workspace     a fresh directory for one test under /tmp/fss-lab (root, 0755).
    store_path    the README's group set-up in the workspace: a store root
                  owned by fss-weba:fss-share, mode 2770 (setgid), with a
                  naming key made by fss-weba through SessionStore(...,
                  file_mode=0o660, dir_mode=0o770).
    root_victim   a victim tree owned by root (tests/support/victim.py).
    weba_victim   a victim tree owned by fss-weba (for attacks on a web user).

The lab needs root (to create users and switch to them); without it every
test here is skipped with the reason, and under FSSESSION_REQUIRE_SHARED=1
(CI, which runs as root) that is a failure instead.
"""

from __future__ import annotations

import grp
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fsbed import REQUIRE_ENV, require_shared
from tests.support.procs import GUARD, LabProc, Result
from tests.support.runtime import LAB_ROOT, Runtime, build_runtime, copy_code, secure_dir
from tests.support.users import GROUP, MALLORY, WEB_A, LabUser, ensure_accounts, missing_tools
from tests.support.victim import Victim, make_victim


def unavailable(reason: str) -> None:
    """Skip with the reason; under FSSESSION_REQUIRE_SHARED=1 (CI) fail instead."""
    if require_shared():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1, so this is a failure]", pytrace=False)
    pytest.skip(reason)


class Lab:
    """The lab's users and runtime, and the processes a test started."""

    def __init__(self, users: dict[str, LabUser], runtime: Runtime) -> None:
        self.users = users
        self.runtime = runtime
        self.procs: list[LabProc] = []

    def user(self, name: str) -> LabUser:
        """A lab account by name."""
        return self.users[name]

    def spawn(
        self,
        user: str | None,
        args: list[str],
        *,
        what: str = "",
        umask: int = 0o022,
        env: dict[str, str] | None = None,
        memory: int | None = None,
        hostname: str | None = None,
    ) -> LabProc:
        """Start ``python ARGS`` as *user* (None: root); it is killed at the end of the test at the latest.

        With *hostname*, the process runs in a UTS namespace of its own with that host name (another "host").
        """
        prefix = [] if user is None else self.users[user].setpriv()
        if hostname is not None:
            rename = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
            prefix = ["unshare", "--uts", "--", self.runtime.python, "-c", rename, hostname, *prefix]
        preexec: Callable[[], None] | None = None
        if memory is not None:

            def preexec() -> None:
                # A read that never ends (/dev/zero) must hit a wall, not eat the machine.
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        proc = LabProc(
            [*prefix, self.runtime.python, *args],
            self.runtime.environ(env),
            what=what or f"{user or 'root'}: {' '.join(args)[:80]}",
            umask=umask,
            preexec=preexec,
        )
        self.procs.append(proc)
        return proc

    def python(self, user: str | None, code: str, *args: str, **options: object) -> LabProc:
        """Start a Python snippet as *user*; *args* become its sys.argv[1:]."""
        return self.spawn(user, ["-c", code, *args], **options)  # type: ignore[arg-type]

    def run(
        self,
        user: str | None,
        code: str,
        *args: str,
        stdin: str | None = None,
        timeout: float = GUARD,
        **options: object,
    ) -> Result:
        """Run a snippet to its end under the hang guard."""
        proc = self.python(user, code, *args, **options)
        try:
            return proc.finish(timeout, stdin)
        finally:
            proc.close()

    def cli(
        self, user: str | None, *args: str, stdin: str | None = None, timeout: float = GUARD, **options: object
    ) -> Result:
        """Run the ``fssession`` command (``python -m fssession.cli``) to its end under the hang guard."""
        proc = self.spawn(user, ["-m", "fssession.cli", *args], **options)  # type: ignore[arg-type]
        try:
            return proc.finish(timeout, stdin)
        finally:
            proc.close()

    def close_all(self) -> None:
        """End every process this test started (by its own process group id)."""
        while self.procs:
            self.procs.pop().close()


def _remove_stale(root: str, age: float = 86400.0) -> None:
    """Code copies and workspaces of runs that were killed before they could clean up (a day old)."""
    for entry in os.scandir(root):
        stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > age
        if stale and entry.name.startswith(("code-", "t-")) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


@pytest.fixture(scope="session")
def _lab_session() -> Iterator[Lab]:
    if os.geteuid() != 0:
        unavailable("the hostile-directory lab needs root: it creates users and runs processes as them")
    missing = missing_tools()
    if missing:
        unavailable(f"the hostile-directory lab needs {', '.join(missing)} (util-linux, passwd)")
    secure_dir(LAB_ROOT)
    _remove_stale(LAB_ROOT)
    users = ensure_accounts(os.path.join(LAB_ROOT, ".accounts.lock"))
    runtime = build_runtime(users[MALLORY].setpriv())
    runtime.code = copy_code(LAB_ROOT)
    try:
        yield Lab(users, runtime)
    finally:
        shutil.rmtree(runtime.code, ignore_errors=True)


@pytest.fixture
def lab(_lab_session: Lab) -> Iterator[Lab]:
    """The lab; every process a test starts through it is ended when the test ends."""
    try:
        yield _lab_session
    finally:
        _lab_session.close_all()


@pytest.fixture
def workspace(lab: Lab) -> Iterator[Path]:
    """A fresh directory for one test (root-owned, 0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="t-", dir=LAB_ROOT))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        lab.close_all()  # nothing may still be writing in it
        shutil.rmtree(path, ignore_errors=True)


def make_shared_root(lab: Lab, path: Path, owner: str = WEB_A) -> Path:
    """The README's group set-up: *path* owned by *owner*:fss-share, mode 2770."""
    path.mkdir()
    os.chown(path, lab.user(owner).uid, grp.getgrnam(GROUP).gr_gid)
    os.chmod(path, 0o2770)
    return path


def owned_dir(lab: Lab, path: Path, user: str, mode: int) -> Path:
    """A directory outside the store that belongs to *user* (e.g. Mallory's own)."""
    account = lab.user(user)
    path.mkdir()
    os.chown(path, account.uid, account.gid)
    os.chmod(path, mode)
    return path


def init_store(lab: Lab, path: Path, user: str = WEB_A, umask: int = 0o022) -> None:
    """Have *user* open the store once (creating its naming key), as a web node's first start would."""
    lab.run(user, "from tests.hostile.agent import shared_store; import sys; shared_store(sys.argv[1])", str(path),
            umask=umask).ok()  # fmt: skip


@pytest.fixture
def store_path(lab: Lab, workspace: Path) -> Path:
    """A group-shared store (2770 fss-weba:fss-share) that fss-weba has opened once."""
    path = make_shared_root(lab, workspace / "store")
    init_store(lab, path)
    return path


@pytest.fixture
def root_victim(lab: Lab) -> Iterator[Victim]:
    """A victim tree owned by root."""
    victim = make_victim()
    try:
        yield victim
    finally:
        victim.remove()


@pytest.fixture
def weba_victim(lab: Lab) -> Iterator[Victim]:
    """A victim tree owned by fss-weba: what a tricked web worker could destroy."""
    user = lab.user(WEB_A)
    victim = make_victim(user.uid, user.gid)
    try:
        yield victim
    finally:
        victim.remove()
