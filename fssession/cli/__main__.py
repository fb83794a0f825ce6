"""``python -m fssession.cli``: the same as ``python -m fssession``."""

import sys

from . import main

sys.exit(main())
