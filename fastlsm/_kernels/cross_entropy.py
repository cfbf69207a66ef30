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

from .._jit import JIT_OPTIONS, kernel
from .math import exp_f32, fexp, like, radd
from .rows import chunk_rows, exp_store_sum, row_chunks, row_max, row_shifted_sumexp

NONE = 0
MEAN = 1
SUM = 2

# ----------------------------------------------------------------------------- softcap
#
# y = cap * tanh(x / cap), slope = dy/dx = sech(x / cap)**2. float32 data is computed in
# float32 with branch-free formulas that vectorize (float64 exp does not vectorize here:
# AVX2 has no int64 <-> double conversion); float64 data uses libm tanh (exact, scalar).

_F = np.float32
# Cephes tanhf: odd polynomial on |u| < 0.625, 1 - 2 / (exp(2|u|) + 1) above; about 2 ulp.
_TH0 = _F(-5.70498872745e-3)
_TH1 = _F(2.06390887954e-2)
_TH2 = _F(-5.37397155531e-2)
_TH3 = _F(1.33314422036e-1)
_TH4 = _F(-3.33332819422e-1)
_F_ONE = _F(1.0)
_F_TWO = _F(2.0)
_F_FOUR = _F(4.0)
_F_SPLIT = _F(0.625)
_F_ZERO = _F(0.0)


@register_jitable(**JIT_OPTIONS)
def _tanh_f32(u):
    """float32 tanh, the same formula as the softcapped row loops (same bits)."""
    a = abs(u)
    z = u * u
    small = ((((_TH0 * z + _TH1) * z + _TH2) * z + _TH3) * z + _TH4) * z * u + u
    e = exp_f32(-_F_TWO * a)
    big = (_F_ONE - e) / (_F_ONE + e)
    big = -big if u < _F_ZERO else big
    return small if a < _F_SPLIT else big


@register_jitable(**JIT_OPTIONS)
def _sech2_f32(u):
    """``sech(u)**2 = 4 e / (1 + e)**2``, ``e = exp(-2|u|)``: no cancellation for large |u|."""
    e = exp_f32(-_F_TWO * abs(u))
    d = _F_ONE + e
    return _F_FOUR * e / (d * d)


@register_jitable(**JIT_OPTIONS)
def _sech2_f64(u):
    e = math.exp(-2.0 * abs(u))
    d = 1.0 + e
    return 4.0 * e / (d * d)


def softcap_value(x, cap):
    """``cap * tanh(x / cap)`` in the precision of ``x`` (``cap`` is a float64).

    Computed as ``x * (1 / cap)``: with the ``arcp`` fast-math flag LLVM may turn a division
    into that multiplication in vectorized loops but not elsewhere, so every call site
    multiplies explicitly.
    """
    return cap * np.tanh(x * (1.0 / cap))


def softcap_slope(x, cap):
    """``d softcap(x) / dx = sech(x / cap)**2``, in the precision of ``x``.

    Written as ``4 e / (1 + e)**2`` with ``e = exp(-2 |x / cap|)``: the small slopes of
    saturated logits keep full relative precision (``1 - t*t`` from a rounded ``t`` loses
    them all).
    """
    u = x / cap
    return 1.0 / np.cosh(u) ** 2


@overload(softcap_value, jit_options=JIT_OPTIONS)
def _softcap_value_impl(x, cap):
    if x == types.float32:
        return lambda x, cap: np.float32(cap) * _tanh_f32(x * np.float32(1.0 / cap))
    if x == types.float64:
        return lambda x, cap: cap * np.tanh(x * (1.0 / cap))
    return None


@overload(softcap_slope, jit_options=JIT_OPTIONS)
def _softcap_slope_impl(x, cap):
    if x == types.float32:
        return lambda x, cap: _sech2_f32(x * np.float32(1.0 / cap))
    if x == types.float64:
        return lambda x, cap: _sech2_f64(x * (1.0 / cap))
    return None


def same_buffer(a, b):
    """True when two arrays start at the same address (``grad`` is the logits: in place)."""
    return a.ctypes.data == b.ctypes.data


@overload(same_buffer, jit_options=JIT_OPTIONS)
def _same_buffer_impl(a, b):
    return lambda a, b: a.ctypes.data == b.ctypes.data


# ----------------------------------------------------------------------------- row passes


