#!/usr/bin/env python
"""Benchmark log_softmax, log_softmax(out=), softmax, logsumexp against NumPy and PyTorch.

`fastlsm bench --only normalize`: usage and options in bench/_common.py.
"""

from _common import run_family

if __name__ == "__main__":
    run_family("normalize")
