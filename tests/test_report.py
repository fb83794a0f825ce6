"""`fssession stats` and `fssession inspect`: counts that match the store, and clear verdicts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fssession import MkdirLock, SessionStore
from fssession.layout import LOCK_SUFFIX, TMP_INFIX
from fssession.report import store_stats

KEY = "test-secret-key-0123456789"
REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fssession.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, **(env or {})),
    )


def test_stats_count_what_is_there(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY, max_age=600)
    sids = [store.create({"i": i, "pad": "x" * i}) for i in range(50)]
    old = time.time() - 7200
    for sid in sids[:7]:
        os.utime(store._path(sid), (old, old))  # idle for two hours: expired
    with MkdirLock(store._path(sids[10]) + LOCK_SUFFIX):
        (Path(store._path(sids[11] + "")).parent / ("a" * 64 + TMP_INFIX + "x")).write_bytes(b"")
        (tmp_path / "ab").mkdir(exist_ok=True)
        (tmp_path / "ab" / "notes.txt").write_text("foreign")
        stats = store_stats(tmp_path)
        out = _cli("stats", str(tmp_path), "--json")
    assert (stats.sessions, stats.expired, stats.locks_held, stats.temp_files, stats.foreign) == (50, 7, 1, 1, 1)
    assert stats.idle_age[">=1d"] == 0 and stats.idle_age["<1h"] == 0 and stats.idle_age["<1d"] == 7
    assert stats.bytes == sum(os.path.getsize(store._path(s)) for s in sids)
    assert stats.per_directory_max >= 1 and stats.directories >= 20
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sessions"] == 50
    table = _cli("stats", str(tmp_path))
    assert table.returncode == 0 and "50 (7 expired" in table.stdout


def test_inspect_verdicts(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, secret_key=KEY)
    sid = store.create({"user": "alice"})
    env = {"FSSESSION_SECRET_KEY": KEY}
    live = _cli("inspect", str(tmp_path), sid, "--json", env=env)
    assert live.returncode == 0, live.stderr
    report = json.loads(live.stdout)
    assert report["state"] == "live" and report["data"] == {"user": "alice"} and report["generation"] == 1
    keyfile = tmp_path.parent / "keys"
    keyfile.write_text(f"another-key-0123456789abc\n{KEY}\n")
    assert _cli("inspect", str(tmp_path), sid, "--key-file", str(keyfile)).returncode == 0, "any listed key verifies"
    wrong = _cli("inspect", str(tmp_path), sid, env={"FSSESSION_SECRET_KEY": "wrong-key-0123456789abcdef"})
    assert wrong.returncode == 1 and "FAILED verification" in wrong.stderr
    no_key = _cli("inspect", str(tmp_path), sid, env={"FSSESSION_SECRET_KEY": ""})
    assert no_key.returncode == 2 and "FSSESSION_SECRET_KEY" in no_key.stderr
    assert _cli("inspect", str(tmp_path), "../../etc/passwd", env=env).returncode == 2
    with MkdirLock(store._path(sid) + LOCK_SUFFIX):
        locked = json.loads(_cli("inspect", str(tmp_path), sid, "--json", env=env).stdout)
    assert f"pid {os.getpid()}" in locked["locked_by"]
    old = time.time() - 7200
    os.utime(store._path(sid), (old, old))
    expired = _cli("inspect", str(tmp_path), sid, env=env)
    assert expired.returncode == 1 and "expired" in expired.stderr
    store.delete(sid)
    missing = _cli("inspect", str(tmp_path), sid, env=env)
    assert missing.returncode == 1 and "no such session" in missing.stderr


def test_stats_of_a_million_sessions_stays_under_100_mb(tmp_path: Path) -> None:
    """Streaming: peak memory of `stats` over 1,000,000 session files (on tmpfs, for speed)."""
    shm = Path("/dev/shm")
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize if shm.is_dir() else 0
    if free < 6 << 30:
        pytest.skip(f"needs /dev/shm with 6 GiB free for a million files (has {free >> 20} MiB)")
    root = Path(tempfile.mkdtemp(prefix="fss-million-", dir=shm))
    try:
        store = SessionStore(root, secret_key=KEY)
        blob = Path(store._path(store.create({"user": "alice"}))).read_bytes()
        for bucket in range(256):
            (root / f"{bucket:02x}").mkdir(exist_ok=True)
        names = (hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32).hexdigest() for i in range(1_000_000))
        for name in names:
            bucket = root / name[:2]
            fd = os.open(bucket / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, blob)
            os.close(fd)
        code = (
            "import json, sys; from fssession.report import store_stats; s = store_stats(sys.argv[1]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
            "print(json.dumps({'sessions': s.sessions, 'peak_kb': int(hwm)}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=600, cwd=REPO, check=True
        )
        result = json.loads(out.stdout)
        print(f"stats over {result['sessions']:,} sessions: peak {result['peak_kb'] / 1024:.1f} MB")
        assert result["sessions"] == 1_000_001
        assert result["peak_kb"] < 100 * 1024
    finally:
        shutil.rmtree(root, ignore_errors=True)
