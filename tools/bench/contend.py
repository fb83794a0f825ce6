"""One session, P processes incrementing it (issue 14): every contender in :mod:`.incrementers`, side by side.

For each directory (default: local disk, /var/tmp, and tmpfs, /dev/shm), each
P in 2, 4, 8 and each contender, P forked processes increment one session's
``n`` for a fixed time, each increment a read, +1 and write under the
contender's lock.  Every increment records four readings of one clock
(``time.monotonic``, shared by all processes): when it was asked for, just
after its lock was taken, just before the lock was given back, and when the
call returned.  From them:

  * increments/s: increments finished within the run's time, over that time;
  * latency of one increment (asked -> returned): p50, p99, max;
  * handover gap: from one hold's "given back" to the next hold's "taken",
    over all holds in time order, and over the handovers to *another*
    process (the waiters); "switch %" is how many consecutive holds changed
    process.  A negative gap is two holds overlapping: counted as overlaps;
  * busiest %: the share of the increments that the busiest process did
    (100/P when the lock is fair; near 100 when one process keeps re-taking
    it and the others starve: their waits show in the max latency);
  * lost updates: increments done minus the session's final ``n``; a
    contender that loses any, overlaps or fails is reported incorrect, not
    ranked.

Each cell is the median of --repeats runs, the contenders interleaved within
each repeat so that the machine's noise hits them alike; ratios are to the
bare mkdir floor of the same run.

Usage: scripts/bench [--dir DIR ...] [--procs 2,4,8] [--seconds S] [--repeats R] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from .common import (
    default_json,
    fs_type,
    in_parallel,
    machine,
    percentile,
    save_results,
    scratch,
    table,
    wait_for_start,
)
from .incrementers import FLOOR, INCREMENTERS

METRICS = (
    "per_s", "p50_ms", "p99_ms", "max_ms", "gap_p50_us", "handover_p50_us", "handover_p99_us", "switch_pct",
    "busiest_pct",
)  # fmt: skip


def _worker(kind: str, root: str, key: str, seconds: float, start_at: float, out: Any) -> None:  # pragma: no cover
    """Increment for *seconds* from *start_at*; put the four clock readings of each as arrays, and any error."""
    inc = INCREMENTERS[kind](Path(root), key)
    readings = [array("d") for _ in range(4)]  # asked, taken, giving back, returned
    error = ""
    wait_for_start(start_at)
    end = start_at + seconds
    try:
        while time.monotonic() < end:
            asked = time.monotonic()
            taken, giving = inc.increment()
            for a, t in zip(readings, (asked, taken, giving, time.monotonic()), strict=True):
                a.append(t)
    except Exception as exc:  # reported in the table as a failure of this contender
        error = f"{type(exc).__name__}: {exc}"
    out.put(([a.tobytes() for a in readings], error, end))


def _doubles(raw: bytes) -> array[float]:
    a = array("d")
    a.frombytes(raw)
    return a


def run_once(directory: Path, kind: str, procs: int, seconds: float) -> dict[str, Any]:
    """One run of *procs* processes of contender *kind* on a fresh session: its figures."""
    with scratch(directory, "fss-bench-contend-") as root:
        key = INCREMENTERS[kind](root, None).key
        args = [(kind, str(root), key, seconds) for _ in range(procs)]
        results = in_parallel(_worker, args, timeout=seconds + 180)
        final = INCREMENTERS[kind](root, key).value()
    holds = [
        Hold(taken, giving, asked, returned, p)
        for p, (raw, _, _) in enumerate(results)
        for asked, taken, giving, returned in zip(*(_doubles(r) for r in raw), strict=True)
    ]
    errors = sorted({r[1] for r in results if r[1]})
    return figures(holds, final, seconds, results[0][2], errors)


class Hold(NamedTuple):
    """One increment's clock readings (sorted by when its lock was taken) and its process."""

    taken: float
    giving: float
    asked: float
    returned: float
    proc: int


def figures(holds: list[Hold], final: int, seconds: float, end: float, errors: list[str]) -> dict[str, Any]:
    """The figures of one run from its holds, the session's final n and the workers' errors."""
    holds.sort()
    latencies = [h.returned - h.asked for h in holds]
    gaps, handovers = [], []
    for before, after in itertools.pairwise(holds):
        gaps.append(after.taken - before.giving)
        if after.proc != before.proc:
            handovers.append(after.taken - before.giving)
    return {
        "done": len(holds),
        "lost": len(holds) - final,
        "overlaps": sum(1 for g in gaps if g < 0),
        "errors": errors,
        "per_s": sum(1 for h in holds if h.returned <= end) / seconds,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies, default=float("nan")) * 1e3,
        "gap_p50_us": percentile(gaps, 0.5) * 1e6,
        "handover_p50_us": percentile(handovers, 0.5) * 1e6,
        "handover_p99_us": percentile(handovers, 0.99) * 1e6,
        "switch_pct": 100 * len(handovers) / max(1, len(gaps)),
        "busiest_pct": 100 * max(Counter(h.proc for h in holds).values(), default=0) / max(1, len(holds)),
    }


def cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the repeats; lost updates and errors from every repeat."""
    out: dict[str, Any] = {m: round(statistics.median(r[m] for r in runs), 2) for m in METRICS}
    out["lost"] = [r["lost"] for r in runs]
    out["overlaps"] = [r["overlaps"] for r in runs]
    out["done"] = [r["done"] for r in runs]
    out["errors"] = sorted({e for r in runs for e in r["errors"]})
    out["correct"] = not out["errors"] and not any(out["lost"]) and not any(out["overlaps"])
    return out


def bench_dir(directory: Path, procs_list: list[int], seconds: float, repeats: int, kinds: list[str]) -> dict[str, Any]:
    """Every contender at every P on one directory, repeats interleaved."""
    by_procs: dict[str, dict[str, Any]] = {}
    for procs in procs_list:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for rep in range(repeats):
            for kind in kinds:
                print(f"  {directory} P={procs} repeat {rep + 1}/{repeats}: {kind}", file=sys.stderr, flush=True)
                runs[kind].append(run_once(directory, kind, procs, seconds))
        by_procs[str(procs)] = {k: cell(v) for k, v in runs.items()}
    return {"dir": str(directory), "fs": fs_type(directory), "procs": by_procs}


# ------------------------------------------------------------------- report


HEADERS = [
    "contender", "increments/s", "x floor", "p50 ms", "p99 ms", "max ms",
    "gap p50 µs", "handover p50 / p99 µs", "switch %", "busiest %", "lost", "overlaps", "verdict",
]  # fmt: skip


def report(r: dict[str, Any], with_verdicts: bool = True) -> str:
    """One directory's tables (one per P), correct contenders ranked by increments/s; the targets if asked."""
    lines = []
    for procs, row in r["procs"].items():
        floor = row.get(FLOOR, {}).get("per_s") or float("nan")
        ranked = sorted((k for k in row if row[k]["correct"]), key=lambda k: -row[k]["per_s"])
        rows = [_row(k, row[k], floor, ranked) for k in [*ranked, *(k for k in row if k not in ranked)]]
        lines += [f"#### {r['fs']} ({r['dir']}), P = {procs}", "", *table(HEADERS, rows), ""]
    if with_verdicts:
        lines += ["Issue 14's contention targets:", "", *verdicts(r), ""]
    return "\n".join(lines)


PEERS = ("beaker (flock)", "SoftFileLock", "lockfile MkdirLockFile", "flufl.lock")  # issue 14's "every correct peer"


def verdicts(r: dict[str, Any]) -> list[str]:
    """Issue 14's contention targets for one directory: ahead of every correct peer, p99 no worse than the floor's."""
    lines = []
    for procs, row in r["procs"].items():
        ours = row.get("fssession")
        if ours is None:
            continue
        peers = [p for p in PEERS if p in row and row[p]["correct"]]
        best = max(peers, key=lambda p: row[p]["per_s"], default=None)
        ahead = ours["correct"] and (best is None or ours["per_s"] > row[best]["per_s"])
        vs = f"{ours['per_s']:,.0f}/s vs {best} {row[best]['per_s']:,.0f}/s" if best else "no correct peer"
        lines.append(f"- {r['fs']}, P={procs}: ahead of every correct peer: {vs}: **{'met' if ahead else 'missed'}**")
        if FLOOR in row:
            p99, fl = ours["p99_ms"], row[FLOOR]["p99_ms"]
            lines.append(
                f"- {r['fs']}, P={procs}: p99 no worse than the floor's: {p99:.1f} vs {fl:.1f} ms: "
                f"**{'met' if p99 <= fl else 'missed'}** (max {ours['max_ms']:.0f} vs {row[FLOOR]['max_ms']:.0f} ms, "
                f"busiest process {ours.get('busiest_pct', float('nan')):.0f} % of the increments)"
            )
    return lines


def _row(kind: str, v: dict[str, Any], floor: float, ranked: list[str]) -> list[object]:
    why = v["errors"] or [w for w, n in (("lost updates", v["lost"]), ("overlapping holds", v["overlaps"])) if any(n)]
    verdict = f"#{ranked.index(kind) + 1}" if kind in ranked else "INCORRECT: " + "; ".join(why)
    return [
        kind,
        f"{v['per_s']:,.0f}",
        f"{v['per_s'] / floor:.2f}",
        f"{v['p50_ms']:.2f}",
        f"{v['p99_ms']:.1f}",
        f"{v['max_ms']:.0f}",
        f"{v['gap_p50_us']:.0f}",
        f"{v['handover_p50_us']:.0f} / {v['handover_p99_us']:.0f}",
        f"{v['switch_pct']:.0f}",
        f"{v.get('busiest_pct', float('nan')):.0f}",
        "/".join(str(x) for x in v["lost"]),
        "/".join(str(x) for x in v["overlaps"]),
        verdict,
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every directory asked for; print each one's tables; write the JSON."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, action="append", help="directory to run in (repeatable)")
    parser.add_argument("--procs", default="2,4,8", help="process counts, comma-separated")
    parser.add_argument("--seconds", type=float, help="length of one run (default 3; --quick 0.5)")
    parser.add_argument("--repeats", type=int, help="repeats per cell, interleaved (default 3; --quick 1)")
    parser.add_argument("--only", help="contenders to run, comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short, one repeat, P=2 only")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench-results/)")
    args = parser.parse_args(argv)
    procs = [2] if args.quick and args.procs == "2,4,8" else [int(p) for p in args.procs.split(",")]
    seconds = args.seconds or (0.5 if args.quick else 3.0)
    repeats = args.repeats or (1 if args.quick else 3)
    kinds = args.only.split(",") if args.only else list(INCREMENTERS)
    info = machine()
    results = []
    for d in args.dir or [Path("/var/tmp"), Path("/dev/shm")]:
        results.append(bench_dir(d, procs, seconds, repeats, kinds))
        print(report(results[-1]), flush=True)
    save_results(args.json or default_json("contend", args.quick), "contend", sys.argv[1:], info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
