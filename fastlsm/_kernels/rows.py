"""Row helpers shared by every kernel family: row blocks per thread, max, sums, exp-sums.

Layout contract (every family): a row is a 1-D C-contiguous float32/float64 array; 2-D
inputs are ``[rows, cols]`` with the class axis last; outputs are caller-allocated.

- :func:`row_chunks` / :func:`chunk_rows`: the one way rows are split across threads;
- :func:`row_max`: ``max(x)`` ignoring NaN (vectorized ``llvm.maxnum``);
- :func:`row_max_ahead`: the same maximum while prefetching the head of the next row;
- :func:`block_sum`: a float64 sum of an array in a fixed order written out in IR;
- :func:`row_shifted_sumexp` / :func:`block_sumexp`: ``sum(exp(x - m))``, the sum-only row
  pass (float32: :data:`.sumexp.SUM`; float64: an exp map into an L1 scratch chunk and a
  compensated fixed-order sum);
- :func:`capped_sumexp`: the same sum over softcapped logits;
- :func:`exp_store_sum`: the same sum (the same bits) while storing ``exp(x - m)`` as output
  values (float32: :data:`.sumexp.STORE`);
- :func:`row_lse`: log-sum-exp of a row with PyTorch's special values; :func:`lse_rows` the
  same for a block of rows (:func:`sumexp_next_max`, pipelined from memory on Intel CPUs).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from .._jit import JIT_OPTIONS, kernel
from . import half, ir
from .half import is_f32_math, load_element
from .math import (
    SUM_LO_D,
    exp_sum_f64_ir,
    fexp,
    fexp_sum,
    flog,
    fmax,
    like,
    neumaier_add,
    neumaier_result,
    softcap,
)
from .memory import prefetch
from .sumexp import (
    expsum_store_f32,
    expsum_store_next_max_f32,
    expsum_store_only_f32,
    sumexp_f32,
    sumexp_next_max_f32,
    sumexp_softcap_f32,
)

# ----------------------------------------------------------------------------- threads

MAX_CHUNKS = 64


@kernel
def row_chunks(rows):
    """Number of contiguous row blocks a parallel kernel splits its ``rows`` into.

    The one way rows are split across threads, in every row kernel::

        nchunk = row_chunks(rows)
        for c in prange(nchunk):
            r0, r1 = chunk_rows(c, nchunk, rows)
            for i in range(r0, r1):
                ...  # row i, prefetching row min(i + 1, rows - 1)

    Each block is one task: its rows run in order on one thread, so the row prefetched
    while one is computed (the next) is the one this thread needs next, and row-sized
    scratch is allocated once per block (a 128 KiB allocation per row would be an mmap and
    page faults per row). 64 blocks keep any thread count busy. Rows are assigned by index,
    so the split changes nothing in any row's result.
    """
    return max(1, min(rows, MAX_CHUNKS))


@kernel
def chunk_rows(c, nchunk, rows):
    """Rows ``[r0, r1)`` of block ``c`` of ``nchunk`` (see :func:`row_chunks`)."""
    return c * rows // nchunk, (c + 1) * rows // nchunk


# ----------------------------------------------------------------------------- max, sums


@kernel
def row_max(x):
    """Maximum of a 1-D row ignoring NaN (NaN reaches the result through the exp sum)."""
    m = like(x, -np.inf)
    for j in range(x.size):
        m = fmax(m, load_element(x, j))
    return m


AHEAD_GROUP = 8
"""Lines of a row read by :func:`row_max_ahead` per line of the next row it prefetches."""
_MAX_ACCS = 4  # independent maxnum accumulators


@intrinsic
def row_max_ahead(typingctx, x, nxt):
    """``(m, k)``: :func:`row_max` of ``x`` (the same value) while prefetching into L2 the
    first ``k`` elements of ``nxt`` (the row this thread computes next), one line per
    :data:`AHEAD_GROUP` lines read, ``k`` about ``x.size / AHEAD_GROUP`` (bounded by
    ``nxt.size``).

    The exp-sum pass that follows prefetches the rest, ``nxt[k:]``: the next row streams
    in during both passes, so memory never idles while this (cache-resident) pass runs.
    One 64-byte line per vector, :data:`_MAX_ACCS` accumulators, a masked tail.
    """
    if not (
        isinstance(x, types.Array) and isinstance(nxt, types.Array)
        and x.ndim == nxt.ndim == 1 and x.layout == nxt.layout == "C"
        and x.dtype == nxt.dtype and half.element(x.dtype) is not None
    ):
        return None
    el = half.element(x.dtype)
    scalar = types.float64 if el.reg == ir.F64 else types.float32
    rty = types.Tuple((scalar, types.intp))

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        na = context.make_array(signature.args[1])(context, builder, args[1])
        intp = context.get_value_type(types.intp)
        lanes = ir.LINE_BYTES // el.itemsize
        vty = ir.vec(el.reg, lanes)
        ninf = ir.const(vty, float("-inf"))
        n = builder.extract_value(xa.shape, 0)
        nn = builder.extract_value(na.shape, 0)
        c = lambda v: llvm_ir.Constant(intp, v)  # noqa: E731
        accs = [cgutils.alloca_once_value(builder, ninf) for _ in range(_MAX_ACCS)]

        def take(k, j):
            acc = accs[k]
            v = el.load(builder, xa.data, j, lanes)
            builder.store(ir.call(builder, "maxnum", [builder.load(acc), v]), acc)

        group = lanes * AHEAD_GROUP
        ngroup = builder.sdiv(n, c(group))
        own = builder.bitcast(xa.data, na.data.type)  # (a prefetch never faults)
        with cgutils.for_range(builder, ngroup, intp=intp) as loop:
            base = builder.mul(loop.index, c(group))
            at = builder.mul(loop.index, c(lanes))
            inside = builder.icmp_signed("<", at, nn)
            ir.prefetch_l2(builder, builder.select(inside, builder.gep(na.data, [at]),
                                                   builder.gep(own, [at])))
            for g in range(AHEAD_GROUP):
                take(g % _MAX_ACCS, builder.add(base, c(g * lanes)))
        start = builder.mul(ngroup, c(group))
        nvec = builder.sdiv(builder.sub(n, start), c(lanes))
        with cgutils.for_range(builder, nvec, intp=intp) as loop:
            take(0, builder.add(start, builder.mul(loop.index, c(lanes))))
        j = builder.add(start, builder.mul(nvec, c(lanes)))
        with builder.if_then(builder.icmp_signed("<", j, n)):
            mask = ir.lane_mask(builder, builder.sub(n, j), lanes)
            v = builder.select(mask, el.load_masked(builder, xa.data, j, mask), ninf)
            builder.store(ir.call(builder, "maxnum", [builder.load(accs[1]), v]), accs[1])
        m = ir.max_across(builder, [builder.load(a) for a in accs])
        k = builder.mul(ngroup, c(lanes))
        k = builder.select(builder.icmp_signed("<", k, nn), k, nn)
        return context.make_tuple(builder, rty, [m, k])

    return rty(x, nxt), codegen


_SUM_VECTORS = 4  # independent accumulators (hide add latency)
_SUM_WIDTH = 4  # float64 lanes per accumulator


@intrinsic
def block_sum(typingctx, arr):
    """Sum of a 1-D C-contiguous float32/float64 array, in float64, in a fixed order.

    Element ``j`` of the first ``16 * (n // 16)`` goes to lane ``j % 16`` (four <4 x double>
    accumulators, added in index order; float64 data keeps each add's rounding error, by
    TwoSum, in four more accumulators). float32
    data: the lanes are combined pairwise in a fixed tree, then the remaining ``n % 16``
    elements are added in order. float64 data: the lanes, their compensations and then the
    remaining elements go through Neumaier's compensated sum (within about half an ulp of
    the exact sum whatever ``n``, barring cancellation). The order is written
    out in LLVM IR rather than left to the vectorizer: a reassociating reduction was seen to
    be vectorized differently in different inlined copies of the same row function, so two
    rows with equal data could round differently depending on which thread ran them.
    """
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and arr.layout == "C"
        and arr.dtype in (types.float32, types.float64)
    ):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        dty = ir.F64
        ety = context.get_value_type(signature.args[0].dtype)
        n = builder.extract_value(ary.shape, 0)
        block = _SUM_VECTORS * _SUM_WIDTH
        vty = ir.vec(dty, _SUM_WIDTH)
        evty = ir.vec(ety, _SUM_WIDTH)
        zero_v = ir.const(vty, 0.0)
        accs = [cgutils.alloca_once_value(builder, zero_v) for _ in range(_SUM_VECTORS)]
        comps = [cgutils.alloca_once_value(builder, zero_v) for _ in range(_SUM_VECTORS)]
        nblk = builder.sdiv(n, llvm_ir.Constant(intp, block))
        with cgutils.for_range(builder, nblk, intp=intp) as loop:
            base = builder.mul(loop.index, llvm_ir.Constant(intp, block))
            for k, (acc, comp) in enumerate(zip(accs, comps, strict=True)):
                j = builder.add(base, llvm_ir.Constant(intp, k * _SUM_WIDTH))
                v = builder.load(
                    ir.elem_ptr(builder, ary.data, j, evty),
                    align=ety.get_abi_size(context.target_data),
                )
                a = builder.load(acc)
                if ety != dty:  # float32 data: a float64 sum is already far more exact
                    builder.store(builder.fadd(a, builder.fpext(v, vty)), acc)
                    continue
                # Knuth's TwoSum: e is exactly what t = a + v rounded away, whatever the
                # magnitudes (Kahan's update assumes |a| >= |v|); comp sums the e's. After an
                # infinite term comp is NaN (inf - inf), and the plain sum is the answer.
                t = builder.fadd(a, v)
                bp = builder.fsub(t, a)
                e = builder.fadd(
                    builder.fsub(a, builder.fsub(t, bp)), builder.fsub(v, bp)
                )
                builder.store(builder.fadd(builder.load(comp), e), comp)
                builder.store(t, acc)

        def lanes_of(vectors):
            return [
                builder.extract_element(builder.load(v), llvm_ir.Constant(ir.I32, i))
                for v in vectors
                for i in range(_SUM_WIDTH)
            ]

        def tree(values):  # a fixed pairwise tree
            while len(values) > 1:
                values = [builder.fadd(values[i], values[i + 1]) for i in range(0, len(values), 2)]
            return values[0]

        lanes = lanes_of(accs)
        start = builder.mul(nblk, llvm_ir.Constant(intp, block))

        def tail(add):
            with cgutils.for_range(builder, builder.sub(n, start), intp=intp) as loop:
                x = builder.load(builder.gep(ary.data, [builder.add(start, loop.index)]))
                add(x if ety == dty else builder.fpext(x, dty))

        if ety != dty:  # float32 data: a fixed pairwise tree, then the tail in order
            total_ptr = cgutils.alloca_once_value(builder, tree(lanes))
            tail(lambda x: builder.store(builder.fadd(builder.load(total_ptr), x), total_ptr))
            return builder.load(total_ptr)

        # float64 data: the lanes and the tail go through Neumaier's compensated sum, whose
        # error term starts as the lanes' own (what their adds rounded away, each far below
        # an ulp of the sum, so added up plainly). Rounding each lane with its compensation
        # first, and Kahan's update in the lanes, lost up to an ulp: the sum of 100 exp
        # terms came out 1 ulp high (softmax 1.85 ulp off, PyTorch 0.15). An infinite term
        # makes an error term NaN: the plain sum is then the answer.
        sum_ptr = cgutils.alloca_once_value(builder, llvm_ir.Constant(dty, 0.0))
        err_ptr = cgutils.alloca_once_value(builder, tree(lanes_of(comps)))

        def neumaier(x):
            s_ = builder.load(sum_ptr)
            t = builder.fadd(s_, x)
            big_s = builder.fcmp_ordered(
                ">=", ir.call(builder, "fabs", [s_]), ir.call(builder, "fabs", [x])
            )
            lost = builder.select(
                big_s,
                builder.fadd(builder.fsub(s_, t), x),
                builder.fadd(builder.fsub(x, t), s_),
            )
            builder.store(builder.fadd(builder.load(err_ptr), lost), err_ptr)
            builder.store(t, sum_ptr)

        for lane in lanes:
            neumaier(lane)
        tail(neumaier)
        total = builder.load(sum_ptr)
        err = builder.load(err_ptr)
        # Infinite terms make the error term NaN: the plain sum is then the answer.
        return builder.select(
            builder.fcmp_unordered("uno", err, err), total, builder.fadd(total, err)
        )

    return types.float64(arr), codegen


# ----------------------------------------------------------------------------- exp-sums

LINE = 16  # float32 elements per 64-byte cache line (float64 rows prefetch twice: harmless)
SCRATCH = 256  # elements of exp values held at once (1-2 KiB, L1)


_F64_WIDTH = 8  # float64 lanes per vector of the exp map (one AVX-512 register, two AVX2)


@intrinsic
def expmap_f64(typingctx, x, m, eb):
    """``eb[j] = exp_sum_f64(x[j] - m)`` for ``j < x.size`` (``eb`` at least as long):
    :func:`.math.exp_sum_f64_ir` on explicit 8-lane vectors and one masked tail (the bits
    of the scalar function; Numba's own vectorization of that loop stops at 4 lanes)."""
    if not (
        isinstance(x, types.Array) and isinstance(eb, types.Array)
        and x.ndim == eb.ndim == 1 and x.layout == eb.layout == "C"
        and x.dtype == eb.dtype == types.float64 and m == types.float64
    ):
        return None

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        ea = context.make_array(signature.args[2])(context, builder, args[2])
        intp = context.get_value_type(types.intp)
        el = ir.FLOAT64
        w = llvm_ir.Constant(intp, _F64_WIDTH)
        m_vec = ir.splat(builder, args[1], _F64_WIDTH)
        n = builder.extract_value(xa.shape, 0)
        nvec = builder.sdiv(n, w)
        with cgutils.for_range(builder, nvec, intp=intp) as loop:
            j = builder.mul(loop.index, w)
            d = builder.fsub(el.load(builder, xa.data, j, _F64_WIDTH), m_vec)
            el.store(builder, exp_sum_f64_ir(builder, d), ea.data, j)
        j = builder.mul(nvec, w)
        with builder.if_then(builder.icmp_signed("<", j, n)):
            mask = ir.lane_mask(builder, builder.sub(n, j), _F64_WIDTH)
            d = builder.fsub(el.load_masked(builder, xa.data, j, mask), m_vec)
            el.store_masked(builder, exp_sum_f64_ir(builder, d), ea.data, j, mask)
        return context.get_dummy_value()

    return types.none(x, m, eb), codegen


@kernel
def _prefetch_chunk(nxt, c0, k):
    for j in range(c0, min(c0 + k, nxt.size), LINE):
        prefetch(nxt, j)


@kernel
def _mapped_sum(x, m, cap, eb, nxt):
    """float64 data: ``sum(exp(x - m))`` by chunks of ``eb.size``: an exp map into the L1
    scratch ``eb`` (:func:`expmap_f64`), each chunk summed by :func:`block_sum`
    (Kahan-compensated), the chunk sums added with Neumaier's compensation; ``cap > 0``: of
    ``y = softcap(x)`` (:func:`.math.softcap`) instead of ``x``. ``nxt`` is prefetched chunk
    by chunk. No reassociating reduction is left to the vectorizer: it was seen to vectorize
    different inlined copies of one row function differently.
    """
    s = 0.0
    c = 0.0
    k = eb.size
    for c0 in range(0, x.size, k):
        _prefetch_chunk(nxt, c0, k)
        # A view indexed from 0: a loop index LLVM can prove non-negative skips Numba's
        # negative-index wraparound, which would otherwise turn the loads into gathers.
        xc = x[c0 : c0 + k]
        if cap > 0.0:
            for j in range(xc.size):
                eb[j] = fexp_sum(softcap(xc[j], cap)[0] - m)
        else:
            expmap_f64(xc, m, eb)
        s, c = neumaier_add(s, c, block_sum(eb[: xc.size]))
    return neumaier_result(s, c)


@kernel
def _mapped_store(x, m, eb, db, out, nxt):
    """:func:`_mapped_sum` (the same bits) while storing ``out = exp(x - m)`` as output
    values (``fexp``): each sum term is derived from its stored value. ``db`` (``eb``'s
    size) holds ``x - m``: the loops read and write distinct arrays even when ``out`` is
    ``x`` (LLVM's overlap check would send an aliased loop to its scalar version).
    """
    s = 0.0
    c = 0.0
    k = eb.size
    floor = fexp_sum(like(m, SUM_LO_D))
    for c0 in range(0, x.size, k):
        _prefetch_chunk(nxt, c0, k)
        xc = x[c0 : c0 + k]
        oc = out[c0 : c0 + k]
        n = xc.size
        for j in range(n):
            db[j] = xc[j] - m
        for j in range(n):
            oc[j] = fexp(db[j])  # outputs: exact down to denormals, exp(-inf) = 0
        for j in range(n):
            eb[j] = floor if db[j] < SUM_LO_D else oc[j]
        s, c = neumaier_add(s, c, block_sum(eb[:n]))
    return neumaier_result(s, c)


def block_sumexp(xb, m, eb, nb):
    """``sum(exp(xb - m))`` in float64, in an order that depends only on ``xb.size``.

    ``xb - m`` must be ``<= 0`` or NaN (``m`` the maximum of the row). float32 data goes
    through the row pass :data:`.sumexp.SUM` (``eb`` unused); float64 data through an exp
    map into the scratch ``eb`` (:data:`SCRATCH` elements, or the row's length if shorter)
    and a compensated fixed-order sum.

    ``nb`` is the row this thread computes next (any length, 0 for none): its lines at the
    same offsets are prefetched, spread over the computation (a burst of prefetches
    overflows the miss queues and most are dropped). Prefetching never changes a result.
    """
    raise NotImplementedError("compiled only")


@overload(block_sumexp, jit_options=JIT_OPTIONS)
def _block_sumexp_impl(xb, m, eb, nb):
    if is_f32_math(xb.dtype):
        return lambda xb, m, eb, nb: sumexp_f32(xb, m, nb)
    return lambda xb, m, eb, nb: _mapped_sum(xb, m, 0.0, eb, nb)


@kernel
def _scratch(x):
    return np.empty(max(1, min(x.size, SCRATCH)), x.dtype)


def row_shifted_sumexp(x, m, nxt):
    """``sum(exp(x - m))`` accumulated in float64 (:func:`block_sumexp` with its own scratch
    for float64; float32 needs none). ``nxt``: the next row (prefetched; ``x[:0]`` for none).
    """
    raise NotImplementedError("compiled only")


@overload(row_shifted_sumexp, jit_options=JIT_OPTIONS)
def _row_shifted_sumexp_impl(x, m, nxt):
    if is_f32_math(x.dtype):
        return lambda x, m, nxt: sumexp_f32(x, m, nxt)
    return lambda x, m, nxt: _mapped_sum(x, m, 0.0, _scratch(x), nxt)


def capped_sumexp(x, m, cap, nxt):
    """``sum(exp(y - m))`` of the softcapped row ``y = cap * tanh(x / cap)`` (``cap > 0``,
    ``m`` the maximum of ``y``), in the order of :func:`row_shifted_sumexp` (float32: the
    :data:`.sumexp.SOFTCAP` pass, the formula of :func:`.math.softcap_ir`)."""
    raise NotImplementedError("compiled only")


@overload(capped_sumexp, jit_options=JIT_OPTIONS)
def _capped_sumexp_impl(x, m, cap, nxt):
    if is_f32_math(x.dtype):
        return lambda x, m, cap, nxt: sumexp_softcap_f32(
            x, m, np.float32(1.0 / cap), np.float32(cap), nxt
        )
    return lambda x, m, cap, nxt: _mapped_sum(x, m, cap, _scratch(x), nxt)


def exp_store_sum(x, m, out, nxt, prefetching=True):
    """``out[j] = exp(x[j] - m)`` as output values (within 2 ulp, denormals included,
    ``exp(-inf) = 0``; ``out`` may be ``x``); returns :func:`row_shifted_sumexp` of the row
    (the same bits). ``prefetching=False``: ``nxt`` is not prefetched (float32: the
    :data:`.sumexp.STORE_NO_PREFETCH` pass).
    """
    raise NotImplementedError("compiled only")


@overload(exp_store_sum, jit_options=JIT_OPTIONS)
def _exp_store_sum_impl(x, m, out, nxt, prefetching=True):
    if is_f32_math(x.dtype):

        def impl32(x, m, out, nxt, prefetching=True):
            if prefetching:
                return expsum_store_f32(x, m, out, nxt)
            return expsum_store_only_f32(x, m, out)

        return impl32

    def impl64(x, m, out, nxt, prefetching=True):
        return _mapped_store(x, m, _scratch(x), _scratch(x), out, nxt if prefetching else x[:0])

    return impl64


def sumexp_next_max(x, m, nxt, pipelined):
    """``(row_shifted_sumexp(x, m, nxt), row_max(nxt))`` (the same bits and value).

    ``pipelined`` (normally :func:`.memory.pipelines` of the kernel's logits): the next
    row's maximum is taken while this row is summed: float32-computed rows as long as
    ``nxt`` load it in the exp-sum loop itself (:data:`.sumexp.SUM_NEXT_MAX`), so the next
    row streams in from memory (demand loads, which the hardware prefetchers follow)
    while this one's exponentials are computed from cache. Otherwise (and for float64) the
    two in sequence: the sum prefetching ``nxt``, then a max pass over it, in cache.

    Measured on an Intel Xeon (one thread, [2048, 32000] float32 logsumexp): 12.2 GB/s,
    against 8.8 GB/s for a max pass then a sum pass prefetching the next row into L2; on
    AMD Zen 3 and Zen 4 the separate passes are faster (:func:`.memory._pipelining_pays`).
    """
    raise NotImplementedError("compiled only")


@overload(sumexp_next_max, jit_options=JIT_OPTIONS)
def _sumexp_next_max_impl(x, m, nxt, pipelined):
    if is_f32_math(x.dtype):

        def impl32(x, m, nxt, pipelined):
            if pipelined and nxt.size == x.size:
                return sumexp_next_max_f32(x, m, nxt)
            return sumexp_f32(x, m, nxt), row_max(nxt)

        return impl32
    return lambda x, m, nxt, pipelined: (
        _mapped_sum(x, m, 0.0, _scratch(x), nxt),
        row_max(nxt),
    )


def exp_store_next_max(x, m, out, nxt, pipelined):
    """``(exp_store_sum(x, m, out, ., False), row_max(nxt))`` (the same bits and value), as
    :func:`sumexp_next_max` (:data:`.sumexp.STORE_NEXT_MAX` when ``pipelined``); ``out``
    may be ``x``."""
    raise NotImplementedError("compiled only")


@overload(exp_store_next_max, jit_options=JIT_OPTIONS)
def _exp_store_next_max_impl(x, m, out, nxt, pipelined):
    if is_f32_math(x.dtype):

        def impl32(x, m, out, nxt, pipelined):
            if pipelined and nxt.size == x.size:
                return expsum_store_next_max_f32(x, m, out, nxt)
            return expsum_store_only_f32(x, m, out), row_max(nxt)

        return impl32
    return lambda x, m, out, nxt, pipelined: (
        exp_store_sum(x, m, out, nxt, False),
        row_max(nxt),
    )


@kernel
def lse_special(x, m):
    """log-sum-exp of a row whose maximum ``m`` (NaN skipped) is infinite: ``-inf`` (empty
    or all ``-inf``) or ``+inf``, NaN if the row holds a NaN (PyTorch's results)."""
    for j in range(x.size):
        if load_element(x, j) != load_element(x, j):
            return np.nan
    return np.float64(m)


@kernel
def row_lse(x, nxt):
    """log-sum-exp of one row as float64 (``-inf`` for an empty or all ``-inf`` row).

    A row holding ``+inf`` gives ``+inf``; a NaN anywhere gives NaN (PyTorch's results).
    ``nxt``: the next row, prefetched meanwhile.
    """
    m, k = row_max_ahead(x, nxt)
    if abs(m) == np.inf:
        return lse_special(x, m)
    return flog(row_shifted_sumexp(x, m, nxt[k:])) + m


@kernel
def lse_rows(x, out, r0, r1, pipelined):
    """``out[i] = row_lse(x[i])`` for rows ``r0 <= i < r1`` of 2-D ``x`` (the same bits): each
    row's exp-sum pass is followed by, or when ``pipelined`` takes in its own loop, the next
    row's maximum (:func:`sumexp_next_max`)."""
    if r1 <= r0:
        return
    m = row_max(x[r0])
    for i in range(r0, r1):
        xi = x[i]
        nxt = x[i + 1] if i + 1 < r1 else xi[:0]  # the block's last row: no next max
        if abs(m) == np.inf:
            out[i] = lse_special(xi, m)
            m = row_max(nxt)
        else:
            s, m_next = sumexp_next_max(xi, m, nxt, pipelined)
            out[i] = flog(s) + m
            m = m_next
