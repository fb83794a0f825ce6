"""The end-to-end plot: throughput and p99 latency against client count, per filesystem and backend.

``scripts/bench plot [--json E2E_RESULTS] [--out PNG]`` reads what
``scripts/bench e2e`` wrote (default: docs/bench/e2e.json) and draws
docs/bench-e2e.png: one row per filesystem, throughput on the left, p99 on
the right, one line per backend (fssession's adapters solid, the others
dashed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tools import REPO

DEFAULT_JSON = REPO / "docs" / "bench" / "e2e.json"
DEFAULT_PNG = REPO / "docs" / "bench-e2e.png"


# One colour per framework: fssession's adapter (solid) and the framework's own store (dashed) side by side.
_COLORS = {"WSGI": "C0", "Flask": "C1", "Django": "C2"}


def draw(doc: dict[str, Any], out: Path) -> None:
    """Draw the figure for the e2e results *doc* into *out* (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    results = doc["results"]
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False)
    for row, r in zip(axes, results, strict=True):
        for backend, cells in r["cells"].items():
            clients = [int(n) for n in cells]
            style = "-" if backend.startswith("fssession") else "--"
            color = _COLORS.get(next((f for f in _COLORS if f in backend), ""), "C0")
            for ax, metric in zip(row, ("requests_per_s", "p99_ms"), strict=True):
                values = [cells[str(n)][metric] for n in clients]
                ax.plot(clients, values, style, color=color, marker="o", label=backend)
        for ax, label in zip(row, ("requests/s (higher is better)", "p99 latency, ms (lower is better)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xticks(clients, [str(c) for c in clients])
            ax.set_xlabel("concurrent clients")
            ax.set_title(f"{r['fs']}: {label}", fontsize=10)
            ax.grid(True, alpha=0.3)
        row[1].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    m = doc["machine"]
    fig.suptitle(f"3 nodes, 90 % reads / 10 % writes; {m['cores']} cores, {m['date']} ({doc['command']})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot written to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Read the results, draw the plot."""
    parser = argparse.ArgumentParser(prog="scripts/bench plot", description=__doc__)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--out", type=Path, default=DEFAULT_PNG)
    args = parser.parse_args(argv)
    draw(json.loads(args.json.read_text()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
