"""Starting, stopping and killing the demo's web nodes, each a simulated host where the machine allows.

A simulated host (``scripts/testbed/hostsim``: own hostname and PID
namespace) makes a node's locks foreign to the other nodes, as on separate
machines: a dead node's lock is then freed only by its lease running out.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools import REPO

from . import node as node_process
from .config import NODE_NAMES, SECRET_ENV

HOSTSIM = REPO / "scripts" / "testbed" / "hostsim"


def hostsim_works() -> tuple[bool, str]:
    """Whether nodes can run as simulated hosts here; else why not."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "needs root (namespaces)"
    if not all(shutil.which(tool) for tool in ("unshare", "setpriv", "bash")):
        return False, "unshare, setpriv or bash is missing"
    try:
        probe = subprocess.run(
            [str(HOSTSIM), "demo-probe", "--", "hostname"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"hostsim did not run: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != "demo-probe":
        return False, f"hostsim failed: {probe.stderr.strip()[-200:]}"
    return True, ""


def _die_with_parent() -> None:
    """In the child: SIGKILL when the demo dies, whatever kills it (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


@dataclass
class Node:
    """One running web node."""

    name: str
    path: Path
    proc: subprocess.Popen[str]
    port: int = 0
    pid: int = 0  # as the node sees it (in a simulated host, its own PID namespace)
    host: str = ""
    alive: bool = True

    @property
    def url(self) -> str:
        """Where the node serves."""
        return f"http://127.0.0.1:{self.port}/"


def start_node(name: str, path: Path, peers_file: Path, secret: str, simulate: bool, timeout: float = 30.0) -> Node:
    """Start one node and wait for it to say which port it serves."""
    return launch(node_process.command(name, path, peers_file), name, path, secret, simulate, timeout)


def launch(argv: list[str], name: str, path: Path, secret: str, simulate: bool, timeout: float) -> Node:
    """Run *argv* as node *name* (a simulated host if asked) and wait for its ``PORT`` line."""
    if simulate:
        argv = [str(HOSTSIM), name, "--", *argv]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, SECRET_ENV: secret},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )
    node = Node(name, path, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if line.startswith("PORT "):
            _, port, _, pid, _, host = line.split()
            node.port, node.pid, node.host = int(port), int(pid), host
            return node
        if not ready or not line:
            stop_node(node)
            raise RuntimeError(f"{name} did not start (exit status {proc.poll()}); see its errors above")


def stop_node(node: Node, sig: int = signal.SIGTERM) -> None:
    """Stop a node (SIGTERM, then SIGKILL if it lingers); a simulated host's whole namespace goes with it."""
    if node.proc.poll() is None:
        node.proc.send_signal(sig)
        try:
            node.proc.wait(5)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
    node.alive = False


def wait_port_closed(port: int, timeout: float = 10.0) -> bool:
    """Wait until nothing accepts connections on *port* (a killed host's processes die a moment after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.02)
    return False


@dataclass
class Cluster:
    """The demo's nodes, named :data:`NODE_NAMES`, over one session directory; :meth:`stop` ends them all."""

    secret: str
    simulate: bool
    nodes: list[Node] = field(default_factory=list)
    control: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fssession-demo-ctl-")))

    @property
    def peers_file(self) -> Path:
        """The nodes' names and URLs, for each page's links (local and private, unlike the session directory)."""
        return self.control / "nodes.json"

    def start(self, views: list[Path]) -> None:
        """Start the nodes, spread over *views* (mounts of one directory), then tell them about each other."""
        for i, name in enumerate(NODE_NAMES):
            self.nodes.append(start_node(name, views[i % len(views)], self.peers_file, self.secret, self.simulate))
        self.peers_file.write_text(json.dumps([{"name": n.name, "url": n.url} for n in self.nodes]))

    def where(self, node: Node) -> str:
        """Where *node* runs, as the report says it: its host and own PID, or its PID here."""
        return f"host {node.host}, pid {node.pid}" if self.simulate else f"pid {node.proc.pid}"

    def survivors(self) -> list[Node]:
        """The nodes not stopped or killed."""
        return [n for n in self.nodes if n.alive]

    def all_running(self) -> bool:
        """Whether every node's process is still there."""
        return all(n.proc.poll() is None for n in self.nodes)

    def kill(self, node: Node) -> float:
        """SIGKILL *node* (its whole simulated host); returns when it was sent (monotonic), once the process is gone."""
        os.kill(node.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        node.proc.wait()
        node.alive = False
        return killed

    def stop(self) -> None:
        """Stop every node and remove the control directory."""
        for n in self.nodes:
            stop_node(n)
        shutil.rmtree(self.control, ignore_errors=True)


def prepare_dirs(paths: list[Path]) -> tuple[list[Path], Callable[[], None]]:
    """The session directory, as seen through each given path, and how to remove it.

    With no path: a fresh temporary directory.  With paths: a fresh
    subdirectory of the first, which must appear under every other one
    (they are meant to be mounts of one export).
    """
    if not paths:
        tmp = Path(tempfile.mkdtemp(prefix="fssession-demo-"))
        return [tmp], lambda: shutil.rmtree(tmp, ignore_errors=True)
    for path in paths:
        if not path.is_dir():
            raise SystemExit(f"demo: --path {path} is not a directory")
    first = Path(tempfile.mkdtemp(prefix="fssession-demo-", dir=paths[0]))
    views = [first]
    try:
        views += [_wait_for_view(other / first.name, paths[0]) for other in paths[1:]]
    except SystemExit:
        shutil.rmtree(first, ignore_errors=True)
        raise
    return views, lambda: shutil.rmtree(first, ignore_errors=True)


def _wait_for_view(view: Path, first: Path, timeout: float = 30.0) -> Path:
    """*view*, once it shows the directory just made under *first* (another mount's cache may lag)."""
    deadline = time.monotonic() + timeout
    while not view.is_dir():
        if time.monotonic() > deadline:
            raise SystemExit(
                f"demo: {view.parent} does not show {view.name}: is it a mount of the same export as {first}?"
            )
        time.sleep(0.05)
    return view
