"""``python -m fastlsm`` runs the ``fastlsm`` command (see :mod:`fastlsm.cli`)."""

import sys

from .cli import main

sys.exit(main())
