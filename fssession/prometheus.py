"""Prometheus metrics: the store's events as counters and histograms, and store statistics for node_exporter.

Two ways in, for two kinds of process:

* a **web process** attaches a :class:`PrometheusObserver` to its store and
  serves the registry as it serves any other ``prometheus_client`` metric::

      from fssession import SessionStore
      from fssession.prometheus import PrometheusObserver

      metrics = PrometheusObserver()          # one per process, shared by its stores
      store = SessionStore(path, secret, on_event=metrics)

* a **cron job** (``fssession stats``, ``fssession reap``) has no scrape
  endpoint: :func:`write_textfile` writes its statistics in the text format
  that node_exporter's textfile collector reads, replacing the file
  atomically.

Labels take values from small fixed sets only (a reason, a step, an
outcome), never a session id, a file name or a holder's name: every series
exists from the start, at zero.  Needs ``prometheus_client``:
``pip install 'fssession[prometheus]'``.  See docs/metrics.md for what each
metric means and what to alert on.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # say which extra brings it, not just which module is missing
    raise ModuleNotFoundError(
        f"fssession.prometheus needs prometheus_client ({exc.name} is not installed): "
        "pip install 'fssession[prometheus]'",
        name=exc.name,
    ) from exc

from .events import Event
from .reaper import ReapStats

__all__ = [
    "LOCK_WAIT_BUCKETS",
    "REAP_DURATION_BUCKETS",
    "PrometheusObserver",
    "write_textfile",
]

# A lock is normally free: the first guess (one rename) takes it in tens of
# microseconds on local disk and about a round trip (~1 ms) on NFS.  When it
# is held, the wait is a holder's request (milliseconds to a second) or, for
# a dead holder, a whole lease (30 s by default) up to the lock timeout.
LOCK_WAIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# A reaper run: under a second for a small store on local disk, minutes for
# a million sessions over NFS.
REAP_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# The fixed label values; anything else an event says is counted as "other".
LOAD_RETRY_REASONS = ("ESTALE", "ENOENT", "torn")
LOCK_LOST_STEPS = {"renewal": "renewal", "the commit": "commit", "release": "release", "removal": "removal"}
REAP_RESULTS = ("done", "busy")
_OTHER = "other"

# What a reaper run counts (ReapStats' counters), with each counter's help.
REAP_COUNTS = {
    "directories": "Buckets swept by reaper runs",
    "sessions_seen": "Sessions looked at by reaper runs",
    "expired": "Sessions found expired by reaper runs",
    "removed": "Expired sessions removed by reaper runs",
    "in_use": "Expired-looking sessions left alone because they were held, touched or changed since",
    "stale_locks": "Dead or frozen holders' session locks taken over by reaper runs",
    "temp_files": "Abandoned temp files removed by reaper runs",
    "orphans": "Lock markers without a session removed by reaper runs",
    "litter": "Abandoned lock stages and clock probes removed by reaper runs",
    "nfs_pending": "NFS silly-renamed files seen (still open somewhere) by reaper runs",
    "owner_entries": "Owner-index entries whose session was gone, pruned by reaper runs",
    "garbage": "Foreign or unreadable files seen (left alone) by reaper runs",
    "errors": "Errors met by reaper runs",
}


class PrometheusObserver:
    """An ``on_event`` observer that keeps ``prometheus_client`` metrics of what the store does.

    *registry* is where the metrics are registered (None: the default
    registry, which ``prometheus_client.start_http_server`` and
    ``make_wsgi_app`` serve); *namespace* prefixes every name.  A registry
    holds each name once: build one observer per process and give it to
    every store of that process.  Calls are thread-safe (the metrics lock
    themselves) and cost a dictionary look-up and a counter increment.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "fssession") -> None:
        reg = REGISTRY if registry is None else registry
        ns = namespace

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=reg)

        self.lock_wait = Histogram(
            "lock_wait_seconds",
            "Seconds from asking for a session lock to holding it (acquisitions that succeeded)",
            namespace=ns,
            registry=reg,
            buckets=LOCK_WAIT_BUCKETS,
        )
        self.lock_contended = counter("lock_contended", "Lock acquisitions whose first try failed (the lock was busy)")
        self.lock_timeouts = counter("lock_timeouts", "Lock acquisitions given up after the caller's timeout")
        self.lock_takeovers = counter("lock_takeovers", "Locks taken over from a dead or frozen holder")
        self.lock_lost = counter("lock_lost", "Holders that found their lock taken over, by step", ("step",))
        self.stale_reads = counter(
            "stale_reads", "Reads under the lock that found a version older than the last commit (read again)"
        )
        self.load_retries = counter("load_retries", "Session file reads retried, by reason", ("reason",))
        self.rollbacks_refused = counter("rollbacks_refused", "Files older than their cookie's generation refused")
        self.tampered = counter("tampered_files", "Session files that failed verification")
        self.reap_runs = counter(
            "reaper_runs", "Reaper runs, by result (busy: another reaper held the store)", ("result",)
        )
        # "reaper_*": the runs in this process, added up.  The textfile's
        # "reap_*" are gauges of cron's last run; one name, one meaning.
        self.reap_duration = Histogram(
            "reaper_run_seconds",
            "Seconds a reaper run in this process took (runs that swept)",
            namespace=ns,
            registry=reg,
            buckets=REAP_DURATION_BUCKETS,
        )
        self.reap_counts = {key: counter(f"reaper_{key}", doc) for key, doc in REAP_COUNTS.items()}
        # Every labelled series exists from the start: rate() and absent-data
        # alerts need a zero before the first event.
        for step in {*LOCK_LOST_STEPS.values(), _OTHER}:
            self.lock_lost.labels(step)
        for reason in (*LOAD_RETRY_REASONS, _OTHER):
            self.load_retries.labels(reason)
        for result in REAP_RESULTS:
            self.reap_runs.labels(result)
        self._handlers: dict[str, Callable[[Event], None]] = {
            "lock_acquired": self._lock_acquired,
            "lock_takeover": lambda e: self.lock_takeovers.inc(),
            "lock_timeout": lambda e: self.lock_timeouts.inc(),
            "lock_lost": lambda e: self.lock_lost.labels(LOCK_LOST_STEPS.get(e.detail, _OTHER)).inc(),
            "stale_read": lambda e: self.stale_reads.inc(),
            "load_retry": lambda e: self.load_retries.labels(
                e.detail if e.detail in LOAD_RETRY_REASONS else _OTHER
            ).inc(),
            "rollback_refused": lambda e: self.rollbacks_refused.inc(),
            "tampered": lambda e: self.tampered.inc(),
            "reap_run": self._reap_run,
        }

    @property
    def handled(self) -> frozenset[str]:
        """The event names this observer turns into metrics."""
        return frozenset(self._handlers)

    def __call__(self, event: Event) -> None:
        """Count *event* (an event this version does not know is ignored)."""
        handler = self._handlers.get(event.name)
        if handler is not None:
            handler(event)

    def _lock_acquired(self, event: Event) -> None:
        self.lock_wait.observe(max(0.0, event.seconds))
        if event.detail == "waited":
            self.lock_contended.inc()

    def _reap_run(self, event: Event) -> None:
        if event.detail == "busy":
            self.reap_runs.labels("busy").inc()
            return
        self.reap_runs.labels("done").inc()
        self.reap_duration.observe(max(0.0, event.seconds))
        for key, value in event.values.items():
            metric = self.reap_counts.get(key)
            if metric is not None and value > 0:
                metric.inc(value)


