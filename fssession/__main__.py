"""``python -m fssession``: the ``fssession`` command, for an install whose scripts are not on PATH."""

import sys

from .cli import main

sys.exit(main())
