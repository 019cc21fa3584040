"""``python -m fitcast``: the command line."""

import sys

from fitcast.cli import main

sys.exit(main())
