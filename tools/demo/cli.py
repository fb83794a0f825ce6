"""The fssession cluster demo: three web nodes, one shared session directory, one user followed across them.

Run it through ``scripts/demo`` (which sets up the virtualenv).  It starts
three web nodes, real HTTP servers in their own processes on 127.0.0.1, each
wrapped in :class:`fssession.wsgi.SessionMiddleware` over the same session
directory: a fresh temporary directory on local disk by default, or
``--path DIR`` (a shared mount; give ``--path`` twice for two mounts of one
export, and the nodes are spread over both).  Where it can (root, Linux
namespaces) each node is a simulated host of its own (``scripts/testbed/
hostsim``: own hostname and PID namespace), so a node's locks are foreign to
the others and a dead node's lock is freed only by its lease running out.

Then a client logs in and sends a few hundred requests round-robin and
concurrently over the nodes (disjoint keys, and a counter incremented in the
session's locked block), one node is killed with SIGKILL while it holds the
session's lock in the middle of an increment, the other nodes carry on, and
the reaper removes the sessions of visitors that expired.  The report says
what each step showed; the exit status is 0 only if every check passed.

``--serve`` only starts the nodes and prints their URLs, for trying the
little page (login, counter, logout) in a browser.  ``--metrics``: each
node's store reports to a Prometheus observer, served at ``/metrics``
(``tools/metrics_plot.py`` samples them during a run and draws the plot in
docs/metrics.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from fssession import SessionStore

from .cluster import Cluster, hostsim_works, prepare_dirs
from .config import FS_SLACK, LEASE, LOCK_TIMEOUT, MAX_AGE, METRICS_ENV
from .report import Report
from .story import tell


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's options."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--path",
        type=Path,
        action="append",
        default=[],
        help="where to keep the sessions (default: a fresh temporary directory); "
        "twice for two mounts of one export (the nodes are spread over them)",
    )
    parser.add_argument("--serve", action="store_true", help="only start the nodes, print their URLs, serve until ^C")
    parser.add_argument(
        "--hosts",
        choices=["auto", "sim", "local"],
        default="auto",
        help="sim: each node a simulated host (hostsim; needs root); local: plain processes; auto: sim if possible",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="each node serves its store's Prometheus metrics at /metrics"
    )
    parser.add_argument("--requests", type=int, default=300, help="requests in the main burst (300)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    return parser.parse_args(argv)


def simulate_hosts(hosts: str) -> bool | None:
    """Whether the nodes run as simulated hosts; None if ``--hosts sim`` was asked for and cannot be had."""
    if hosts == "local":
        return False
    simulated, why_not = hostsim_works()
    if not simulated and hosts == "sim":
        print(f"demo: cannot simulate hosts: {why_not}", file=sys.stderr)
        return None
    return simulated


def print_setting(views: list[Path], shared: bool, simulated: bool) -> None:
    """The report's opening: where the sessions are, the store's and the cookie's settings, what a node is."""
    print("fssession cluster demo")
    print(f"   session directory: {', '.join(map(str, views))}" + ("" if shared else " (local disk)"))
    print(
        f"   store: lease {LEASE:g} s (short, for the demo: a dead node's lock is freed within seconds), "
        f"lock timeout {LOCK_TIMEOUT:g} s, max_age {MAX_AGE} s"
    )
    print("   cookie: HttpOnly, SameSite=Lax, Path=/, Max-Age; Secure is OFF (secure=False, set explicitly:")
    print("   plain http on 127.0.0.1). The default is Secure: in production serve over HTTPS.")
    if simulated:
        print("   each node is a simulated host (own hostname and PID namespace): its locks are foreign to the others")
    else:
        print("   the nodes are processes on this host (run as root for simulated hosts)")


def print_nodes(cluster: Cluster) -> None:
    """One line per node: its name, URL, where it runs and which view of the directory it uses."""
    for n in cluster.nodes:
        print(f"   {n.name}  {n.url}  ({cluster.where(n)}; sessions in {n.path})")


def serve(cluster: Cluster) -> int:
    """Keep the nodes up for a browser until ^C (or SIGTERM); 1 if a node stops by itself."""
    print("\nserving: open any of the URLs above in a browser; Ctrl-C to stop", flush=True)
    while cluster.all_running():
        time.sleep(0.5)
    print("demo: a node stopped", file=sys.stderr)
    return 1


def verdict(report: Report) -> int:
    """The report's last words and the exit status: "all good" and 0 only if every check passed."""
    if report.failures:
        print("\nSOMETHING WENT WRONG:")
        for failure in report.failures:
            print(f"   - {failure}")
        return 1
    print("\nall good")
    return 0


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: stop the nodes, remove the directory


def main(argv: list[str] | None = None) -> int:
    """Run the demo (or, with ``--serve``, only start the nodes); the exit status."""
    args = parse_args(argv)
    start = time.monotonic()
    simulated = simulate_hosts(args.hosts)
    if simulated is None:
        return 2
    views, remove = prepare_dirs(args.path)
    secret = secrets.token_hex(32)  # a fresh key per run, handed to the nodes by environment
    cluster = Cluster(secret, simulated)
    if args.metrics:
        os.environ[METRICS_ENV] = "1"  # the nodes inherit it
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        print_setting(views, bool(args.path), simulated)
        cluster.start(views)
        print_nodes(cluster)
        if args.metrics:
            print("   each node serves its store's metrics (Prometheus) at /metrics")
        if args.serve:
            return serve(cluster)
        store = SessionStore(views[0], secret, lease=LEASE, fs_slack=FS_SLACK)
        report = tell(cluster, store, args.requests, args.threads)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 0 if args.serve else 130  # ^C is how --serve is meant to end
    except Exception as exc:  # the story could not go on: say where, briefly
        print(f"\nSOMETHING WENT WRONG: the demo stopped: {exc!r}")
        return 1
    finally:
        cluster.stop()
        remove()
    print(f"   whole run: {time.monotonic() - start:.1f} s")
    return verdict(report)
