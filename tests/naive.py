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
