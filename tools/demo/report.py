"""The demo's report: checks printed as they pass or fail, and durations put briefly."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Report:
    """Checks as they pass or fail; printed as they happen."""

    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        """Print ``[ok  ]`` or ``[FAIL]`` with *what* (and *detail*); remember a failure; return *ok*."""
        mark = "ok  " if ok else "FAIL"
        print(f"   [{mark}] {what}" + (f": {detail}" if detail else ""))
        if not ok:
            self.failures.append(what + (f" ({detail})" if detail else ""))
        return ok


def ms(values: list[float]) -> str:
    """Median and max of durations in seconds, in milliseconds."""
    if not values:
        return "none"
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
