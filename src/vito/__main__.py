"""``python -m vito`` (and ``torchrun -m vito``) run the command line.

The guard matters: a process started with the "spawn" method (the pre-scan's workers) imports this module
again under another name, and must not run a second command line.
"""

import sys

from vito.cli import main

if __name__ == "__main__":
    sys.exit(main())
