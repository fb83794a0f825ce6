"""The ``fssession`` command: one entry point, one subcommand per operator job.

Each subcommand lives in the module that does the work (``reaper``,
``doctor``, ``inspect``); this module only wires them into argparse.  Exit
codes follow the issue's contract: 0 done, 1 done with problems, 2 bad usage
or an unusable store (argparse also exits 2 on bad usage).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["main"]


def _commands() -> list[tuple[str, str, ModuleType]]:
    # Imported here so that `fssession --help` stays fast and a broken
    # optional module cannot take the other commands down with it.
    from . import doctor, reaper, report

    return [
        ("reap", "purge expired sessions, stale locks and temp files (cron-safe)", reaper),
        ("doctor", "check that a mount is fit to hold sessions", doctor),
        ("stats", "count sessions, bytes, expiry, locks and litter in a store", report),
        ("inspect", "verify and show one session (key from $FSSESSION_SECRET_KEY or --key-file)", report),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every subcommand (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="fssession", description="Operate an fssession store.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, module in _commands():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add: Callable[[str, argparse.ArgumentParser], None] = module.add_arguments
        add(name, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        print("fssession: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
