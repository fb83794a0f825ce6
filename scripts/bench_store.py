"""Store benchmarks (issue 3): SessionStore against a bare-Python floor, Django's file backend and cachelib.

Every figure is a median of rounds; ratios are taken within one run.
  * load / edit / create per second, 200-byte and 20 KB sessions, against
    - a bare floor doing only the necessary work (load: open+read+unpickle;
      edit: mkdir a lock, read, write a temp file, rename, rmdir; create:
      write a temp file, rename),
    - Django's file session backend (load; its unlocked save as "edit"; create),
    - cachelib's FileSystemCache (get; get+set as "edit"; set);
  * filesystem syscalls per operation (strace -c -f, a run of N minus a run of 0);
  * P processes each editing their own sessions, P = 1, 2, 4;
  * load and edit with 10k and with --large sessions present.

Usage: scripts/bench store [--dir DIR ...] [--quick] [--large N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fssession import SessionStore  # noqa: E402
from scripts.bench import FS_SYSCALLS, _parse_strace  # noqa: E402

KEY = "benchmark-secret-key-0123456789"
FORK = mp.get_context("fork")


def payload(size: int) -> dict[str, Any]:
    return {"user": "alice", "n": 0, "blob": "x" * size}


class Bare:
    """The floor: only the work any file session store must do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def create(self, data: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        self._write(self.root / key, pickle.dumps(data))
        return key

    def _write(self, path: Path, blob: bytes) -> None:
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, blob)
        os.close(fd)
        os.rename(tmp, path)

    def load(self, key: str) -> dict[str, Any]:
        fd = os.open(self.root / key, os.O_RDONLY)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        return pickle.loads(b"".join(chunks))  # type: ignore[no-any-return]

    def edit(self, key: str) -> None:
        lock = f"{self.root / key}.lock"
        os.mkdir(lock)
        data = self.load(key)
        data["n"] += 1
        self._write(self.root / key, pickle.dumps(data))
        os.rmdir(lock)


class Ours:
    def __init__(self, root: Path) -> None:
        self.store = SessionStore(root, secret_key=KEY, max_age=3600)

    def create(self, data: dict[str, Any]) -> str:
        return self.store.create(data)

    def load(self, key: str) -> dict[str, Any] | None:
        return self.store.load(key)

    def edit(self, key: str) -> None:
        with self.store.edit(key) as data:
            data["n"] += 1


class Django:
    def __init__(self, root: Path) -> None:
        import django
        from django.conf import settings

        root.mkdir(parents=True, exist_ok=True)
        if not settings.configured:
            settings.configure(SECRET_KEY=KEY, SESSION_FILE_PATH=str(root), USE_TZ=True)
            django.setup()
        settings.SESSION_FILE_PATH = str(root)
        from django.contrib.sessions.backends.file import SessionStore as DjangoFile

        self.cls = DjangoFile
        self.cls._storage_path = str(root)  # type: ignore[attr-defined]  # Django caches the path per class

    def create(self, data: dict[str, Any]) -> str:
        s = self.cls()
        s.update(data)
        s.create()
        return str(s.session_key)

    def load(self, key: str) -> dict[str, Any]:
        return dict(self.cls(session_key=key).load())

    def edit(self, key: str) -> None:  # Django's update: read, modify, save (no lock)
        s = self.cls(session_key=key)
        s["n"] = s.get("n", 0) + 1
        s.save()


class Cachelib:
    def __init__(self, root: Path) -> None:
        from cachelib import FileSystemCache

        self.cache = FileSystemCache(str(root), threshold=0, default_timeout=3600)

    def create(self, data: dict[str, Any]) -> str:
        key = os.urandom(16).hex()
        self.cache.set(key, data)
        return key

    def load(self, key: str) -> dict[str, Any]:
        return self.cache.get(key)  # type: ignore[no-any-return]

    def edit(self, key: str) -> None:  # get + set (no lock)
        data = self.cache.get(key)
        data["n"] += 1
        self.cache.set(key, data)


