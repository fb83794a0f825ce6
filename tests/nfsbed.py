"""Real kernel NFS for the suite: the NFS VM (scripts/testbed/nfs-vm-*) and pytest runs inside it.

The host's kernel has no NFS client, so NFS is tested inside a QEMU guest
(scripts/testbed/nfs-vm-up) that mounts one knfsd export as two separate NFS
clients per profile.  The host's pytest boots the VM once per session
(fixture ``nfs_vm``) and runs ``pytest -m nfs`` INSIDE it once
(tests/nfs/test_nfs.py); there, ``shared_fs`` (tests/fsbed.py) is parametrized
over the profiles ("nfs-v3", "nfs-v42", ...), each the profile's two NFS
mounts, instead of bringing up sshfs or GlusterFS.  So a test joins the NFS
runs by carrying ``@pytest.mark.nfs`` and using ``shared_fs`` as usual.
One inner session covers every profile because starting pytest costs about a
minute in an emulated guest; plugin autoloading is off there for the same
reason (hypothesis and anyio alone take longer to import than a test runs).

Environment (host side)
    FSSESSION_NFS_PROFILES=v3,v42,...  profiles to run (default v3,v42ac1: NFSv3 with the
                                       default attribute cache, v4.2 with actimeo=1; also
                                       v42, v3ac1, v3noac, v42noac)
    FSSESSION_NFS_PYTEST_ARGS          the inner selection instead of "-m nfs tests"
                                       (e.g. "tests/store/test_processes.py -k exact")
    FSSESSION_NFS_TIMEOUT              seconds the inner run may take (hang guard,
                                       default 2400)
    FSSESSION_TESTBED_TIMEOUT          seconds for the VM to come up (default 900:
                                       the first run installs packages)
    FSSESSION_REQUIRE_SHARED, FSSESSION_SHARED_KINDS   as in tests/fsbed.py
                                       ("nfs" is the kind's name there)
Inside the guest
    TESTBED_KIND=nfs, NFSVM_PROFILE, TESTBED_MOUNT_1/2   set by nfs-vm-run
    FSSESSION_SLOW_FS=1   set when the guest is emulated (TCG: 10-50x slower);
                          tests read it through fsbed.slow_fs() to shrink counts
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import fsbed

KIND = "nfs"
VM_SCRIPTS = "nfs-vm"  # scripts/testbed/nfs-vm-{up,down,run}
# Both versions and both cache settings, in two profiles: under TCG each
# profile's run takes about three minutes, and all four would take CI past
# its budget.  FSSESSION_NFS_PROFILES=v3,v42,v3ac1,v42ac1 runs them all.
DEFAULT_PROFILES = ("v3", "v42ac1")
ALL_PROFILES = ("v3", "v42", "v3ac1", "v42ac1", "v3noac", "v42noac")
ARGS_ENV = "FSSESSION_NFS_PYTEST_ARGS"
RUN_TIMEOUT_ENV = "FSSESSION_NFS_TIMEOUT"


def nfs_profiles() -> list[str]:
    """The profiles the NFS tests run on (FSSESSION_NFS_PROFILES, else the default two)."""
    raw = os.environ.get(fsbed.NFS_PROFILES_ENV, "").strip()
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else list(DEFAULT_PROFILES)


@dataclass(frozen=True)
class InnerRun:
    """The outcome of one pytest run inside the VM."""

    profiles: list[str]
    returncode: int
    output: str
    seconds: float
    counts: dict[str, int]  # tests, failures, errors, skipped (from the JUnit XML)
    cases: list[tuple[str, str, float]]  # (test id, outcome, seconds)

    def problems(self) -> list[str]:
        """Why this run does not count as a pass; empty if it does."""
        found = []
        if self.returncode != 0:
            found.append(f"inner pytest exited with {self.returncode}")
        if not self.counts:
            found.append("no JUnit report (the run did not get as far as writing one)")
        elif self.counts["tests"] - self.counts["skipped"] == 0:
            found.append("no test ran")
        elif self.counts["skipped"] and fsbed.require_shared():
            skipped = [name for name, outcome, _ in self.cases if outcome == "skipped"]
            found.append(f"{fsbed.REQUIRE_ENV}=1 and inner tests were skipped: {', '.join(skipped)}")
        return found

    def summary(self) -> str:
        """One line per inner test (outcome, seconds, id), then the seconds per profile."""
        lines = [f"  {o:7} {s:7.1f} s  {name}" for name, o, s in self.cases]
        for profile in self.profiles:
            mine = [s for name, _, s in self.cases if _has_profile(name, profile)]
            lines.append(f"  {profile}: {len(mine)} tests, {sum(mine):.0f} s")
        return "\n".join(lines)


@dataclass(frozen=True)
class NfsVM:
    """A running NFS VM (nfs-vm-up), shared into by this repository."""

    base: Path
    accel: str  # "kvm" or "tcg"
    boot_seconds: float

    @property
    def slow(self) -> bool:
        """True when the guest is emulated, so tests inside must use small counts."""
        return self.accel != "kvm"

    def run(self, profile: str, argv: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ARGV in the guest with PROFILE's mounts (cwd: the repository); output merged."""
        cmd = [str(fsbed.SCRIPTS_DIR / f"{VM_SCRIPTS}-run"), "-b", str(self.base), "-p", profile]
        if timeout is not None:
            cmd += ["-t", str(int(timeout))]
        return subprocess.run(
            [*cmd, "--", *argv],
            cwd=fsbed.REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=None if timeout is None else timeout + 120,
        )

    def pytest(self, profiles: Sequence[str], args: Sequence[str], timeout: float) -> InnerRun:
        """Run the suite's pytest with ARGS inside the guest, shared_fs over PROFILES."""
        report = self.base / f"junit-{time.monotonic_ns()}.xml"
        argv = [
            "env",
            f"FSSESSION_NFS_PROFILES={','.join(profiles)}",
            f"FSSESSION_SLOW_FS={int(self.slow)}",
            f"{fsbed.REQUIRE_ENV}={int(fsbed.require_shared())}",  # a skip inside fails CI as outside
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            "--basetemp=/run/fss-pytest",
            f"--junitxml={report}",
            *args,
        ]
        start = time.monotonic()
        proc = self.run(profiles[0], argv, timeout)
        seconds = time.monotonic() - start
        counts, cases = read_junit(report)
        report.unlink(missing_ok=True)
        return InnerRun(list(profiles), proc.returncode, proc.stdout, seconds, counts, cases)


