"""Real shared-filesystem testbeds for the fssession test suite (pytest plugin).

Load it with ``pytest_plugins = ["tests.fsbed"]`` in the *rootdir* conftest.py,
with ``-p tests.fsbed``, or by importing the fixtures into a conftest
(``from tests.fsbed import shared_fs, hostsim  # noqa: F401``).

Fixtures
    shared_fs   session scope, parametrized over ``KINDS`` ("sshfs", "gluster").
                Brings the testbed up once per kind (scripts/testbed/<kind>-up)
                under a short private directory /tmp/fss-tb-<kind>-XXXX and
                tears it down (<kind>-down) when pytest moves on to the next
                kind or ends.  Returns a :class:`SharedFS`: two mounts of ONE
                export, i.e. two "hosts" with separate client caches.
                Inside the NFS VM (tests/nfsbed.py runs ``pytest -m nfs``
                there) it is parametrized over "nfs-PROFILE" instead, one per
                profile in FSSESSION_NFS_PROFILES (else nfs-vm-run's): that
                profile's two NFS clients, which the VM owns (nothing is
                brought up or torn down).
    hostsim     returns :func:`hostsim_cmd` (skips if hostsim cannot run).

Helpers
    slow_fs() -> True under FSSESSION_SLOW_FS=1 (also SharedFS.slow): the
        filesystem is emulated (the NFS VM under TCG), so use small counts
    in_nfs_guest() -> True inside the NFS VM (nfs-vm-run sets TESTBED_KIND=nfs)
    hostsim_cmd(name, skew=None, net=False) -> argv prefix, e.g.
        subprocess.run(hostsim_cmd("web1", skew="+30s") + [sys.executable, ...])
    hostsim_available() -> (ok, reason)

Environment
    FSSESSION_REQUIRE_SHARED=1   a testbed or hostsim that cannot be brought up
                                 FAILS the tests instead of skipping them (CI).
    FSSESSION_SHARED_KINDS=a,b   only these kinds; the others are skipped
                                 (deliberately, also under REQUIRE_SHARED).
    SSHFS_PROFILE=fresh|cached, GLUSTER_PROFILE=default|fresh
                                 cache profile, passed through to the scripts
                                 (defaults: sshfs fresh, gluster default).
    FSSESSION_TESTBED_TIMEOUT    seconds allowed for one "*-up" (default 900;
                                 the first run may install Debian packages).
    FSSESSION_SLOW_FS=1          the shared filesystem is slow (emulated): see slow_fs().

Needs root and /dev/fuse.  Only one GlusterFS testbed can run per machine
(port 24007), so do not run the gluster kind from parallel pytest processes
(e.g. pytest-xdist workers).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "scripts" / "testbed"
HOSTSIM = SCRIPTS_DIR / "hostsim"
KINDS = ("sshfs", "gluster")

REQUIRE_ENV = "FSSESSION_REQUIRE_SHARED"
KINDS_ENV = "FSSESSION_SHARED_KINDS"
TIMEOUT_ENV = "FSSESSION_TESTBED_TIMEOUT"
SLOW_ENV = "FSSESSION_SLOW_FS"
GUEST_KIND = "nfs"  # the kind shared_fs has inside the NFS VM
NFS_PROFILES_ENV = "FSSESSION_NFS_PROFILES"

VISIBLE_TIMEOUT = 30.0  # seconds fresh_dir() waits for mount 2 to see the dir
DOWN_TIMEOUT = 120.0

__all__ = [
    "KINDS",
    "SharedFS",
    "TestbedError",
    "guest_profiles",
    "guest_testbed",
    "hostsim",
    "hostsim_available",
    "hostsim_cmd",
    "in_nfs_guest",
    "require_shared",
    "shared_fs",
    "slow_fs",
    "start_testbed",
    "stop_testbed",
    "unavailable",
]


class TestbedError(RuntimeError):
    """A testbed could not be brought up or torn down."""

    __test__ = False  # not a test class, despite the name


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def require_shared() -> bool:
    """True if FSSESSION_REQUIRE_SHARED asks for failures instead of skips."""
    return _flag(REQUIRE_ENV)


def slow_fs() -> bool:
    """True if FSSESSION_SLOW_FS says the filesystem under test is emulated: use small counts."""
    return _flag(SLOW_ENV)


def in_nfs_guest() -> bool:
    """True inside the NFS VM, where nfs-vm-run gives a profile's two NFS mounts."""
    env = os.environ
    return env.get("TESTBED_KIND") == GUEST_KIND and bool(env.get("TESTBED_MOUNT_1") and env.get("TESTBED_MOUNT_2"))


