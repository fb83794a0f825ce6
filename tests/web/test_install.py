"""What installing fssession gives: the extras, the sdist's contents, import errors naming the extra, quiet logging."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
from email.message import Message

import pytest

from tests.support import REPO

Built = tuple[list[str], list[str], Message, dict[str, set[str]]]
# What the suite imports or runs from outside the package, and what a user reads.
SHIPPED_TREES = ("fssession/", "tests/", "scripts/", "examples/", "docs/")
SHIPPED_FILES = ("LICENSE", "README.md", "NOTES.md", "setup.cfg", "pyproject.toml")


def tracked_files() -> list[str]:
    """The checkout's files (committed or not, but not ignored); skips outside a git checkout."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files the sdist must carry")
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [name for name in listing.stdout.splitlines() if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build the sdist from a clean copy of the checkout: (files the checkout has, files the sdist has, PKG-INFO)."""
    files = tracked_files()
    tree = tmp_path_factory.mktemp("tree")
    for name in files:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    out = tmp_path_factory.mktemp("dist")
    # The PEP 517 hook that pip and `python -m build --sdist` call.
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    build = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=tree, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stderr[-2000:]
    with tarfile.open(out / build.stdout.strip().splitlines()[-1]) as tar:
        names = [m.name.partition("/")[2] for m in tar.getmembers() if m.isfile()]
        top = tar.getmembers()[0].name.partition("/")[0]
        metadata = email.message_from_bytes(_read(tar, f"{top}/PKG-INFO"))
        extras = _extras(_read(tar, f"{top}/fssession.egg-info/requires.txt").decode())
    return files, names, metadata, extras


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None, name
    return member.read()


def _extras(requires_txt: str) -> dict[str, set[str]]:
    """{extra: project names} from setuptools' requires.txt (``[extra]`` sections of requirement lines)."""
    extras: dict[str, set[str]] = {}
    section = ""
    for line in requires_txt.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line:
            extras.setdefault(section, set()).add(re.split(r"[<>=!~;\[ ]", line)[0].lower())
    return extras


def test_the_sdist_carries_what_the_tests_import_and_run(sdist: Built) -> None:
    files, shipped, _, _ = sdist
    wanted = [name for name in files if name.startswith(SHIPPED_TREES) or name in SHIPPED_FILES]
    assert "scripts/testbed/hostsim" in wanted and "tests/web/helpers.py" in wanted  # the list is not empty
    missing = sorted(set(wanted) - set(shipped))
    assert not missing, f"the sdist lacks {missing}"


def test_the_license_and_the_extras_are_declared(sdist: Built) -> None:
    _, shipped, metadata, extras = sdist
    assert "LICENSE" in shipped and (REPO / "LICENSE").read_text().startswith("MIT License")
    assert metadata["License"] == "MIT" and metadata["License-File"] == "LICENSE"
    assert {"flask", "django", "asgi", "web", "test"} <= set(metadata.get_all("Provides-Extra") or [])
    assert extras[""] == {"filelock"}  # the one dependency of the store itself
    assert extras["flask"] == {"flask"}
    assert extras["django"] == {"django"}
    assert extras["asgi"] == {"starlette"}
    assert extras["web"] == {"flask", "django", "starlette"}
    assert {"httpx2", "gunicorn", "uvicorn"} <= extras["test"] and "httpx" not in extras["test"]


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("fssession.flask", "flask", "flask"),
        ("fssession.django", "django", "django"),
        ("fssession.asgi", "anyio", "asgi"),
    ],
)
def test_a_missing_framework_names_the_extra_to_install(module: str, missing: str, extra: str) -> None:
    # A None entry in sys.modules makes that import fail as if the package were not installed.
    code = f"import sys; sys.modules[{missing!r}] = None; import {module}"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError") and f"pip install 'fssession[{extra}]'" in last, last


def test_the_package_logs_nothing_in_an_app_that_configures_no_logging() -> None:
    """A warning from fssession (here: a malformed cookie) must not print through Python's last-resort handler."""
    code = (
        "import sys, tempfile\n"
        "from fssession import SessionStore\n"
        "from fssession.websession import Session\n"
        "store = SessionStore(tempfile.mkdtemp(), 'k' * 32)\n"
        "if sys.argv[1] == 'configured':\n"
        "    import logging; logging.basicConfig(format='%(name)s: %(message)s')\n"
        "Session(store, 'not-a-session-id').load()\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code, "bare"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    # The same run with logging configured shows the warning: the bare run had one to hide.
    loud = subprocess.run([sys.executable, "-c", code, "configured"], cwd=REPO, capture_output=True, text=True)
    assert "fssession.web: ignoring a malformed session cookie" in loud.stderr
