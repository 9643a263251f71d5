"""``python -m traxon ...``: see :mod:`traxon.cli`."""

import sys

from traxon.cli import main

sys.exit(main())