BLOCK = 2048
"""Rows are processed in blocks of this many elements (8-16 KiB, L1-resident). Within a block
values are first stored (when a gradient is wanted), then summed by a loop that only reads:
the summation order is then the same whether ``grad`` is a separate array or the logits
themselves (LLVM vectorizes a loop that stores into a possibly-aliased array differently)."""


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
def _pass_plain(x, m, g, store, nxt):
    """``s = sum(exp(x - m))`` (float64); stores ``exp(x - m)`` into ``g`` when ``store``.

    Both modes are the one row pass of :mod:`.rows` and give the same bits of ``s``: the
    loss is the same with and without a gradient. ``nxt``, the next row of this thread, is
    prefetched when nothing is stored (in the storing pass, measured, it slowed it down).
    """
    if store:
        return exp_store_sum(x, m, g, nxt, False)
    return row_shifted_sumexp(x, m, nxt)


@kernel
def _pass_smooth(x, m, weight, g, store, nxt):
    """Like :func:`_pass_plain`, plus ``sd = sum_j w[j] * (x[j] - m)`` in float64 (taken
    first: ``g`` may be ``x``)."""
    sd = _block_dsum(x, m, weight)
    return _pass_plain(x, m, g, store, nxt), sd


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
        se, _s1, s2 = cap_sum_block(
            x[b0:b1], m, cap, weight[b0:b1] if hw else weight, x[:0], 0.0, 1.0, smooth
        )
        s += se
        sd += s2
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


# Softcapped row loops. The element math is written out inside each loop: LLVM does not
# inline a helper holding two exponentials into a loop body, and a call per element is
# 30-50x slower than the vectorized loop. float32: tanh from the same ``e = exp(-2|u|)`` as
# the slope (Cephes polynomial below |u| = 0.625), two exps per element, vectorized.
# float64: libm tanh (exact, scalar).


def cap_sum_block(xb, m, cap, wb, qb, keep, add, acc):
    """``(sum exp(y - m), sum wq, sum wq * (y - m))`` over a block, ``y = softcap(x)``.

    ``wq = (keep * q + add) * w`` (``q`` empty: 0; ``w`` empty: 1); the last two sums only
    when ``acc`` (else 0).
    """
    raise NotImplementedError


def cap_grad_block(src, g, inplace, m, c1, ck, ca, qb, wb, cap):
    """``g = (exp(y - m) * c1 - (ck * q + ca) * w) * sech(src / cap)**2``, ``y = softcap(src)``.

    ``inplace``: ``src`` is ``g`` (a single-array loop is used, see :func:`_store_exp`).
    """
    raise NotImplementedError


# The float32 element math (u = x / cap, e = exp(-2|u|), tanh, y, slope) is spelled out in
# each loop on purpose: see the comment above.


@register_jitable(**JIT_OPTIONS)
def _cap_sum32(xb, m, cap, wb, qb, keep, add, acc):
    inv = np.float32(1.0 / cap)
    cc = np.float32(cap)
    hw = wb.size > 0
    hq = qb.size > 0
    se = 0.0
    s1 = 0.0
    s2 = 0.0
    if acc:
        wq = np.empty(xb.size, np.float64)  # one block of (keep * q + add) * w
        for j in range(xb.size):
            wq[j] = keep * (np.float64(qb[j]) if hq else 0.0) + add
        if hw:
            for j in range(xb.size):
                wq[j] *= np.float64(wb[j])
        for j in range(xb.size):
            s1 = radd(s1, wq[j])
        for j in range(xb.size):
            u = xb[j] * inv
            a = abs(u)
            e = exp_f32(-_F_TWO * a)
            z = u * u
            small = ((((_TH0 * z + _TH1) * z + _TH2) * z + _TH3) * z + _TH4) * z * u + u
            big = (_F_ONE - e) / (_F_ONE + e)
            big = -big if u < _F_ZERO else big
            d = cc * (small if a < _F_SPLIT else big) - m
            se = radd(se, exp_f32(d))
            s2 = radd(s2, wq[j] * np.float64(d))
    else:
        for j in range(xb.size):
            u = xb[j] * inv
            a = abs(u)
            e = exp_f32(-_F_TWO * a)
            z = u * u
            small = ((((_TH0 * z + _TH1) * z + _TH2) * z + _TH3) * z + _TH4) * z * u + u
            big = (_F_ONE - e) / (_F_ONE + e)
            big = -big if u < _F_ZERO else big
            se = radd(se, exp_f32(cc * (small if a < _F_SPLIT else big) - m))
    return se, s1, s2


@register_jitable(**JIT_OPTIONS)
def _fill_c2w(cw, ck, ca, qb, wb):
    """``cw = (ck * q + ca) * w`` (``q`` empty: 0, ``w`` empty: 1): branch-free later loops."""
    n = cw.size
    if qb.size > 0 and wb.size > 0:
        for j in range(n):
            cw[j] = (ck * qb[j] + ca) * cw.dtype.type(wb[j])
    elif qb.size > 0:
        for j in range(n):
            cw[j] = ck * qb[j] + ca
    elif wb.size > 0:
        for j in range(n):
            cw[j] = ca * cw.dtype.type(wb[j])
    else:
        for j in range(n):
            cw[j] = ca


