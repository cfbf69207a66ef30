"""Fused cross-entropy and NLL kernels: loss, log-sum-exp and gradient in one row visit.

Layout contract (as in :mod:`fastlsm._kernels.normalize`): ``logits`` is a C-contiguous
``[rows, cols]`` float32/float64 array with the class axis last; every output is
caller-allocated and C-contiguous; ``grad`` may be ``logits`` itself (in place). Optional
arrays are passed as size-0 arrays of the right number of dimensions (``np.empty(0)``,
``np.empty((0, 0), dtype)``): that is how "absent" / ``NULL`` is spelled. 16-bit logits
(bfloat16/float16, as their :mod:`.half` views) are read directly and computed in float32;
their gradient is computed in a per-thread float32 row buffer and rounded once into the
16-bit ``grad`` (:func:`.half.grad_row`); loss, lse and probability targets are float32.

Entry functions (the C ABI wraps exactly these; they take only arrays and scalars, never
raise and never allocate anything of the logits' size):

- :func:`cross_entropy_rows`  class-index or probability (soft) targets, every option,
  loss + lse + gradient (the target kind is the target array's: ``[N]`` integers or
  ``[N, C]`` floats; one row loop for both);
- :func:`nll_loss_rows`       NLL over log-probabilities (loss and, optionally, gradient).

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

Each row costs one read from memory, as a pipeline: the exp-sum row pass over the
cache-resident row (which also stores ``exp(d)`` into ``grad`` when a gradient is wanted;
the loss has the same bits either way: :mod:`.ce_rows`) prefetches the thread's next row,
whose maximum a separate pass then takes from L2; on Intel CPUs, from 32 MiB of logits, the
pass loads the next row for its maximum in the same loop instead
(:func:`.rows.sumexp_next_max`, :func:`.memory.pipelines`). Then a scaling pass writes the
gradient. The mean's denominator and the target check come first, in a cheap
serial pass over the targets, so a bad target is reported before anything is written.
Per-row losses go to a float64 ``work`` buffer and are summed serially in row order:
results are bitwise identical for any thread count. Rows are split across threads in
contiguous blocks (:func:`.rows.row_chunks`), as in every row kernel.
"""

from __future__ import annotations

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from .._jit import JIT_OPTIONS, kernel
from .ce_rows import capped_lse, index_row, probs_row, zero_row
from .half import grad_row, load_element, row_buffer, store_element
from .math import like
from .memory import pipelines
from .rows import chunk_rows, row_chunks, row_max

NONE = 0
MEAN = 1
SUM = 2

# ----------------------------------------------------------------------------- shared entry steps


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
def _check_prob_targets(token_weight, n):
    """Probability targets: nothing to check; the mean divides by ``sum(token_weight)``
    (``n`` when absent), as PyTorch divides by the number of positions."""
    if token_weight.size == 0:
        return np.int64(-1), np.float64(n)
    den = 0.0
    for i in range(n):
        den += np.float64(token_weight[i])
    return np.int64(-1), den


def check_targets(target, n, cols, ignore_index, weight, token_weight):
    """``(first bad flat index or -1, mean denominator)`` for either target kind."""
    raise NotImplementedError("compiled only")


@overload(check_targets, jit_options=JIT_OPTIONS)
def _check_targets_impl(target, n, cols, ignore_index, weight, token_weight):
    if target.ndim == 1:
        return lambda target, n, cols, ignore_index, weight, token_weight: _check_index_targets(
            target, cols, ignore_index, weight, token_weight
        )
    return lambda target, n, cols, ignore_index, weight, token_weight: _check_prob_targets(
        token_weight, n
    )


def row_target(target, i, ignore_index):
    """``(ignored, t)``: row ``i``'s class index (int64) or probability row."""
    raise NotImplementedError("compiled only")


@overload(row_target, jit_options=JIT_OPTIONS)
def _row_target_impl(target, i, ignore_index):
    if target.ndim == 1:

        def index(target, i, ignore_index):
            t = np.int64(target[i])
            return t == ignore_index, t

        return index
    return lambda target, i, ignore_index: (False, target[i])


def counted_row(x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined):
    """``(loss, lse, max(nxt))`` of a counted row: :func:`.ce_rows.index_row` for a class index,
    :func:`.ce_rows.probs_row` for a probability row."""
    raise NotImplementedError("compiled only")


