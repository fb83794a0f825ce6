"""The end-to-end benchmark's nodes: three per backend over one session directory, and the directories themselves.

Nodes are started as the demo cluster starts its own (:mod:`tools.demo.cluster`):
each a process that dies with the benchmark, inside a simulated host (own
hostname and PID namespace) where the machine allows, reporting its port.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from tools.demo.cluster import Node, hostsim_works, launch, stop_node
from tools.demo.config import NODE_NAMES

from .e2e_node import command

START_TIMEOUT = 90.0  # a hang guard: Django's start-up on a loaded machine takes seconds


def start(backend: str, name: str, path: Path, secret: str, simulate: bool) -> Node:
    """Start one node of *backend* and wait for it to say which port it serves."""
    return launch(command(backend, name, path), name, path, secret, simulate, START_TIMEOUT)


class Cluster:
    """Three nodes per backend, each backend on a directory of its own, spread over *views* (mounts of one export)."""

    def __init__(self, views: list[Path], backends: list[str]) -> None:
        self.views, self.backends = views, backends
        self.simulate, why = hostsim_works()
        if not self.simulate:
            print(f"nodes run as plain processes (no simulated hosts: {why})", file=sys.stderr)
        self.secret = secrets.token_hex(32)
        self.nodes: dict[str, list[Node]] = {}
        self.dirs: list[Path] = []

    def __enter__(self) -> Cluster:
        try:
            for i, backend in enumerate(self.backends):
                first = self.views[0] / f"b{i}"
                first.mkdir()
                self.dirs.append(first)
                paths = [first, *(_wait_for(v / first.name) for v in self.views[1:])]
                self.nodes[backend] = [
                    start(backend, name, paths[j % len(paths)], self.secret, self.simulate)
                    for j, name in enumerate(NODE_NAMES)
                ]
        except BaseException:
            self.close()
            raise
        return self

    def ports(self, backend: str) -> list[int]:
        """The ports of *backend*'s nodes."""
        return [n.port for n in self.nodes[backend]]

    def close(self) -> None:
        """Stop every node; remove the session directories."""
        for nodes in self.nodes.values():
            for n in nodes:
                stop_node(n)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _wait_for(view: Path, timeout: float = 30.0) -> Path:
    """*view*, once this mount shows it (another mount's cache may lag)."""
    deadline = time.monotonic() + timeout
    while not view.is_dir():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{view} did not appear: are the mounts of one export?")
        time.sleep(0.05)
    return view


def views_for(fs: str, mounts: str | None, stack: ExitStack) -> list[Path]:
    """Directories of filesystem *fs* to run in (torn down by *stack*): tmpfs, or two sshfs mounts."""
    if fs == "tmpfs":
        work = Path(tempfile.mkdtemp(prefix="fss-bench-e2e-", dir="/dev/shm"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        return [work]
    if fs != "sshfs":
        raise SystemExit(f"e2e: unknown filesystem {fs!r} (tmpfs, sshfs)")
    if mounts:
        roots = [Path(m) for m in mounts.split(",")]
    else:
        from tests.fsbed import start_testbed, stop_testbed

        print("bringing up the sshfs testbed ...", file=sys.stderr)
        bed = start_testbed("sshfs")
        stack.callback(stop_testbed, "sshfs", bed.base)
        roots = list(bed.mounts)
    work = Path(tempfile.mkdtemp(prefix="fss-bench-e2e-", dir=roots[0]))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    return [work, *(_wait_for(r / work.name) for r in roots[1:])]