@register_jitable(**JIT_OPTIONS)
def _cap_grad32(src, g, inplace, m, c1, ck, ca, qb, wb, cap):
    inv = np.float32(1.0 / cap)
    cc = np.float32(cap)
    four = np.float32(4.0)
    cw = np.empty(g.size, np.float32)  # one block (8 KiB) of per-class constants
    _fill_c2w(cw, ck, ca, qb, wb)
    if inplace:
        for j in range(g.size):
            u = g[j] * inv
            a = abs(u)
            e = exp_f32(-_F_TWO * a)
            z = u * u
            small = ((((_TH0 * z + _TH1) * z + _TH2) * z + _TH3) * z + _TH4) * z * u + u
            d1 = _F_ONE + e
            big = (_F_ONE - e) / d1
            big = -big if u < _F_ZERO else big
            y = cc * (small if a < _F_SPLIT else big)
            g[j] = (exp_f32(y - m) * c1 - cw[j]) * (four * e / (d1 * d1))
    else:
        for j in range(src.size):
            u = src[j] * inv
            a = abs(u)
            e = exp_f32(-_F_TWO * a)
            z = u * u
            small = ((((_TH0 * z + _TH1) * z + _TH2) * z + _TH3) * z + _TH4) * z * u + u
            d1 = _F_ONE + e
            big = (_F_ONE - e) / d1
            big = -big if u < _F_ZERO else big
            y = cc * (small if a < _F_SPLIT else big)
            g[j] = (exp_f32(y - m) * c1 - cw[j]) * (four * e / (d1 * d1))


@register_jitable(**JIT_OPTIONS)
def _cap_sum64(xb, m, cap, wb, qb, keep, add, acc):
    inv = 1.0 / cap
    hw = wb.size > 0
    hq = qb.size > 0
    se = 0.0
    s1 = 0.0
    s2 = 0.0
    for j in range(xb.size):
        d = cap * np.tanh(xb[j] * inv) - m
        se = radd(se, fexp(d))
        if acc:
            wq = keep * (np.float64(qb[j]) if hq else 0.0) + add
            wq = wq * (np.float64(wb[j]) if hw else 1.0)
            s1 = radd(s1, wq)
            s2 = radd(s2, wq * d)
    return se, s1, s2


@register_jitable(**JIT_OPTIONS)
def _cap_grad64(src, g, inplace, m, c1, ck, ca, qb, wb, cap):
    inv = 1.0 / cap
    hw = wb.size > 0
    hq = qb.size > 0
    for j in range(g.size):
        u = src[j] * inv
        e = math.exp(-2.0 * abs(u))
        d1 = 1.0 + e
        c2w = (ck * (qb[j] if hq else 0.0) + ca) * (np.float64(wb[j]) if hw else 1.0)
        g[j] = (fexp(cap * np.tanh(u) - m) * c1 - c2w) * (4.0 * e / (d1 * d1))


_CAP32 = (_cap_sum32, _cap_grad32)
_CAP64 = (_cap_sum64, _cap_grad64)


@overload(cap_sum_block, jit_options=JIT_OPTIONS)
def _cap_sum_block_impl(xb, m, cap, wb, qb, keep, add, acc):
    if isinstance(xb, types.Array):
        return _CAP32[0] if xb.dtype == types.float32 else _CAP64[0]
    return None


@overload(cap_grad_block, jit_options=JIT_OPTIONS)
def _cap_grad_block_impl(src, g, inplace, m, c1, ck, ca, qb, wb, cap):
    if isinstance(src, types.Array):
        return _CAP32[1] if src.dtype == types.float32 else _CAP64[1]
    return None


