"""Fused cross-entropy and NLL kernels: loss, log-sum-exp and gradient in one row visit.

Layout contract (as in :mod:`fastlsm._kernels.normalize`): ``logits`` is a C-contiguous
``[rows, cols]`` float32/float64 array with the class axis last; every output is
caller-allocated and C-contiguous; ``grad`` may be ``logits`` itself (in place). Optional
arrays are passed as size-0 arrays of the right number of dimensions (``np.empty(0)``,
``np.empty((0, 0), dtype)``): that is how "absent" / ``NULL`` is spelled.

Entry functions (the C ABI wraps exactly these; they take only arrays and scalars, never
raise and never allocate anything of the logits' size):

- :func:`cross_entropy_rows`        class-index targets, every option, loss + lse + gradient;
- :func:`cross_entropy_probs_rows`  probability (soft) targets, same options;
- :func:`nll_loss_rows`             NLL over log-probabilities (loss and, optionally, gradient).

``reduction`` codes are PyTorch's: ``0`` none, ``1`` mean, ``2`` sum.

Math (one row, ``y = softcap(x)`` or ``x``, ``m = max(y)``, ``d = y - m``,
``s = sum(exp(d))``, ``lse = m + log(s)``, ``p = exp(d) / s``, ``eps`` = label smoothing,
``w`` = class weights (ones when absent), ``W = sum(w)``, ``C`` = classes, ``t`` = target):

    nll     = lse - y[t] = log(s) - d[t]
    smooth  = sum_c w[c] * (lse - y[c]) = W * log(s) - sum_c w[c] * d[c]
    loss    = (1 - eps) * w[t] * nll + (eps / C) * smooth + z * lse**2        (PyTorch + z-loss)
    dloss/dy_j = p_j * A - (1 - eps) * w[t] * [j == t] - (eps / C) * w[j],
                 A = (1 - eps) * w[t] + eps * W / C + 2 * z * lse
    dloss/dx_j = dloss/dy_j * (1 - (y_j / cap)**2)                            (softcap)

The per-token loss is then multiplied by ``token_weight[i]``; the gradient by
``token_weight[i] * g`` where ``g`` is ``grad_scale / den`` (mean), ``grad_scale`` (sum) or
``grad_output[i]`` / ``grad_scale`` (none). The mean's denominator ``den`` is PyTorch's:
``sum(w[t_i] * token_weight[i])`` over non-ignored tokens (index targets), or
``sum(token_weight)`` / the number of rows (probability targets). All ignored -> ``0/0 = NaN``.

Each row costs one read from memory: a max pass, then an exp-sum pass over the L2-resident
row that also stores ``exp(d)`` into ``grad`` (or ``y`` when softcapping), then a scaling pass
writing the gradient. The mean's denominator and the target check come first, in a cheap
serial pass over the targets, so a bad target is reported before anything is written.
Per-row losses go to a float64 ``work`` buffer and are summed serially in row order:
results are bitwise identical for any thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload, register_jitable

from .._jit import kernel
from .math import acc_zero, exp_f64, fexp, like, radd
from .normalize import row_max, row_shifted_sumexp

NONE = 0
MEAN = 1
SUM = 2

# ----------------------------------------------------------------------------- softcap

_THIRD = 1.0 / 3.0
_T5 = 2.0 / 15.0
_T7 = 17.0 / 315.0


@register_jitable
def _tanh_f64_fast(u):
    """tanh in float64 with relative error below 1e-12 (enough for a float32 result).

    ``1 - 2 / (exp(2|u|) + 1)`` (vectorizable exp) for ``|u| >= 0.05``, a 4-term Taylor
    series below (truncation error < 1e-12 relative). Branch-free selects.
    """
    a = abs(u)
    big = 1.0 - 2.0 / (exp_f64(2.0 * a) + 1.0)
    u2 = a * a
    small = a * (1.0 - u2 * (_THIRD - u2 * (_T5 - u2 * _T7)))
    t = small if a < 0.05 else big
    t = -t if u < 0.0 else t
    return u if u != u else t


def softcap_value(x, cap):
    """``cap * tanh(x / cap)`` in the precision of ``x`` (``cap`` is a float64).

    Computed as ``x * (1 / cap)``: with the ``arcp`` fast-math flag LLVM may turn a division
    into that multiplication in vectorized loops but not elsewhere, so every call site
    multiplies explicitly and all of them give the same bits.
    """
    return cap * np.tanh(x * (1.0 / cap))


@overload(softcap_value)
def _softcap_value_impl(x, cap):
    if x == types.float32:
        # float64 internally, one rounding at the end: closer to the exact value than
        # float32 tanh, and vectorizable.
        return lambda x, cap: np.float32(cap * _tanh_f64_fast(np.float64(x) * (1.0 / cap)))
    if x == types.float64:
        return lambda x, cap: cap * np.tanh(x * (1.0 / cap))
    return None


@register_jitable
def softcap_slope64(x, cap):
    """``d softcap(x) / dx = 1 - tanh(x / cap)**2 = sech(x / cap)**2`` in float64.

    Written as ``4 e / (1 + e)**2`` with ``e = exp(-2 |x / cap|)``: no cancellation, so the
    small slopes of saturated logits keep full relative precision (``1 - t*t`` from a
    rounded ``t`` loses them all).
    """
    e = exp_f64(-2.0 * abs(np.float64(x) * (1.0 / cap)))
    d = 1.0 + e
    return 4.0 * e / (d * d)


# ----------------------------------------------------------------------------- row passes


BLOCK = 2048
"""Rows are processed in blocks of this many elements (8-16 KiB, L1-resident). Within a block
values are first stored (when a gradient is wanted), then summed by a loop that only reads:
the summation order is then the same whether ``grad`` is a separate array or the logits
themselves (LLVM vectorizes a loop that stores into a possibly-aliased array differently)."""


@kernel
def _block_sum(v):
    """float64 sum of a block (vectorized; fixed order for a given length)."""
    s = 0.0
    for j in range(v.size):
        s = radd(s, v[j])
    return s


@kernel
def _block_dsum(v, m, w):
    """``sum_j w[j] * (v[j] - m)`` in float64 (``w`` empty: weights of 1)."""
    s = 0.0
    if w.size == 0:
        for j in range(v.size):
            s = radd(s, np.float64(v[j] - m))
    else:
        for j in range(v.size):
            s = radd(s, w[j] * np.float64(v[j] - m))
    return s


@kernel
def _block_sumexp(v, m):
    s = 0.0
    for j in range(v.size):
        s = radd(s, fexp(v[j] - m))
    return s


@kernel
def _pass_plain(x, m, g, store):
    """``s = sum(exp(x - m))`` (float64); stores ``exp(x - m)`` into ``g`` when ``store``."""
    if not store:
        return row_shifted_sumexp(x, m)
    n = x.size
    s = 0.0
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        xb = x[b0:b1]
        gb = g[b0:b1]
        for j in range(xb.size):
            gb[j] = fexp(xb[j] - m)
        s += _block_sum(gb)
    return s


@kernel
def _pass_smooth(x, m, weight, g, store):
    """Like :func:`_pass_plain`, plus ``sd = sum_j w[j] * (x[j] - m)`` in float64."""
    n = x.size
    s = 0.0
    sd = 0.0
    hw = weight.size > 0
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        xb = x[b0:b1]
        sd += _block_dsum(xb, m, weight[b0:b1] if hw else weight)
        if store:
            gb = g[b0:b1]
            for j in range(xb.size):
                gb[j] = fexp(xb[j] - m)
            s += _block_sum(gb)
        else:
            s += _block_sumexp(xb, m)
    return s, sd


@kernel
def _pass_cap(x, m, cap, weight, smooth):
    """Softcapped exp-sum ``(s, sd)`` (``sd = sum w * (y - m)`` when ``smooth``, else 0).

    Stores nothing: the gradient pass recomputes ``y`` and the slope from ``x``, which stays
    intact until then (also when ``grad`` is ``x``).
    """
    n = x.size
    s = 0.0
    sd = 0.0
    hw = weight.size > 0
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        xb = x[b0:b1]
        sb = 0.0
        sdb = 0.0
        for j in range(xb.size):
            d = softcap_value(xb[j], cap) - m
            sb = radd(sb, fexp(d))
            if smooth:
                sdb = radd(sdb, (weight[b0 + j] if hw else 1.0) * np.float64(d))
        s += sb
        sd += sdb
    return s, sd


@kernel
def _grad_from_exp(g, c1, c2, weight):
    """``g[j] = e_j * c1 - c2 * w[j]`` where ``g`` holds ``e_j = exp(y_j - m)``."""
    if weight.size == 0:
        for j in range(g.size):
            g[j] = g[j] * c1 - c2
    else:
        for j in range(g.size):
            g[j] = g[j] * c1 - c2 * like(c2, weight[j])


@kernel
def _grad_from_capped(x, g, m, c1, c2, cap, weight):
    """``g[j] = (exp(y_j - m) * c1 - c2 * w[j]) * slope(x_j)``, ``y = softcap(x)``; ``g`` may be ``x``."""
    hw = weight.size > 0
    for j in range(x.size):
        xj = x[j]
        wj = like(c2, weight[j]) if hw else like(c2, 1.0)
        dy = fexp(softcap_value(xj, cap) - m) * c1 - c2 * wj
        g[j] = dy * like(c1, softcap_slope64(xj, cap))


@kernel
def _zero(g):
    z = like(g, 0.0)
    for j in range(g.size):
        g[j] = z


@kernel
def _row_max_capped(x, cap):
    """``max(softcap(x))`` (softcap is increasing: cap the maximum of ``x``)."""
    m = row_max(x)
    if cap > 0.0:
        m = softcap_value(m, cap)
    return m


@kernel
def _finish_lse(m, log_s):
    """``m + log(s)``, or ``m`` when the maximum is infinite (like ``logsumexp``)."""
    if abs(m) < np.inf:
        return np.float64(m) + log_s
    return np.float64(m)


@kernel
def _index_row(x, t, g, want_grad, weight, wsum, eps, z, cap, a):
    """One counted row with class-index target ``t``. Returns ``(loss, lse)`` in float64.

    ``loss`` is the per-token loss before ``token_weight``; the gradient, scaled by ``a``,
    is written to ``g`` when ``want_grad``. ``g`` may alias ``x``: the target logit is read
    before anything is written.
    """
    c = x.size
    hw = weight.size > 0
    xt = x[t]
    m = _row_max_capped(x, cap)
    smooth = eps > 0.0
    store = want_grad
    if cap > 0.0:
        s, sd = _pass_cap(x, m, cap, weight, smooth)
        yt = softcap_value(xt, cap)
    elif smooth:
        s, sd = _pass_smooth(x, m, weight, g, store)
        yt = xt
    else:
        s = _pass_plain(x, m, g, store)
        sd = 0.0
        yt = xt
    log_s = math.log(s)
    lse = _finish_lse(m, log_s)
    wt = np.float64(weight[t]) if hw else 1.0
    dt = np.float64(yt) - np.float64(m)
    loss = (1.0 - eps) * wt * (log_s - dt)
    if smooth:
        loss += (eps / c) * (wsum * log_s - sd)
    if z != 0.0:
        loss += z * lse * lse
    if want_grad:
        big_a = (1.0 - eps) * wt + eps * wsum / c + 2.0 * z * lse
        c1 = a * big_a / s
        c2 = a * eps / c
        pt = math.exp(dt) / s
        wtc = wt if hw else 1.0
        gt = a * (pt * big_a - (1.0 - eps) * wt - (eps / c) * wtc)
        if cap > 0.0:
            _grad_from_capped(x, g, m, like(m, c1), like(m, c2), cap, weight)
            gt *= softcap_slope64(xt, cap)
        else:
            _grad_from_exp(g, like(m, c1), like(m, c2), weight)
        g[t] = like(m, gt)
    return loss, lse


@kernel
def _check_index_targets(target, cols, ignore_index, weight, token_weight):
    """Serial pass over targets: ``(first bad flat index or -1, mean denominator)``."""
    den = 0.0
    hw = weight.size > 0
    htw = token_weight.size > 0
    for i in range(target.size):
        t = np.int64(target[i])
        if t == ignore_index:
            continue
        if t < 0 or t >= cols:
            return np.int64(i), den
        w = np.float64(weight[t]) if hw else 1.0
        if htw:
            w *= np.float64(token_weight[i])
        den += w
    return np.int64(-1), den


@kernel
def _finish_reduction(reduction, work, n, den, loss):
    """Serial, row-ordered float64 sum of the per-row losses into ``loss[0]``."""
    if reduction == NONE:
        return
    total = 0.0
    for i in range(n):
        total += work[i]
    if reduction == MEAN:
        total = total / den
    loss[0] = total


@kernel
def _weight_sum(weight, cols):
    if weight.size == 0:
        return np.float64(cols)
    w = 0.0
    for j in range(weight.size):
        w += np.float64(weight[j])
    return w


@kernel
def _row_lse_capped(x, cap):
    """log-sum-exp of ``softcap(x)`` (float64), without storing anything."""
    m = _row_max_capped(x, cap)
    if cap > 0.0:
        s, _ = _pass_cap(x, m, cap, x[:0], False)
    else:
        s = _pass_plain(x, m, x[:0], False)
    return _finish_lse(m, math.log(s))


@kernel(parallel=True)
def cross_entropy_rows(
    logits,
    target,
    weight,
    token_weight,
    ignore_index,
    label_smoothing,
    z_loss,
    softcap,
    reduction,
    grad_scale,
    grad_output,
    loss,
    lse,
    grad,
    work,
):
    """Cross-entropy with class-index targets: loss, optional lse, optional gradient.

    Signature (every array C-contiguous; "absent" = a size-0 array)::

        cross_entropy_rows(
            logits:        float32|float64 [N, C]   class axis last
            target:        int32|int64     [N]      class indices
            weight:        float           [C] | [0]   class weights (absent: ones)
            token_weight:  float           [N] | [0]   per-token weights (absent: ones)
            ignore_index:  int64                    targets equal to it are ignored
            label_smoothing: float64 in [0, 1]
            z_loss:        float64                  adds z_loss * lse**2 per counted token
            softcap:       float64                  > 0: logits -> softcap*tanh(x/softcap); 0: off
            reduction:     int64                    0 none, 1 mean, 2 sum
            grad_scale:    float64                  d(out)/d(loss): scales the gradient
            grad_output:   float           [N] | [0]   reduction 0 only: per-token scale
                                                    (replaces grad_scale when given)
            loss:          float   [N] (reduction 0) | [>= 1] (mean/sum: written to loss[0])
            lse:           float           [N] | [0]   log-sum-exp of (softcapped) logits
            grad:          same dtype as logits [N, C] | [0, *]; may BE logits (in place)
            work:          float64         [N] | [0]   scratch for mean/sum (absent: the
                                                    kernel allocates N float64 itself)
        ) -> int64: -1 on success, else the first flat index i whose target is neither
                    ignore_index nor in [0, C); nothing is written in that case.

    The per-token loss (``loss[i]`` with reduction 0) is 0 for ignored tokens; the
    gradient rows of ignored tokens are 0; ``lse`` is computed for every row. Mean with all
    tokens ignored gives NaN (0/0), like PyTorch.
    """
    n = logits.shape[0]
    c = logits.shape[1]
    bad, den = _check_index_targets(target, c, ignore_index, weight, token_weight)
    if bad >= 0:
        return bad
    wsum = _weight_sum(weight, c)
    want_grad = grad.shape[0] > 0
    want_lse = lse.size > 0
    per_token = grad_output.size > 0
    htw = token_weight.size > 0
    scale = grad_scale / den if reduction == MEAN else grad_scale
    if reduction != NONE and work.size < n:
        work = np.empty(n, np.float64)
    for i in prange(n):
        t = np.int64(target[i])
        v = 0.0
        if t == ignore_index:
            if want_lse:  # before zeroing: grad may be the logits
                lse[i] = _row_lse_capped(logits[i], softcap)
            if want_grad:
                _zero(grad[i])
        else:
            tw = np.float64(token_weight[i]) if htw else 1.0
            a = (np.float64(grad_output[i]) if per_token else scale) * tw
            v, ls = _index_row(
                logits[i], t, grad[i] if want_grad else logits[i], want_grad,
                weight, wsum, label_smoothing, z_loss, softcap, a,
            )
            v *= tw
            if want_lse:
                lse[i] = ls
        if reduction == NONE:
            loss[i] = v
        else:
            work[i] = v
    _finish_reduction(reduction, work, n, den, loss)
    return np.int64(-1)


# ----------------------------------------------------------------------------- soft targets


@kernel
def _block_wq(v, q, w, m, keep, add):
    """``(sum wq, sum wq * (v - m))`` with ``wq = w * (keep * q + add)`` (float64)."""
    sb = 0.0
    tb = 0.0
    hw = w.size > 0
    for j in range(v.size):
        wq = keep * np.float64(q[j]) + add
        if hw:
            wq *= np.float64(w[j])
        sb = radd(sb, wq)
        tb = radd(tb, wq * np.float64(v[j] - m))
    return sb, tb


@kernel
def _probs_row(x, q, g, want_grad, weight, eps, z, cap, a):
    """One row with probability target ``q`` (smoothed inside). Returns ``(loss, lse)``.

    With ``q' = (1 - eps) * q + eps / C``, ``S = sum w q'`` and ``T = sum w q' d``:
    ``loss = S * log(s) - T + z * lse**2`` and ``dloss/dy_j = p_j * (S + 2 z lse) - w_j q'_j``.
    ``g`` may alias ``x`` (never ``q``).
    """
    c = x.size
    hw = weight.size > 0
    m = _row_max_capped(x, cap)
    keep = 1.0 - eps
    add = eps / c
    s = 0.0
    big_s = 0.0
    big_t = 0.0
    for b0 in range(0, c, BLOCK):
        b1 = min(c, b0 + BLOCK)
        xb = x[b0:b1]
        qb = q[b0:b1]
        wb = weight[b0:b1] if hw else weight
        if cap > 0.0:  # nothing stored: the gradient pass recomputes y from x
            sb = 0.0
            tb = 0.0
            se = 0.0
            for j in range(xb.size):
                d = softcap_value(xb[j], cap) - m
                se = radd(se, fexp(d))
                wq = keep * np.float64(qb[j]) + add
                if hw:
                    wq *= np.float64(wb[j])
                sb = radd(sb, wq)
                tb = radd(tb, wq * np.float64(d))
            s += se
        else:
            sb, tb = _block_wq(xb, qb, wb, m, keep, add)  # before x may be overwritten
            if want_grad:
                gb = g[b0:b1]
                for j in range(xb.size):
                    gb[j] = fexp(xb[j] - m)
                s += _block_sum(gb)
            else:
                s += _block_sumexp(xb, m)
        big_s += sb
        big_t += tb
    log_s = math.log(s)
    lse = _finish_lse(m, log_s)
    loss = big_s * log_s - big_t
    if z != 0.0:
        loss += z * lse * lse
    if want_grad:
        c1 = like(m, a * (big_s + 2.0 * z * lse) / s)
        ck = like(m, a * keep)
        ca = like(m, a * add)
        one = like(m, 1.0)
        if cap > 0.0:
            for j in range(c):
                wj = like(m, weight[j]) if hw else one
                xj = x[j]
                dy = fexp(softcap_value(xj, cap) - m) * c1 - (ck * q[j] + ca) * wj
                g[j] = dy * like(m, softcap_slope64(xj, cap))
        else:
            for j in range(c):
                wj = like(m, weight[j]) if hw else one
                g[j] = g[j] * c1 - (ck * q[j] + ca) * wj
    return loss, lse


@kernel(parallel=True)
def cross_entropy_probs_rows(
    logits,
    target,
    weight,
    token_weight,
    label_smoothing,
    z_loss,
    softcap,
    reduction,
    grad_scale,
    grad_output,
    loss,
    lse,
    grad,
    work,
):
    """Cross-entropy with probability (soft) targets: loss, optional lse, optional gradient.

    Signature (every array C-contiguous; "absent" = a size-0 array)::

        cross_entropy_probs_rows(
            logits:        float32|float64 [N, C]
            target:        same dtype as logits [N, C]   class probabilities (not checked:
                                                    rows need not sum to 1, like PyTorch)
            weight:        float           [C] | [0]
            token_weight:  float           [N] | [0]
            label_smoothing, z_loss, softcap, reduction, grad_scale: as cross_entropy_rows
            grad_output:   float           [N] | [0]   (reduction 0 only)
            loss:          float   [N] (reduction 0) | [>= 1] (mean/sum: loss[0])
            lse:           float           [N] | [0]
            grad:          logits dtype    [N, C] | [0, *]; may BE logits, never target
            work:          float64         [N] | [0]
        ) -> int64: always -1 (no target can be invalid).

    Per-token loss ``token_weight[i] * (-sum_c w[c] q'[c] log_softmax(y)[c] + z * lse**2)``
    with ``q' = (1 - eps) * q + eps / C``; the mean divides by ``sum(token_weight)`` (N when
    absent), as PyTorch divides by the number of positions.
    """
    n = logits.shape[0]
    htw = token_weight.size > 0
    den = 0.0
    if htw:
        for i in range(n):
            den += np.float64(token_weight[i])
    else:
        den = np.float64(n)
    want_grad = grad.shape[0] > 0
    want_lse = lse.size > 0
    per_token = grad_output.size > 0
    scale = grad_scale / den if reduction == MEAN else grad_scale
    if reduction != NONE and work.size < n:
        work = np.empty(n, np.float64)
    for i in prange(n):
        tw = np.float64(token_weight[i]) if htw else 1.0
        a = (np.float64(grad_output[i]) if per_token else scale) * tw
        v, ls = _probs_row(
            logits[i], target[i], grad[i] if want_grad else logits[i], want_grad,
            weight, label_smoothing, z_loss, softcap, a,
        )
        v *= tw
        if want_lse:
            lse[i] = ls
        if reduction == NONE:
            loss[i] = v
        else:
            work[i] = v
    _finish_reduction(reduction, work, n, den, loss)
    return np.int64(-1)


# ----------------------------------------------------------------------------- NLL


@kernel(parallel=True)
def nll_loss_rows(
    log_probs,
    target,
    weight,
    token_weight,
    ignore_index,
    reduction,
    grad_scale,
    grad_output,
    loss,
    grad,
    work,
):
    """Negative log-likelihood over log-probabilities, PyTorch's ``nll_loss``.

    Signature (every array C-contiguous; "absent" = a size-0 array)::

        nll_loss_rows(
            log_probs:     float32|float64 [N, C]
            target:        int32|int64     [N]
            weight:        float           [C] | [0]
            token_weight:  float           [N] | [0]
            ignore_index:  int64
            reduction:     int64           0 none, 1 mean, 2 sum
            grad_scale:    float64
            grad_output:   float           [N] | [0]   (reduction 0 only)
            loss:          float   [N] (reduction 0) | [>= 1] (mean/sum: loss[0])
            grad:          float           [N, C] | [0, *]   d loss / d log_probs (may BE
                                                    log_probs: each row is read first)
            work:          float64         [N] | [0]
        ) -> int64: -1 on success, else the first bad flat target index (nothing written).

    Per-token loss ``-token_weight[i] * w[t] * log_probs[i, t]``; mean divides by
    ``sum(w[t_i] * token_weight[i])`` over non-ignored tokens.
    """
    n = log_probs.shape[0]
    c = log_probs.shape[1]
    bad, den = _check_index_targets(target, c, ignore_index, weight, token_weight)
    if bad >= 0:
        return bad
    want_grad = grad.shape[0] > 0
    per_token = grad_output.size > 0
    hw = weight.size > 0
    htw = token_weight.size > 0
    scale = grad_scale / den if reduction == MEAN else grad_scale
    if reduction != NONE and work.size < n:
        work = np.empty(n, np.float64)
    for i in prange(n):
        t = np.int64(target[i])
        v = 0.0
        tw = 1.0
        wt = 1.0
        if t != ignore_index:
            tw = np.float64(token_weight[i]) if htw else 1.0
            wt = np.float64(weight[t]) if hw else 1.0
            v = -tw * wt * np.float64(log_probs[i, t])
        if want_grad:
            _zero(grad[i])
            if t != ignore_index:
                a = np.float64(grad_output[i]) if per_token else scale
                grad[i, t] = -a * tw * wt
        if reduction == NONE:
            loss[i] = v
        else:
            work[i] = v
    _finish_reduction(reduction, work, n, den, loss)
    return np.int64(-1)
