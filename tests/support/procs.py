"""Lab processes: real processes run as lab users, with a hang guard that never measures speed.

Every lab process runs in its own session (process group), so that it and
whatever it forks can be ended by its own id.  Waiting for one is guarded:

* a process (or any of its children) that sits blocked *opening a FIFO*
  for a few consecutive looks is hung for certain (no one will ever open the
  other end), and is reported at once as :class:`Hung`;
* anything else gets a generous wall-clock allowance (default 60 s, far above
  what the work takes on a loaded machine) before it is called hung.

Neither is an assertion of speed: a slow machine only waits longer.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["GUARD", "Hung", "LabProc", "Result"]

GUARD = 60.0  # seconds: a hang guard, never an expectation of speed
_FIFO_LOOKS = 4  # consecutive looks, half a second apart, blocked in a FIFO open
_FIFO_WAITS = ("wait_for_partner", "fifo_open")


class Hung(AssertionError):
    """A lab process did not finish: blocked on a FIFO, or still running past the guard."""


@dataclass(frozen=True)
class Result:
    """How a lab process ended."""

    rc: int
    out: str
    err: str

    def ok(self) -> Result:
        """Self, or an AssertionError showing the output if the process failed."""
        assert self.rc == 0, f"exit {self.rc}\nstdout: {self.out[-3000:]}\nstderr: {self.err[-3000:]}"
        return self


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return found


def _tree(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 512:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def _in_fifo_open(pid: int) -> bool:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/wchan", encoding="ascii", errors="replace") as f:
                if f.read().strip() in _FIFO_WAITS:
                    return True
            with open(f"{base}/stack", encoding="ascii", errors="replace") as f:
                if "fifo_open" in f.read():
                    return True
        except OSError:
            continue
    return False


class LabProc:
    """One running lab process: line-oriented stdin/stdout, stderr collected in a file."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        what: str,
        umask: int = 0o022,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.what = what
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in close()
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            cwd="/",
            start_new_session=True,
            umask=umask,
            preexec_fn=preexec,
        )
        self.pid = self.popen.pid
        self._buf = b""

    # ----------------------------------------------------------- talking
    def send(self, line: str) -> None:
        """Write one line to the process's stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def readline(self, timeout: float = GUARD) -> str:
        """The next line of stdout; :class:`Hung` if none comes (or the process ended without one)."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        fifo_looks = 0
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.kill()
                    raise Hung(f"{self.what}: ended without answering\n{self.stderr()[-3000:]}")
                self._buf += chunk
                continue
            fifo_looks = fifo_looks + 1 if self.blocked_on_fifo() else 0
            self._give_up_if_hung(fifo_looks, deadline)
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    # ----------------------------------------------------------- ending
    def finish(self, timeout: float = GUARD, stdin: str | None = None) -> Result:
        """Close stdin (after writing *stdin*), wait under the hang guard, return how it ended."""
        if self.popen.stdin is not None:
            try:
                if stdin:
                    self.popen.stdin.write(stdin.encode())
                self.popen.stdin.close()
            except BrokenPipeError:
                pass  # it ended (or closed its stdin) already; its exit status says how
            self.popen.stdin = None
        deadline = time.monotonic() + timeout
        fifo_looks = 0
        while True:
            try:
                out, _ = self.popen.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                fifo_looks = fifo_looks + 1 if self.blocked_on_fifo() else 0
                self._give_up_if_hung(fifo_looks, deadline)
        text = (self._buf + (out or b"")).decode(errors="replace")
        self._buf = b""
        return Result(self.popen.returncode, text, self.stderr())

    def blocked_on_fifo(self) -> bool:
        """Whether the process or one of its children is blocked opening a FIFO right now."""
        return any(_in_fifo_open(pid) for pid in _tree(self.pid))

    def _give_up_if_hung(self, fifo_looks: int, deadline: float) -> None:
        if fifo_looks >= _FIFO_LOOKS:
            self.kill()
            raise Hung(f"{self.what}: HUNG, blocked opening a FIFO\n{self.stderr()[-3000:]}") from None
        if time.monotonic() > deadline:
            self.kill()
            raise Hung(f"{self.what}: HUNG, still running after the hang guard\n{self.stderr()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        """Send *sig* to the process itself (not its group)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """End the process and everything in its process group (which we created for it)."""
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.pid, signal.SIGKILL)  # also whatever it forked and left behind
        self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self.popen.stdin = None
        self.popen.stdout = None

    def close(self) -> None:
        """Kill if still running and release the stderr file."""
        self.kill()
        self._err.close()