BACKENDS: dict[str, Callable[[Path], Any]] = {"bare floor": Bare, "fssession": Ours, "django file": Django,
                                              "cachelib": Cachelib}  # fmt: skip


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def ops(directory: Path, size: int, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, list[float]]] = {b: {"load": [], "edit": [], "create": []} for b in BACKENDS}
    work = Path(tempfile.mkdtemp(prefix="fss-bench-store-", dir=directory))
    try:
        impls = {name: make(work / name.replace(" ", "-")) for name, make in BACKENDS.items()}
        keys = {name: [impl.create(payload(size)) for _ in range(200)] for name, impl in impls.items()}
        for name, impl in impls.items():  # every backend must really return the data it stored
            assert impl.load(keys[name][0])["blob"] == payload(size)["blob"], name
        rng = random.Random(1)
        for _ in range(rounds):
            for name, impl in impls.items():
                ks = keys[name]
                out[name]["load"].append(rate(lambda i=impl, k=ks: i.load(rng.choice(k)), seconds))
                out[name]["edit"].append(rate(lambda i=impl, k=ks: i.edit(rng.choice(k)), seconds))
                out[name]["create"].append(rate(lambda i=impl: i.create(payload(size)), seconds))
        return {b: {op: statistics.median(v) for op, v in d.items()} for b, d in out.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def syscalls(directory: Path, op: str, n: int = 300) -> dict[str, float]:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from scripts.bench_store import Ours, payload\n"
        "from pathlib import Path\n"
        "s = Ours(Path(sys.argv[2])); keys = [s.create(payload(200)) for _ in range(5)]\n"
        "s.load(keys[0]); s.edit(keys[0])\n"
        "op, n = sys.argv[3], int(sys.argv[4])\n"
        "for i in range(n):\n"
        "    k = keys[i % 5]\n"
        "    s.load(k) if op == 'load' else s.edit(k) if op == 'edit' else s.create(payload(200))\n"
    )
    counts = []
    work = Path(tempfile.mkdtemp(prefix="fss-bench-sc-", dir=directory))
    try:
        for cycles in (0, n):
            with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
                subprocess.run(["strace", "-f", "-c", "-o", f.name, sys.executable, "-c", code, str(ROOT),
                                str(work / str(cycles)), op, str(cycles)], check=True, capture_output=True)  # fmt: skip
                counts.append(_parse_strace(f.read()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per = {k: (counts[1].get(k, 0) - counts[0].get(k, 0)) / n for k in set(counts[0]) | set(counts[1])}
    return {k: round(v, 2) for k, v in per.items() if k in FS_SYSCALLS and v > 0.05}


def _editor(root: str, keys: list[str], seconds: float, start_at: float, out: Any) -> None:  # pragma: no cover
    s = Ours(Path(root))
    while time.monotonic() < start_at:
        time.sleep(0.001)
    n, end = 0, start_at + seconds
    while time.monotonic() < end:
        s.edit(keys[n % len(keys)])
        n += 1
    out.put(n)


def scaling(directory: Path, seconds: float) -> dict[int, float]:
    work = Path(tempfile.mkdtemp(prefix="fss-bench-scale-", dir=directory))
    try:
        s = Ours(work)
        result = {}
        for procs in (1, 2, 4):
            keys = [[s.create(payload(200)) for _ in range(50)] for _ in range(procs)]
            q = FORK.Queue()
            start = time.monotonic() + 0.3
            ps = [FORK.Process(target=_editor, args=(str(work), keys[i], seconds, start, q)) for i in range(procs)]
            for p in ps:
                p.start()
            total = sum(q.get(timeout=seconds + 60) for _ in ps)
            for p in ps:
                p.join()
            result[procs] = total / seconds
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def population(directory: Path, counts: list[int], seconds: float) -> dict[int, dict[str, float]]:
    """load and edit rates with N sessions present (files written directly, signed as the store would)."""
    work = Path(tempfile.mkdtemp(prefix="fss-bench-pop-", dir=directory))
    try:
        s = Ours(work)
        made: list[str] = []
        result = {}
        for target in counts:
            while len(made) < target:
                made.append(s.create(payload(200)))
            sample = random.Random(2).sample(made, 200)
            rng = random.Random(3)

            def load(rng: random.Random = rng, sample: list[str] = sample) -> None:
                s.load(rng.choice(sample))

            def edit(rng: random.Random = rng, sample: list[str] = sample) -> None:
                s.edit(rng.choice(sample))

            loads = [rate(load, seconds) for _ in range(3)]
            edits = [rate(edit, seconds) for _ in range(3)]
            result[target] = {"load": statistics.median(loads), "edit": statistics.median(edits)}
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, action="append")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", type=int, default=200_000, help="the large population (default 200000)")
    args = parser.parse_args()
    dirs = args.dir or [Path(tempfile.gettempdir()), Path("/dev/shm")]
    seconds = 0.3 if args.quick else 1.0
    for d in dirs:
        print(f"### {d}\n")
        for size in (200, 20_000):
            r = ops(d, size, 1 if args.quick else 3, seconds)
            print(f"{size}-byte sessions, operations per second (x the bare floor):\n")
            print("| backend | load | edit | create |\n|---|---|---|---|")
            floor = r["bare floor"]
            for name, v in r.items():
                cells = " | ".join(f"{v[op]:,.0f} ({v[op] / floor[op]:.2f}x)" for op in ("load", "edit", "create"))
                print(f"| {name} | {cells} |")
            print()
        if shutil.which("strace"):
            print("fssession filesystem syscalls per operation (200-byte sessions):\n")
            for op in ("load", "edit", "create"):
                per = syscalls(d, op)
                print(f"- {op}: {sum(per.values()):.1f}  {per}")
            print()
        sc = scaling(d, seconds * 2)
        print("P processes editing their own sessions: " + ", ".join(
            f"P={p}: {v:,.0f} edits/s ({v / sc[1]:.2f}x)" for p, v in sc.items()) + "\n")  # fmt: skip
        pop = population(d, [10_000, args.large] if not args.quick else [1_000, 10_000], seconds)
        small, large = min(pop), max(pop)
        lo, hi = pop[small], pop[large]
        print(
            f"with {small:,} vs {large:,} sessions present: load {lo['load']:,.0f} vs {hi['load']:,.0f}/s "
            f"({hi['load'] / lo['load']:.2f}x), edit {lo['edit']:,.0f} vs {hi['edit']:,.0f}/s "
            f"({hi['edit'] / lo['edit']:.2f}x)\n",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
