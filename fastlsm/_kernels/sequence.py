"""Sequence scoring: the log-probability of given tokens under [N, V] logits.

Entry kernel for Python and the C ABI: :func:`sequence_logprobs_rows`.

Each ``(b, t)`` row is read once from memory: the normalizer's two passes (``row_max``, then
``row_shifted_sumexp``, the same building blocks as ``row_lse``) run over the row while it
sits in L2, and the token's logit is one more load. The result is formed as
``(x[tok] - max) - log(sum)`` like log_softmax, never ``x[tok] - (max + log(sum))``, which
would lose ``log(sum)`` next to a logit like 1e30. Nothing of the logits' size is written.
Rows run in parallel; the per-sequence sums are then taken serially in ``t`` order in
float64, so every result is bitwise identical for any thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import kernel
from .half import load_element
from .rows import chunk_rows, row_chunks, row_max, row_shifted_sumexp


@kernel
def row_token_logprob(row, tok, nxt):
    """``log_softmax(row)[tok]`` as float64 (PyTorch's special values; see module docstring).

    ``nxt`` is the row computed next, prefetched during the exp-sum pass.
    """
    m = row_max(row)
    if not abs(m) < np.inf:  # all -inf, or a +inf: the whole row is NaN in log_softmax
        return np.nan
    s = row_shifted_sumexp(row, m, nxt)  # NaN anywhere in the row reaches s
    return (np.float64(load_element(row, tok)) - np.float64(m)) - math.log(s)


@kernel(parallel=True)
def sequence_logprobs_rows(x, tokens, mask, seq_len, tok_out, seq_out):
    """Token log-probabilities and their per-sequence sums.

    Parameters (all C-contiguous):
        x:        float32/float64 ``[N, V]`` logits, or bfloat16/float16 ones as their
                  :mod:`.half` views; ``N = B * seq_len`` (row ``b * T + t``).
        tokens:   int32/int64 ``[N]`` token ids.
        mask:     uint8 ``[N]``; 0 marks padding (not read, not checked, contributes 0).
        seq_len:  int64 ``T`` (> 0), the number of positions per sequence.
        tok_out:  float64 ``[N]`` out: ``log_softmax(x[i])[tokens[i]]``, 0 where masked.
        seq_out:  float64 ``[B]`` out: ``sum_t tok_out[b * T + t]``, added in ``t`` order.

    Returns:
        int64: -1 on success; else the first flat index ``i`` (in row order) whose token is
        outside ``[0, V)`` at an unmasked position. Nothing is written in that case.

    Special values follow log_softmax: a NaN or ``+inf`` in a row gives NaN for that token, a
    ``-inf`` logit gives ``-inf``, a row of all ``-inf`` gives NaN.
    """
    n = x.shape[0]
    v = x.shape[1]
    for i in range(n):  # cheap serial check first: the kernel never raises
        if mask[i] != 0 and (tokens[i] < 0 or tokens[i] >= v):
            return np.int64(i)
    nchunk = row_chunks(n)  # contiguous row blocks: the prefetched next row is this thread's
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, n)
        for i in range(r0, r1):
            if mask[i] != 0:
                tok_out[i] = row_token_logprob(x[i], tokens[i], x[min(i + 1, n - 1)])
            else:
                tok_out[i] = 0.0
    nseq = seq_out.shape[0]
    for b in range(nseq):
        s = 0.0
        for t in range(seq_len):
            s += tok_out[b * seq_len + t]
        seq_out[b] = s
    return np.int64(-1)
