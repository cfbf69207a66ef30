"""Beam search: the fused beam step and a complete decoder with transformers' semantics."""

from __future__ import annotations

import operator

import numpy as np

from . import _jit
from ._kernels import beam as _k
from ._validate import float_array


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def beam_step(logits, beam_scores, *, num_candidates=None):
    """One beam-search step: ``beam_scores + log_softmax(logits)``, top candidates per batch.

    Parameters
    ----------
    logits : array_like, float32 or float64, shape [B, K, V]
        Next-token logits of the ``K`` beams of each of ``B`` batch items.
    beam_scores : array_like, float, shape [B, K]
        Running (summed log-prob) scores of the beams. ``-inf`` marks a dead beam; NaN and
        ``+inf`` are rejected.
    num_candidates : int, optional
        How many candidates to return per batch item, ``1 <= C <= K * V``. Default ``2 * K``
        (capped at ``K * V``), what a decoder needs to keep ``K`` beams alive when up to ``K``
        candidates end with EOS.

    Returns
    -------
    scores : ndarray, shape [B, C], the logits' dtype
        ``beam_scores[b, k] + log_softmax(logits[b, k])[v]``, computed in float64 as
        ``beam + ((x - max) - log(sum))`` and rounded once; descending per row.
    tokens : ndarray of int64, shape [B, C]
    beams : ndarray of int64, shape [B, C]
        The beam ``k`` each candidate extends.

    Raises
    ------
    ValueError
        Shapes that do not match, a bad ``num_candidates``, NaN/``+inf`` beam scores, or a
        logits row with a NaN or ``+inf`` (the message names the row ``(b, k)``).

    Notes
    -----
    Ties are broken toward the lower beam, then the lower token, so results are exactly
    reproducible (and identical for any thread count). ``-inf`` logits (banned tokens) and dead
    beams are never selected while finite candidates remain; when fewer than ``C`` finite
    candidates exist, the rest are ``-inf`` candidates in (beam, token) order.

    One read of the logits: each row's normalizer and its best ``C`` logits are found in the
    same pass, and log-probs are computed for the selected entries only.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> logits = np.log(np.array([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]]))
    >>> scores, tokens, beams = fastlsm.beam_step(logits, np.log([[0.5, 0.5]]))
    >>> np.exp(scores).round(3), tokens, beams
    (array([[0.3 , 0.3 , 0.15, 0.1 ]]), array([[0, 2, 1, 0]]), array([[0, 1, 0, 1]]))
    """
    x = float_array(logits, "logits")
    if x.ndim != 3:
        raise ValueError(f"logits must have shape [B, K, V], got {x.ndim} dimensions {x.shape}")
    nb, nk, nv = x.shape
    bs = np.asarray(beam_scores)
    if bs.dtype.kind not in "fiu" or bs.dtype.kind == "b":
        raise TypeError(f"beam_scores must be a float array, got {bs.dtype}")
    if bs.shape != (nb, nk):
        raise ValueError(
            f"beam_scores has shape {bs.shape}, but logits of shape {x.shape} need "
            f"beam_scores of shape {(nb, nk)}"
        )
    bs = np.ascontiguousarray(bs, dtype=np.float64).reshape(-1)
    if np.isnan(bs).any() or (bs == np.inf).any():
        raise ValueError("beam_scores contain NaN or +inf; use -inf for a dead beam")
    if nk == 0 or nv == 0:
        raise ValueError(f"logits of shape {x.shape} have no candidates (K and V must be >= 1)")
    if num_candidates is None:
        cap = min(2 * nk, nk * nv)
    else:
        cap = _count(num_candidates, "num_candidates", 1)
        if cap > nk * nv:
            raise ValueError(
                f"num_candidates={cap} exceeds the K * V = {nk * nv} candidates available"
            )
    scores = np.empty((nb, cap), np.float64)
    tokens = np.empty((nb, cap), np.int64)
    beams = np.empty((nb, cap), np.int64)
    if nb == 0:
        return scores.astype(x.dtype), tokens, beams
    logp = np.empty((nb, cap), np.float64)
    row_val = np.empty((nb * nk, cap), np.float64)
    row_tok = np.empty((nb * nk, cap), np.int64)
    row_n = np.empty(nb * nk, np.int64)
    rows = np.ascontiguousarray(x).reshape(nb * nk, nv)
    _jit.use_threads(x.size)
    bad = _k.beam_step_rows(rows, bs, nk, row_val, row_tok, row_n, scores, tokens, beams, logp)
    if bad >= 0:
        b, k = divmod(int(bad), nk)
        raise ValueError(
            f"logits[{b}, {k}] contains NaN or +inf; mask tokens with -inf instead"
        )
    return (scores if x.dtype == np.float64 else scores.astype(x.dtype)), tokens, beams


class BeamSearchOutput:  # placeholder, replaced by the decoder below
    pass


def beam_search(*args, **kwargs):  # placeholder
    raise NotImplementedError
