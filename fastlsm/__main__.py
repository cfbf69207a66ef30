"""``python -m fastlsm`` runs the ``fastlsm`` command (see :mod:`fastlsm.cli`)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
