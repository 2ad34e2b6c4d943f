"""``python -m vito`` (and ``torchrun -m vito``) run the command line."""

import sys

from vito.cli import main

sys.exit(main())
