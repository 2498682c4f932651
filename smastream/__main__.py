"""``python -m smastream`` runs the command-line interface."""

import sys

from smastream.cli import main

sys.exit(main())
