"""Row kernels for log_softmax, softmax and logsumexp.

Layout contract (shared by every kernel family): ``x`` is a C-contiguous ``[rows, cols]``
float32 or float64 array, outputs are caller-allocated and C-contiguous, ``out`` may be ``x``
itself. Each row is computed by one thread with the same code whatever the thread count, so
results are bitwise identical for any number of threads. Kernels never raise and never
allocate anything of the input's size.

Each thread takes a contiguous block of rows (:func:`.rows.row_chunks`). Each row is read from
memory once (while the previous row is computed, it is prefetched into L2), then processed
in three passes over cache-resident data (a 32k-float row is 128 KiB):
1. ``m = max(x)`` (``llvm.maxnum``, vectorized);
2. ``s = sum(exp(x - m))`` in float64, in an order written out in IR: for float32 the row
   pass of :mod:`.sumexp`; for float64 exponentials mapped into an L1 scratch chunk, then
   summed with compensation (:mod:`.rows`);
3. the output: ``(x - m) - log(s)``, or ``exp(x - m) / s`` from the row-sized scratch of
   pass 2 (softmax), with streaming stores when the output is larger than the cache
   (:func:`.memory.streams`). The row kernels run this pass of row ``i - 1`` inside pass 2
   of row ``i`` (one loop, :func:`sumexp_write_prev`, :func:`exp_store_write_prev`), so
   that one row's write traffic overlaps the next row's arithmetic; the tests hold the
   pipelined kernels to the bits of the same passes run one row at a time. A row whose
   maximum and sum are finite has no NaN output (a NaN or ``+inf`` logit makes the sum NaN,
   an all ``-inf`` row makes ``x - m`` NaN): its bfloat16 outputs are rounded without the
   NaN case (:func:`.half.narrow`, ``finite``), the same bits in fewer instructions.
The subtraction ``x - m`` comes first, so values near the maximum keep every bit even for
logits like 1e4 or 1e30 (``(x - m) - log(s)``, never ``x - (m + log(s))``).

Special values follow PyTorch: ``-inf`` entries give ``exp(-inf) = 0`` (a negligible 1e-38
inside a sum); a NaN anywhere makes its row NaN (it reaches the sum); a ``+inf`` makes
``m = inf`` and ``inf - inf = NaN`` in log_softmax/softmax, ``+inf`` in logsumexp; an all
``-inf`` row gives NaN for log_softmax/softmax and ``-inf`` for logsumexp (PyTorch's and
SciPy's results).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from .._jit import JIT_OPTIONS, kernel
from .half import is_f32_math, scratch
from .math import flog, like
from .memory import pipelines, store_fence, stream_affine, stream_divide, streams
from .rows import chunk_rows, exp_store_sum, lse_rows, row_chunks, row_max, row_shifted_sumexp
from .sumexp import (
    SHIFT_PREV,
    SHIFT_PREV_PLAIN,
    STORE_DIVIDE_PREV,
    STORE_DIVIDE_PREV_PLAIN,
    expsum_store_divide_prev_f32,
    expsum_store_divide_prev_plain_f32,
    make_pass,
    sumexp_shift_prev_f32,
    sumexp_shift_prev_plain_f32,
)

# The same passes for a previous row that holds no NaN output (its maximum and its sum are
# finite): bfloat16 outputs are then rounded without the NaN case (``half.narrow``), the same
# bits. Used for bfloat16 outputs only (for the other dtypes the code is the same).
_FINITE = "As its namesake, for a previous row whose outputs hold no NaN (the same bits)."
_shift_prev_finite = make_pass(replace(SHIFT_PREV, finite=True), "shift_prev_finite", _FINITE)
_shift_prev_plain_finite = make_pass(
    replace(SHIFT_PREV_PLAIN, finite=True), "shift_prev_plain_finite", _FINITE
)
_divide_prev_finite = make_pass(
    replace(STORE_DIVIDE_PREV, finite=True), "divide_prev_finite", _FINITE
)
_divide_prev_plain_finite = make_pass(
    replace(STORE_DIVIDE_PREV_PLAIN, finite=True), "divide_prev_plain_finite", _FINITE
)


def sumexp_write_prev(x, m, nxt, px, po, a, b, nontemporal):
    """``row_shifted_sumexp(x, m, nxt)`` (the same bits), and meanwhile the previous row's
    output: ``po = (px - a) - b`` (the bits of ``stream_affine(px, po, a, 1, b, nt)``),
    streaming stores when ``nontemporal``.

    float32: one loop interleaving both (the :data:`.sumexp.SHIFT_PREV` passes), so that the
    write of one row overlaps the arithmetic of the next; float64: the two in sequence.
    """
    raise NotImplementedError("compiled only")


def _sumexp_write_prev32(x, m, nxt, px, po, a, b, nontemporal):
    if nontemporal:
        return sumexp_shift_prev_f32(x, m, nxt, px, po, a, b)
    return sumexp_shift_prev_plain_f32(x, m, nxt, px, po, a, b)


def _sumexp_write_prev64(x, m, nxt, px, po, a, b, nontemporal):
    stream_affine(px, po, a, like(a, 1.0), b, nontemporal)
    return row_shifted_sumexp(x, m, nxt)


def _sumexp_write_prev_bf16(x, m, nxt, px, po, a, b, nontemporal):
    if np.isfinite(a) and np.isfinite(b):  # no NaN in po (see the module docstring)
        if nontemporal:
            return _shift_prev_finite(x, m, nxt, px, po, a, b)
        return _shift_prev_plain_finite(x, m, nxt, px, po, a, b)
    if nontemporal:
        return sumexp_shift_prev_f32(x, m, nxt, px, po, a, b)
    return sumexp_shift_prev_plain_f32(x, m, nxt, px, po, a, b)


@overload(sumexp_write_prev, jit_options=JIT_OPTIONS)
def _sumexp_write_prev_impl(x, m, nxt, px, po, a, b, nontemporal):
    if po.dtype == types.uint16:
        return _sumexp_write_prev_bf16
    return _sumexp_write_prev32 if is_f32_math(x.dtype) else _sumexp_write_prev64


def exp_store_write_prev(x, m, buf, nxt, pbuf, po, s_prev, nontemporal):
    """``exp_store_sum(x, m, buf, nxt)`` (the same bits), and meanwhile the previous row's
    softmax: ``po = pbuf / s_prev`` (the bits of ``stream_divide(pbuf, po, 0, s_prev, 0,
    nt)``), streaming stores when ``nontemporal``.

    float32: one loop interleaving both (the :data:`.sumexp.STORE_DIVIDE_PREV` passes);
    float64: the two in sequence.
    """
    raise NotImplementedError("compiled only")


def _exp_store_write_prev32(x, m, buf, nxt, pbuf, po, s_prev, nontemporal):
    if nontemporal:
        return expsum_store_divide_prev_f32(x, m, buf, nxt, pbuf, po, s_prev)
    return expsum_store_divide_prev_plain_f32(x, m, buf, nxt, pbuf, po, s_prev)


def _exp_store_write_prev64(x, m, buf, nxt, pbuf, po, s_prev, nontemporal):
    stream_divide(pbuf, po, like(m, 0.0), s_prev, like(m, 0.0), nontemporal)
    return exp_store_sum(x, m, buf, nxt)


def _exp_store_write_prev_bf16(x, m, buf, nxt, pbuf, po, s_prev, nontemporal):
    if np.isfinite(s_prev):  # a finite sum: every exponential and quotient is finite
        if nontemporal:
            return _divide_prev_finite(x, m, buf, nxt, pbuf, po, s_prev)
        return _divide_prev_plain_finite(x, m, buf, nxt, pbuf, po, s_prev)
    if nontemporal:
        return expsum_store_divide_prev_f32(x, m, buf, nxt, pbuf, po, s_prev)
    return expsum_store_divide_prev_plain_f32(x, m, buf, nxt, pbuf, po, s_prev)


@overload(exp_store_write_prev, jit_options=JIT_OPTIONS)
def _exp_store_write_prev_impl(x, m, buf, nxt, pbuf, po, s_prev, nontemporal):
    if po.dtype == types.uint16:
        return _exp_store_write_prev_bf16
    return _exp_store_write_prev32 if is_f32_math(x.dtype) else _exp_store_write_prev64


@kernel
def log_softmax_block(x, out, c, nchunk):
    """``out[i] = log_softmax(x[i])`` for the rows of block ``c`` of ``nchunk``
    (:func:`.rows.chunk_rows`), as a software pipeline.

    Row ``i``'s exp-sum runs in one loop with the write of row ``i - 1``'s output
    (:func:`sumexp_write_prev`; streaming stores when the output is larger than the cache,
    :func:`.memory.streams`); row ``i + 1`` is prefetched meanwhile. Every row gets exactly
    the arithmetic of the same passes run one row at a time (the sum, then
    ``stream_affine``; the tests hold it to those bits): only the order of memory traffic
    changes.
    """
    rows = x.shape[0]
    r0, r1 = chunk_rows(c, nchunk, rows)
    nt = streams(out.size * out.itemsize)  # the same decision in every block
    m_prev = like(x, 0.0)
    log_s_prev = like(x, 0.0)
    for i in range(r0, r1):
        xi = x[i]
        m = row_max(xi)
        nxt = x[min(i + 1, rows - 1)]
        if i > r0:
            s = sumexp_write_prev(xi, m, nxt, x[i - 1], out[i - 1], m_prev, log_s_prev, nt)
        else:
            s = row_shifted_sumexp(xi, m, nxt)
        m_prev = m
        log_s_prev = like(m, flog(s))
    if r1 > r0:
        stream_affine(x[r1 - 1], out[r1 - 1], m_prev, like(m_prev, 1.0), log_s_prev, nt)
    if nt:
        store_fence()


@kernel
def softmax_block(x, out, c, nchunk):
    """``out[i] = softmax(x[i])`` for the rows of block ``c`` of ``nchunk``, as a software
    pipeline.

    Row ``i``'s exponentials go to one of two row buffers while the other one's row
    (``i - 1``) is divided by its sum and written to ``out`` in the same loop
    (:func:`exp_store_write_prev`; streaming as in :func:`log_softmax_block`). Every row
    gets exactly the arithmetic of ``exp_store_sum`` then ``stream_divide`` run one row at
    a time.
    """
    rows, cols = x.shape
    r0, r1 = chunk_rows(c, nchunk, rows)
    nt = streams(out.size * out.itemsize)
    buf = scratch((2, cols), x)
    s_prev = 1.0
    zero = like(x, 0.0)
    for i in range(r0, r1):
        xi = x[i]
        m = row_max(xi)
        nxt = x[min(i + 1, rows - 1)]
        cur = buf[(i - r0) % 2]
        if i > r0:
            s_prev = exp_store_write_prev(
                xi, m, cur, nxt, buf[(i - r0 + 1) % 2], out[i - 1], s_prev, nt
            )
        else:
            s_prev = exp_store_sum(xi, m, cur, nxt)
    if r1 > r0:
        stream_divide(buf[(r1 - 1 - r0) % 2], out[r1 - 1], zero, s_prev, zero, nt)
    if nt:
        store_fence()


@kernel(parallel=True)
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    nchunk = row_chunks(x.shape[0])
    for c in prange(nchunk):
        log_softmax_block(x, out, c, nchunk)


@kernel(parallel=True)
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    nchunk = row_chunks(x.shape[0])
    for c in prange(nchunk):
        softmax_block(x, out, c, nchunk)


@kernel(parallel=True)
def logsumexp_rows(x, out):
    """``out[i] = logsumexp(x[i])``; ``out`` is 1-D with one value per row."""
    rows = x.shape[0]
    nchunk = row_chunks(rows)
    pipelined = pipelines(x.size * x.itemsize)  # the same decision in every block
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, rows)
        lse_rows(x, out, r0, r1, pipelined)
