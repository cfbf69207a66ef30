"""Streaming (non-temporal) row writes.

A kernel that writes its result with plain stores makes the CPU read every output cache line
before overwriting it (read-for-ownership): a log_softmax with ``out=`` then moves 3 bytes
per byte of input instead of 2. Non-temporal stores write whole lines straight to memory.
LLVM does not vectorize a loop of scalar non-temporal stores from Numba (it needs an alignment
Numba cannot promise), so :func:`stream_affine` emits the loop in LLVM IR: a scalar head up
to a 32-byte boundary of ``dst``, aligned 32-byte vector stores marked ``!nontemporal``, a
scalar tail. Streaming stores are weakly ordered: kernels call :func:`store_fence` after
their last row.

The arithmetic carries no fast-math flags, so ``(src - a) * s - b`` is evaluated exactly in
that order (LLVM may not reassociate ``(x - m) - c`` into ``x - (m + c)``, which loses the
low bits of ``x - m`` for large logits).
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._jit import kernel

_VECTOR_BYTES = 32  # AVX2
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _stream(divide):
    """Typer of ``dst[j] = (src[j] - a) (* or /) s - b`` with streaming stores."""

    def affine(builder, v, a, s, b):
        scaled = builder.fdiv(builder.fsub(v, a), s) if divide else builder.fmul(builder.fsub(v, a), s)
        return builder.fsub(scaled, b)

    return lambda typingctx, src, dst, a, s, b: _stream_typer(affine, src, dst, a, s, b)


def _stream_typer(_affine, src, dst, a, s, b):
    if not (
        isinstance(src, types.Array)
        and isinstance(dst, types.Array)
        and src.ndim == 1
        and dst.ndim == 1
        and src.dtype == dst.dtype
        and isinstance(dst.dtype, types.Float)
        and dst.layout == "C"
        and src.layout == "C"
    ):
        return None
    dtype = dst.dtype

    def codegen(context, builder, signature, args):
        src_v, dst_v, a_v, s_v, b_v = args
        fty = context.get_value_type(dtype)
        a_v = context.cast(builder, a_v, signature.args[2], dtype)
        s_v = context.cast(builder, s_v, signature.args[3], dtype)
        b_v = context.cast(builder, b_v, signature.args[4], dtype)
        src_a = context.make_array(signature.args[0])(context, builder, src_v)
        dst_a = context.make_array(signature.args[1])(context, builder, dst_v)
        intp = context.get_value_type(types.intp)
        n = builder.extract_value(dst_a.shape, 0)
        itemsize = dtype.bitwidth // 8
        width = _VECTOR_BYTES // itemsize
        vty = ir.VectorType(fty, width)

        def splat(x):
            vec = ir.Constant(vty, ir.Undefined)
            for k in range(width):
                vec = builder.insert_element(vec, x, ir.Constant(ir.IntType(32), k))
            return vec

        a_vec, s_vec, b_vec = splat(a_v), splat(s_v), splat(b_v)
        zero = ir.Constant(intp, 0)
        addr = builder.ptrtoint(dst_a.data, intp)
        misalign = builder.urem(addr, ir.Constant(intp, _VECTOR_BYTES))
        to_boundary = builder.udiv(
            builder.urem(
                builder.sub(ir.Constant(intp, _VECTOR_BYTES), misalign),
                ir.Constant(intp, _VECTOR_BYTES),
            ),
            ir.Constant(intp, itemsize),
        )
        elem_aligned = builder.icmp_unsigned(
            "==", builder.urem(addr, ir.Constant(intp, itemsize)), zero
        )
        head = builder.select(elem_aligned, to_boundary, n)
        head = builder.select(builder.icmp_signed("<", n, head), n, head)
        nvec = builder.sdiv(builder.sub(n, head), ir.Constant(intp, width))
        body_end = builder.add(head, builder.mul(nvec, ir.Constant(intp, width)))

        def scalar_range(start, stop):
            with cgutils.for_range(builder, builder.sub(stop, start), intp=intp) as loop:
                j = builder.add(start, loop.index)
                v = builder.load(builder.gep(src_a.data, [j]))
                builder.store(_affine(builder, v, a_v, s_v, b_v), builder.gep(dst_a.data, [j]))

        scalar_range(zero, head)
        with cgutils.for_range(builder, nvec, intp=intp) as loop:
            j = builder.add(head, builder.mul(loop.index, ir.Constant(intp, width)))
            sp = builder.bitcast(builder.gep(src_a.data, [j]), vty.as_pointer())
            dp = builder.bitcast(builder.gep(dst_a.data, [j]), vty.as_pointer())
            v = builder.load(sp, align=itemsize)
            st = builder.store(_affine(builder, v, a_vec, s_vec, b_vec), dp, align=_VECTOR_BYTES)
            if _X86:
                md = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
                st.set_metadata("nontemporal", md)
        scalar_range(body_end, n)
        return context.get_dummy_value()

    return types.none(src, dst, a, s, b), codegen


stream_affine = intrinsic(_stream(divide=False))
stream_affine.__doc__ = """``dst[j] = (src[j] - a) * s - b`` for every j, with non-temporal stores.

