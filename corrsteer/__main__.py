"""``python -m corrsteer``: the same command line as the ``corrsteer`` console script."""

import sys

from corrsteer.cli import main

if __name__ == "__main__":
    sys.exit(main())
