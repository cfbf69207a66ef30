"""Sequence scoring extras in the same single pass per row: top-N alternatives, the rank of
the actual token, the entropy. Beside ``sequence.sequence_logprobs_rows`` (which stays the
kernel of the plain call); the same normalizer (``row_max``, ``row_shifted_sumexp``).
float32, float64, bfloat16 and float16 rows (:mod:`.half` views, widened in registers: the
results of their exact float32 values)."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import kernel
from .half import load_element
from .math import fexp
from .rows import chunk_rows, row_chunks, row_max, row_shifted_sumexp
from .select import push_top


@kernel
def row_extras(row, tok, nxt, want_rank, want_entropy, vals, ids):
    """``(logprob, rank, entropy)`` of token ``tok`` in ``row``, and the ``vals.size`` best
    tokens into ``vals`` (as log-probabilities) / ``ids`` (ties to the lower id). ``rank`` is
    the number of tokens with a strictly larger logit; a row holding NaN or ``+inf``, or all
    ``-inf``, gives NaN logprobs and entropy (rank still counted)."""
    m = np.float64(row_max(row))
    x_t = np.float64(load_element(row, tok))
    rank = 0
    if want_rank:
        for j in range(row.size):
            rank += np.float64(load_element(row, j)) > x_t
    if not abs(m) < np.inf:
        vals[:] = np.nan
        for n in range(ids.size):
            ids[n] = n
        return np.nan, rank, np.nan
    log_s = math.log(row_shifted_sumexp(row, m, nxt))
    ent = np.nan
    if want_entropy:  # H = log s - sum(e * d) / s, d = x - m, e = exp(d)
        s = 0.0
        sd = 0.0
        for j in range(row.size):
            d = np.float64(load_element(row, j)) - m
            e = fexp(d)
            if e > 0.0:
                s += e
                sd += e * d
        ent = log_s - sd / s
    if vals.size:
        count = 0
        for j in range(row.size):
            count = push_top(vals, ids, count, np.float64(load_element(row, j)), j)
        for n in range(vals.size):
            vals[n] = (vals[n] - m) - log_s
    return (x_t - m) - log_s, rank, ent


@kernel(parallel=True)
def sequence_extras_rows(x, tokens, mask, want_rank, want_entropy, tok_out, rank_out, ent_out,
                         top_val, top_id):
    """Per row ``i`` of ``x`` ``[N, V]`` with ``mask[i] != 0``: ``tok_out[i]`` (logprob of
    ``tokens[i]``), ``rank_out[i]``, ``ent_out[i]``, ``top_val/top_id[i, :]``; masked rows get
    0 / 0 / 0 / (NaN, -1). Token ids are checked by the caller."""
    n = x.shape[0]
    nchunk = row_chunks(n)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, n)
        for i in range(r0, r1):
            if mask[i] == 0:
                tok_out[i] = 0.0
                rank_out[i] = 0
                ent_out[i] = 0.0
                top_val[i, :] = np.nan
                top_id[i, :] = -1
                continue
            lp, rank, ent = row_extras(x[i], tokens[i], x[min(i + 1, n - 1)], want_rank,
                                       want_entropy, top_val[i], top_id[i])
            tok_out[i] = lp
            rank_out[i] = rank
            ent_out[i] = ent
