"""``python -m relay``: the same as the ``relay`` command."""

import sys

from relay.cli.main import main

if __name__ == "__main__":  # not when a multiprocessing child (chart rendering) imports the parent's main module
    sys.exit(main())
