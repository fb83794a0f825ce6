"""The ``fssession`` command as an operator meets it: a real process, its exit codes, its output.

Every test runs the command as a subprocess (``python -m fssession``, or the
installed console script), with stdin not a terminal, as cron would.
Hostile names are planted in real stores and must come out escaped.  Tests
that switch users need root (they create real accounts) and skip otherwise.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fssession import SessionStore
from fssession.layout import REAPER_LOCK, StoreLayout
from tests.ops.helpers import LocalUsers, as_user, fssession, python_as, root_with_python_for
from tests.support import KEY, REPO

ENV = {"FSSESSION_SECRET_KEY": KEY}
ESC = "\x1b"


def _store(path: Path, **options: object) -> SessionStore:
    return SessionStore(path, secret_key=KEY, **options)  # type: ignore[arg-type]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------ the package and the command
def test_import_fssession_loads_no_cli_machinery() -> None:
    """A web worker that imports fssession pays for no argparse, json or multiprocessing."""
    code = (
        "import sys, fssession, fssession.store, fssession.lock\n"
        "print(sorted(m for m in ('argparse', 'json', 'multiprocessing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_version_names_the_installed_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "fssession"
    if not script.exists():
        pytest.skip("the console script is not installed (pip install -e .)")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    from fssession import __version__

    assert out.stdout.startswith(f"fssession {__version__}\n")
    command = re.search(r"^  command: (.+)$", out.stdout, re.M)
    assert command is not None and command.group(1) == str(script)
    assert f"python:  {sys.executable}" in out.stdout
    # What it prints works from cron's PATH, by absolute path.
    _store(tmp_path)
    again = subprocess.run(
        [command.group(1), "reap", str(tmp_path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert again.returncode == 0 and again.stdout == again.stderr == ""


def test_python_dash_m(tmp_path: Path) -> None:
    _store(tmp_path).create()
    for module in ("fssession", "fssession.cli"):
        out = subprocess.run(
            [sys.executable, "-m", module, "stats", str(tmp_path), "--json"], capture_output=True, text=True, cwd=REPO
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["sessions"] == 1
    version = fssession("--version")
    assert version.returncode == 0 and version.stdout.startswith("fssession ")


# ------------------------------------------------------------------ exit codes
def test_reap_exit_codes(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _store(store_dir).create()
    assert fssession("reap", str(store_dir)).returncode == 0
    missing = fssession("reap", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such store directory" in missing.stderr
    (tmp_path / "plain").mkdir()
    plain = fssession("reap", str(tmp_path / "plain"))
    assert plain.returncode == 2 and "not an fssession store" in plain.stderr
    bad = fssession("reap", str(store_dir), "--grace", "0.5")
    assert bad.returncode == 2 and "grace (0.5) must be at least twice fs_slack" in bad.stderr
    assert fssession("reap", str(store_dir), "--jobs", "0").returncode == 2
    assert fssession("reap").returncode == 2  # argparse: PATH missing
    for proc in (missing, plain, bad):
        _no_traceback(proc)


def test_reap_reports_a_wedged_coordination_lock(tmp_path: Path) -> None:
    """A reaper lock held with a recorded lease of a year: exit 1 with a message, never a silent "busy"."""
    _store(tmp_path).create()
    lock = tmp_path / REAPER_LOCK
    assert fssession("reap", str(tmp_path)).returncode == 0  # creates the lock directory (free)
    (free,) = os.listdir(lock)
    year_ms = 365 * 86400 * 1000
    os.rename(lock / free, lock / f"o,{'ab' * 8},0,{year_ms},1,1,elsewhere,,evil{ESC}[2Jhost")
    out = fssession("reap", str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "recorded lease of 3.1536e+07 s" in out.stderr
    assert ESC not in out.stdout + out.stderr and "\\x1b" in out.stderr


def test_stats_and_inspect_exit_codes(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    sid = store.create({"n": 1})
    assert fssession("stats", str(tmp_path / "s")).returncode == 0
    assert fssession("stats", str(tmp_path / "nope")).returncode == 2
    assert fssession("inspect", str(tmp_path / "s"), input=sid, env=ENV).returncode == 0
    gone = fssession("inspect", str(tmp_path / "s"), input="A" * 43, env=ENV)
    assert gone.returncode == 1 and "no such session" in gone.stderr
    bad_id = fssession("inspect", str(tmp_path / "s"), input="../../etc/passwd", env=ENV)
    assert bad_id.returncode == 2 and "Traceback" not in bad_id.stderr
    no_key = fssession("inspect", str(tmp_path / "s"), input=sid, env={"FSSESSION_SECRET_KEY": ""})
    assert no_key.returncode == 2 and "FSSESSION_SECRET_KEY" in no_key.stderr


# ------------------------------------------------------------------ pipes and terminals
@pytest.mark.parametrize("command", ["stats", "inspect"])
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, command: str) -> None:
    """``fssession stats | head``: the reader closed the pipe before the command wrote."""
    store = _store(tmp_path)
    sid = store.create({f"k{i}": "v" * 50 for i in range(3000)})  # a long inspect listing
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything was written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fssession", command, str(tmp_path)],
            input=sid,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=dict(os.environ, **ENV),
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; (exit code, what it showed)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fssession", *args], stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, cwd=REPO
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return proc.wait(timeout=120), shown.decode(errors="replace")


def test_reap_is_quiet_under_cron_and_talks_on_a_terminal(tmp_path: Path) -> None:
    _store(tmp_path).create()
    quiet = fssession("reap", str(tmp_path))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    code, shown = _on_a_terminal("reap", str(tmp_path))
    assert code == 0 and "removed 0 of 0 expired sessions (1 seen" in shown
    code, shown = _on_a_terminal("reap", str(tmp_path), "-q")
    assert code == 0 and shown == ""


# ------------------------------------------------------------------ inspect: where the id comes from
def test_inspect_takes_the_id_from_stdin_env_or_argv_with_a_warning(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sid = store.create({"user": "alice"})
    from_stdin = fssession("inspect", str(tmp_path), "--json", input=sid + "\nignored\n", env=ENV)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["data"] == {"user": "alice"} and from_stdin.stderr == ""
    from_env = fssession("inspect", str(tmp_path), "--json", env={**ENV, "FSSESSION_SID": sid})
    assert from_env.returncode == 0 and json.loads(from_env.stdout)["state"] == "live"
    from_argv = fssession("inspect", str(tmp_path), sid, env=ENV)
    assert from_argv.returncode == 0
    assert "warning" in from_argv.stderr and "visible to every local user" in from_argv.stderr
    nothing = fssession("inspect", str(tmp_path), env=ENV)
    assert nothing.returncode == 2 and "no session id" in nothing.stderr


def test_inspect_an_id_that_starts_with_a_dash(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sid = store.create({"n": 0})
    while not sid.startswith("-"):  # about 1 id in 64
        store.delete(sid)
        sid = store.create({"n": 0})
    out = fssession("inspect", str(tmp_path), "--json", input=sid, env=ENV)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "live"
    # On argv it needs the usual "--" (and draws the warning).
    argv = fssession("inspect", str(tmp_path), "--", sid, env=ENV)
    assert argv.returncode == 0 and "warning" in argv.stderr


def test_inspect_shows_iso_times_with_their_age(tmp_path: Path) -> None:
    store = _store(tmp_path, max_age=600)
    sid = store.create({"n": 1})
    table = fssession("inspect", str(tmp_path), input=sid, env=ENV)
    assert table.returncode == 0
    created = re.search(r"^ +created  (\S+) \((\d+) s ago\)$", table.stdout, re.M)
    assert created is not None, table.stdout
    assert abs(time.mktime(time.strptime(created.group(1), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone - time.time()) < 60
    assert re.search(r"^ +expires  \S+Z \(in (9|10) min\)$", table.stdout, re.M), table.stdout
    assert not re.search(r"\d{10}\.\d", table.stdout), "no epoch floats"
    data = json.loads(fssession("inspect", str(tmp_path), "--json", input=sid, env=ENV).stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created"])


# ------------------------------------------------------------------ hostile names
def test_reap_v_escapes_a_planted_file_name(tmp_path: Path) -> None:
    _store(tmp_path).create()
    bucket = tmp_path / "ab"
    bucket.mkdir(exist_ok=True)
    (bucket / f"x{ESC}]0;owned{chr(7)}\nerror: FAKE LOG LINE").write_text("planted")
    out = fssession("reap", str(tmp_path), "-v")
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stderr and chr(7) not in out.stderr
    assert "\\x1b]0;owned\\x07\\nerror: FAKE LOG LINE" in out.stderr
    assert not any(line.startswith("error: FAKE") for line in out.stderr.splitlines())
    stats = fssession("stats", str(tmp_path), "-v")
    assert stats.returncode == 0 and ESC not in stats.stderr and "\\x1b]0;owned" in stats.stderr


def test_inspect_escapes_a_planted_lock_holder(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sid = store.create({"n": 1})
    layout = StoreLayout(tmp_path)
    name = layout.name_for(sid)
    layout.close()
    bucket = tmp_path / name[:2]
    (free,) = [n for n in os.listdir(bucket) if n.startswith(name + ".f,")]
    value = free.split(",", 1)[1]
    hostile = f"{name}.o,{'cd' * 8},0,30000,4242,1,feedface,{value},evil{ESC}[31m{chr(7)}host"
    os.rename(bucket / free, bucket / hostile)
    out = fssession("inspect", str(tmp_path), input=sid, env=ENV)
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stdout and chr(7) not in out.stdout
    assert "pid 4242 on evil\\x1b[31m\\x07host (another host)" in out.stdout
    as_json = fssession("inspect", str(tmp_path), "--json", input=sid, env=ENV)
    assert json.loads(as_json.stdout)["lock"] == "held"


# ------------------------------------------------------------------ read-only and unreadable stores
def test_a_read_only_store_is_named_and_called_not_writable(readonly_fs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"  # the bind mount's source: write the store there, see it read-only
    _store(src).create()
    out = fssession("reap", str(readonly_fs))
    assert out.returncode == 2
    assert out.stderr.strip() == f"fssession reap: {readonly_fs}: not writable (read-only filesystem)"
    init = fssession("init", str(readonly_fs / "new"), "--owner", str(os.geteuid()))
    assert init.returncode == 2 and "not writable" in init.stderr and ".stage-" not in init.stderr
    # Reading still works.
    assert fssession("stats", str(readonly_fs)).returncode == 0


def test_an_unreadable_bucket_is_reported_not_a_traceback(local_users: LocalUsers, shared_tmp: Path) -> None:
    store_dir = shared_tmp / "store"
    _store(store_dir).create()
    bucket = next(p for p in store_dir.iterdir() if len(p.name) == 2)
    uid = local_users.uid(local_users.web1)
    shutil.chown(store_dir, uid)
    shutil.chown(store_dir / ".fssession-naming-key", uid)
    out = as_user(uid, "stats", str(store_dir))
    _no_traceback(out)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 entries could not be read" in out.stderr and "unreadable  1" in out.stdout
    verbose = as_user(uid, "stats", str(store_dir), "-v")
    assert f"{bucket}: Permission denied" in verbose.stderr


# ------------------------------------------------------------------ root switches to the store's owner
def test_root_reaps_as_the_store_owner(local_users: LocalUsers, shared_tmp: Path) -> None:
    store_dir = shared_tmp / "store"
    _store(store_dir).create()
    uid = local_users.uid(local_users.web1)
    subprocess.run(["chown", "-R", str(uid), str(store_dir)], check=True)
    assert not (store_dir / REAPER_LOCK).exists()
    out = root_with_python_for(uid, "reap", str(store_dir))
    assert out.returncode == 0, out.stderr
    assert (store_dir / REAPER_LOCK).stat().st_uid == uid, "what the reaper created belongs to the store's owner"
    shutil.rmtree(store_dir / REAPER_LOCK)
    out = root_with_python_for(uid, "reap", str(store_dir), "--allow-root")
    assert out.returncode == 0, out.stderr
    assert (store_dir / REAPER_LOCK).stat().st_uid == 0, "--allow-root keeps root"


def test_root_will_not_switch_to_an_owner_who_cannot_run_it(local_users: LocalUsers, shared_tmp: Path) -> None:
    """A root install in a private place (venv or pipx under /root): refused with the reason, not a traceback."""
    uid = local_users.uid(local_users.web1)
    try:
        readable = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, user=uid).returncode == 0
    except PermissionError:
        readable = False
    if readable:
        pytest.skip(f"{sys.executable} is readable by every user here")
    store_dir = shared_tmp / "store"
    _store(store_dir).create()
    subprocess.run(["chown", "-R", str(uid), str(store_dir)], check=True)
    out = fssession("reap", str(store_dir))
    assert out.returncode == 2, out.stderr
    assert "cannot read this fssession's Python files" in out.stderr and "--allow-root" in out.stderr
    assert not (store_dir / REAPER_LOCK).exists(), "nothing was touched"


def test_root_refuses_a_root_store_others_can_write(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _store(tmp_path / "s").create()
    os.chmod(tmp_path / "s", 0o770)
    for command in ("reap", "stats", "doctor"):
        out = fssession(command, str(tmp_path / "s"))
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "belongs to root but others may write it" in out.stderr
    inspect = fssession("inspect", str(tmp_path / "s"), input="A" * 43, env=ENV)
    assert inspect.returncode == 2 and "belongs to root" in inspect.stderr
    assert fssession("stats", str(tmp_path / "s"), "--allow-root").returncode == 0


def test_root_inspects_and_counts_as_the_owner(local_users: LocalUsers, shared_tmp: Path) -> None:
    """After the switch, root can read only what the owner can: a root-only bucket is unreadable."""
    store_dir = shared_tmp / "store"
    store = _store(store_dir)
    sid = store.create({"user": "alice"})
    uid = local_users.uid(local_users.web1)
    subprocess.run(["chown", "-R", str(uid), str(store_dir)], check=True)
    assert root_with_python_for(uid, "inspect", str(store_dir), input=sid, env=ENV).returncode == 0
    (store_dir / "00").mkdir(mode=0o700)  # root's, inside the owner's store
    out = root_with_python_for(uid, "stats", str(store_dir))
    assert out.returncode == 1 and "1 entries could not be read" in out.stderr
    assert fssession("stats", str(store_dir), "--allow-root").returncode == 0


# ------------------------------------------------------------------ init
def test_init_creates_checks_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "store"
    if os.geteuid() == 0:
        refused = fssession("init", str(path))
        assert refused.returncode == 2 and "--owner" in refused.stderr and not path.exists()
        owner = ["--owner", "root"]
    else:
        owner = []
    made = fssession("init", str(path), *owner)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"created store {path}:")
    key = path / ".fssession-naming-key"
    assert (path.stat().st_mode & 0o7777, key.stat().st_mode & 0o777) == (0o700, 0o400)
    again = fssession("init", str(path), *owner)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    other = fssession("init", str(path), *owner, "--mode", "2770")
    assert other.returncode == 2 and "set up differently" in other.stderr and "mode 0700 (wanted 2770)" in other.stderr
    forced = fssession("init", str(path), *owner, "--mode", "2770", "--force")
    assert forced.returncode == 0 and "reset directory, naming key" in forced.stdout
    assert (path.stat().st_mode & 0o7777, key.stat().st_mode & 0o777) == (0o2770, 0o440)
    # The store works for the library afterwards.
    store = _store(path)
    assert store.load(store.create({"n": 1})) == {"n": 1}
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes").write_text("x")
    busy = fssession("init", str(tmp_path / "busy"), *owner)
    assert busy.returncode == 2 and "not empty" in busy.stderr


def test_init_for_a_group_of_web_users(local_users: LocalUsers, shared_tmp: Path) -> None:
    """Root creates the store for web1 and the shared group; web2 (another user of the group) can use it."""
    path = shared_tmp / "store"
    made = fssession("init", str(path), "--owner", local_users.web1, "--group", local_users.group)
    assert made.returncode == 0, made.stderr
    st, key = path.stat(), (path / ".fssession-naming-key").stat()
    web1 = local_users.uid(local_users.web1)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (web1, local_users.gid, 0o2770)
    assert (key.st_uid, key.st_gid, key.st_mode & 0o777) == (web1, local_users.gid, 0o440)
    code = (
        "import sys; from fssession import SessionStore as S; "
        f"s = S(sys.argv[1], secret_key='{KEY}', file_mode=0o660, dir_mode=0o770); "
        "sid = sys.argv[2] if len(sys.argv) > 2 else s.create({'by': 'web2'}); "
        "print(sid); print(s.load(sid))"
    )
    created = python_as(local_users.uid(local_users.web2), "-c", code, str(path))
    assert created.returncode == 0, created.stderr
    sid = created.stdout.splitlines()[0]
    loaded = python_as(web1, "-c", code, str(path), sid)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[1] == "{'by': 'web2'}"
    users = f"{local_users.web1},{local_users.web2}"
    doctor = root_with_python_for(web1, "doctor", str(path), "--json", "--uid", users)
    checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["permissions"]["status"] == "ok" and checks["store"]["status"] == "ok", checks
