"""``python -m fssession.doctor PATH ...``: the same as ``fssession doctor PATH ...``."""

import sys

from ..cli import main

sys.exit(main(["doctor", *sys.argv[1:]]))
