"""``python -m tools.demo``: the cluster demo (see :mod:`tools.demo.cli`)."""

import sys

from .cli import main

sys.exit(main())
