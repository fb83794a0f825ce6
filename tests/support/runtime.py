"""What the lab's users run: a Python interpreter they may execute and a root-owned copy of the code.

The suite's interpreter often lives where other users cannot reach it (a
pyenv build under /root, a checkout in a 0700 home).  The lab therefore
gives its users:

* the suite's own interpreter when they can run it, otherwise a copy of the
  base installation (binary, libpython, standard library) kept under
  ``/tmp/fss-lab/runtime-<hash>`` and reused by later runs;
* copies of the third-party packages the snippets import (Flask and its
  dependencies, filelock) in the same cached runtime;
* a fresh copy of ``fssession/`` and ``tests/`` per pytest session, so every
  lab process runs exactly the code under test and none of it is writable by
  the attacker.

Everything is owned by root and not writable by anyone else; a lab directory
that someone else created (or a symlink in its place) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LAB_ROOT", "Runtime", "build_runtime", "secure_dir"]

LAB_ROOT = "/tmp/fss-lab"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# What lab snippets import besides the standard library (Flask apps, the lock).
PACKAGES = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker", "filelock")
_STDLIB_SKIP = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


@dataclass
class Runtime:
    """How to start a lab Python process: the interpreter and the environment it needs."""

    python: str
    env: dict[str, str] = field(default_factory=dict)
    code: str = ""  # root of the copied fssession/ and tests/ (first on PYTHONPATH)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A minimal environment for a lab process (nothing of the suite's own leaks in)."""
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/nonexistent",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.code, self.env.get("PYTHONPATH", "")) if p)
        env.update(extra or {})
        return env


def secure_dir(path: str, mode: int = 0o755) -> str:
    """Create *path* as root's directory, or accept it only if it is one already (never a symlink)."""
    with contextlib.suppress(FileExistsError):  # then it must pass the checks below
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise RuntimeError(f"{path} exists but is not a directory that only root can change; remove it")
    os.chmod(path, mode)
    return path


def _can_run(argv_prefix: list[str], python: str, env: dict[str, str]) -> bool:
    # The same interpreter build as the suite's, not merely one that starts:
    # compiled extension modules and the code under test must see one Python.
    check = f"import hashlib, json, ssl, sys; sys.exit(sys.version != {sys.version!r})"
    probe = [*argv_prefix, python, "-c", check]
    result = subprocess.run(probe, env=env, capture_output=True, cwd="/", timeout=120, check=False)
    return result.returncode == 0


def _package_sources() -> list[Path]:
    """The installed files of PACKAGES: their package directories and dist-info metadata."""
    found: list[Path] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue  # not installed: the tests that need it say so themselves
        origin = Path(spec.origin)
        found.append(origin.parent if spec.submodule_search_locations else origin)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        meta = getattr(dist, "_path", None)
        if isinstance(meta, Path) and meta.is_dir():
            found.append(meta)
    return found


def _runtime_key(sources: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    digest.update(os.path.realpath(sys.executable).encode())
    for src in sources:
        digest.update(str(src).encode())
        digest.update(str(src.stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def _copy_interpreter(dest: Path) -> None:
    """Copy the base installation's binary, libpython and standard library into *dest*."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(binary, dest / "bin" / version)
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        (dest / "lib").mkdir(exist_ok=True)
        shutil.copy2(Path(libdir) / soname, dest / "lib" / soname)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(
        stdlib,
        dest / "lib" / version,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in _STDLIB_SKIP or n.startswith("config-")],
    )


def _build_cached(key: str, sources: list[Path], copy_python: bool) -> Path:
    final = Path(LAB_ROOT) / f"runtime-{key}{'-py' if copy_python else ''}"
    if final.is_dir() and not final.is_symlink() and (final / ".complete").exists():
        return final
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=LAB_ROOT))
    try:
        if copy_python:
            _copy_interpreter(work)
        site = work / "site"
        site.mkdir()
        for src in sources:
            if src.is_dir():
                shutil.copytree(src, site / src.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, site / src.name)
        (work / ".complete").touch()
        _make_readable(work)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _make_readable(root: Path) -> None:
    """Everyone may read and execute, only root may write (the attacker must not change what others run)."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
        del dirnames  # walked by os.walk itself


def copy_code(dest_parent: str) -> str:
    """A root-owned copy of the code under test (fssession/ and tests/), precompiled; returns its root."""
    dest = tempfile.mkdtemp(prefix="code-", dir=dest_parent)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for part in ("fssession", "tests"):
        shutil.copytree(REPO_ROOT / part, Path(dest) / part, ignore=ignore)
    subprocess.run([sys.executable, "-m", "compileall", "-q", dest], capture_output=True, check=False)
    _make_readable(Path(dest))
    return dest


def build_runtime(probe_as: list[str]) -> Runtime:
    """The interpreter and packages lab users can run; *probe_as* runs a command as an unprivileged lab user."""
    secure_dir(LAB_ROOT)
    sources = _package_sources()
    key = _runtime_key(sources)
    plain = Runtime(sys.executable)
    copy_python = not _can_run(probe_as, sys.executable, plain.environ())
    cached = _build_cached(key, sources, copy_python)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(cached / "site")], capture_output=True, check=False)
    _make_readable(cached / "site")
    env = {"PYTHONPATH": str(cached / "site")}
    python = sys.executable
    if copy_python:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        python = str(cached / "bin" / version)
        env |= {"PYTHONHOME": str(cached), "LD_LIBRARY_PATH": str(cached / "lib")}
    runtime = Runtime(python, env)
    if not _can_run(probe_as, python, runtime.environ()):
        raise RuntimeError(f"the lab users cannot run {python} even from the copy in {cached}")
    return runtime