def _has_profile(test_id: str, profile: str) -> bool:
    """True if TEST_ID ran on PROFILE: its parameters include "nfs-PROFILE" (not "nfs-PROFILEac1")."""
    params = test_id.partition("[")[2].rstrip("]").split("-")
    return any(params[i : i + 2] == ["nfs", profile] for i in range(len(params) - 1))


def read_junit(path: Path) -> tuple[dict[str, int], list[tuple[str, str, float]]]:
    """(counts, cases) from a pytest JUnit XML report; ({}, []) if there is none."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}, []
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}, []
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for child, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if case.find(child) is not None:
                outcome = word
        cases.append((f"{case.get('classname')}::{case.get('name')}", outcome, float(case.get("time", "0"))))
    return counts, cases


def inner_args() -> list[str]:
    """The inner pytest selection: FSSESSION_NFS_PYTEST_ARGS, else every test marked nfs ([] if none is).

    Only the files that hold such tests are named: collecting (importing) the
    whole suite inside an emulated guest takes minutes.
    """
    raw = os.environ.get(ARGS_ENV, "").strip()
    if raw:
        return shlex.split(raw)
    files = marked_files()
    return ["-m", "nfs", *files] if files else []


def marked_files() -> list[str]:
    """The test files (relative to the repository) that hold tests marked nfs, found by collecting on the host."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "nfs", "tests"],
        cwd=fsbed.REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    files = {line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line}
    return sorted(files)


