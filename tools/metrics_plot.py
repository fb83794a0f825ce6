"""The plot in docs/metrics.md: the cluster demo's metrics, sampled from its nodes while it runs.

``python -m tools.metrics_plot [--out docs/metrics.png] [DEMO ARGS...]``
runs ``python -m tools.demo --metrics`` (three web nodes whose stores report
to a :class:`~fssession.prometheus.PrometheusObserver`, served at
``/metrics``), scrapes every node four times a second as Prometheus would,
and draws, over the run: lock acquisitions per second (taken at once or
after a wait), the lock wait's median and 99th percentile from the
histogram's buckets, and the take-overs, stale reads and load retries
counted.  Extra arguments go to the demo (``--path A --path B`` for two
mounts of a shared filesystem).  Needs the ``dev`` extra (matplotlib) and
``prometheus``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from tools import REPO, python_module
from tools.demo.config import METRICS_ENV, NODE_NAMES

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NODE_LINE = re.compile(r"^\s+(web-\d+)\s+(http://127\.0\.0\.1:\d+/)\s")
STEP_LINE = re.compile(r"^(\d+)\. (.*)")
BUCKET = re.compile(r"fssession_lock_wait_seconds_bucket\{le=([^,}]+)\}")
INTERVAL = 0.25  # seconds between scrapes
WINDOW = 0.5  # seconds a rate or a quantile is taken over (Prometheus: rate(x[500ms]))

Sample = dict[str, float]  # "name{labels}" -> value


@dataclass
class Run:
    """What one demo run showed: per node, its scrapes over time; the story's steps, when they began."""

    start: float = field(default_factory=time.monotonic)
    scrapes: dict[str, list[tuple[float, Sample]]] = field(default_factory=dict)
    steps: list[tuple[float, str]] = field(default_factory=list)
    down: dict[str, float] = field(default_factory=dict)  # node -> when a scrape first failed
    output: list[str] = field(default_factory=list)

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.start

    def from_the_story(self) -> Run:
        """The same run, its times counted from half a second before the story's first step (not node start-up)."""
        origin = self.steps[0][0] - 0.5 if self.steps else 0.0
        return Run(
            self.start + origin,
            {n: [(t - origin, v) for t, v in s if t >= origin] for n, s in self.scrapes.items()},
            [(t - origin, text) for t, text in self.steps],
            {n: t - origin for n, t in self.down.items()},
            self.output,
        )


