"""End to end (issue 14): the 3-node demo cluster under N concurrent clients, next to Flask-Session and Django.

For each filesystem (tmpfs, /dev/shm; sshfs, two mounts of one export from
``scripts/testbed/sshfs-up``, the nodes spread over them as over two hosts)
and each backend in :mod:`.e2e_apps`, three nodes (the demo's threaded
server; simulated hosts, as in the demo, where the machine allows) serve one
session directory.  N clients (N = 1, 4, 16, 32), in groups of
--per-session sharing a session (one browser's parallel requests), send
requests round-robin over the nodes, 90 % reads and 10 % writes of a key of
their own (:mod:`.e2e_load`).  Reported per cell (median of --repeats,
backends interleaved): requests/s, p50 and p99 latency of a request, errors,
and keys lost (acknowledged with 200, missing from the session at the end).

Usage: scripts/bench e2e [--fs tmpfs,sshfs] [--clients 1,4,16,32] [--seconds S] [--repeats R]
                         [--backends A,B] [--mounts M1,M2] [--quick] [--json OUT]
--mounts uses two existing mounts of one export instead of starting the sshfs testbed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from array import array
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .common import default_json, in_parallel, machine, percentile, save_results, table
from .e2e_apps import BACKENDS, COOKIES
from .e2e_cluster import Cluster, views_for
from .e2e_load import new_session, request

WRITE_SHARE = 0.1
SETTLE = 1.5  # seconds after a run on a mount before the lost-key check: more than fs_slack, so its caches caught up


def run_cell(cluster: Cluster, backend: str, clients: int, per_session: int, seconds: float) -> dict[str, Any]:
    """One run: *clients* clients on fresh sessions of *backend* for *seconds*; its figures."""
    ports = cluster.ports(backend)
    groups = [(g, new_session(ports[g % len(ports)], COOKIES[backend])) for g in range(-(-clients // per_session))]
    per_group = min(clients, per_session)
    procs = min(4, len(groups))  # a group's clients share a cookie jar, so they live in one process
    shares = [groups[i::procs] for i in range(procs)]
    args = [(ports, COOKIES[backend], share, per_group, seconds, WRITE_SHARE) for share in shares]
    results = in_parallel(_client_process, args, timeout=seconds + 120)
    if len(cluster.views) > 1:
        time.sleep(SETTLE)
    return _figures(results, ports, backend, seconds)


def _client_process(*args: Any) -> None:  # pragma: no cover (a forked worker)
    from .e2e_load import client_process

    client_process(*args)


def _figures(results: list[Any], ports: list[int], backend: str, seconds: float) -> dict[str, Any]:
    """Throughput, latencies, errors and lost keys from what the client processes saw."""
    done, latency, writes, statuses = array("d"), array("d"), array("b"), array("h")
    acked: dict[int, set[str]] = {}
    cookies: dict[int, str] = {}
    end = results[0][2]
    for seen, boxes, _ in results:
        cookies.update(boxes)
        for g, d, lat, w, st, keys in seen:
            done.frombytes(d)
            latency.frombytes(lat)
            writes.frombytes(w)
            statuses.frombytes(st)
            acked.setdefault(g, set()).update(keys)
    lost = sum(len(acked[g] - _keys(ports[0], COOKIES[backend], cookies[g])) for g in acked)
    ok = [i for i, s in enumerate(statuses) if s == 200]
    return {
        "requests_per_s": sum(1 for i in ok if done[i] <= end) / seconds,
        "p50_ms": percentile([latency[i] for i in ok], 0.5) * 1e3,
        "p99_ms": percentile([latency[i] for i in ok], 0.99) * 1e3,
        "write_p99_ms": percentile([latency[i] for i in ok if writes[i]], 0.99) * 1e3,
        "requests": len(statuses),
        "errors": len(statuses) - len(ok),
        "written": sum(len(k) for k in acked.values()),
        "lost": lost,
    }


def _keys(port: int, cookie: str, value: str) -> set[str]:
    """The keys of the session whose cookie is *value*, read through the node on *port*."""
    import json

    from .e2e_load import CookieBox

    status, body, _ = request(port, "GET", "/keys", CookieBox(cookie, value))
    return set(json.loads(body)) if status == 200 else set()


METRICS = ("requests_per_s", "p50_ms", "p99_ms", "write_p99_ms")


def bench_fs(fs: str, views: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Every backend at every client count on one filesystem, repeats and backends interleaved."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {b: {str(n): [] for n in args.clients} for b in args.backends}
    with Cluster(views, args.backends) as cluster:
        for rep in range(args.repeats):
            for n in args.clients:
                for b in args.backends:
                    print(f"  {fs} repeat {rep + 1}/{args.repeats}, {n} clients: {b}", file=sys.stderr, flush=True)
                    runs[b][str(n)].append(run_cell(cluster, b, n, args.per_session, args.seconds))
        simulated = cluster.simulate
    cells = {b: {n: _median(r) for n, r in by_n.items()} for b, by_n in runs.items()}
    return {"fs": fs, "views": [str(v) for v in views], "simulated_hosts": simulated, "cells": cells}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {m: round(statistics.median(r[m] for r in runs), 2) for m in METRICS}
    for k in ("requests", "errors", "written", "lost"):
        out[k] = [r[k] for r in runs]
    return out


def report(r: dict[str, Any]) -> str:
    """One filesystem's table: a row per backend and client count."""
    rows = []
    for b, by_n in r["cells"].items():
        for n, v in by_n.items():
            lost = "/".join(map(str, v["lost"])) + " of " + "/".join(map(str, v["written"]))
            rows.append([b, n, f"{v['requests_per_s']:,.0f}", f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}",
                         f"{v['write_p99_ms']:.1f}", "/".join(map(str, v["errors"])), lost])  # fmt: skip
    head = ["backend", "clients", "requests/s", "p50 ms", "p99 ms", "write p99 ms", "errors", "keys lost of written"]
    return "\n".join([f"#### {r['fs']}", "", *table(head, rows), ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, with --quick's and the defaults filled in."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fs", default="tmpfs,sshfs", help="filesystems: tmpfs, sshfs (comma-separated)")
    parser.add_argument("--clients", help="client counts (default 1,4,16,32; --quick 4)")
    parser.add_argument("--per-session", type=int, default=4, help="clients sharing one session (default 4)")
    parser.add_argument("--seconds", type=float, help="length of one run (default 3; --quick 1.5)")
    parser.add_argument("--repeats", type=int, help="repeats per cell (default 3; --quick 1)")
    parser.add_argument("--backends", help="backends, comma-separated (default: all)")
    parser.add_argument("--mounts", help="two existing mounts of one export to use as sshfs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in (args.clients or ("4" if args.quick else "1,4,16,32")).split(",")]
    args.seconds = args.seconds or (1.5 if args.quick else 3.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.backends = args.backends.split(",") if args.backends else list(BACKENDS)
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; known: {list(BACKENDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every filesystem asked for; print each table; write the JSON (the plot reads it)."""
    args = parse_args(argv)
    info = machine()
    results = []
    for fs in args.fs.split(","):
        with ExitStack() as stack:
            views = views_for(fs, args.mounts, stack)
            results.append(bench_fs(fs, views, args))
        print(report(results[-1]), flush=True)
    out = args.json or default_json("e2e", args.quick)
    save_results(out, "e2e", ["e2e", *sys.argv[1:]], info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
