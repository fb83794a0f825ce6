"""A check's outcome, and the small formatters the checks share."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["STORAGE", "Status", "Verdict", "ename", "exit_code", "fmt_bytes", "fmt_s"]

Status = Literal["ok", "warn", "fail", "skip"]

# The storage's refusals, named for people.
STORAGE = {errno.EROFS: "read-only", errno.ENOSPC: "full", errno.EDQUOT: "over quota"}


@dataclass
class Verdict:
    """One check's outcome: status, the measured figure, and what to do about it."""

    check: str
    title: str
    status: Status
    figure: str
    advice: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 when every check is ok (or skipped), 1 with warnings, 2 with failures."""
    statuses = {v.status for v in verdicts}
    return 2 if "fail" in statuses else 1 if "warn" in statuses else 0


def ename(code: int | None) -> str:
    """The errno's symbolic name (``EEXIST``)."""
    return errno.errorcode.get(code or 0, str(code))


def fmt_s(seconds: float) -> str:
    """Seconds for people: ms precision below 10 s."""
    return f"{seconds:.3f} s" if abs(seconds) < 10 else f"{seconds:.1f} s"


def fmt_bytes(n: float) -> str:
    """Bytes for people (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
