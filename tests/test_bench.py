"""The benchmarks' own arithmetic: what they call lost, overlapping, a handover, a marker, a cookie.

These check the measuring, not fssession's speed: no assertion here depends
on how fast the machine is.
"""

from __future__ import annotations

import os
from email.message import Message
from pathlib import Path
from typing import Any

from tools.bench.common import parse_strace, percentile
from tools.bench.contend import Hold, cell, figures, run_once
from tools.bench.e2e_load import CookieBox
from tools.bench.reapers import count_entries


def _holds(*spans: tuple[float, float, int]) -> list[Hold]:
    """Holds from (taken, given back, process); asked 1 ms before taken, returned 1 ms after given back."""
    return [Hold(t, g, t - 0.001, g + 0.001, p) for t, g, p in spans]


def test_figures_count_handovers_between_processes_only() -> None:
    # p0 holds twice in a row (a re-take, not a handover), then p1 takes over 5 ms after p0 gave back.
    holds = _holds((0.0, 0.01, 0), (0.012, 0.02, 0), (0.025, 0.03, 1))
    f = figures(holds, final=3, seconds=1.0, end=1.0, errors=[])
    assert f["done"] == 3 and f["lost"] == 0 and f["overlaps"] == 0
    assert abs(f["handover_p50_us"] - 5000) < 1
    assert abs(f["switch_pct"] - 50) < 1e-9  # one change of process in two successions
    assert abs(f["busiest_pct"] - 200 / 3) < 1e-9  # p0 did two of the three


def test_figures_see_overlapping_holds_and_lost_updates() -> None:
    holds = _holds((0.0, 0.01, 0), (0.005, 0.02, 1))  # p1 took the lock before p0 gave it back
    f = figures(holds, final=1, seconds=1.0, end=1.0, errors=[])
    assert f["overlaps"] == 1
    assert f["lost"] == 1


def test_figures_count_only_increments_finished_in_time() -> None:
    holds = _holds((0.0, 0.1, 0), (0.2, 0.3, 0), (0.95, 1.5, 1))  # the last one returns after the end
    f = figures(holds, final=3, seconds=1.0, end=1.0, errors=[])
    assert f["per_s"] == 2


def _run(lost: int = 0, overlaps: int = 0, errors: list[str] | None = None) -> dict[str, Any]:
    base = figures(_holds((0.0, 0.01, 0)), final=1, seconds=1.0, end=1.0, errors=errors or [])
    return {**base, "lost": lost, "overlaps": overlaps}


def test_a_cell_is_incorrect_if_any_repeat_lost_overlapped_or_failed() -> None:
    assert cell([_run(), _run()])["correct"]
    assert not cell([_run(), _run(lost=1)])["correct"]
    assert not cell([_run(overlaps=2), _run()])["correct"]
    assert not cell([_run(errors=["Timeout: no lock"]), _run()])["correct"]


def test_a_real_run_of_the_floor_loses_nothing_and_never_overlaps(tmp_path: Path) -> None:
    r = run_once(tmp_path, "bare mkdir floor", procs=2, seconds=0.3)
    assert r["errors"] == []
    assert r["lost"] == 0 and r["overlaps"] == 0


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7


def test_count_entries_tells_session_files_from_their_markers(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "n1").write_bytes(b"x")
    (tmp_path / "ab" / "n2").write_bytes(b"x")
    os.symlink("nowhere", tmp_path / "ab" / "n1.f,1.1800.0")  # a marker's target is never a real path
    os.symlink(tmp_path / "ab" / "n2", tmp_path / "ab" / "n2.f,1.1800.0")  # nor followed if it were
    assert count_entries(tmp_path) == (2, 2)


def _response(*set_cookies: str) -> Any:
    class Reply:
        headers = Message()

    for value in set_cookies:
        Reply.headers["Set-Cookie"] = value
    return Reply()


def test_cookie_box_keeps_the_newest_cookie_and_ignores_deletions() -> None:
    box = CookieBox("fssession", "old")
    box.update(_response("other=1; Path=/", "fssession=new.2; HttpOnly; Path=/; Max-Age=600"))
    assert box.value == "new.2"
    box.update(_response('fssession=""; Max-Age=0; Path=/'))
    assert box.value == "new.2"
    box.update(_response("fssession=gone; Max-Age=0; Path=/"))
    assert box.value == "new.2"
    assert box.header() == {"Cookie": "fssession=new.2"}


def test_parse_strace_reads_calls_per_syscall() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           4       100           openat
 30.00    0.000300           3       100        10 renameat
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           5       200        10 total
"""
    assert parse_strace(text) == {"openat": 100, "renameat": 100}
