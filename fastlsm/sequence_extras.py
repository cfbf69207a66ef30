"""``sequence_logprobs``' extras: top-N alternatives, ranks and entropy per position."""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from . import _jit
from ._dtypes import kernel_view, result_dtype
from ._kernels import sequence_extras as _k


class SequenceLogprobs(NamedTuple):
    """Result of ``sequence_logprobs`` when an extra is asked for (None where not asked)."""

    token_logprobs: np.ndarray
    """``[B, T]``: ``log_softmax(logits[b, t])[tokens[b, t]]``, 0 where masked."""
    sequence_logprobs: np.ndarray
    """``[B]``: their sums over ``t``."""
    ranks: np.ndarray | None
    """int64 ``[B, T]``: tokens with a strictly larger logit (0 = greedy; 0 where masked)."""
    entropy: np.ndarray | None
    """``[B, T]``: the entropy of each position's distribution (0 where masked)."""
    top_tokens: np.ndarray | None
    """int64 ``[B, T, N]``: the N most likely tokens, ties to the lower id (-1 where masked)."""
    top_logprobs: np.ndarray | None
    """``[B, T, N]``: their log-probabilities (NaN where masked)."""


def extras(x: np.ndarray, tok: np.ndarray, m: np.ndarray, top_logprobs, return_rank: bool,
           return_entropy: bool) -> SequenceLogprobs:
    """Compute the extras for checked ``x [B, T, V]``, ``tok`` and uint8 ``m`` ``[B, T]``."""
    nb, nt, nv = x.shape
    n = operator.index(top_logprobs)
    if not 0 <= n <= nv:
        raise ValueError(f"top_logprobs must be in [0, V={nv}], got {n}")
    bad = np.argwhere((m != 0) & ((tok < 0) | (tok >= nv)))
    if bad.size:
        b, t = (int(i) for i in bad[0])
        raise ValueError(
            f"tokens[{b}, {t}] = {int(tok[b, t])} is outside the vocabulary [0, {nv}); "
            f"fix the token id or mask the position out"
        )
    rows = kernel_view(np.ascontiguousarray(x).reshape(nb * nt, nv))
    tok_out = np.zeros(nb * nt, np.float64)
    rank = np.zeros(nb * nt, np.int64)
    ent = np.zeros(nb * nt, np.float64)
    top_val = np.empty((nb * nt, n), np.float64)
    top_id = np.empty((nb * nt, n), np.int64)
    if rows.size:
        _jit.use_threads(rows.size, rows.shape[0])
        _k.sequence_extras_rows(rows, np.ascontiguousarray(tok).reshape(-1).astype(np.int64),
                                np.ascontiguousarray(m).reshape(-1), bool(return_rank),
                                bool(return_entropy), tok_out, rank, ent, top_val, top_id)
    dt = result_dtype(x.dtype)
    tok_lp = tok_out.reshape(nb, nt)
    return SequenceLogprobs(
        tok_lp.astype(dt),
        tok_lp.sum(axis=1).astype(dt),
        rank.reshape(nb, nt) if return_rank else None,
        ent.reshape(nb, nt).astype(dt) if return_entropy else None,
        top_id.reshape(nb, nt, n) if n else None,
        top_val.reshape(nb, nt, n).astype(dt) if n else None,
    )
