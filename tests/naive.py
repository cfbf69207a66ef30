"""Slow, obviously correct references for fastlsm's tests (import them: ``from naive import ...``).

Every function takes array_like input, computes in float64 (or in ``dtype=np.longdouble``
when a test needs a reference more exact than float64 itself) and returns arrays of that
type. They are written from the definitions, one NumPy expression per step, with the
max-shifted form so that large logits do not overflow, and without any special-casing:
the special values documented in ``fastlsm/normalize.py`` fall out of IEEE arithmetic the
same way they do in PyTorch:

- ``m = max(x)`` propagates NaN (``np.max``), so a NaN anywhere makes its row NaN;
- ``-inf`` entries give ``exp(-inf - m) = 0`` (masked vocabulary);
- a ``+inf`` or an all ``-inf`` row gives ``x - m = inf - inf = NaN`` in log_softmax/softmax;
- logsumexp shifts by 0 when the maximum is infinite (PyTorch, SciPy), so it gives ``+inf``
  and ``-inf`` for those rows, and ``-inf`` for an empty axis.
"""

from __future__ import annotations

import numpy as np


def _moved(x, axis, dtype):
    x = np.moveaxis(np.asarray(x, dtype=dtype), axis, -1)
    return x


def _max_shift(x):
    """Row maxima along the last axis, keepdims, ``-inf`` for empty rows, NaN propagated."""
    return np.max(x, axis=-1, keepdims=True, initial=-np.inf)


def logsumexp(x, axis=-1, *, keepdims=False, dtype=np.float64):
    """``log(sum(exp(x)))`` along ``axis`` as ``m + log(sum(exp(x - m)))``.

    ``m`` is the row maximum when it is finite and 0 otherwise (an all ``-inf`` or empty row
    gives ``-inf``, a ``+inf`` gives ``+inf``, a NaN gives NaN).
    """
    x = _moved(x, axis, dtype)
    m = _max_shift(x)
    shift = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    with np.errstate(all="ignore"):
        out = (np.log(np.sum(np.exp(x - shift), axis=-1, keepdims=True)) + shift)[..., 0]
    if keepdims:
        out = np.moveaxis(out[..., None], -1, axis)
    return out


def sequence_logprobs(logits, tokens, mask=None, *, dtype=np.float64):
    """``(log_softmax(logits)[..., tokens], their sum over the last axis)``; masked -> 0."""
    lp = log_softmax(logits, -1, dtype=dtype)
    tokens = np.asarray(tokens)
    safe = np.where(tokens >= 0, tokens, 0)
    tok = np.take_along_axis(lp, safe[..., None], -1)[..., 0]
    if mask is not None:
        tok = np.where(mask, tok, 0.0)
    return tok, tok.sum(-1)


def log_softmax(x, axis=-1, *, dtype=np.float64):
    """``(x - m) - log(sum(exp(x - m)))`` along ``axis``, ``m`` the row maximum.

    The subtraction of ``m`` comes first, so the entries near the maximum keep every bit.
    """
    x = _moved(x, axis, dtype)
    with np.errstate(all="ignore"):
        d = x - _max_shift(x)
        out = d - np.log(np.sum(np.exp(d), axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def softmax(x, axis=-1, *, dtype=np.float64):
    """``exp(x - m) / sum(exp(x - m))`` along ``axis``, ``m`` the row maximum."""
    x = _moved(x, axis, dtype)
    with np.errstate(all="ignore"):
        e = np.exp(x - _max_shift(x))
        out = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


def cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    dtype=np.float64,
):
    """PyTorch's ``F.cross_entropy`` with class-index targets, class axis last.

    ``logits`` is ``[..., C]``, ``target`` an integer array of the batch shape. Returns
    ``(loss, grad)``: ``loss`` is per-position (``reduction="none"``, 0 at ignored
    positions) or a scalar (``"sum"``, ``"mean"``); ``grad`` is the gradient of
    ``loss.sum()`` (for ``"none"``) or of ``loss`` with respect to ``logits``.

    Definitions (``w`` = class weights, default 1; ``eps`` = label smoothing; ``lp`` =
    log_softmax(logits); positions with ``target == ignore_index`` contribute nothing)::

        nll_i    = -w[t_i] * lp[i, t_i]
        smooth_i = -sum_c w[c] * lp[i, c] / C
        loss_i   = (1 - eps) * nll_i + eps * smooth_i
        "mean"   = sum_i loss_i / sum_i w[t_i]     (NaN when every position is ignored)

    and ``d loss_i / d logits[i] = (1 - eps) * w[t_i] * (p_i - onehot(t_i))
    + eps / C * (sum_c w[c] * p_i - w)`` with ``p_i = softmax(logits[i])``.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    x = np.asarray(logits, dtype=dtype)
    c = x.shape[-1]
    target = np.asarray(target)
    w = np.ones(c, dtype) if weight is None else np.asarray(weight, dtype)
    keep = target != ignore_index
    t = np.where(keep, target, 0)
    lp = log_softmax(x, -1, dtype=dtype)
    p = np.exp(lp)
    eps = float(label_smoothing)
    lp_t = np.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
    w_t = np.where(keep, w[t], 0)
    nll = -w_t * lp_t
    smooth = -np.sum(w * lp, axis=-1) / c
    loss = np.where(keep, (1 - eps) * nll + eps * smooth, 0)
    onehot = np.zeros_like(x)
    np.put_along_axis(onehot, t[..., None], 1, axis=-1)
    # d smooth_i / d x_ij = -sum_c w_c (delta_cj - p_ij) / C = (sum(w) * p_ij - w_j) / C
    grad = (1 - eps) * w_t[..., None] * (p - onehot) + eps / c * (np.sum(w) * p - w)
    grad = np.where(keep[..., None], grad, 0)
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return np.sum(loss), grad
    with np.errstate(all="ignore"):
        den = np.sum(w_t)
        return np.sum(loss) / den, grad / den
