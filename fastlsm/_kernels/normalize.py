"""Row kernels for log_softmax, softmax and logsumexp.

Layout contract (shared by every kernel family): ``x`` is a C-contiguous ``[rows, cols]``
float32 or float64 array, outputs are caller-allocated and C-contiguous, ``out`` may be ``x``
itself. Each row is computed by one thread with the same code whatever the thread count, so
results are bitwise identical for any number of threads. Kernels never raise and never
allocate anything of the input's size.

Each thread takes a contiguous block of rows (:func:`row_chunks`). Each row is read from
memory once (while the previous row is computed, it is prefetched into L2), then processed
in three passes over cache-resident data (a 32k-float row is 128 KiB):
1. ``m = max(x)`` (``llvm.maxnum``, vectorized);
2. ``s = sum(exp(x - m))`` in float64, in an order written out in IR: for float32 one
   register-resident loop (``sumexp.sumexp_f32``); for float64 exponentials mapped into an
   L1 scratch chunk, then summed with compensation (``block_sum``);
3. the output, written with streaming stores: ``(x - m) - log(s)``, or ``exp(x - m) / s``
   from the row-sized scratch of pass 2 (softmax). The row kernels run this pass of row
   ``i - 1`` inside pass 2 of row ``i`` (one loop, :func:`sumexp_write_prev`,
   :func:`exp_store_write_prev`), so that one row's write traffic overlaps the next row's
   arithmetic; the one-row functions (:func:`row_log_softmax`, :func:`row_softmax`) define
   the arithmetic and the tests hold the pipelined kernels to their bits.
The subtraction ``x - m`` comes first, so values near the maximum keep every bit even for
logits like 1e4 or 1e30 (``(x - m) - log(s)``, never ``x - (m + log(s))``).

Special values follow PyTorch: ``-inf`` entries give ``exp(-inf) = 0`` (a negligible 1e-38
inside a sum); a NaN anywhere makes its row NaN (it reaches the sum); a ``+inf`` makes
``m = inf`` and ``inf - inf = NaN`` in log_softmax/softmax, ``+inf`` in logsumexp; an all
``-inf`` row gives NaN for log_softmax/softmax and ``-inf`` for logsumexp (PyTorch's and
SciPy's results).
"""

from __future__ import annotations

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from .._jit import JIT_OPTIONS, kernel
from .math import fexp, fexp_sum, flog, fmax, like, neumaier_add, neumaier_result
from .stream import block_sum, prefetch, store_fence, stream_affine, stream_divide
from .sumexp import (
    expsum_store_f32,
    expsum_store_write_prev_f32,
    sumexp_f32,
    sumexp_write_prev_f32,
)


@kernel
def row_max(x):
    """Maximum of a 1-D row ignoring NaN (NaN reaches the result through the exp sum)."""
    m = like(x, -np.inf)
    for j in range(x.size):
        m = fmax(m, x[j])
    return m


LINE = 16  # float32 elements per 64-byte cache line (float64 rows prefetch twice: harmless)
SCRATCH = 256  # elements of exp values held at once (1-2 KiB, L1)


@kernel
def _mapped_sumexp(xb, m, eb, nb):
    """``sum(exp(xb - m))`` for float64 data: an exp map into ``eb``, then :func:`block_sum`.

    ``xb`` is processed in chunks of ``eb.size``: the exponentials are computed by a plain
    vectorized map, each chunk is summed by :func:`block_sum` (order written out in IR,
    Kahan-compensated) and the chunk sums are added with Neumaier's compensation. No
    reassociating reduction is left to the vectorizer: it was seen to vectorize different
    inlined copies of one row function differently, so the bits of a row depended on the
    thread and the cache state. ``nb`` (or None) is prefetched chunk by chunk.
    """
    s = 0.0
    c = 0.0
    k = eb.size
    for c0 in range(0, xb.size, k):
        if nb is not None:
            for j in range(c0, min(c0 + k, nb.size), LINE):
                prefetch(nb, j)
        # A view indexed from 0: a loop index LLVM can prove non-negative skips Numba's
        # negative-index wraparound, which would otherwise turn the loads into gathers.
        xc = xb[c0 : c0 + k]
        n = xc.size
        for j in range(n):
            eb[j] = fexp_sum(xc[j] - m)
        s, c = neumaier_add(s, c, block_sum(eb[:n]))
    return neumaier_result(s, c)


