"""The ``fssession`` command: argument parsing and printing, one module per subcommand.

The work is done elsewhere and comes back as data: the reaper
(:func:`fssession.reaper.reap`), the reports (:mod:`fssession.report`), the
doctor (:mod:`fssession.doctor`) and store creation
(:mod:`fssession.provision`).  Exit codes: 0 done, 1 done with problems,
2 bad usage, invalid values or not a usable store; 130 interrupted; 141
when the reader of the output went away (``fssession stats | head``), as
for a command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from . import _common, doctor, init, inspect, reap, stats

__all__ = ["build_parser", "main", "version_text"]

_COMMANDS: tuple[tuple[str, str, ModuleType], ...] = (
    ("reap", "purge expired sessions, stale locks and crash leftovers (cron-safe)", reap),
    ("doctor", "check that a mount is fit to hold sessions", doctor),
    ("stats", "count sessions, bytes, expiry, locks and litter in a store", stats),
    ("inspect", "verify and show one session (its id from stdin or $FSSESSION_SID)", inspect),
    ("init", "create a store with the owner, group and mode the web servers need", init),
)


def command_path() -> str:
    """How to run this very fssession by absolute path (for cron and systemd, whose PATH is short)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "fssession" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "fssession")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return f"{os.path.abspath(sys.executable)} -m fssession"


def version_text() -> str:
    """The version and where this fssession is installed."""
    from .. import __version__

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = command_path()
    return "\n".join(
        [
            f"fssession {__version__}",
            f"  command: {command}",
            f"  python:  {os.path.abspath(sys.executable)}",
            f"  package: {package}",
            f"  cron:    */10 * * * *  USER  {command} reap PATH --max-seconds 300",
        ]
    )


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and where fssession is installed")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    """The parser for every subcommand (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="fssession", description="Operate an fssession store.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, module in _COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        add: Callable[[argparse.ArgumentParser], None] = module.add_arguments
        add(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        code = run(args)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except KeyboardInterrupt:
        print("fssession: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _common.silence_stdout()
        return 141
    return code
