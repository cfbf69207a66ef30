#!/usr/bin/env python
"""Benchmark fastlsm.sample against Hugging Face's processors + torch.multinomial.

The cases of issue 12 (``fastlsm.bench.cases.SAMPLING_CASES``), in the harness of
`fastlsm bench` restricted to the sampling family; every `fastlsm bench` option works:

- ``sample_top_p``: B=1, V=128256, temperature 0.7 + top_p 0.9;
- ``sample_filters``: B=8, V=128256, repetition penalty (256-token history) + temperature +
  top_k 50 + top_p 0.9 + min_p 0.05;
- ``sample_top_p_batch``: B=64, V=32000, top_p 0.9;
- ``sample_greedy_top5``: B=1, V=128256, greedy with 5 top logprobs (peer: PyTorch's argmax
  + log_softmax + topk).

    python bench/bench_sampling.py                 # default shapes, table on stdout
    python bench/bench_sampling.py --quick --threads 1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastlsm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "sampling", *sys.argv[1:]]))
