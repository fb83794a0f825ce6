"""Developer tools for fssession: the cluster demo and the benchmarks (not part of the installed package).

They run from the repository's root as modules, ``python -m tools.demo`` or
``python -m tools.bench.store``, which is what ``scripts/demo`` and
``scripts/bench`` do: the root is then first on the import path, so the
checkout's ``fssession`` and ``tools`` are found without touching
``sys.path``.  Every child process the tools start runs the same way:
:func:`python_module` gives its argv and :data:`REPO` its working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["REPO", "python_module"]

REPO = Path(__file__).resolve().parent.parent


def python_module(module: str, *args: str) -> list[str]:
    """The argv of ``python -m module args...`` with this interpreter; start it with ``cwd=REPO``."""
    return [sys.executable, "-m", module, *args]
