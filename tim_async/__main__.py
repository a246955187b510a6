"""``python -m tim_async``: the command line (see :mod:`tim_async.cli`)."""

import sys

from tim_async.cli import main

if __name__ == "__main__":
    sys.exit(main())
