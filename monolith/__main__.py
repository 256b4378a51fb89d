"""``python -m monolith``: the ``monolith`` command, for environments without its script."""

import sys

from monolith.cli import main

sys.exit(main())
