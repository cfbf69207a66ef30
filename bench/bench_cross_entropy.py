#!/usr/bin/env python
"""Benchmark cross_entropy forward and cross_entropy_with_grad(inplace=True) against NumPy
and PyTorch.

`fastlsm bench --only cross_entropy`: usage and options in bench/_common.py.
"""

from _common import run_family

if __name__ == "__main__":
    run_family("cross_entropy")