def block_sumexp(xb, m, eb, nb=None):
    """``sum(exp(xb - m))`` in float64, in an order that depends only on ``xb.size``.

    ``xb - m`` must be ``<= 0`` or NaN (``m`` the maximum of the row). float32 data goes
    through :func:`sumexp.sumexp_f32` (one IR loop, in registers; ``eb`` unused); float64
    data through an exp map into the scratch ``eb`` and a compensated fixed-order sum.

    ``nb`` (optional) is the row this thread computes next: its lines at the same offsets
    are prefetched, spread over the computation (a burst of prefetches overflows the miss
    queues and most are dropped), so that the next row's first pass finds it in cache.
    Prefetching never changes a result.
    """
    raise NotImplementedError("compiled only")


@overload(block_sumexp, jit_options=JIT_OPTIONS)
def _block_sumexp_impl(xb, m, eb, nb=None):
    if xb.dtype == types.float32:
        return lambda xb, m, eb, nb=None: sumexp_f32(xb, m, nb)
    return lambda xb, m, eb, nb=None: _mapped_sumexp(xb, m, eb, nb)


def row_shifted_sumexp(x, m, nxt=None):
    """``sum(exp(x - m))`` accumulated in float64, without storing anything of the row's size.

    As :func:`block_sumexp` (``x - m <= 0`` or NaN; the summation order depends only on
    ``x.size``); float64 data gets its L1 scratch here, float32 needs none. ``nxt``
    (optional): the next row, prefetched meanwhile.
    """
    raise NotImplementedError("compiled only")


@overload(row_shifted_sumexp, jit_options=JIT_OPTIONS)
def _row_shifted_sumexp_impl(x, m, nxt=None):
    if x.dtype == types.float32:
        return lambda x, m, nxt=None: sumexp_f32(x, m, nxt)
    return lambda x, m, nxt=None: _mapped_sumexp(
        x, m, np.empty(max(1, min(x.size, SCRATCH)), x.dtype), nxt
    )


@kernel
def row_lse(x, nxt=None):
    """log-sum-exp of one row as float64 (``-inf`` for an empty or all ``-inf`` row).

    A row holding ``+inf`` gives ``+inf``; a NaN anywhere gives NaN (PyTorch's results).
    """
    m = row_max(x)
    if m == -np.inf:  # empty, or only -inf and NaN (maxnum skips NaN)
        for j in range(x.size):
            if x[j] != x[j]:
                return np.nan
        return -np.inf
    if m == np.inf:  # +inf, or NaN if the row also holds a NaN (maxnum skips NaN)
        for j in range(x.size):
            if x[j] != x[j]:
                return np.nan
        return np.inf
    return flog(row_shifted_sumexp(x, m, nxt)) + m


@kernel
def row_log_softmax(x, out, nxt=None):
    """``out = log_softmax(x)`` for one row; ``out`` may be ``x``. Returns the float64 lse.

    Three passes over the row (max, exp-sum, write); the second and third hit L2, and the
    write streams past the cache (:func:`stream_affine`): one DRAM read, one DRAM write.
    The caller issues :func:`store_fence` after its last row.
    """
    m = row_max(x)
    log_s = flog(row_shifted_sumexp(x, m, nxt))
    stream_affine(x, out, m, like(m, 1.0), like(m, log_s))
    return log_s + m


