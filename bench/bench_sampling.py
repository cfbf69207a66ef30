#!/usr/bin/env python
"""Benchmark fastlsm.sample against Hugging Face's logits processors + torch.multinomial.

Cases of issue 12, side by side in one process (whole rounds interleaved, median of rounds):

- ``b1_topp``: B=1, V=128256, temperature 0.7 + top_p 0.9;
- ``b8_all``: B=8, V=128256, repetition penalty (history of 256 tokens) + temperature +
  top_k 50 + top_p 0.9 + min_p 0.05;
- ``b64_topp``: B=64, V=32000, top_p 0.9;
- ``greedy5``: B=1, V=128256, greedy with 5 top logprobs, vs torch argmax + log_softmax +
  topk.

Logits are ``N(0, 1) * 2.5`` float32 (a spread like a language model's). Usage::

    python bench/bench_sampling.py [--rounds 15] [--threads 2] [--only b1_topp,greedy5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import fastlsm  # noqa: E402

V_LLAMA = 128256


def cases():
    """name -> (logits [B, V] float32, fastlsm kwargs, HF warper spec, greedy?)."""
    rng = np.random.default_rng(0)

    def logits(b, v):
        return (rng.standard_normal((b, v)) * 2.5).astype(np.float32)

    hist = rng.integers(0, V_LLAMA, size=(8, 256))
    return {
        "b1_topp": (logits(1, V_LLAMA), {"temperature": 0.7, "top_p": 0.9}, None),
        "b8_all": (logits(8, V_LLAMA), {"repetition_penalty": 1.2, "temperature": 0.8,
                                        "top_k": 50, "top_p": 0.9, "min_p": 0.05,
                                        "history": hist}, None),
        "b64_topp": (logits(64, 32000), {"top_p": 0.9}, None),
        "greedy5": (logits(1, V_LLAMA), {"temperature": 0.0, "num_logprobs": 5}, "greedy"),
    }


def hf_sampler(kwargs, greedy):
    import torch
    from transformers.generation import logits_process as lp

    if greedy:
        def run(x):
            t = torch.from_numpy(x)
            tok = t.argmax(-1)
            logp = torch.log_softmax(t, -1)
            top = logp.topk(5, -1)
            return tok, logp.gather(-1, tok[:, None]), top
        return run
    procs = []
    if kwargs.get("repetition_penalty", 1.0) != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(kwargs["repetition_penalty"]))
    if kwargs.get("temperature", 1.0) != 1.0:
        procs.append(lp.TemperatureLogitsWarper(kwargs["temperature"]))
    if kwargs.get("top_k", 0):
        procs.append(lp.TopKLogitsWarper(kwargs["top_k"]))
    if kwargs.get("top_p", 1.0) < 1.0:
        procs.append(lp.TopPLogitsWarper(kwargs["top_p"]))
    if kwargs.get("min_p", 0.0) > 0.0:
        procs.append(lp.MinPLogitsWarper(kwargs["min_p"]))
    ids = torch.from_numpy(kwargs["history"]) if "history" in kwargs else None
    gen = torch.Generator().manual_seed(0)

    def run(x):
        scores = torch.from_numpy(x)
        input_ids = ids if ids is not None else torch.zeros((x.shape[0], 1), dtype=torch.long)
        for p in procs:
            scores = p(input_ids, scores)
        probs = torch.softmax(scores, -1)
        return torch.multinomial(probs, 1, generator=gen)

    return run


def timed(fn, x, budget=0.1):
    """Median seconds per call over a block of consecutive calls lasting ``budget`` seconds."""
    fn(x)
    times = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    fastlsm.set_num_threads(args.threads)
    selected = cases()
    if args.only:
        selected = {k: v for k, v in selected.items() if k in args.only.split(",")}
    print(f"threads={args.threads} rounds={args.rounds} torch={torch.__version__} "
          f"fastlsm={fastlsm.__version__}")
    print(f"{'case':<10} {'fastlsm us':>11} {'HF+torch us':>12} {'ratio':>8}")
    for name, (x, kwargs, greedy) in selected.items():
        ours = lambda a, kw=kwargs: fastlsm.sample(a, seed=1, **kw)  # noqa: E731
        theirs = hf_sampler(kwargs, greedy)
        a, b = [], []
        for _ in range(args.rounds):
            a.append(timed(ours, x))
            b.append(timed(theirs, x))
        ta, tb = statistics.median(a), statistics.median(b)
        print(f"{name:<10} {ta * 1e6:>11.1f} {tb * 1e6:>12.1f} {tb / ta:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
