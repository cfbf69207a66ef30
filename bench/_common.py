"""What every bench/ script shares: the repository on ``sys.path``, and ``fastlsm bench``
restricted to one family.

The family scripts (``bench_beam.py``, ``bench_cross_entropy.py``, ``bench_normalize.py``)
use the same harness, shapes and roofline as ``fastlsm bench`` (see fastlsm/bench.py), and
take every ``fastlsm bench`` option (a later ``--only`` overrides the family)::

    python bench/bench_normalize.py                        # default shapes, table on stdout
    python bench/bench_normalize.py --quick --csv out.csv  # small shapes, one CSV line each
    python bench/bench_beam.py --json out.json --threads 1
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout: the fastlsm next to this directory


def run_family(only: str) -> None:
    """Exit with ``fastlsm bench --only <only>`` run on this script's arguments."""
    from fastlsm.cli import main

    sys.exit(main(["bench", "--only", only, *sys.argv[1:]]))
