"""Real kernel NFS: every test marked ``nfs`` runs inside the NFS VM on each profile (tests/nfsbed.py).

The host boots the VM once per session and runs ``pytest -m nfs`` in the
guest, where ``shared_fs`` is parametrized over the profiles (NFSv3 and
NFSv4.2, with default attribute caching and with actimeo=1), each the
profile's two NFS clients; it fails with the inner output if the inner run
fails or runs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.nfsbed import InnerRun, NfsVM, inner_args, nfs_profiles, read_junit

NFS_RUN_TIMEOUT_DEFAULT = 2400.0


def _timeout() -> float:
    return float(os.environ.get("FSSESSION_NFS_TIMEOUT", NFS_RUN_TIMEOUT_DEFAULT))


CHECK_TWO_CLIENTS = """
import os, sys, uuid
a, b = os.environ["TESTBED_MOUNT_1"], os.environ["TESTBED_MOUNT_2"]
kinds = {}
for line in open("/proc/self/mountinfo"):
    f = line.split()
    kinds[f[4]] = (f[2], f[f.index("-") + 1])
assert kinds[a][1].startswith("nfs") and kinds[b][1].startswith("nfs"), (kinds[a], kinds[b])
assert kinds[a][0] != kinds[b][0], "the two mounts share a superblock (one client cache)"
name = uuid.uuid4().hex
open(os.path.join(a, name), "w").write("seen")
assert open(os.path.join(b, name)).read() == "seen"
os.unlink(os.path.join(b, name))
print("two clients", os.environ["NFSVM_PROFILE"], kinds[a][1], kinds[b][1])
sys.exit(3)
"""


@pytest.mark.shared
def test_vm_commands_see_two_nfs_clients_of_one_export_and_pass_their_status(nfs_vm: NfsVM) -> None:
    """The plumbing every NFS run rests on: two separate NFS mounts of one export, exit status passed back."""
    for profile in nfs_profiles():
        proc = nfs_vm.run(profile, ["python3", "-c", CHECK_TWO_CLIENTS], timeout=300)
        assert proc.returncode == 3, proc.stdout[-3000:]
        assert f"two clients {profile} nfs" in proc.stdout


@pytest.mark.shared
@pytest.mark.slow
def test_nfs_marked_tests_pass_on_two_nfs_clients(nfs_vm: NfsVM) -> None:
    args = inner_args()
    if not args:
        pytest.fail("no test is marked nfs, so there is nothing to run on NFS", pytrace=False)
    profiles = nfs_profiles()
    run = nfs_vm.pytest(profiles, args, timeout=_timeout())
    print(f"\nNFS {profiles}: inner pytest {run.counts} in {run.seconds:.0f} s ({nfs_vm.accel})\n{run.summary()}")
    problems = run.problems()
    if problems:
        tail = "\n".join(run.output.splitlines()[-150:])
        pytest.fail(f"NFS {profiles}: {'; '.join(problems)}\n{tail}", pytrace=False)


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="{failures}" skipped="{skipped}" tests="{tests}">
{cases}
</testsuite></testsuites>
"""


def _report(tmp_path: Path, cases: list[str], failures: int = 0, skipped: int = 0) -> Path:
    path = tmp_path / "junit.xml"
    body = "\n".join(cases)
    path.write_text(JUNIT.format(failures=failures, skipped=skipped, tests=len(cases), cases=body))
    return path


PASS = '<testcase classname="tests.t" name="test_a[nfs-v3]" time="1.5"/>'
FAIL = '<testcase classname="tests.t" name="test_b[nfs-v3]" time="2.0"><failure message="x">x</failure></testcase>'
SKIP = '<testcase classname="tests.t" name="test_c[nfs-v3]" time="0"><skipped message="y">y</skipped></testcase>'


def test_an_inner_run_passes_only_if_tests_ran_and_none_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's verdict on an inner run (no VM needed): failures, no report, or nothing run all fail it,
    and so does a skip when CI requires the shared filesystems."""
    counts, cases = read_junit(_report(tmp_path, [PASS, SKIP], skipped=1))
    assert counts == {"tests": 2, "failures": 0, "errors": 0, "skipped": 1}
    assert cases == [("tests.t::test_a[nfs-v3]", "passed", 1.5), ("tests.t::test_c[nfs-v3]", "skipped", 0.0)]
    monkeypatch.setenv("FSSESSION_REQUIRE_SHARED", "0")
    assert InnerRun(["v3"], 0, "", 1.0, counts, cases).problems() == []
    monkeypatch.setenv("FSSESSION_REQUIRE_SHARED", "1")
    assert InnerRun(["v3"], 0, "", 1.0, counts, cases).problems() == [
        "FSSESSION_REQUIRE_SHARED=1 and inner tests were skipped: tests.t::test_c[nfs-v3]"
    ]
    monkeypatch.setenv("FSSESSION_REQUIRE_SHARED", "0")

    counts, cases = read_junit(_report(tmp_path, [PASS, FAIL], failures=1))
    assert ("tests.t::test_b[nfs-v3]", "failed", 2.0) in cases
    assert InnerRun(["v3"], 1, "", 1.0, counts, cases).problems() == ["inner pytest exited with 1"]

    counts, cases = read_junit(_report(tmp_path, [SKIP], skipped=1))
    assert InnerRun(["v3"], 0, "", 1.0, counts, cases).problems() == ["no test ran"]

    run = InnerRun(["v3", "v3ac1"], 0, "", 1.0, counts, [*cases, ("t::test_d[nfs-v3ac1-x]", "passed", 4.0)])
    assert run.summary().splitlines()[-2:] == ["  v3: 1 tests, 0 s", "  v3ac1: 1 tests, 4 s"]

    counts, cases = read_junit(tmp_path / "missing.xml")
    assert counts == {} and cases == []
    assert InnerRun(["v3"], 0, "", 1.0, counts, cases).problems() == [
        "no JUnit report (the run did not get as far as writing one)"
    ]
