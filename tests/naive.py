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


# ------------------------------------------------------------------ 16-bit data (issue 11)
# bfloat16 / float16 results are checked in ulps of their dtype against the float64
# reference computed from the 16-bit input values and then correctly rounded to that dtype.


def _ordinal(a):
    """Each 16-bit value's position on the number line of its dtype (+0 and -0 both 0):
    neighbouring values differ by 1, ``inf`` is one step past the largest finite value."""
    b = np.asarray(a).view(np.uint16).astype(np.int64)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def _from_ordinal(k, dtype):
    bits = np.where(k < 0, 0x8000 | -k, k).astype(np.uint16)
    return bits.view(dtype)


def round_to(ref, dtype):
    """float64 ``ref`` rounded to the 16-bit ``dtype`` to nearest, ties to even, in one step.

    (Converting through float32 can round twice.) Candidates are the value a conversion
    gives and its two neighbours; the nearest to ``ref`` wins, an exact tie goes to the even
    bit pattern. Differences are exact in float64 (each candidate is within a factor 2 of
    ``ref``). NaN stays NaN; beyond the largest finite value rounding follows IEEE (to inf
    from half an ulp past it).
    """
    ref = np.asarray(ref, np.float64)
    with np.errstate(all="ignore"):
        guess = ref.astype(np.float32).astype(dtype)
    k = _ordinal(guess)
    best, best_err = guess, np.full(ref.shape, np.inf)
    inf_k = int(_ordinal(np.asarray(np.inf, dtype)))
    for step in (-1, 0, 1):
        cand = _from_ordinal(np.clip(k + step, -inf_k, inf_k), dtype)
        c64 = cand.astype(np.float64)
        with np.errstate(all="ignore"):
            err = np.abs(c64 - ref)
        if np.isinf(c64).any():  # inf is nearest from half an ulp past the maximum on
            top_k = _ordinal(np.asarray(np.finfo(dtype).max, dtype))
            top = float(_from_ordinal(top_k, dtype).astype(np.float64))
            half_ulp = (top - float(_from_ordinal(top_k - 1, dtype).astype(np.float64))) / 2
            err = np.where(np.isinf(c64), np.where(np.sign(c64) * ref >= top + half_ulp, 0.0,
                                                   np.inf), err)
        even = (cand.view(np.uint16) & 1) == 0
        better = (err < best_err) | ((err == best_err) & even)
        best = np.where(better, cand, best)
        best_err = np.where(better, err, best_err)
    zero = np.where(np.signbit(ref), np.asarray(-0.0, dtype), np.asarray(0.0, dtype))
    best = np.where(best.astype(np.float64) == 0, zero, best)  # a zero keeps ref's sign
    return np.where(np.isnan(ref), np.asarray(np.nan, dtype), best).astype(dtype)


def ulp_error(got, ref):
    """Distance in ulps of ``got``'s 16-bit dtype between ``got`` and ``round_to(ref)``:
    0 for equal values (and for NaN against NaN), ``inf`` when one of them is NaN and the
    other is not."""
    got = np.asarray(got)
    want = round_to(ref, got.dtype)
    nan_got, nan_want = np.isnan(got.astype(np.float32)), np.isnan(want.astype(np.float32))
    dist = np.abs(_ordinal(got) - _ordinal(want)).astype(np.float64)
    return np.where(nan_got | nan_want, np.where(nan_got & nan_want, 0.0, np.inf), dist)