def unavailable(reason: str) -> NoReturn:
    """Skip for REASON, or fail under FSSESSION_REQUIRE_SHARED=1."""
    if require_shared():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1, so this is a failure]", pytrace=False)
    pytest.skip(reason)


def _tail(text: str, lines: int = 15, chars: int = 1500) -> str:
    kept = [ln for ln in (text or "").strip().splitlines() if ln.strip()][-lines:]
    out = "\n".join(kept)
    return out if len(out) <= chars else "..." + out[-chars:]


@dataclass(frozen=True)
class SharedFS:
    """One shared export, mounted twice ("two hosts with separate caches")."""

    kind: str  # "sshfs" or "gluster"
    mounts: tuple[Path, Path]  # mount 1 and mount 2 of the same export
    export: Path  # server-side directory (gluster: the brick; read only!)
    base: Path  # the testbed's private directory (state, logs, mounts)
    profile: str = ""  # cache profile the scripts used
    slow: bool = False  # emulated (FSSESSION_SLOW_FS): use small iteration counts

    def fresh_dir(self, name: str = "t", timeout: float = VISIBLE_TIMEOUT) -> tuple[Path, Path]:
        """Create a new unique directory through mount 1.

        Returns that directory as seen through mount 1 and through mount 2,
        after waiting until mount 2 sees it.
        """
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:60] or "t"
        leaf = f"{safe}-{uuid.uuid4().hex[:12]}"
        one = self.mounts[0] / leaf
        two = self.mounts[1] / leaf
        one.mkdir()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if two.is_dir():
                    return one, two
            except OSError:  # e.g. ESTALE while the client revalidates
                pass
            if time.monotonic() >= deadline:
                raise TestbedError(f"{self.kind}: {one} is not visible as {two} after {timeout:.0f} s")
            time.sleep(0.02)


# ---------------------------------------------------------------------------
# bringing testbeds up and down

_ACTIVE: dict[Path, str] = {}  # base -> kind, for the atexit safety net


def _script(kind: str, action: str) -> Path:
    return SCRIPTS_DIR / f"{kind}-{action}"


def _preflight(kind: str) -> str | None:
    if kind not in KINDS:
        return f"unknown shared filesystem kind {kind!r} (known: {', '.join(KINDS)})"
    if os.geteuid() != 0:
        return f"{kind} testbed needs root (mounts, daemons, apt); running as uid {os.geteuid()}"
    if not os.path.exists("/dev/fuse"):
        return f"{kind} testbed needs FUSE, but /dev/fuse does not exist"
    if shutil.which("bash") is None:
        return f"{kind} testbed needs bash"
    for action in ("up", "down"):
        if not os.access(_script(kind, action), os.X_OK):
            return f"{kind} testbed script {_script(kind, action)} is missing or not executable"
    return None


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            env[key] = value
    return env