def scrape(url: str) -> Sample:
    """One node's metrics, flattened."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def sample(run: Run, name: str, url: str, done: threading.Event) -> None:
    """Scrape one node every :data:`INTERVAL` until *done* or until it stops answering (one thread per node)."""
    while not done.is_set():
        try:
            values = scrape(url)
        except OSError:
            run.down[name] = run.now()
            return
        run.scrapes.setdefault(name, []).append((run.now(), values))
        done.wait(INTERVAL)


def run_demo(demo_args: Sequence[str]) -> Run:
    """Run the demo with metrics on, sampling its nodes; its report is echoed to stderr."""
    run = Run()
    nodes: dict[str, str] = {}
    done = threading.Event()
    samplers: list[threading.Thread] = []
    proc = subprocess.Popen(
        python_module("tools.demo", "--metrics", *demo_args),
        cwd=REPO,
        env={**os.environ, METRICS_ENV: "1", "PYTHONUNBUFFERED": "1"},  # each line as it happens
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(line, end="", file=sys.stderr)
            run.output.append(line)
            if m := NODE_LINE.match(line):
                nodes[m[1]] = m[2]
            elif m := STEP_LINE.match(line):
                run.steps.append((run.now(), f"{m[1]}. {m[2]}"))
            if not samplers and len(nodes) == len(NODE_NAMES):
                samplers = [threading.Thread(target=sample, args=(run, *node, done)) for node in nodes.items()]
                for thread in samplers:
                    thread.start()
    finally:
        done.set()
        for thread in samplers:
            thread.join()
        status = proc.wait()
    if status != 0:
        raise SystemExit(f"metrics_plot: the demo failed (exit status {status}); see its report above")
    return run


# ------------------------------------------------------------------ series


def total(run: Run, key: str, times: list[float]) -> list[float]:
    """The sum over nodes of counter *key* at each of *times* (a dead node's last value counts)."""
    out = []
    for t in times:
        out.append(sum(_at(scrapes, t).get(key, 0.0) for scrapes in run.scrapes.values()))
    return out


def _at(scrapes: list[tuple[float, Sample]], t: float) -> Sample:
    """The last scrape at or before *t*."""
    found: Sample = {}
    for when, values in scrapes:
        if when > t:
            break
        found = values
    return found


def per_second(run: Run, key: str, times: list[float]) -> list[float]:
    """The rate of counter *key* (all nodes) over the :data:`WINDOW` before each of *times*."""
    now, before = total(run, key, times), total(run, key, [t - WINDOW for t in times])
    return [(a - b) / WINDOW for a, b in zip(now, before, strict=True)]


def wait_quantile(run: Run, q: float, times: list[float]) -> list[float]:
    """The lock wait's *q* quantile over the :data:`WINDOW` before each of *times*, as histogram_quantile does."""
    keys: dict[float, str] = {}
    for scrapes in run.scrapes.values():
        for _, values in scrapes:
            for key in values:
                if m := BUCKET.match(key):
                    keys[float(m[1])] = key
    bounds = sorted(keys)
    out = []
    for t in times:
        counts = [total(run, keys[b], [t])[0] - total(run, keys[b], [t - WINDOW])[0] for b in bounds]
        out.append(_quantile(q, bounds, counts))
    return out


def _quantile(q: float, bounds: list[float], cumulative: list[float]) -> float:
    """Prometheus' histogram_quantile on one window's bucket counts (NaN when nothing was observed)."""
    if not cumulative or cumulative[-1] <= 0:
        return float("nan")
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


# -------------------------------------------------------------------- plot


def plot(run: Run, out: Path) -> None:
    """Three panels over the run's time: lock acquisitions, lock waits, and the rarer events."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write a file
    import matplotlib.pyplot as plt

    end = max(when for s in run.scrapes.values() for when, _ in s)
    times = [i * INTERVAL for i in range(int(end / INTERVAL) + 1)]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(10, 8.5), height_ratios=(1, 1, 1))
    fig.suptitle("fssession cluster demo: 3 web nodes, one session directory (sampled from each node's /metrics)")

    acquired = per_second(run, "fssession_lock_wait_seconds_count", times)
    contended = per_second(run, "fssession_lock_contended_total", times)
    ax1.fill_between(times, 0, acquired, step="pre", alpha=0.35, label="taken at once")
    ax1.fill_between(times, 0, contended, step="pre", alpha=0.8, label="had to wait (lock busy)")
    ax1.set_ylabel("lock acquisitions / s")
    ax1.legend(loc="upper right", fontsize=8)

    count = per_second(run, "fssession_lock_wait_seconds_count", times)
    waited = per_second(run, "fssession_lock_wait_seconds_sum", times)
    mean = [w / c * 1000 if c else float("nan") for w, c in zip(waited, count, strict=True)]
    ax2.plot(times, mean, ":", drawstyle="steps-pre", label="mean")
    for q, style in ((0.5, "-"), (0.99, "--")):
        series = [v * 1000 for v in wait_quantile(run, q, times)]
        ax2.plot(times, series, style, drawstyle="steps-pre", label=f"p{round(q * 100)}")
    ax2.set_yscale("log")
    ax2.set_ylabel("lock wait (ms, log)")
    ax2.legend(loc="upper right", fontsize=8)

    for key, label in (
        ("fssession_lock_takeovers_total", "take-overs of a dead holder"),
        ("fssession_lock_timeouts_total", "lock timeouts"),
        ("fssession_stale_reads_total", "stale reads caught under the lock"),
        ("fssession_load_retries_total{reason=ENOENT}", "load retries (ENOENT)"),
        ("fssession_load_retries_total{reason=ESTALE}", "load retries (ESTALE)"),
    ):
        ax3.plot(times, total(run, key, times), drawstyle="steps-post", label=label)
    ax3.set_ylabel("count since start (all nodes)")
    ax3.set_xlabel("seconds since the story began")
    ax3.legend(loc="upper left", fontsize=8)

    caption = _mark(run, (ax1, ax2, ax3))
    fig.text(0.01, 0.005, textwrap.fill("Steps: " + caption, 170), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=110)


def _mark(run: Run, axes: Sequence[Axes]) -> str:
    """Vertical lines where the story's steps began and where a node stopped answering; the caption."""
    for t, text in run.steps:
        for i, ax in enumerate(axes):
            ax.axvline(t, color="grey", linewidth=0.8, linestyle=":")
            if i == 0:
                number = text.split(".")[0]
                ax.annotate(number, (t, 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="bottom", ha="center")
    last = max(when for scrapes in run.scrapes.values() for when, _ in scrapes)
    for name, t in run.down.items():
        if t < last - 1:  # gone while others still answered (at the end, every node stops)
            for ax in axes:
                ax.axvline(t, color="red", linewidth=0.8, linestyle="--")
            axes[-1].annotate(
                f"{name} gone", (t, 0.5), xycoords=("data", "axes fraction"), fontsize=8, color="red", rotation=90
            )
    return "; ".join(_short(text) for _, text in run.steps)


def _short(step: str, width: int = 80) -> str:
    return step if len(step) <= width else step[: width - 3].rstrip() + "..."


def main(argv: list[str] | None = None) -> int:
    """Run the demo, sample it, draw the plot."""
    parser = argparse.ArgumentParser(prog="python -m tools.metrics_plot", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "metrics.png")
    args, demo_args = parser.parse_known_args(argv)
    run = run_demo(demo_args)
    plot(run.from_the_story(), args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
