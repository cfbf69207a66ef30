"""One row of cross-entropy: loss, log-sum-exp and gradient (the entries are in
:mod:`.cross_entropy`, whose docstring derives the formulas).

Every row goes through the exp-sum row pass of :mod:`.rows` (float32: :mod:`.sumexp`):

- no softcap: :func:`.rows.row_shifted_sumexp` for a loss alone, :func:`.rows.exp_store_sum`
  when a gradient is wanted (it stores ``exp(y - m)`` into ``grad`` and returns the same
  bits): the loss is bitwise the same with and without a gradient, and the lse is
  bitwise logsumexp's;
- softcap: :func:`.rows.capped_sumexp` (the pass loading through :func:`.math.softcap`)
  in both cases; nothing is stored, the gradient loop recomputes ``y`` and the slope from
  ``x``, which stays intact until then (also when ``grad`` is ``x``).

Weighted sums (label smoothing, probability targets) are taken first, in float64, in
index order: ``grad`` may be the logits. ``x`` may be a 16-bit row (read through
:func:`.half.load_element` and the row pass's elements); ``g`` is then a float32 row buffer.
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import overload

from .._jit import JIT_OPTIONS, kernel
from .half import convert, load_element, store_element
from .math import fexp, flog, like, radd, softcap
from .memory import stream_affine
from .rows import capped_sumexp, exp_store_next_max, row_max, sumexp_next_max

BLOCK = 2048
"""Gradient loops with per-class constants run in blocks of this many elements (an L1-sized
scratch of constants, filled once per block, keeps the element loop branch-free)."""


def same_buffer(a, b):
    """True when two arrays start at the same address (``grad`` is the logits: in place)."""
    return a.ctypes.data == b.ctypes.data


@overload(same_buffer, jit_options=JIT_OPTIONS)
def _same_buffer_impl(a, b):
    return lambda a, b: a.ctypes.data == b.ctypes.data


def finish_grad(g, dest):
    """The gradient row ``g`` into ``dest``, the row of ``grad``: nothing when they are one
    array (float32/float64 gradients are computed in place), else rounded once into the
    16-bit row (:func:`.half.convert`)."""
    raise NotImplementedError("compiled only")


@overload(finish_grad, jit_options=JIT_OPTIONS)
def _finish_grad_impl(g, dest):
    if g.dtype == dest.dtype:
        return lambda g, dest: None
    return lambda g, dest: convert(g, dest)


@kernel
def zero_row(g):
    z = like(g, 0.0)
    for j in range(g.size):
        g[j] = z


@kernel
def capped_max(mx, cap):
    """``max(y)`` from ``mx = max(x)``: ``softcap(mx)`` when ``cap > 0`` (it is increasing)."""
    return softcap(mx, cap)[0] if cap > 0.0 else mx


@kernel
def finish_lse(m, log_s):
    """``m + log(s)``, or ``m`` when the maximum is infinite (like ``logsumexp``)."""
    if abs(m) < np.inf:
        return np.float64(m) + log_s
    return np.float64(m)


@kernel
def row_sum(x, m, cap, g, store, nxt, pipelined):
    """``(s, max(nxt))``: ``s = sum(exp(y - m))`` in float64 (``y = softcap(x)`` when
    ``cap > 0``), storing ``exp(x - m)`` into ``g`` when ``store`` and there is no softcap
    (the same bits in every mode), and the maximum of the thread's next row ``nxt`` (raw
    logits), taken in the same loop when ``pipelined`` (:func:`.rows.sumexp_next_max`)
    except with a softcap (then ``nxt`` is prefetched during the sum and its maximum read
    from cache)."""
    if cap > 0.0:
        return capped_sumexp(x, m, cap, nxt), row_max(nxt)
    if store:
        return exp_store_next_max(x, m, g, nxt, pipelined)
    return sumexp_next_max(x, m, nxt, pipelined)


@kernel
def capped_lse(x, cap, mx, nxt, pipelined):
    """log-sum-exp of the (softcapped) row in float64, storing nothing (``mx = max(x)``);
    returns ``(lse, max(nxt))``."""
    m = capped_max(mx, cap)
    # row_sum's non-storing branches, without a store target: x may be a read-only array
    if cap > 0.0:
        s, mx_next = capped_sumexp(x, m, cap, nxt), row_max(nxt)
    else:
        s, mx_next = sumexp_next_max(x, m, nxt, pipelined)
    return finish_lse(m, flog(s)), mx_next


@kernel
def _y(v, cap):
    return softcap(v, cap)[0] if cap > 0.0 else v


@kernel
def weighted_dsum(v, m, w, cap):
    """``sum_j w[j] * (y[j] - m)`` in float64 (``w`` empty: weights of 1)."""
    s = 0.0
    if w.size == 0:
        for j in range(v.size):
            s = radd(s, np.float64(_y(load_element(v, j), cap) - m))
    else:
        for j in range(v.size):
            s = radd(s, w[j] * np.float64(_y(load_element(v, j), cap) - m))
    return s


@kernel
def weighted_q(v, q, w, m, keep, add, cap):
    """``(sum wq, sum wq * (y - m))`` with ``wq = w * (keep * q + add)`` (float64)."""
    sb = 0.0
    tb = 0.0
    hw = w.size > 0
    for j in range(v.size):
        wq = keep * np.float64(q[j]) + add
        if hw:
            wq *= np.float64(w[j])
        sb = radd(sb, wq)
        tb = radd(tb, wq * np.float64(_y(load_element(v, j), cap) - m))
    return sb, tb


@kernel
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


@kernel
def grad_from_exp(g, c1, ck, ca, q, w):
    """``g[j] = e_j * c1 - (ck * q[j] + ca) * w[j]`` where ``g`` holds ``e_j = exp(y_j - m)``
    (``q`` empty: 0, ``w`` empty: 1). Four branch-free loops, no scratch."""
    if q.size > 0 and w.size > 0:
        for j in range(g.size):
            g[j] = g[j] * c1 - (ck * q[j] + ca) * like(c1, w[j])
    elif q.size > 0:
        for j in range(g.size):
            g[j] = g[j] * c1 - (ck * q[j] + ca)
    elif w.size > 0:
        for j in range(g.size):
            g[j] = g[j] * c1 - ca * like(c1, w[j])
    else:
        for j in range(g.size):
            g[j] = g[j] * c1 - ca


@kernel
def grad_capped(x, g, m, c1, ck, ca, q, w, cap):
    """``g = (exp(y - m) * c1 - (ck * q + ca) * w) * slope``, ``y, slope = softcap(x)``.

    In place (``g`` is ``x``) a loop over one array: with two arrays that alias, LLVM's
    runtime overlap check sends the loop to its scalar version (several times slower).
    """
    inplace = same_buffer(x, g)
    n = g.size
    cw = np.empty(min(n, BLOCK), g.dtype)
    for b0 in range(0, n, BLOCK):
        gb = g[b0 : b0 + BLOCK]
        cwb = cw[: gb.size]
        _fill_c2w(
            cwb, ck, ca, q[b0 : b0 + BLOCK] if q.size else q, w[b0 : b0 + BLOCK] if w.size else w
        )
        if inplace:
            for j in range(gb.size):
                y, slope = softcap(gb[j], cap)
                gb[j] = (fexp(y - m) * c1 - cwb[j]) * slope
        else:
            xb = x[b0 : b0 + BLOCK]
            for j in range(gb.size):
                y, slope = softcap(load_element(xb, j), cap)
                gb[j] = (fexp(y - m) * c1 - cwb[j]) * slope


@kernel
def index_row(x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined):
    """One counted row with class-index target ``t``, ``mx = max(x)``. Returns ``(loss,
    lse, max(nxt))`` (float64, float64, the logits' compute type).

    ``loss`` is the per-token loss before ``token_weight``; the gradient, scaled by ``a``,
    is written to ``dest`` (the row of ``grad``) when ``want_grad``, computed in ``g``
    (``dest`` itself, or a float32 buffer for a 16-bit ``dest``; without weights or
    softcap the last pass writes ``dest`` directly). ``g`` may alias ``x``: the target
    logit and the smoothing sum are read before anything is written. ``nxt`` is the
    thread's next row (``pipelined``: see :func:`row_sum`).
    """
    c = x.size
    hw = weight.size > 0
    xt = load_element(x, t)
    m = capped_max(mx, cap)
    smooth = eps > 0.0
    sd = weighted_dsum(x, m, weight, cap) if smooth else 0.0
    s, mx_next = row_sum(x, m, cap, g, want_grad, nxt, pipelined)
    yt = _y(xt, cap)
    log_s = flog(s)
    lse = finish_lse(m, log_s)
    wt = np.float64(weight[t]) if hw else 1.0
    dt = np.float64(yt) - np.float64(m)
    loss = (1.0 - eps) * wt * (log_s - dt)
    if smooth:
        loss += (eps / c) * (wsum * log_s - sd)
    if z != 0.0:
        loss += z * lse * lse
    if want_grad:
        # Without smoothing the other classes' weights do not enter the gradient: skipping
        # them (rather than multiplying by eps = 0) keeps an inf/NaN weight out of every row.
        big_a = (1.0 - eps) * wt + (eps * wsum / c if smooth else 0.0) + 2.0 * z * lse
        wg = weight if smooth else weight[:0]
        c1 = like(m, a * big_a / s)
        c2 = like(m, a * eps / c)
        zero = like(m, 0.0)
        pt = math.exp(dt) / s
        wtc = wt if hw else 1.0
        gt = a * (pt * big_a - (1.0 - eps) * wt - ((eps / c) * wtc if smooth else 0.0))
        if cap > 0.0:
            grad_capped(x, g, m, c1, zero, c2, x[:0], wg, cap)
            g[t] = like(m, gt * np.float64(softcap(xt, cap)[1]))
            finish_grad(g, dest)
        elif wg.size > 0:
            grad_from_exp(g, c1, zero, c2, x[:0], wg)
            g[t] = like(m, gt)
            finish_grad(g, dest)
        else:  # grad_from_exp's bits ((e - 0) * c1 - c2), written once into dest (IR, zmm)
            stream_affine(g, dest, zero, c1, c2, False)
            store_element(dest, t, like(m, gt))
    return loss, lse, mx_next


@kernel
def probs_row(x, q, g, dest, want_grad, weight, eps, z, cap, a, nxt, mx, pipelined):
    """One row with probability target ``q`` (smoothed inside). Returns ``(loss, lse,
    max(nxt))`` as :func:`index_row`.

    With ``q' = (1 - eps) * q + eps / C``, ``S = sum w q'`` and ``T = sum w q' d``:
    ``loss = S * log(s) - T + z * lse**2`` and ``dloss/dy_j = p_j * (S + 2 z lse) - w_j q'_j``.
    ``g`` may alias ``x`` (never ``q``).
    """
    c = x.size
    m = capped_max(mx, cap)
    keep = 1.0 - eps
    add = eps / c
    big_s, big_t = weighted_q(x, q, weight, m, keep, add, cap)  # before x may be overwritten
    s, mx_next = row_sum(x, m, cap, g, want_grad, nxt, pipelined)
    log_s = flog(s)
    lse = finish_lse(m, log_s)
    loss = big_s * log_s - big_t
    if z != 0.0:
        loss += z * lse * lse
    if want_grad:
        c1 = like(m, a * (big_s + 2.0 * z * lse) / s)
        ck = like(m, a * keep)
        ca = like(m, a * add)
        if cap > 0.0:
            grad_capped(x, g, m, c1, ck, ca, q, weight, cap)
        else:
            grad_from_exp(g, c1, ck, ca, q, weight)
        finish_grad(g, dest)
    return loss, lse, mx_next
