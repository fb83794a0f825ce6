"""Helpers for the lock tests: spawning lock workers, reading and checking hold intervals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.support import REPO

WORKER = str(REPO / "tests" / "support" / "lockworker.py")


def worker_argv(*args: object) -> list[str]:
    return [sys.executable, WORKER, *map(str, args)]


def spawn(
    argv: Sequence[str], *, lease: float = 5.0, fs_slack: float = 1.0, prefix: Sequence[str] = ()
) -> subprocess.Popen[str]:
    env = dict(os.environ, LOCK_LEASE=str(lease), LOCK_FS_SLACK=str(fs_slack), PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [*prefix, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The worker's next stdout line; fails with its stderr if it dies or stalls."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"worker gave no output in {timeout} s; stderr: {proc.communicate()[1][-2000:]}")
    line = proc.stdout.readline()
    if not line:
        err = proc.communicate()[1]
        raise AssertionError(f"worker exited ({proc.returncode}) without output; stderr: {err[-2000:]}")
    return line.strip()


def send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}): {err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def descendant_running(proc: subprocess.Popen[str], marker: str = "lockworker.py", timeout: float = 10.0) -> int:
    """The PID (in our namespace) of the worker under *proc*, which may be wrapped by hostsim/unshare."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack = [proc.pid]
        while stack:
            pid = stack.pop()
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd and b"unshare" not in cmd and b"bash" not in cmd.split(b"\0")[0]:
                return pid
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            stack.extend(int(c) for c in children)
        time.sleep(0.02)
    raise AssertionError("worker process not found under the wrapper")


def gate_take_over(before: Callable[[], object]) -> None:
    """In this (child) process, call *before* between judging a lock stale and acting on it.

    This is how tests force two contenders to act on the same judgement at
    once, or a slow one to act after a fast one.
    """
    from fssession import _lockcore

    original = _lockcore._take_over

    def gated(state: Any, stale: Any) -> Any:
        before()
        return original(state, stale)

    _lockcore._take_over = gated  # type: ignore[assignment]


def kill_hard(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


Interval = tuple[int, int, str]


def read_intervals(paths: Iterable[Path]) -> list[Interval]:
    out: list[Interval] = []
    for p in paths:
        for line in p.read_text().splitlines():
            fields = line.split()
            if len(fields) != 3 or len(fields[2]) != 16:
                continue  # the last line of a worker killed while writing it
            start, end, token = fields
            out.append((int(start), int(end), token))
    return out


def overlaps(intervals: list[Interval]) -> list[tuple[Interval, Interval]]:
    """Pairs of hold intervals that overlap in time (there must be none)."""
    bad = []
    ordered = sorted(intervals)
    latest: Interval | None = None
    for iv in ordered:
        if latest is not None and iv[0] < latest[1]:
            bad.append((latest, iv))
        if latest is None or iv[1] > latest[1]:
            latest = iv
    return bad
