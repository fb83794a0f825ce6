"""docs/benchmarks.md and the e2e plot, made from the results of full runs (``scripts/bench docs``).

Copies bench-results/{contend,store,reap,e2e}.json (what the full runs
wrote; --from says where else) into docs/bench/, draws docs/bench-e2e.png and
writes docs/benchmarks.md: the machine, the commands and how long each took,
issue 14's targets met or missed, docs/bench/notes.md (what a person read in
the figures, if written), and every table.  A benchmark whose
results are missing is said to be missing, not left out silently.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tools import REPO

from . import contend, e2e, plot, reap, store
from .e2e_apps import BACKENDS
from .incrementers import INCREMENTERS

NAMES = ("contend", "store", "reap", "e2e")
DOCS = REPO / "docs"


def load(source: Path) -> dict[str, dict[str, Any]]:
    """The results of each benchmark found in *source*, copied into docs/bench/."""
    found = {}
    (DOCS / "bench").mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        path = source / f"{name}.json"
        if path.exists():
            if path.resolve() != (DOCS / "bench" / path.name).resolve():
                shutil.copyfile(path, DOCS / "bench" / path.name)
            found[name] = json.loads(path.read_text())
    return found


def _took(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    minutes = m.get("elapsed_s", 0) / 60
    start, end = m["load_at_start"][0], m["load_at_end"][0]
    return f"{minutes:.0f} min, load average {start:.1f} at the start, {end:.1f} at the end"


def header(found: dict[str, dict[str, Any]]) -> list[str]:
    """Title, machine, commands."""
    any_doc = next(iter(found.values()))
    m = any_doc["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']} (ext2/ext3 is how `stat -f` names ext4).  The machine was shared with other "
        "jobs while these ran (its load average is given for each run): every figure is compared only with "
        "others **measured in the same run**, each cell a median of interleaved repeats, so that the machine's "
        "noise hits every contender alike; ratios are meaningful, absolute rates less so.",
        "",
        "Made by `scripts/bench docs` from the results files in [bench/](bench/); each benchmark is one command:",
        "",
        "| benchmark | command | started | took |",
        "|---|---|---|---|",
    ]
    for name in NAMES:
        doc = found.get(name)
        if doc:
            code = doc["machine"].get("commit", "?")
            lines.append(f"| {name} | `{doc['command']}` | {doc['machine']['date']}, code {code} | {_took(doc)} |")
        else:
            lines.append(f"| {name} | not run | - | - |")
    return [*lines, "", "`--quick` on any of them is a smoke run of a few seconds to a minute.", ""]


NOT_MEASURED = [
    "- Contention on two mounts of GlusterFS, sshfs and the NFS testbed (within 2x the mkdir floor on the same "
    "mounts): not measured by these runs (`scripts/bench lock --testbed sshfs` measures the lock alone there).",
]


def targets(found: dict[str, dict[str, Any]]) -> list[str]:
    """Every target of issue 14 that the figures decide, met or missed."""
    lines = ["## Issue 14's targets", ""]
    if "contend" in found:
        lines += [v for r in found["contend"]["results"] for v in contend.verdicts(r)]
    if "store" in found:
        for r in found["store"]["results"]:
            lines += store.verdicts(_sizes(r["ops"]), r["syscalls"], r["fs"])[2:-1]
    if "reap" in found:
        lines += reap.verdicts(found["reap"]["results"])
    return [*lines, *NOT_MEASURED, ""]


def _sizes(ops: dict[str, Any]) -> dict[int, dict[str, dict[str, float]]]:
    return {int(k): v for k, v in ops.items()}


def _described(registry: dict[str, Any]) -> list[str]:
    """A list item per registered contender: its name and the first line of its docstring."""
    return [f"- **{name}**: {(c.__doc__ or '').strip().splitlines()[0]}" for name, c in registry.items()]


def contention(doc: dict[str, Any]) -> list[str]:
    """Section 1."""
    text = contend.__doc__ or ""
    intro = text[text.index("For each") : text.index("Usage:")].strip()
    tables = [contend.report(r, with_verdicts=False) for r in doc["results"]]
    head = ["## One session, P processes incrementing it", "", intro, "", "The contenders:", ""]
    return [*head, *_described(INCREMENTERS), "", *tables]


def store_section(doc: dict[str, Any]) -> list[str]:
    """Section 2."""
    lines = ["## The store, one process", ""]
    for r in doc["results"]:
        by_size = _sizes(r["ops"])
        lines += [f"### {r['fs']} ({r['dir']})", ""]
        for size, ops in by_size.items():
            lines += store.ops_table(size, ops)
        lines += store.syscalls_table(r["syscalls"]) + store.sealed_table(by_size) + store.events_table(r["events"])
    return lines


def reap_section(doc: dict[str, Any]) -> list[str]:
    """Section 3."""
    text = reap.__doc__ or ""
    intro = text[text.index("For each") : text.index("Usage:")].strip()
    return ["## The reaper", "", intro, "", *reap.report(doc["results"], with_verdicts=False)]


def e2e_section(doc: dict[str, Any]) -> list[str]:
    """Section 4."""
    text = e2e.__doc__ or ""
    intro = text[text.index("For each") : text.index("Usage:")].strip()
    lines = ["## End to end: the 3-node demo cluster", "", intro, "", "The backends:", "", *_described(BACKENDS)]
    lines += ["", "![e2e](bench-e2e.png)", ""]
    return lines + [e2e.report(r) for r in doc["results"]]


def main(argv: list[str] | None = None) -> int:
    """Copy the results, draw the plot, write docs/benchmarks.md."""
    parser = argparse.ArgumentParser(prog="scripts/bench docs", description=__doc__)
    parser.add_argument("--from", dest="source", type=Path, default=REPO / "bench-results")
    args = parser.parse_args(argv)
    found = load(args.source)
    if not found:
        sys.exit(f"no results in {args.source}: run the benchmarks first")
    if "e2e" in found:
        plot.draw(found["e2e"], plot.DEFAULT_PNG)
    lines = header(found) + targets(found)
    notes = DOCS / "bench" / "notes.md"  # written by hand after a run: what the figures show
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    makers = {"contend": contention, "store": store_section, "reap": reap_section, "e2e": e2e_section}
    for name, make in makers.items():
        lines += make(found[name]) if name in found else [f"## {name}", "", "Not run.", ""]
    (DOCS / "benchmarks.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {DOCS / 'benchmarks.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
