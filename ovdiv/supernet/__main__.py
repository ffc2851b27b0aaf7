"""Child entry point: ``python -m ovdiv.supernet`` (see :mod:`ovdiv.supernet.isolation`)."""

import sys

from ovdiv.supernet.isolation import child_main

if __name__ == "__main__":
    sys.exit(child_main())
