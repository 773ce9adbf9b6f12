"""``python -m valet`` runs the ``valet`` command."""

import sys

from valet.cli import main

sys.exit(main())