def start_nfs_vm(base: Path | None = None) -> NfsVM:
    """Boot the NFS VM sharing this repository; raise fsbed.TestbedError with the reason."""
    problem = _preflight()
    if problem:
        raise fsbed.TestbedError(problem)
    base = Path(base or tempfile.mkdtemp(prefix="fss-tb-nfs-", dir="/tmp"))
    env = dict(os.environ, NFSVM_SHARE=str(fsbed.REPO_ROOT))
    env.pop("TESTBED_DIR", None)
    timeout = float(os.environ.get(fsbed.TIMEOUT_ENV, "900"))
    fsbed._ACTIVE[base] = VM_SCRIPTS  # the atexit net runs nfs-vm-down if pytest dies
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [str(fsbed.SCRIPTS_DIR / f"{VM_SCRIPTS}-up"), str(base)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except (subprocess.TimeoutExpired, OSError) as exc:
        stop_nfs_vm_quietly(base)
        raise fsbed.TestbedError(f"nfs-vm-up did not finish: {exc}") from None
    if proc.returncode != 0:
        stop_nfs_vm_quietly(base)
        raise fsbed.TestbedError(
            f"nfs-vm-up failed (exit {proc.returncode}):\n{fsbed._tail(proc.stderr + proc.stdout, 30, 4000)}"
        )
    timing = (base / "state" / "timing").read_text()
    accel = "kvm" if "accel=kvm" in timing else "tcg"
    return NfsVM(base=base, accel=accel, boot_seconds=round(time.monotonic() - start, 1))


def stop_nfs_vm(vm: NfsVM) -> None:
    """Power the VM off and delete its directory; raise fsbed.TestbedError if that fails."""
    fsbed.stop_testbed(VM_SCRIPTS, vm.base)


def stop_nfs_vm_quietly(base: Path) -> None:
    """Tear down after a failed start (the start's error is the one worth reporting)."""
    try:
        fsbed.stop_testbed(VM_SCRIPTS, base)
    except fsbed.TestbedError as exc:
        print(f"nfsbed: could not tear down {base}: {exc}", file=sys.stderr)


def _preflight() -> str | None:
    if os.geteuid() != 0:
        return f"the NFS VM needs root (QEMU, apt); running as uid {os.geteuid()}"
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return "the NFS VM boots an x86_64 Debian kernel: needs Linux on x86_64"
    if not Path("/usr/bin/apt-get").exists() and not Path("/usr/bin/qemu-system-x86_64").exists():
        return "the NFS VM installs QEMU with apt-get: needs Debian or QEMU installed"
    for action in ("up", "down", "run"):
        script = fsbed.SCRIPTS_DIR / f"{VM_SCRIPTS}-{action}"
        if not os.access(script, os.X_OK):
            return f"{script} is missing or not executable"
    return None


@pytest.fixture(scope="session")
def nfs_vm() -> Iterator[NfsVM]:
    """The NFS VM, booted once per session (skip, or fail under FSSESSION_REQUIRE_SHARED, if it cannot)."""
    if fsbed.in_nfs_guest():
        pytest.skip("already inside the NFS VM")
    selected = fsbed._selected_kinds()
    if selected is not None and KIND not in selected:
        pytest.skip(f"nfs testbed not selected ({fsbed.KINDS_ENV}={os.environ[fsbed.KINDS_ENV]})")
    failure = None
    try:
        vm = start_nfs_vm()
    except fsbed.TestbedError as exc:
        failure = f"NFS VM unavailable: {exc}"
    if failure is not None:
        fsbed.unavailable(failure)
    print(f"\nNFS VM up in {vm.boot_seconds} s ({vm.accel})", file=sys.stderr)
    yield vm
    stop_nfs_vm(vm)
