"""``python -m garda ARGS`` is the ``garda`` command."""

import sys

from garda.cli import main

sys.exit(main())