@kernel
def _mapped_exp_store(x, m, buf, nxt):
    """``buf = exp(x - m)`` (output values), returns ``sum(buf)``: the float64 data path."""
    s = 0.0
    c = 0.0
    n = x.size
    for c0 in range(0, n, SCRATCH):
        if nxt is not None:
            for j in range(c0, min(c0 + SCRATCH, nxt.size), LINE):
                prefetch(nxt, j)
        xc = x[c0 : c0 + SCRATCH]
        bc = buf[c0 : c0 + SCRATCH]
        for j in range(xc.size):
            bc[j] = fexp(xc[j] - m)  # the outputs: exact down to denormals, exp(-inf) = 0
        s, c = neumaier_add(s, c, block_sum(bc))
    return neumaier_result(s, c)


def exp_store_sum(x, m, buf, nxt=None):
    """``buf[j] = exp(x[j] - m)`` as output values (within 2 ulp, denormals included,
    ``exp(-inf) = 0``); returns their sum in float64, in an order that depends only on
    ``x.size``. float32: :func:`sumexp.expsum_store_f32`; float64: an exp map and a
    compensated fixed-order sum. ``nxt`` (or None) is prefetched meanwhile.
    """
    raise NotImplementedError("compiled only")


@overload(exp_store_sum, jit_options=JIT_OPTIONS)
def _exp_store_sum_impl(x, m, buf, nxt=None):
    if x.dtype == types.float32:
        return lambda x, m, buf, nxt=None: expsum_store_f32(x, m, buf, nxt)
    return lambda x, m, buf, nxt=None: _mapped_exp_store(x, m, buf, nxt)


@kernel
def row_softmax(x, out, buf, nxt=None):
    """``out = softmax(x)`` for one row; ``out`` may be ``x``; ``buf`` is row-sized scratch.

    ``exp(x - m)`` goes to ``buf`` (cache-resident), then ``buf / sum`` (one rounding)
    streams to ``out``. The caller issues :func:`store_fence` after its last row.
    """
    m = row_max(x)
    s = exp_store_sum(x, m, buf[: x.size], nxt)
    stream_divide(buf[: x.size], out, like(m, 0.0), s, like(m, 0.0))


MAX_CHUNKS = 64


@kernel
def row_chunks(rows):
    """Number of contiguous row blocks a parallel kernel splits its rows into.

    Each block is one task: its rows run in order on one thread, so the row prefetched
    while one is computed (the next) is the one this thread needs next, and row-sized
    scratch is allocated once per block (a 128 KiB allocation per row would be an mmap and
    page faults per row). 64 blocks keep any thread count busy. Rows are assigned by index,
    so the split changes nothing in any row's result.
    """
    return max(1, min(rows, MAX_CHUNKS))


@kernel
def chunk_rows(c, nchunk, rows):
    """Rows ``[r0, r1)`` of block ``c`` of ``nchunk``."""
    return c * rows // nchunk, (c + 1) * rows // nchunk


def sumexp_write_prev(x, m, nxt, px, po, a, b):
    """``row_shifted_sumexp(x, m, nxt)`` (the same bits), and meanwhile the previous row's
    output: ``po = (px - a) - b``, streamed (``stream_affine(px, po, a, 1, b)``).

    float32: one loop interleaving both (:func:`sumexp.sumexp_write_prev_f32`), so that the
    write of one row overlaps the arithmetic of the next; float64: the two in sequence.
    """
    raise NotImplementedError("compiled only")


@overload(sumexp_write_prev, jit_options=JIT_OPTIONS)
def _sumexp_write_prev_impl(x, m, nxt, px, po, a, b):
    if x.dtype == types.float32:
        return lambda x, m, nxt, px, po, a, b: sumexp_write_prev_f32(x, m, nxt, px, po, a, b)

    def impl(x, m, nxt, px, po, a, b):
        stream_affine(px, po, a, like(a, 1.0), b)
        return row_shifted_sumexp(x, m, nxt)

    return impl