@overload(counted_row, jit_options=JIT_OPTIONS)
def _counted_row_impl(x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined):
    if isinstance(t, types.Integer):

        def index(x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined):
            return index_row(
                x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined
            )

        return index

    def probs(x, t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx, pipelined):
        return probs_row(x, t, g, dest, want_grad, weight, eps, z, cap, a, nxt, mx, pipelined)

    return probs


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
    """Cross-entropy: loss, optional lse, optional gradient, class-index or soft targets.

    Signature (every array C-contiguous; "absent" = a size-0 array)::

        cross_entropy_rows(
            logits:        float32|float64 [N, C]   class axis last
            target:        int32|int64     [N]      class indices, or
                           logits' dtype   [N, C]   class probabilities (not checked:
                                                    rows need not sum to 1, like PyTorch)
            weight:        float           [C] | [0]   class weights (absent: ones)
            token_weight:  float           [N] | [0]   per-token weights (absent: ones)
            ignore_index:  int64                    index targets equal to it are ignored
            label_smoothing: float64 in [0, 1]
            z_loss:        float64                  adds z_loss * lse**2 per counted token
            softcap:       float64                  > 0: logits -> softcap*tanh(x/softcap); 0: off
            reduction:     int64                    0 none, 1 mean, 2 sum
            grad_scale:    float64                  d(out)/d(loss): scales the gradient
            grad_output:   float           [N] | [0]   reduction 0 only: per-token scale
                                                    (replaces grad_scale when given)
            loss:          float   [N] (reduction 0) | [>= 1] (mean/sum: written to loss[0])
            lse:           float           [N] | [0]   log-sum-exp of (softcapped) logits
            grad:          same dtype as logits [N, C] | [0, *]; may BE logits (in place),
                                                    never a probability target
            work:          float64         [N] | [0]   scratch for mean/sum (absent: the
                                                    kernel allocates N float64 itself)
        ) -> int64: -1 on success, else the first flat index i whose index target is
                    neither ignore_index nor in [0, C); nothing is written in that case.

    The per-token loss (``loss[i]`` with reduction 0) is 0 for ignored tokens; the
    gradient rows of ignored tokens are 0; ``lse`` is computed for every row. Mean with all
    tokens ignored gives NaN (0/0), like PyTorch. Probability targets: per-token loss
    ``token_weight[i] * (-sum_c w[c] q'[c] log_softmax(y)[c] + z * lse**2)`` with
    ``q' = (1 - eps) * q + eps / C``; the mean divides by ``sum(token_weight)`` (N when
    absent).
    """
    n = logits.shape[0]
    c = logits.shape[1]
    eps, z, cap = label_smoothing, z_loss, softcap
    bad, den = check_targets(target, n, c, ignore_index, weight, token_weight)
    if bad >= 0:
        return bad
    wsum = _weight_sum(weight, c)
    want_grad = grad.shape[0] > 0
    want_lse = lse.size > 0
    scale = grad_scale / den if reduction == MEAN else grad_scale
    work = _loss_buffer(reduction, work, n)
    no_grad = grad.reshape(grad.size)[:0]  # a writeable stand-in: logits may be read-only
    nchunk = row_chunks(n)  # contiguous row blocks: the prefetched next row is this thread's
    pipelined = pipelines(logits.size * logits.itemsize)  # the same decision in every block
    for b in prange(nchunk):
        r0, r1 = chunk_rows(b, nchunk, n)
        buf = row_buffer(logits)  # 16-bit logits: this block's float32 row
        mx = row_max(logits[r0]) if r1 > r0 else like(logits, 0.0)
        for i in range(r0, r1):
            ignored, t = row_target(target, i, ignore_index)
            # the next row's maximum is taken during (or after) this row's pass; none after
            # the block's last row
            nxt = logits[i + 1] if i + 1 < r1 else logits[i][:0]
            v = 0.0
            if ignored:
                if want_lse:  # before zeroing: grad may be the logits
                    ls, mx = capped_lse(logits[i], cap, mx, nxt, pipelined)
                    lse[i] = ls
                else:
                    mx = row_max(nxt)
                if want_grad:
                    zero_row(grad[i])
            else:
                tw, a = _token_scales(i, token_weight, grad_output, scale)
                g = grad_row(grad, i, no_grad, buf, want_grad)
                dest = grad[i] if want_grad else no_grad  # where g ends (g itself unless 16-bit)
                v, ls, mx = counted_row(
                    logits[i], t, g, dest, want_grad, weight, wsum, eps, z, cap, a, nxt, mx,
                    pipelined,
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
    nchunk = row_chunks(n)
    for b in prange(nchunk):
        r0, r1 = chunk_rows(b, nchunk, n)
        for i in range(r0, r1):
            t = np.int64(target[i])
            v = 0.0
            tw = 1.0
            wt = 1.0
            if t != ignore_index:
                tw = np.float64(token_weight[i]) if htw else 1.0
                wt = np.float64(weight[t]) if hw else 1.0
                v = -tw * wt * np.float64(load_element(log_probs[i], t))
            if want_grad:
                zero_row(grad[i])
                if t != ignore_index:
                    a = np.float64(grad_output[i]) if per_token else scale
                    store_element(grad[i], t, -a * tw * wt)
            _keep_loss(reduction, loss, work, i, v)
    _finish_reduction(reduction, work, n, den, loss)
    return np.int64(-1)