@kernel
def _grad_from_capped(x, g, m, c1, c2, cap, weight):
    """Index-target gradient through the softcap: ``(exp(y - m) * c1 - c2 * w) * slope``."""
    inplace = same_buffer(x, g)
    n = x.size
    hw = weight.size > 0
    zero = like(m, 0.0)
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        cap_grad_block(
            x[b0:b1],
            g[b0:b1],
            inplace,
            m,
            c1,
            zero,
            c2,
            x[:0],
            weight[b0:b1] if hw else weight,
            cap,
        )


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
def _index_row(x, t, g, want_grad, weight, wsum, eps, z, cap, a, nxt):
    """One counted row with class-index target ``t``. Returns ``(loss, lse)`` in float64.

    ``loss`` is the per-token loss before ``token_weight``; the gradient, scaled by ``a``,
    is written to ``g`` when ``want_grad``. ``g`` may alias ``x``: the target logit is read
    before anything is written. ``nxt`` (the thread's next row) is prefetched meanwhile.
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
        s, sd = _pass_smooth(x, m, weight, g, store, nxt)
        yt = xt
    else:
        s = _pass_plain(x, m, g, store, nxt)
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
            gt *= np.float64(softcap_slope(xt, cap))
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
def _loss_buffer(reduction, work, n):
    """Where per-row losses go before a mean/sum: ``work`` if it is big enough, else a new
    float64 ``[n]`` (reduction "none" writes ``loss`` directly and needs none)."""
    if reduction != NONE and work.size < n:
        return np.empty(n, np.float64)
    return work


@kernel
def _keep_loss(reduction, loss, work, i, v):
    """Row ``i``'s loss: to ``loss[i]`` (reduction "none") or to ``work[i]`` (mean/sum)."""
    if reduction == NONE:
        loss[i] = v
    else:
        work[i] = v


@kernel
def _token_scales(i, token_weight, grad_output, scale):
    """``(tw, a)``: row ``i``'s token weight (1 when absent) and its gradient scale,
    ``grad_output[i]`` (reduction "none" with per-token grad_output) or ``scale``, times tw."""
    tw = np.float64(token_weight[i]) if token_weight.size > 0 else 1.0
    a = np.float64(grad_output[i]) if grad_output.size > 0 else scale
    return tw, a * tw


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
        s = _pass_plain(x, m, x[:0], False, x[:0])
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
    scale = grad_scale / den if reduction == MEAN else grad_scale
    work = _loss_buffer(reduction, work, n)
    nchunk = row_chunks(n)  # contiguous row blocks: the prefetched next row is this thread's
    for b in prange(nchunk):
        r0, r1 = chunk_rows(b, nchunk, n)
        for i in range(r0, r1):
            t = np.int64(target[i])
            v = 0.0
            if t == ignore_index:
                if want_lse:  # before zeroing: grad may be the logits
                    lse[i] = _row_lse_capped(logits[i], softcap)
                if want_grad:
                    _zero(grad[i])
            else:
                tw, a = _token_scales(i, token_weight, grad_output, scale)
                v, ls = _index_row(
                    logits[i],
                    t,
                    grad[i] if want_grad else logits[i],
                    want_grad,
                    weight,
                    wsum,
                    label_smoothing,
                    z_loss,
                    softcap,
                    a,
                    logits[min(i + 1, n - 1)],
                )
                v *= tw
                if want_lse:
                    lse[i] = ls
            _keep_loss(reduction, loss, work, i, v)
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
    inplace = want_grad and same_buffer(x, g)
    m = _row_max_capped(x, cap)
    keep = 1.0 - eps
    add = eps / c
    s = 0.0
    big_s = 0.0
    big_t = 0.0
    if cap > 0.0:  # nothing stored: the gradient pass recomputes y from x
        for b0 in range(0, c, BLOCK):
            b1 = min(c, b0 + BLOCK)
            se, sb, tb = cap_sum_block(
                x[b0:b1], m, cap, weight[b0:b1] if hw else weight, q[b0:b1], keep, add, True
            )
            s += se
            big_s += sb
            big_t += tb
    else:
        big_s, big_t = _block_wq(x, q, weight, m, keep, add)  # before x may be overwritten
        s = _pass_plain(x, m, g, want_grad, x[:0])
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
            for b0 in range(0, c, BLOCK):
                b1 = min(c, b0 + BLOCK)
                cap_grad_block(
                    x[b0:b1],
                    g[b0:b1],
                    inplace,
                    m,
                    c1,
                    ck,
                    ca,
                    q[b0:b1],
                    weight[b0:b1] if hw else weight,
                    cap,
                )
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
    scale = grad_scale / den if reduction == MEAN else grad_scale
    work = _loss_buffer(reduction, work, n)
    for i in prange(n):
        tw, a = _token_scales(i, token_weight, grad_output, scale)
        v, ls = _probs_row(
            logits[i],
            target[i],
            grad[i] if want_grad else logits[i],
            want_grad,
            weight,
            label_smoothing,
            z_loss,
            softcap,
            a,
        )
        v *= tw
        if want_lse:
            lse[i] = ls
        _keep_loss(reduction, loss, work, i, v)
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
    work = _loss_buffer(reduction, work, n)
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
        _keep_loss(reduction, loss, work, i, v)
    _finish_reduction(reduction, work, n, den, loss)
    return np.int64(-1)
