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


# ----------------------------------------------------------------------------- losses


CROSS_ENTROPY_OPTIONS = {
    "axis": -1,
    "weight": None,
    "ignore_index": -100,
    "reduction": "mean",
    "label_smoothing": 0.0,
    "z_loss": 0.0,
    "softcap": None,
    "token_weight": None,
    "grad_output": 1.0,
}
"""The options of :func:`cross_entropy` and their defaults (those of fastlsm.cross_entropy)."""


def _options(given, defaults):
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    return {**defaults, **given}


def cross_entropy(x, target, *, return_magnitude=False, **options):
    """Float64 ``(loss, grad, lse)`` written from PyTorch's definitions (plus z_loss,
    softcap and token_weight), options as :data:`CROSS_ENTROPY_OPTIONS`;
    ``return_magnitude`` adds the magnitude of the gradient terms that cancel."""
    o = _options(options, CROSS_ENTROPY_OPTIONS)
    axis, weight, ignore_index, reduction = (
        o["axis"],
        o["weight"],
        o["ignore_index"],
        o["reduction"],
    )
    label_smoothing, z_loss, softcap = o["label_smoothing"], o["z_loss"], o["softcap"]
    token_weight, grad_output = o["token_weight"], o["grad_output"]
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    c = x.shape[-1]
    y = softcap * np.tanh(x / softcap) if softcap else x
    m = y.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(y - m).sum(-1, keepdims=True)))[..., 0]
    lp = y - lse[..., None]
    p = np.exp(lp)
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    tw = np.ones(lse.shape) if token_weight is None else np.asarray(token_weight, np.float64)
    eps = label_smoothing
    target = np.asarray(target)
    if target.dtype.kind == "f":
        q = np.moveaxis(target.astype(np.float64), axis, -1) * (1 - eps) + eps / c
        per = -(q * w * lp).sum(-1) + z_loss * lse**2
        dy = p * ((q * w).sum(-1) + 2 * z_loss * lse)[..., None] - q * w
        coef = (q * w).sum(-1) + 2 * z_loss * np.abs(lse)
        den = tw.sum()
        mask = np.ones(lse.shape, bool)
    else:
        mask = target != ignore_index
        tt = np.where(mask, target, 0)
        lpt = np.take_along_axis(lp, tt[..., None], -1)[..., 0]
        per = (1 - eps) * w[tt] * -lpt + z_loss * lse**2
        dy = (1 - eps) * w[tt][..., None] * p
        np.put_along_axis(
            dy,
            tt[..., None],
            np.take_along_axis(dy, tt[..., None], -1) - (1 - eps) * w[tt][..., None],
            -1,
        )
        if eps > 0:
            per = per + eps / c * -(lp * w).sum(-1)
            dy = dy + eps / c * (w.sum() * p - w)
        dy = dy + 2 * z_loss * lse[..., None] * p
        coef = (1 - eps) * w[tt] + eps * w.sum() / c + 2 * z_loss * np.abs(lse)
        den = (w[tt] * tw * mask).sum()
    per = np.where(mask, per * tw, 0.0)
    dy = np.where(mask[..., None], dy * tw[..., None], 0.0)
    # magnitude of the terms that cancel in dy: tolerances for the gradient scale with it
    mag = np.where(mask[..., None], p * (coef * tw)[..., None], 0.0)
    dy = np.stack([dy, mag])
    if softcap:  # sech**2, not 1 - tanh**2 (which cancels for saturated logits)
        with np.errstate(over="ignore"):
            dy = dy / np.cosh(x / softcap) ** 2
    if reduction == "none":
        loss = per
        g = np.broadcast_to(np.asarray(grad_output, np.float64), per.shape)
        dy = dy * g[..., None]
    elif reduction == "sum":
        loss = per.sum()
        dy = dy * grad_output
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = per.sum() / den
            dy = dy * (grad_output / den) if den != 0 else dy * 0.0
    dy = np.moveaxis(dy, -1, axis + (1 if axis >= 0 else 0))
    if return_magnitude:
        return loss, dy[0], lse, float(np.abs(dy[1]).max()) if dy[1].size else 0.0
    return loss, dy[0], lse


def nll_loss(
    lp, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", token_weight=None
):
    lp = np.moveaxis(np.asarray(lp, np.float64), axis, -1)
    c = lp.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    tw = np.ones(target.shape) if token_weight is None else np.asarray(token_weight, np.float64)
    mask = target != ignore_index
    tt = np.where(mask, target, 0)
    per = np.where(mask, -w[tt] * np.take_along_axis(lp, tt[..., None], -1)[..., 0] * tw, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    with np.errstate(invalid="ignore"):
        return per.sum() / (w[tt] * tw * mask).sum()


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
