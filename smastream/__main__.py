"""``python -m smastream`` runs the command-line interface."""

import sys

from smastream.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports this module
    sys.exit(main())