# ----------------------------------------------------------------- textfile

# node_exporter's textfile collector reads only *.prom files, so a temp file
# (hidden, no .prom suffix) is never read half-written.  One older than this
# was left by a writer killed mid-write: the next writer removes it.
STALE_TEMP_AGE = 3600.0

# Help for the statistics we know, per kind; other numeric keys get a generic line.
_STORE_HELP = {
    "sessions": "Session files in the store",
    "bytes": "Bytes of session files in the store",
    "expired": "Expired sessions awaiting the reaper",
    "idle_age": "Sessions by time since last use",
    "locks_held": "Session locks held",
    "locks_stale": "Session locks held past their holder's lease (the next contender or reaper clears them)",
    "temp_files": "Temp files (writes in progress, or left by a crash)",
    "temp_files_orphaned": "Temp files older than an hour (the reaper removes them)",
    "orphans": "Lock markers without a session",
    "litter": "Abandoned lock stages and clock probes",
    "foreign": "Files that are not the store's (left alone)",
    "unreadable": "Files that could not be read as sessions",
    "directories": "Buckets holding sessions",
    "per_directory_min": "Fewest sessions in a bucket",
    "per_directory_max": "Most sessions in a bucket",
    "duration_seconds": "Seconds the count took",
    "last_run_timestamp_seconds": "When these statistics were taken (Unix time)",
}
_REAP_HELP = {
    "busy": "1 if another reaper held the store and this run did nothing",
    "complete": "1 if the run swept every bucket",
    "dry_run": "1 if the run only counted (removed nothing)",
    "taken_over": "1 if the run froze past its lease and another reaper took over",
    "directories": "Buckets the run swept",
    "sessions_seen": "Sessions the run looked at",
    "expired": "Expired sessions the run found",
    "removed": "Expired sessions the run removed (dry run: would have removed)",
    "in_use": "Expired-looking sessions left alone: held, touched or changed since",
    "stale_locks": "Dead or frozen holders' session locks the run took over",
    "temp_files": "Abandoned temp files the run removed",
    "orphans": "Lock markers without a session the run removed",
    "litter": "Abandoned lock stages and clock probes the run removed",
    "nfs_pending": "NFS silly-renamed files (still open somewhere), left alone",
    "owner_entries": "Owner-index entries whose session was gone, pruned by the run",
    "garbage": "Foreign or unreadable files, left alone",
    "errors": "Errors the run met",
    "duration_seconds": "Seconds the run took",
    "last_run_timestamp_seconds": "When the run ended (Unix time)",
}
_HELP = {"store": _STORE_HELP, "reap": _REAP_HELP}
_RENAMED = {"elapsed": "duration_seconds"}
_NESTED_LABEL = {"idle_age": "idle"}