``src`` and ``dst`` are 1-D C-contiguous arrays of the same float dtype and length (``dst``
may be ``src``); ``a``, ``s``, ``b`` are converted to that dtype. Rounding: each operation
rounds once, in the order written (``s = 1`` and ``b = 0`` are exact no-ops).
"""

stream_divide = intrinsic(_stream(divide=True))
stream_divide.__doc__ = """``dst[j] = (src[j] - a) / s - b``: as :func:`stream_affine`, dividing.

A division rounds once where a multiplication by ``1 / s`` rounds twice: softmax uses it.
"""


@intrinsic
def store_fence(typingctx):
    """Order every streaming store issued so far before any later store (``sfence``).

    Streaming stores are weakly ordered: a kernel that used :func:`stream_affine` or
    :func:`stream_divide` calls this once after its last row (per thread, before the
    parallel region ends), not after every row: a fence per row cost ~1 ms on
    [8192, 1000]. A no-op off x86.
    """

    def codegen(context, builder, signature, args):
        if _X86:
            sfence = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"
            )
            builder.call(sfence, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line holding ``arr[idx]`` (no effect on results).

    Used to pull the next row into cache while the current one is being computed, so that
    memory transfers overlap the exp-bound arithmetic instead of alternating with it.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        # read, locality 2 (prefetcht1: into L2, not L1; see sumexp._prefetch_l2), data cache
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


_SUM_VECTORS = 4  # independent accumulators (hide add latency)
_SUM_WIDTH = 4  # float64 lanes per accumulator


@intrinsic
def block_sum(typingctx, arr):
    """Sum of a 1-D C-contiguous float32/float64 array, in float64, in a fixed order.

    Element ``j`` of the first ``16 * (n // 16)`` goes to lane ``j % 16`` (four <4 x double>
    accumulators, added in index order with Kahan compensation, so that float64 data sums
    to about 1 ulp whatever ``n``); the lanes are combined pairwise in a fixed tree and the
    remaining ``n % 16`` elements are added in order at the end. The order is written
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
        dty = ir.DoubleType()
        ety = context.get_value_type(signature.args[0].dtype)
        n = builder.extract_value(ary.shape, 0)
        block = _SUM_VECTORS * _SUM_WIDTH
        vty = ir.VectorType(dty, _SUM_WIDTH)
        evty = ir.VectorType(ety, _SUM_WIDTH)
        zero_v = ir.Constant(vty, [0.0] * _SUM_WIDTH)
        accs = [cgutils.alloca_once_value(builder, zero_v) for _ in range(_SUM_VECTORS)]
        comps = [cgutils.alloca_once_value(builder, zero_v) for _ in range(_SUM_VECTORS)]
        nblk = builder.sdiv(n, ir.Constant(intp, block))
        with cgutils.for_range(builder, nblk, intp=intp) as loop:
            base = builder.mul(loop.index, ir.Constant(intp, block))
            for k, (acc, comp) in enumerate(zip(accs, comps)):
                j = builder.add(base, ir.Constant(intp, k * _SUM_WIDTH))
                ptr = builder.bitcast(builder.gep(ary.data, [j]), evty.as_pointer())
                v = builder.load(ptr, align=ety.get_abi_size(context.target_data))
                if ety != dty:
                    v = builder.fpext(v, vty)
                a = builder.load(acc)
                if ety != dty:  # float32 data: a float64 sum is already far more exact
                    builder.store(builder.fadd(a, v), acc)
                    continue
                # Kahan: acc + (v - comp), comp keeps what the add rounded away. After an
                # infinite term comp is NaN (inf - inf): it is then ignored, and acc stays inf.
                c = builder.load(comp)
                y = builder.select(builder.fcmp_unordered("uno", c, c), v, builder.fsub(v, c))
                t = builder.fadd(a, y)
                builder.store(builder.fsub(builder.fsub(t, a), y), comp)
                builder.store(t, acc)

        def finish(acc, comp):
            # An infinite term makes the compensation NaN: keep the plain sum then.
            a, c = builder.load(acc), builder.load(comp)
            return builder.select(builder.fcmp_unordered("uno", c, c), a, builder.fsub(a, c))

        a = [finish(acc, comp) for acc, comp in zip(accs, comps)]
        i32 = ir.IntType(32)
        lanes = [builder.extract_element(v, ir.Constant(i32, i)) for v in a for i in range(4)]
        if ety != dty:  # float32 data: a fixed pairwise tree
            while len(lanes) > 1:
                lanes = [builder.fadd(lanes[i], lanes[i + 1]) for i in range(0, len(lanes), 2)]
            total_ptr = cgutils.alloca_once_value(builder, lanes[0])
            start = builder.mul(nblk, ir.Constant(intp, block))
            with cgutils.for_range(builder, builder.sub(n, start), intp=intp) as loop:
                x = builder.load(builder.gep(ary.data, [builder.add(start, loop.index)]))
                x = builder.fpext(x, dty)
                builder.store(builder.fadd(builder.load(total_ptr), x), total_ptr)
            return builder.load(total_ptr)

        # float64 data: the lanes and the tail go through Neumaier's compensated sum.
        fabs = builder.module.declare_intrinsic("llvm.fabs", [dty])
        sum_ptr = cgutils.alloca_once_value(builder, ir.Constant(dty, 0.0))
        err_ptr = cgutils.alloca_once_value(builder, ir.Constant(dty, 0.0))

        def neumaier(x):
            s_ = builder.load(sum_ptr)
            t = builder.fadd(s_, x)
            big_s = builder.fcmp_ordered(">=", builder.call(fabs, [s_]), builder.call(fabs, [x]))
            lost = builder.select(
                big_s,
                builder.fadd(builder.fsub(s_, t), x),
                builder.fadd(builder.fsub(x, t), s_),
            )
            builder.store(builder.fadd(builder.load(err_ptr), lost), err_ptr)
            builder.store(t, sum_ptr)

        for lane in lanes:
            neumaier(lane)
        start = builder.mul(nblk, ir.Constant(intp, block))
        with cgutils.for_range(builder, builder.sub(n, start), intp=intp) as loop:
            neumaier(builder.load(builder.gep(ary.data, [builder.add(start, loop.index)])))
        total = builder.load(sum_ptr)
        err = builder.load(err_ptr)
        # Infinite terms make the error term NaN: the plain sum is then the answer.
        return builder.select(builder.fcmp_unordered("uno", err, err), total, builder.fadd(total, err))

    return types.float64(arr), codegen


HUGE_PAGE = 1 << 21  # bytes in a transparent huge page (x86-64, aarch64 with 4 KiB pages)


@kernel(parallel=True)
def touch_pages(buf):
    """Fault in a fresh buffer (1-D uint8 view) in parallel: a zero every 2 MiB from its start.

    A fresh output faults each page on its first write and the OS zeroes it there (2 MiB at
    a time with transparent huge pages, which ``np.empty`` asks for on large arrays).
    Inside a kernel that zeroing runs in the middle of the streaming writes; done first,
    by every thread, it costs less. Same-process A/B, log_softmax with a fresh output:
    [4096, 32000] 57.5 -> 50.5 ms, [512, 128256] 30.5 -> 27.2 ms. Variants measured slower:
    a write per 4 KiB page (57.0 vs 54.8 ms: it reads back lines the OS zeroed past the
    caches), and writes at the 2 MiB boundaries plus the first and last byte (56.7 vs
    54.7 ms; not understood). Without huge pages this faults one 4 KiB page in 512.
    """
    n = buf.size
    for k in prange((n + HUGE_PAGE - 1) // HUGE_PAGE):
        buf[k * HUGE_PAGE] = 0
