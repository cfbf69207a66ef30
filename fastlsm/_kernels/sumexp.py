"""The exp-sum pass of every normalizer, written as one LLVM IR loop over float32 vectors.

``sum(exp(x - m))`` is the arithmetic core of log_softmax, logsumexp, cross-entropy and the
beam step, and the one pass that is bound by arithmetic rather than by memory. Written in
Numba as an exp map into a scratch block followed by a fixed-order sum, it costs about 30
vector instructions per 16 elements (a 7th-degree exp, exponent scaling by multiplication,
a store and a reload, float32-to-float64 conversions). :func:`sumexp_f32` does the same work
in about 15, in registers:

- ``d = x - m`` first (exact for ``d`` near 0 even for logits like 1e4), clamped below at -87
  so that ``2**n`` is one normal float (``exp(-87) = 1.6e-38``: negligible in a sum that holds
  ``exp(0) = 1``; ``-inf`` entries contribute that too);
- ``n = round(d * log2(e))`` read from the bits of ``d * log2(e) + (1.5 * 2**23 + 127)``, so
  that ``2**n`` is that integer shifted into the exponent field: one shift;
- ``r = d - n * ln2`` with one fused multiply-add, ``|r| <= ln2 / 2``. With a single float32
  ``ln2`` (off by 1.9e-9) the error in ``r`` is ``|n| * 1.9e-9``: for the terms that matter
  (``|d| < 17``, the others are below ``4e-8`` of the largest) it is below 1/2 ulp of a term;
- ``exp(r)`` by a degree-6 polynomial (minimax for relative error on ``[-ln2/2, ln2/2]``,
  2e-9, below float32 rounding), constant term exactly 1 so that ``exp(0) == 1``;
- the terms are added into four 16-lane float32 accumulators, 4 terms per lane, then widened
  and added into four 16-lane float64 accumulators; the 64 lanes are combined in a fixed
  tree. The order depends only on the row length: the same bits on every thread, every
  process and every CPU that runs the same IR (AVX2 machines split each vector in two).

Every term that matters (``d >= -17``) is within 2 ulp of ``exp(d)`` (within 5 below, where
terms are under 4e-8 of the largest); the sum's relative error is a few float32 ulp at most
(4-term float32 partial sums, then float64), typically below one.

Special values: a NaN ``d`` gives a NaN term (it reaches the sum); ``d`` must be below 88
(true for ``m >= max(x) - 88``; ``d = +inf`` is not handled here, callers treat a row whose
maximum is ``+inf`` before summing).

:func:`expsum_store_f32` (softmax) is the same loop when the exponentials are outputs: it
stores them, and computes them within 2 ulp down to the smallest denormal (two-constant
range reduction, ``2**n`` as two factors, ``exp(-inf) = 0``) at a few more instructions.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

WIDTH = 16  # float32 lanes per vector: one AVX-512 register, two AVX2 registers
ACCS = 4  # independent accumulators: enough to hide the add latency
INNER = 4  # vectors added into each float32 lane before it is widened to float64
CHUNK = WIDTH * ACCS * INNER  # 256 elements per float64 flush

_LO = -87.0  # exp(-87) = 1.6e-38 >= 2**-126: 2**n stays a normal float
_LOG2E = float(np.float32(1.4426950408889634))
_LN2 = float(np.float32(0.6931471805599453))
_SHIFTER = float(np.float32(12582912.0 + 127.0))  # 1.5 * 2**23 + exponent bias
# exp(r) ~ 1 + r * (C1 + r * (C2 + ... + r * C6)), minimax (relative error) on [-ln2/2, ln2/2]
_POLY = (
    1.0,
    1.0,
    0.4999999403953552,
    0.16666431725025177,
    0.04166800156235695,
    0.008374163880944252,
    0.0013843643246218562,
)


_OUT_LO = -104.0  # exp(-104) = 6.8e-46 < half the smallest denormal: rounds to 0
_LN2_HI = 0.693359375  # Cody-Waite split: n * _LN2_HI is exact for |n| < 2**9
_LN2_LO = float(np.float32(0.6931471805599453 - 0.693359375))
_MAGIC = 12582912.0  # 1.5 * 2**23
_MAGIC_BITS = 0x4B400000


def _reduced_exp(builder, d, lo, shifter, ln2_parts):
    """Shared core: clamp ``d`` below at ``lo`` (NaN stays NaN), ``t = d * log2(e) + shifter``
    (``n`` in its low bits), ``r = d - n * ln2`` (one FMA per part of ``ln2``), ``p = exp(r)``
    by the polynomial. Returns ``(p, t)``."""
    vty = d.type

    def splat(value):
        return ir.Constant(vty, [float(np.float32(value))] * WIDTH)

    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{WIDTH}f32"
    )
    d = builder.select(builder.fcmp_ordered("<", d, splat(lo)), splat(lo), d)
    t = builder.call(fma, [d, splat(_LOG2E), splat(shifter)])
    n = builder.fneg(builder.fsub(t, splat(shifter)))
    r = d
    for part in ln2_parts:
        r = builder.call(fma, [n, splat(part), r])
    p = splat(_POLY[-1])
    for c in reversed(_POLY[:-1]):
        p = builder.call(fma, [p, r, splat(c)])
    return p, t


def _vector_exp(builder, d, f32vec, i32vec):
    """``exp(d)`` for a <WIDTH x float> of ``d <= 88`` (or NaN), per the module docstring."""
    p, t = _reduced_exp(builder, d, _LO, _SHIFTER, (_LN2,))
    scale = builder.shl(builder.bitcast(t, i32vec), ir.Constant(i32vec, [23] * WIDTH))
    return builder.fmul(p, builder.bitcast(scale, f32vec))  # NaN * 2**n is NaN


def _vector_exp_out(builder, d, f32vec, i32vec):
    """``exp(d)`` as an output value: within 2 ulp down to the smallest denormal, ``d <= 0``.

    As :func:`_vector_exp`, but ``r`` comes from a two-constant range reduction (exact for
    every ``n``), arguments are clamped at -104 (the result rounds to 0, so ``exp(-inf)`` is
    exactly 0), and ``2**n`` is applied as two normal factors ``2**(n // 2)`` and
    ``2**(n - n // 2)``, so that denormal results round once.
    """

    def isplat(value):
        return ir.Constant(i32vec, [value] * WIDTH)

    p, t = _reduced_exp(builder, d, _OUT_LO, _MAGIC, (_LN2_HI, _LN2_LO))
    ni = builder.sub(builder.bitcast(t, i32vec), isplat(_MAGIC_BITS))
    n1 = builder.ashr(ni, isplat(1))
    n2 = builder.sub(ni, n1)

    def pow2(k):
        return builder.bitcast(builder.shl(builder.add(k, isplat(127)), isplat(23)), f32vec)

    return builder.fmul(builder.fmul(p, pow2(n1)), pow2(n2))


def _is_row(ty):
    return (
        isinstance(ty, types.Array) and ty.ndim == 1 and ty.layout == "C" and ty.dtype == types.float32
    )


def _splat(builder, value, vty):
    i32 = ir.IntType(32)
    vec = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(
        vec, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, WIDTH), [0] * WIDTH)
    )


def _prefetch_l2(builder, ptr):
    """Prefetch the line at ``ptr`` into L2 (``llvm.prefetch``, locality 2: ``prefetcht1``).

    Measured on Zen 4 (logsumexp, [4096, 32000] float32, 2 threads, rows in contiguous
    blocks per thread): prefetching the next row into L2 took 20 ms, into L1
    (``prefetcht0``) 24 ms, no prefetch 30 ms, loading the next row in the same loop (for
    its maximum) 28 ms: demand misses and L1 prefetches hold the core's few L1 miss
    buffers, and the exp arithmetic waits behind them.
    """
    i32 = ir.IntType(32)
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
    )
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                      ir.Constant(i32, 1)])


def _row_pass(context, builder, xa, m_v, na, oa=None, prev=None):
    """Emit the exp-sum of row ``xa`` (float64), prefetching row ``na`` (or None) meanwhile.

    With ``oa`` (a row of the same length), the exponentials are output values
    (:func:`_vector_exp_out`) and are also stored to ``oa``. With ``prev = (pxa, poa, a, s,
    b)`` (rows of the same length as ``xa``; float32 scalars; ``s`` None for 1), the loop also
    writes ``poa[j] = (pxa[j] - a) / s - b`` for every j (the arithmetic of
    ``stream.stream_affine`` / ``stream_divide``): streaming stores on the 64-byte aligned
    part of ``poa``, plain stores on the (at most 15-element) head and the last partial line.
    """
    vexp = _vector_exp if oa is None else _vector_exp_out
    intp = context.get_value_type(types.intp)
    f32, f64 = ir.FloatType(), ir.DoubleType()
    i32 = ir.IntType(32)
    f32vec = ir.VectorType(f32, WIDTH)
    f64vec = ir.VectorType(f64, WIDTH)
    i32vec = ir.VectorType(i32, WIDTH)
    i1vec = ir.VectorType(ir.IntType(1), WIDTH)
    ivec = ir.VectorType(intp, WIDTH)
    vptr = f32vec.as_pointer()
    n = builder.extract_value(xa.shape, 0)
    m_vec = _splat(builder, m_v, f32vec)
    zero32 = ir.Constant(f32vec, [0.0] * WIDTH)
    zero64 = ir.Constant(f64vec, [0.0] * WIDTH)
    zero = ir.Constant(intp, 0)
    acc64 = [cgutils.alloca_once_value(builder, zero64) for _ in range(ACCS)]
    masked_load = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(f32vec, [vptr, i32, i1vec, f32vec]),
        f"llvm.masked.load.v{WIDTH}f32.p0",
    )
    masked_store = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [f32vec, vptr, i32, i1vec]),
        f"llvm.masked.store.v{WIDTH}f32.p0",
    )
    lanes = ir.Constant(ivec, list(range(WIDTH)))

    def load(j):  # the one place that reads x: 16-bit logits would be widened here
        return builder.load(builder.bitcast(builder.gep(xa.data, [j]), vptr), align=4)

    def flush(k, acc32):
        acc = acc64[k]
        builder.store(builder.fadd(builder.load(acc), builder.fpext(acc32, f64vec)), acc)

    if prev is not None:
        pxa, poa, pa, ps, pb = prev
        pa_vec, pb_vec = _splat(builder, pa, f32vec), _splat(builder, pb, f32vec)
        ps_vec = None if ps is None else _splat(builder, ps, f32vec)

        def affine(v, a, s_, b):
            v = builder.fsub(v, a)
            return builder.fsub(v if s_ is None else builder.fdiv(v, s_), b)

        # head: elements of poa before its first 64-byte boundary (all of it if poa is not
        # even 4-byte aligned); the vector body writes [head, head + nwrite * CHUNK)
        addr = builder.ptrtoint(poa.data, intp)
        to_line = builder.udiv(
            builder.urem(builder.sub(ir.Constant(intp, 64), builder.urem(addr, ir.Constant(intp, 64))),
                         ir.Constant(intp, 64)),
            ir.Constant(intp, 4),
        )
        head = builder.select(
            builder.icmp_unsigned("==", builder.urem(addr, ir.Constant(intp, 4)), zero), to_line, n
        )
        head = builder.select(builder.icmp_signed("<", n, head), n, head)
        nwrite = builder.sdiv(builder.sub(n, head), ir.Constant(intp, CHUNK))
        nontemporal = builder.module.add_metadata([ir.Constant(i32, 1)])

    def chunks(first, count, write):
        """Full chunks: vector (i, k) of a chunk goes to accumulator k, i = 0..INNER-1."""
        with cgutils.for_range(builder, count, intp=intp) as loop:
            base = builder.mul(builder.add(first, loop.index), ir.Constant(intp, CHUNK))
            if na is not None:  # prefetch the next row's lines at the same offsets, in bounds
                end = builder.add(base, ir.Constant(intp, CHUNK))
                in_next = builder.icmp_signed("<=", end, builder.extract_value(na.shape, 0))
                fetch_base = builder.select(in_next, na.data, xa.data)
            accs = [zero32] * ACCS
            for i in range(INNER):
                for k in range(ACCS):
                    j = builder.add(base, ir.Constant(intp, (i * ACCS + k) * WIDTH))
                    if na is not None:  # one line per vector (WIDTH floats = 64 B)
                        _prefetch_l2(builder, builder.gep(fetch_base, [j]))
                    if write:  # the previous row's output, one aligned line per vector
                        jp = builder.add(j, head)
                        v = builder.load(builder.bitcast(builder.gep(pxa.data, [jp]), vptr), align=4)
                        y = affine(v, pa_vec, ps_vec, pb_vec)
                        st = builder.store(y, builder.bitcast(builder.gep(poa.data, [jp]), vptr),
                                           align=64)
                        st.set_metadata("nontemporal", nontemporal)
                    e = vexp(builder, builder.fsub(load(j), m_vec), f32vec, i32vec)
                    if oa is not None:
                        ptr = builder.bitcast(builder.gep(oa.data, [j]), vptr)
                        builder.store(e, ptr, align=4)
                    accs[k] = builder.fadd(accs[k], e)
            for k in range(ACCS):
                flush(k, accs[k])

    nchunk = builder.sdiv(n, ir.Constant(intp, CHUNK))
    if prev is None:
        chunks(zero, nchunk, False)
    else:
        chunks(zero, nwrite, True)
        chunks(nwrite, builder.sub(nchunk, nwrite), False)

        def scalar_writes(start, stop):
            with cgutils.for_range(builder, builder.sub(stop, start), intp=intp) as loop:
                j = builder.add(start, loop.index)
                v = builder.load(builder.gep(pxa.data, [j]))
                builder.store(affine(v, pa, ps, pb), builder.gep(poa.data, [j]))

        scalar_writes(zero, head)
        # the tail: whole lines (aligned, since the body ends on a line) streamed, then one
        # masked vector
        tail = builder.add(head, builder.mul(nwrite, ir.Constant(intp, CHUNK)))
        nline = builder.sdiv(builder.sub(n, tail), ir.Constant(intp, WIDTH))
        with cgutils.for_range(builder, nline, intp=intp) as loop:
            j = builder.add(tail, builder.mul(loop.index, ir.Constant(intp, WIDTH)))
            v = builder.load(builder.bitcast(builder.gep(pxa.data, [j]), vptr), align=4)
            st = builder.store(affine(v, pa_vec, ps_vec, pb_vec),
                               builder.bitcast(builder.gep(poa.data, [j]), vptr), align=64)
            st.set_metadata("nontemporal", nontemporal)
        j = builder.add(tail, builder.mul(nline, ir.Constant(intp, WIDTH)))
        with builder.if_then(builder.icmp_signed("<", j, n)):
            mask = builder.icmp_signed("<", lanes, _splat(builder, builder.sub(n, j), ivec))
            v = builder.call(masked_load, [builder.bitcast(builder.gep(pxa.data, [j]), vptr),
                                           ir.Constant(i32, 4), mask, zero32])
            builder.call(masked_store, [affine(v, pa_vec, ps_vec, pb_vec),
                                        builder.bitcast(builder.gep(poa.data, [j]), vptr),
                                        ir.Constant(i32, 4), mask])

    # The rest (< CHUNK elements): vectors in order into one float32 accumulator, the last
    # one loaded under a mask (missing lanes add an exact 0).
    start = builder.mul(nchunk, ir.Constant(intp, CHUNK))
    nvec = builder.sdiv(
        builder.add(builder.sub(n, start), ir.Constant(intp, WIDTH - 1)), ir.Constant(intp, WIDTH)
    )
    acc_rest = cgutils.alloca_once_value(builder, zero32)
    with cgutils.for_range(builder, nvec, intp=intp) as loop:
        j = builder.add(start, builder.mul(loop.index, ir.Constant(intp, WIDTH)))
        mask = builder.icmp_signed("<", lanes, _splat(builder, builder.sub(n, j), ivec))
        ptr = builder.bitcast(builder.gep(xa.data, [j]), vptr)
        v = builder.call(masked_load, [ptr, ir.Constant(i32, 4), mask, m_vec])
        e = vexp(builder, builder.fsub(v, m_vec), f32vec, i32vec)
        if oa is not None:
            optr = builder.bitcast(builder.gep(oa.data, [j]), vptr)
            builder.call(masked_store, [e, optr, ir.Constant(i32, 4), mask])
        builder.store(builder.fadd(builder.load(acc_rest), builder.select(mask, e, zero32)), acc_rest)
    flush(0, builder.load(acc_rest))

    # Fixed tree: accumulators pairwise, then the 16 lanes by halves.
    a = [builder.load(acc) for acc in acc64]
    v = builder.fadd(builder.fadd(a[0], a[1]), builder.fadd(a[2], a[3]))
    width = WIDTH
    while width > 1:
        half = width // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), list(range(half, width))))
        v = builder.fadd(lo, hi)
        width = half
    return builder.extract_element(v, ir.Constant(i32, 0))


def _unpack(context, builder, signature, args):
    """Each argument as an array structure (rows), None (an absent row), or a float32."""
    out = []
    for ty, value in zip(signature.args, args):
        if isinstance(ty, types.Array):
            out.append(context.make_array(ty)(context, builder, value))
        elif isinstance(ty, (types.NoneType, types.Omitted)):
            out.append(None)
        else:
            out.append(context.cast(builder, value, ty, types.float32))
    return out


def _typed(rows=(), optional=(), scalars=()):
    """Whether the arguments fit: float32 rows, rows or None, real scalars."""
    return (
        all(_is_row(r) for r in rows)
        and all(_is_row(r) or isinstance(r, (types.NoneType, types.Omitted)) for r in optional)
        and all(isinstance(v, (types.Float, types.Integer)) for v in scalars)
    )


@intrinsic
def sumexp_f32(typingctx, x, m, nxt):
    """``sum(exp(x - m))`` in float64 for a 1-D C-contiguous float32 array ``x``.

    ``m`` is converted to float32; every ``x - m`` must be below 88 (``m`` the maximum, or
    any value not more than 88 below it). ``nxt`` (a float32 row, or None) is prefetched
    into L2 meanwhile: the row this thread computes next, one cache line per vector at the
    same offsets, so that its reads from memory overlap this row's arithmetic. Prefetching
    never changes a result.
    """
    if not _typed((x,), (nxt,), (m,)):
        return None

    def codegen(context, builder, signature, args):
        xa, m_v, na = _unpack(context, builder, signature, args)
        return _row_pass(context, builder, xa, m_v, na)

    return types.float64(x, m, nxt), codegen


@intrinsic
def expsum_store_f32(typingctx, x, m, out, nxt):
    """``out[j] = exp(x[j] - m)`` for every j; returns ``sum(out)`` in float64.

    ``x`` and ``out`` are 1-D C-contiguous float32 rows of the same length (``out`` may be
    ``x``); every ``x - m`` must be ``<= 0`` or NaN. The stored values are outputs: within
    2 ulp of ``exp(x - m)`` down to the smallest denormal, ``exp(-inf) = 0``; the sum is
    taken over them in the order of :func:`sumexp_f32`. ``nxt`` (a float32 row, or None) is
    prefetched meanwhile.
    """
    if not _typed((x, out), (nxt,), (m,)):
        return None

    def codegen(context, builder, signature, args):
        xa, m_v, oa, na = _unpack(context, builder, signature, args)
        return _row_pass(context, builder, xa, m_v, na, oa)

    return types.float64(x, m, out, nxt), codegen


@intrinsic
def sumexp_write_prev_f32(typingctx, x, m, nxt, px, po, a, b):
    """``sum(exp(x - m))`` as :func:`sumexp_f32` (the same bits), while writing the previous
    row's log_softmax: ``po[j] = (px[j] - a) - b`` for every j (``a``, ``b`` converted to
    float32; the result of ``stream.stream_affine(px, po, a, 1, b)``).

    ``px`` and ``po`` are float32 rows of ``x``'s length (``po`` may be ``px``, not ``x``).
    The writes are interleaved with the exp arithmetic, one 64-byte line of ``po`` per
    vector of ``x``, as streaming stores: the memory traffic of one row overlaps the
    arithmetic of the next (measured on log_softmax [4096, 32000]: 34 -> 27.5 ms) instead
    of alternating with it. Streaming stores are weakly ordered: the caller issues
    ``stream.store_fence`` after its last row.
    """
    if not _typed((x, px, po), (nxt,), (m, a, b)):
        return None

    def codegen(context, builder, signature, args):
        xa, m_v, na, pxa, poa, a_v, b_v = _unpack(context, builder, signature, args)
        return _row_pass(context, builder, xa, m_v, na, None, (pxa, poa, a_v, None, b_v))

    return types.float64(x, m, nxt, px, po, a, b), codegen


@intrinsic
def expsum_store_write_prev_f32(typingctx, x, m, out, nxt, pbuf, po, s_prev):
    """:func:`expsum_store_f32` (the same bits) while writing the previous row's softmax:
    ``po[j] = pbuf[j] / s_prev`` for every j (``s_prev`` converted to float32; the result of
    ``stream.stream_divide(pbuf, po, 0, s_prev, 0)``), streamed as in
    :func:`sumexp_write_prev_f32`. ``pbuf`` and ``po`` are float32 rows of ``x``'s length,
    distinct from ``out``; the caller issues ``stream.store_fence`` after its last row.
    """
    if not _typed((x, out, pbuf, po), (nxt,), (m, s_prev)):
        return None

    def codegen(context, builder, signature, args):
        xa, m_v, oa, na, pxa, poa, s_v = _unpack(context, builder, signature, args)
        zero = ir.Constant(ir.FloatType(), 0.0)
        return _row_pass(context, builder, xa, m_v, na, oa, (pxa, poa, zero, s_v, zero))

    return types.float64(x, m, out, nxt, pbuf, po, s_prev), codegen