class SupportsAsDict(Protocol):
    """Statistics that can say themselves as a mapping (``StoreStats``, ``ReapStats``)."""

    def as_dict(self) -> Mapping[str, Any]:
        """The statistics as plain data."""
        ...


def write_textfile(
    stats: Mapping[str, Any] | SupportsAsDict,
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    namespace: str = "fssession",
    labels: Mapping[str, str] | None = None,
    mode: int = 0o644,
    now: float | None = None,
) -> None:
    """Write *stats* to *path* in node_exporter's textfile-collector format, replacing it atomically.

    *stats* is ``StoreStats``, ``ReapStats`` or a mapping (their
    ``as_dict()``): every numeric value (booleans as 0/1) becomes a gauge
    ``<namespace>_<kind>_<key>``, a mapping of numbers one gauge with a
    label, anything else is left out; ``<kind>_last_run_timestamp_seconds``
    is *now* (default: the current time).  *kind* is ``"reap"`` for a
    :class:`~fssession.reaper.ReapStats`, else ``"store"``; pass it for a
    reap run's mapping.  *labels* (e.g. ``{"store": "main"}``) go on every
    sample: several stores on one host need them to stay apart.

    The file is written beside *path* under a hidden temporary name (never
    read by node_exporter, which reads ``*.prom``), synced, given *mode*
    and renamed over *path*: a reader sees the old file or the new one,
    never part of one, and a writer killed mid-write leaves the old one.
    *path*'s directory must exist (it is the operator's).
    """
    if kind is None:
        kind = "reap" if isinstance(stats, ReapStats) else "store"
    data = stats if isinstance(stats, Mapping) else stats.as_dict()
    registry = CollectorRegistry(auto_describe=False)
    snapshot = _Snapshot(data, f"{namespace}_{kind}", _HELP.get(kind, {}), dict(labels or {}))
    snapshot.data["last_run_timestamp_seconds"] = time.time() if now is None else now
    registry.register(snapshot)
    replace_atomically(os.fspath(path), generate_latest(registry), mode)


class _Snapshot(Collector):
    """The gauges of one set of statistics (a collector, so prometheus_client writes the format)."""

    def __init__(self, data: Mapping[str, Any], prefix: str, docs: Mapping[str, str], labels: dict[str, str]) -> None:
        self.data = dict(data)
        self.prefix = prefix
        self.docs = docs
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for key, value in self.data.items():
            name = _RENAMED.get(key, key)
            metric_name = f"{self.prefix}_{_metric_safe(name)}"
            if metric_name in seen:
                continue  # two keys that only differ in characters a metric name cannot have: the first wins
            family = self._family(key, name, metric_name, value)
            if family is not None:
                seen.add(metric_name)
                yield family

    def _family(self, key: str, name: str, metric_name: str, value: Any) -> GaugeMetricFamily | None:
        doc = self.docs.get(name, f"fssession statistic {key}")
        number = _number(value)
        if number is not None:
            family = GaugeMetricFamily(metric_name, doc, labels=list(self.labels))
            family.add_metric(list(self.labels.values()), number)
            return family
        if not isinstance(value, Mapping) or not value:
            return None
        numbers = {str(sub): _number(v) for sub, v in value.items()}
        if any(v is None for v in numbers.values()):
            return None
        family = GaugeMetricFamily(metric_name, doc, labels=[*self.labels, _NESTED_LABEL.get(key, "key")])
        for sub, v in numbers.items():
            family.add_metric([*self.labels.values(), sub], v or 0.0)
        return family


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def _metric_safe(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def replace_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace the file *path* by one holding *data* (mode *mode*), so that no reader ever sees part of it.

    A hidden temp file in the same directory (``O_EXCL``, a random name),
    written, ``fsync``ed, renamed over *path*, then the directory synced
    (the rename survives a power cut).  Temp files that writers killed
    mid-write left more than :data:`STALE_TEMP_AGE` ago are removed.
    """
    directory, name = os.path.split(path)
    dfd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        stem = f".{name}.tmp-"
        _remove_stale_temps(dfd, stem)
        temp = stem + secrets.token_hex(8)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)  # the umask must not hide it from node_exporter, often another user
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dfd)
            raise
        with contextlib.suppress(OSError):  # some filesystems cannot sync a directory; the file is in place anyway
            os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_stale_temps(dfd: int, stem: str) -> None:
    cutoff = time.time() - STALE_TEMP_AGE
    for entry in os.listdir(dfd):
        if not entry.startswith(stem):
            continue
        with contextlib.suppress(OSError):  # another writer's cleanup got there first
            st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry, dir_fd=dfd)
