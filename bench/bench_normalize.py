#!/usr/bin/env python
"""Benchmark log_softmax, log_softmax(out=), softmax, logsumexp against NumPy and PyTorch.

Same harness, shapes and roofline as `fastlsm bench` (see fastlsm/bench.py), restricted to
this family; every `fastlsm bench` option works (a later `--only` overrides the family):

    python bench/bench_normalize.py                        # default shapes, table on stdout
    python bench/bench_normalize.py --quick --csv out.csv  # small shapes, one CSV line per provider
    python bench/bench_normalize.py --json out.json --threads 1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastlsm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "normalize", *sys.argv[1:]]))
