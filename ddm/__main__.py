"""``python -m ddm <stage>``: see :mod:`ddm.cli`."""

import sys

from ddm.cli import main

if __name__ == "__main__":
    sys.exit(main())