def start_testbed(kind: str, base: Path | None = None) -> SharedFS:
    """Bring up testbed KIND with two mounts; raise TestbedError with the reason."""
    problem = _preflight(kind)
    if problem:
        raise TestbedError(problem)
    if base is None:
        base = Path(tempfile.mkdtemp(prefix=f"fss-tb-{kind}-", dir="/tmp"))
    base = Path(base)
    env = dict(os.environ, TESTBED_MOUNTS="2")
    env.pop("TESTBED_DIR", None)
    timeout = float(os.environ.get(TIMEOUT_ENV, "900"))
    _ACTIVE[base] = kind
    try:
        proc = subprocess.run(
            [str(_script(kind, "up")), str(base)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        _cleanup_after_failure(kind, base)
        raise TestbedError(
            f"{kind} testbed did not come up within {timeout:.0f} s; last output:\n{_tail(err or '')}"
        ) from None
    except OSError as exc:
        _cleanup_after_failure(kind, base)
        raise TestbedError(f"{kind} testbed: cannot run {_script(kind, 'up')}: {exc}") from None
    if proc.returncode != 0:
        _cleanup_after_failure(kind, base)
        raise TestbedError(
            f"{kind} testbed failed to come up (exit {proc.returncode}); last output:\n"
            f"{_tail(proc.stderr + proc.stdout)}"
        )
    try:
        state = _read_env(base / "state" / "env")
        mounts = tuple(Path(state[f"TESTBED_MOUNT_{i}"]) for i in (1, 2))
        export = Path(state["TESTBED_EXPORT"])
        config = (base / "state" / "config").read_text()
    except (OSError, KeyError, ValueError) as exc:
        _cleanup_after_failure(kind, base)
        raise TestbedError(f"{kind} testbed came up but its state/env is unusable: {exc!r}") from None
    profile = re.search(r"profile=(\S+)", config)
    bed = SharedFS(
        kind=kind,
        mounts=(mounts[0], mounts[1]),
        export=export,
        base=base,
        profile=profile.group(1) if profile else "",
        slow=slow_fs(),
    )
    return bed


def guest_profiles() -> list[str]:
    """Inside the NFS VM: the profiles shared_fs runs over (FSSESSION_NFS_PROFILES, else nfs-vm-run's -p)."""
    raw = os.environ.get(NFS_PROFILES_ENV, "").strip()
    if raw:
        return [p.strip() for p in raw.split(",") if p.strip()]
    return [os.environ.get("NFSVM_PROFILE", "")]


def guest_testbed(profile: str) -> SharedFS:
    """Inside the NFS VM: PROFILE's two NFS mounts (client a, client b), as nfs-vm-run gives them."""
    env = os.environ
    try:
        mounts = (Path(env[f"NFSVM_{profile.upper()}_A"]), Path(env[f"NFSVM_{profile.upper()}_B"]))
    except KeyError:
        raise TestbedError(f"the NFS VM has no profile {profile!r}") from None
    return SharedFS(
        kind=GUEST_KIND,
        mounts=mounts,
        export=Path(env.get("TESTBED_EXPORT", "/srv/nfs")),
        base=Path(env.get("NFSVM_BASE", "/")),
        profile=profile,
        slow=slow_fs(),
    )


def stop_testbed(kind: str, base: Path) -> None:
    """Tear down the testbed at BASE; raise TestbedError if it is not clean."""
    base = Path(base)
    try:
        proc = subprocess.run(
            [str(_script(kind, "down")), str(base)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DOWN_TIMEOUT,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        raise TestbedError(f"{kind}-down {base} did not finish: {exc}") from None
    finally:
        _ACTIVE.pop(base, None)
    if proc.returncode != 0:
        raise TestbedError(
            f"{kind}-down {base} failed (exit {proc.returncode}); last output:\n{_tail(proc.stderr + proc.stdout)}"
        )


def _cleanup_after_failure(kind: str, base: Path) -> None:
    with contextlib.suppress(TestbedError):  # the up error is the one worth reporting
        stop_testbed(kind, base)


@atexit.register
def _stop_leftovers() -> None:  # e.g. pytest interrupted before fixture teardown
    for base, kind in list(_ACTIVE.items()):
        with contextlib.suppress(TestbedError):
            stop_testbed(kind, base)


def _selected_kinds() -> set[str] | None:
    raw = os.environ.get(KINDS_ENV, "").strip()
    if not raw:
        return None
    return {k.strip() for k in raw.split(",") if k.strip()}


def _fixture_params() -> tuple[list[str], list[str]]:
    """(params, test ids) of shared_fs: the kinds, or inside the NFS VM "nfs-PROFILE" for each profile."""
    if in_nfs_guest():
        ids = [f"{GUEST_KIND}-{p}" for p in guest_profiles()]
        return ids, ids
    return list(KINDS), list(KINDS)


@pytest.fixture(scope="session", params=_fixture_params()[0], ids=_fixture_params()[1])
def shared_fs(request: pytest.FixtureRequest) -> Iterator[SharedFS]:
    """Two mounts of one shared export (sshfs, then gluster; inside the NFS VM: nfs); see SharedFS."""
    kind, _, profile = str(request.param).partition("-")
    selected = _selected_kinds()
    if selected is not None and kind not in selected:
        pytest.skip(f"{kind} testbed not selected ({KINDS_ENV}={os.environ[KINDS_ENV]})")
    if kind == GUEST_KIND:
        try:
            bed = guest_testbed(profile)
        except TestbedError as exc:
            unavailable(str(exc))
        yield bed  # the VM's mounts outlive this session: nothing to tear down
        return
    failure = None
    try:
        bed = start_testbed(kind)
    except TestbedError as exc:
        failure = f"{kind} testbed unavailable: {exc}"
    if failure is not None:
        unavailable(failure)
    yield bed
    stop_testbed(kind, bed.base)


# ---------------------------------------------------------------------------
# simulated hosts

_HOSTSIM_PROBE: dict[bool, tuple[bool, str]] = {}


def hostsim_cmd(name: str, skew: str | None = None, net: bool = False) -> list[str]:
    """argv prefix that runs a command as simulated host NAME.

    Own hostname and PID namespace (the command is PID 2 there, in every
    simulated host); SKEW (e.g. "+30s", "-2m") shifts its wall clock with
    libfaketime; NET gives it an empty network namespace.  Append the command:
    ``hostsim_cmd("web1", skew="+30s") + [sys.executable, "worker.py"]``.
    SIGTERM/SIGINT to the process are passed on to the command; SIGKILL kills
    the whole simulated host.
    """
    argv = [str(HOSTSIM), name]
    if skew:
        argv += ["--skew", skew]
    if net:
        argv.append("--net")
    return [*argv, "--"]


def hostsim_available(skew: bool = False) -> tuple[bool, str]:
    """(True, "") if hostsim works here, else (False, reason).

    Probed once per process with a trivial command; skew=True also checks
    (and if needed installs) libfaketime.
    """
    if skew in _HOSTSIM_PROBE:
        return _HOSTSIM_PROBE[skew]
    result = _probe_hostsim(skew)
    _HOSTSIM_PROBE[skew] = result
    return result


def _probe_hostsim(skew: bool) -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, f"hostsim needs root (namespaces); running as uid {os.geteuid()}"
    for tool in ("unshare", "setpriv", "bash"):
        if shutil.which(tool) is None:
            return False, f"hostsim needs {tool}, which is not installed"
    if not os.access(HOSTSIM, os.X_OK):
        return False, f"{HOSTSIM} is missing or not executable"
    name = "fsbed-probe"
    script = 'echo "$(hostname) $$"'
    argv = [*hostsim_cmd(name, skew="+0s" if skew else None), "sh", "-c", script]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return False, f"hostsim probe did not run: {exc}"
    if proc.returncode != 0:
        return False, f"hostsim probe failed (exit {proc.returncode}): {_tail(proc.stderr)}"
    got = proc.stdout.split()
    if len(got) != 2 or got[0] != name:
        return False, f"hostsim probe printed {proc.stdout.strip()!r}, expected '{name} <pid>'"
    return True, ""


@pytest.fixture(scope="session")
def hostsim() -> Callable[..., list[str]]:
    """hostsim_cmd, after checking that simulated hosts work here."""
    ok, reason = hostsim_available()
    if not ok:
        unavailable(f"hostsim unavailable: {reason}")
    return hostsim_cmd
