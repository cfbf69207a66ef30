"""Sequence scoring: log-probabilities of given tokens under [B, T, V] logits, in one pass."""

from __future__ import annotations

import numpy as np

from . import _jit
from ._dtypes import kernel_view, logits_array, result_dtype
from ._kernels import sequence as _k
from ._validate import int_array, int_array_of_shape


@_jit.public
def sequence_logprobs(logits, tokens=None, *, mask=None, labels=None, ignore_index: int = -100,
                      top_logprobs: int = 0, return_rank: bool = False,
                      return_entropy: bool = False):
    """Log-probability of each token and of each whole sequence.

    ``token_logprobs[b, t] = log_softmax(logits[b, t])[tokens[b, t]]`` (0 where ``mask`` is
    False) and ``seq_logprobs[b] = token_logprobs[b].sum()``, without materializing the
    log-softmax: each row of logits is read once and nothing of its size is allocated.

    Parameters
    ----------
    logits : array_like, float32, float64, bfloat16 or float16, shape [B, T, V]
        Scores for each position (the logits that *predict* ``tokens[b, t]``: for a causal
        language model, the model output shifted by one).
    tokens : array_like of int, shape [B, T]
        Token ids in ``[0, V)`` (anything at masked positions, e.g. -100 or a pad id).
    mask : array_like of bool, shape [B, T], optional
        False marks padding: not read, not checked, contributes 0. Default: all True.
    labels : array_like of int, shape [B, T], optional
        Instead of ``tokens`` and ``mask``: the token ids, ``ignore_index`` where masked.
    top_logprobs : int, optional
        With N > 0, also the N most likely tokens per position and their logprobs.
    return_rank, return_entropy : bool, optional
        Also the rank of each token (how many tokens have a strictly larger logit: 0 is
        lm-eval-harness's ``is_greedy``) and each position's entropy.

    With any of ``top_logprobs``, ``return_rank``, ``return_entropy`` the result is a
    ``SequenceLogprobs`` (``token_logprobs, sequence_logprobs, ranks, entropy, top_tokens,
    top_logprobs``; None where not asked) computed in the same single pass per row.

    Returns
    -------
    token_logprobs : ndarray, shape [B, T], the logits' dtype (float32 for 16-bit logits)
    seq_logprobs : ndarray, shape [B], the logits' dtype (float32 for 16-bit logits)

    Raises
    ------
    ValueError
        Shapes that do not match, or an unmasked token outside ``[0, V)`` (the message names
        its position ``(b, t)`` and value).
    TypeError
        Non-float logits, non-integer tokens, non-boolean mask.

    Notes
    -----
    Computed in float64 as ``(x[tok] - max) - log(sum(exp(x - max)))`` and rounded once to
    the logits' dtype; the per-sequence sum is accumulated in float64 in ``t`` order, so the
    result is identical for any thread count. A NaN or ``+inf`` in a row, or a row of all
    ``-inf``, gives NaN at that position (like ``log_softmax`` + ``gather``); a ``-inf``
    logit at the token gives ``-inf``.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    >>> tok, seq = fastlsm.sequence_logprobs(logits, np.array([[0, 2]]))
    >>> np.exp(tok).round(6), float(np.exp(seq[0]).round(6))
    (array([[0.5, 0.8]]), 0.4)
    """
    x = logits_array(logits, "logits")
    if x.ndim != 3:
        raise ValueError(f"logits must have shape [B, T, V], got {x.ndim} dimensions {x.shape}")
    nb, nt, nv = x.shape
    if labels is not None:
        if tokens is not None or mask is not None:
            raise ValueError("pass either labels (with ignore_index) or tokens (and mask)")
        lab = int_array(labels, "labels")
        mask = lab != ignore_index
        tokens = np.where(mask, lab, 0)
    elif tokens is None:
        raise TypeError("sequence_logprobs() needs tokens (or labels)")
    tok = int_array_of_shape(tokens, "tokens", (nb, nt), f"logits of shape {x.shape}")
    if mask is None:
        m = np.ones((nb, nt), np.uint8)
    else:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(
                f"mask must be a boolean array (False = padding), got {m.dtype}; "
                f"use mask.astype(bool)"
            )
        if m.shape != (nb, nt):
            raise ValueError(f"mask has shape {m.shape}, but tokens have shape {(nb, nt)}")
        m = np.array(m, dtype=np.uint8, order="C")  # private: one kernel signature
    if top_logprobs or return_rank or return_entropy:
        from .sequence_extras import extras

        return extras(x, tok, m, top_logprobs, return_rank, return_entropy)
    tok_out = np.empty((nb, nt), np.float64)
    seq_out = np.empty(nb, np.float64)
    if x.size == 0 or nb * nt == 0:
        if nv == 0 and nb * nt and m.any():
            raise ValueError("logits have an empty vocabulary axis (V = 0): no token is valid")
        tok_out[...] = 0.0
        seq_out[...] = 0.0
        return tok_out.astype(result_dtype(x.dtype)), seq_out.astype(result_dtype(x.dtype))
    rows = kernel_view(np.ascontiguousarray(x).reshape(nb * nt, nv))
    flat_tok = np.ascontiguousarray(tok).reshape(-1)
    run = _jit.launch(_k.sequence_logprobs_rows, x.size, nb * nt)  # one thread: serial copy
    bad = run(rows, flat_tok, m.reshape(-1), nt, tok_out.reshape(-1), seq_out)
    if bad >= 0:
        b, t = divmod(int(bad), nt)
        raise ValueError(
            f"tokens[{b}, {t}] = {int(flat_tok[bad])} is outside the vocabulary [0, {nv}); "
            f"fix the token id or set mask[{b}, {t}] = False for padding"
        )
    if x.dtype == np.float64:
        return tok_out, seq_out
    return tok_out.astype(result_dtype(x.dtype)), seq_out.astype(result_dtype(x.dtype))
