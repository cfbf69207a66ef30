"""Sequence scoring: the log-probability of given tokens under [N, V] logits.

Entry kernel for Python and the C ABI: :func:`sequence_logprobs_rows`.

Each ``(b, t)`` row is read once from memory: the normalizer's two passes (``row_max``, then
the exp-sum pass of ``row_shifted_sumexp``, the building blocks of ``row_lse``), pipelined
as in ``rows.lse_rows`` when the logits come from memory on CPUs where that pays
(``memory.pipelines``): a row's exp-sum pass also takes the next row's maximum, so the next
row streams in while this one is summed from cache; the token's logit is one more load.
float32, bfloat16 and float16 rows (the :mod:`.half` views) are widened in registers: a
16-bit row gives the results of its exact float32 values. The result is formed as
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
from .math import like
from .memory import pipelines
from .rows import chunk_rows, row_chunks, row_max, sumexp_next_max


@kernel
def _token_logprob_rows(x, tokens, mask, tok_out, r0, r1, pipelined):
    """``tok_out[i] = log_softmax(x[i])[tokens[i]]`` (float64) for rows ``r0 <= i < r1``
    (0 where masked): each row's exp-sum pass is followed by, or when ``pipelined`` takes
    in its own loop, the next unmasked row's maximum (:func:`.rows.sumexp_next_max`: the
    next row streams in while this one's exponentials are computed; the same bits).
    """
    m = row_max(x[r0]) if r1 > r0 and mask[r0] != 0 else like(x, np.nan)
    for i in range(r0, r1):
        xi = x[i]
        ahead = i + 1 < r1 and mask[i + 1] != 0  # padding is not read
        nxt = x[i + 1] if ahead else xi[:0]
        if mask[i] == 0 or not abs(m) < np.inf:
            # padding: 0; all -inf, or a +inf: the whole row is NaN in log_softmax
            tok_out[i] = 0.0 if mask[i] == 0 else np.nan
            if ahead:
                m = row_max(nxt)
            continue
        s, m_next = sumexp_next_max(xi, m, nxt, pipelined)  # NaN anywhere in the row reaches s
        tok_out[i] = (np.float64(load_element(xi, tokens[i])) - np.float64(m)) - math.log(s)
        m = m_next


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
    pipelined = pipelines(x.size * x.itemsize)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, n)
        _token_logprob_rows(x, tokens, mask, tok_out, r0, r1, pipelined)
    nseq = seq_out.shape[0]
    for b in range(nseq):
        s = 0.0
        for t in range(seq_len):
            s += tok_out[b * seq_len + t]
        seq_out[b] = s
    return np.int64(-1)
