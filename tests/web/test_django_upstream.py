"""Django's own session tests (``SessionTestsMixin``, ``SessionMiddlewareTests``) against ``fssession.django``.

Django's wheel ships no tests, so the source distribution of the *installed*
Django version is fetched once with pip (into ``<venv>/fssession-upstream``)
and its ``tests/sessions_tests`` package is run in a process of its own
(``tests/web/django_upstream.py``: it needs settings of its own).  Where it cannot
be fetched (no network), the test is skipped with the reason, or fails under
``FSSESSION_REQUIRE_SHARED=1`` (CI), as the testbeds do.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django
import pytest

from tests.support import REPO
from tests.support.fixtures import unavailable
from tests.web.django_upstream import SKIPS

PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q"]
UPSTREAM_CLASSES = ("SessionTestsMixin", "SessionMiddlewareTests")

pytestmark = pytest.mark.slow


def _cache_root() -> Path:
    prefix = Path(sys.prefix)
    if os.access(prefix, os.W_OK):
        return prefix / "fssession-upstream"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fssession-upstream"


def django_session_tests() -> Path:
    """A directory holding ``sessions_tests/`` of the installed Django's source, fetched once."""
    version = django.__version__
    home = _cache_root() / f"django-{version}"
    if (home / "sessions_tests" / "tests.py").is_file():
        return home
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fetch = subprocess.run(
                [*PIP_DOWNLOAD, "-d", tmp, f"django=={version}"],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            unavailable(f"fetching Django {version}'s source distribution timed out")
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if fetch.returncode != 0 or not sdists:
            unavailable(f"cannot fetch Django {version}'s source distribution: {fetch.stderr.strip()[-600:]}")
        staging = Path(tmp) / "sessions_tests"
        staging.mkdir()
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                parent, _, name = member.name.rpartition("/")
                if member.isfile() and parent.endswith("/tests/sessions_tests") and name.endswith(".py"):
                    source = tar.extractfile(member)
                    assert source is not None
                    (staging / name).write_bytes(source.read())  # by base name only: nothing lands elsewhere
        if not (staging / "tests.py").is_file():
            unavailable(f"Django {version}'s source distribution has no tests/sessions_tests/tests.py")
        home.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(home / "sessions_tests")
        except OSError:
            if not (home / "sessions_tests" / "tests.py").is_file():  # another run put it there first
                raise
    return home


def upstream_test_names(tests_py: Path) -> set[str]:
    """The test methods the upstream classes define (what the run must have run)."""
    tree = ast.parse(tests_py.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in UPSTREAM_CLASSES:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                    names.add(item.name)
    return names


def test_django_session_backend_tests_pass_on_this_engine(tmp_path: Path) -> None:
    tests_dir = django_session_tests()
    expected = upstream_test_names(tests_dir / "sessions_tests" / "tests.py")
    assert len(expected) > 50, "the upstream classes were not found: has Django moved its tests?"
    # A copy, so that bytecode and anything the run writes stay out of the cache.
    work = tmp_path / "upstream"
    shutil.copytree(tests_dir, work)
    run = subprocess.run(
        [sys.executable, "-m", "tests.web.django_upstream", "--tests", str(work), "--path", str(tmp_path / "sessions")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    problems = summary["failures"] + summary["errors"]
    assert not problems, "\n\n".join(f"{name}\n{trace}" for name, trace in problems)
    skipped = {test_id.rpartition(".")[2]: reason for test_id, reason in summary["skipped"]}
    assert skipped == {name: reason for name, reason in SKIPS.items() if name in expected}, (
        "only the documented differences may be skipped"
    )
    # Every upstream test was run (a skipped one counts: unittest runs it to skip it).
    assert summary["ran"] == len(expected), (summary["ran"], len(expected))
    assert not summary["unexpected_successes"]