@kernel
def log_softmax_block(x, out, r0, r1):
    """``out[i] = log_softmax(x[i])`` for rows ``r0 <= i < r1``, as a software pipeline.

    Row ``i``'s exp-sum runs in one loop with the streaming write of row ``i - 1``'s output
    (:func:`sumexp_write_prev`); row ``i + 1`` is prefetched meanwhile. Every row gets
    exactly the arithmetic of :func:`row_log_softmax`: only the order of memory traffic
    changes.
    """
    rows = x.shape[0]
    m_prev = like(x, 0.0)
    log_s_prev = like(x, 0.0)
    for i in range(r0, r1):
        xi = x[i]
        m = row_max(xi)
        nxt = x[min(i + 1, rows - 1)]
        if i > r0:
            s = sumexp_write_prev(xi, m, nxt, x[i - 1], out[i - 1], m_prev, log_s_prev)
        else:
            s = row_shifted_sumexp(xi, m, nxt)
        m_prev = m
        log_s_prev = like(m, flog(s))
    if r1 > r0:
        stream_affine(x[r1 - 1], out[r1 - 1], m_prev, like(m_prev, 1.0), log_s_prev)
    store_fence()


@kernel(parallel=True)
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    rows = x.shape[0]
    nchunk = row_chunks(rows)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, rows)
        log_softmax_block(x, out, r0, r1)


def exp_store_write_prev(x, m, buf, nxt, pbuf, po, s_prev):
    """``exp_store_sum(x, m, buf, nxt)`` (the same bits), and meanwhile the previous row's
    softmax: ``po = pbuf / s_prev``, streamed (``stream_divide(pbuf, po, 0, s_prev, 0)``).

    float32: one loop interleaving both (:func:`sumexp.expsum_store_write_prev_f32`);
    float64: the two in sequence.
    """
    raise NotImplementedError("compiled only")


@overload(exp_store_write_prev, jit_options=JIT_OPTIONS)
def _exp_store_write_prev_impl(x, m, buf, nxt, pbuf, po, s_prev):
    if x.dtype == types.float32:
        return lambda x, m, buf, nxt, pbuf, po, s_prev: expsum_store_write_prev_f32(
            x, m, buf, nxt, pbuf, po, s_prev
        )

    def impl(x, m, buf, nxt, pbuf, po, s_prev):
        stream_divide(pbuf, po, like(m, 0.0), s_prev, like(m, 0.0))
        return exp_store_sum(x, m, buf, nxt)

    return impl


@kernel
def softmax_block(x, out, r0, r1):
    """``out[i] = softmax(x[i])`` for rows ``r0 <= i < r1``, as a software pipeline.

    Row ``i``'s exponentials go to one of two row buffers while the other one's row
    (``i - 1``) is divided by its sum and streamed to ``out`` in the same loop
    (:func:`exp_store_write_prev`). Every row gets exactly the arithmetic of
    :func:`row_softmax`.
    """
    rows, cols = x.shape
    buf = np.empty((2, cols), x.dtype)
    s_prev = 1.0
    for i in range(r0, r1):
        xi = x[i]
        m = row_max(xi)
        nxt = x[min(i + 1, rows - 1)]
        cur = buf[(i - r0) % 2]
        if i > r0:
            s_prev = exp_store_write_prev(xi, m, cur, nxt, buf[(i - r0 + 1) % 2], out[i - 1],
                                          s_prev)
        else:
            s_prev = exp_store_sum(xi, m, cur, nxt)
    if r1 > r0:
        m0 = like(x, 0.0)
        stream_divide(buf[(r1 - 1 - r0) % 2], out[r1 - 1], m0, s_prev, m0)
    store_fence()


@kernel(parallel=True)
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    rows = x.shape[0]
    nchunk = row_chunks(rows)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, rows)
        softmax_block(x, out, r0, r1)


@kernel(parallel=True)
def logsumexp_rows(x, out):
    """``out[i] = logsumexp(x[i])``; ``out`` is 1-D with one value per row."""
    rows = x.shape[0]
    nchunk = row_chunks(rows)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, rows)
        for i in range(r0, r1):
            out[i] = row_lse(x[i], x[min(i + 1, rows - 1)])
