#!/usr/bin/env python
"""Benchmark beam_step and sequence_logprobs against NumPy and PyTorch.

`fastlsm bench --only beam_step,sequence_logprobs`: usage and options in bench/_common.py.
"""

from _common import run_family

if __name__ == "__main__":
    run_family("beam_step,sequence_logprobs")
