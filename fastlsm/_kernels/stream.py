"""Streaming (non-temporal) row writes.

A kernel that writes its result with plain stores makes the CPU read every output cache line
before overwriting it (read-for-ownership): a log_softmax with ``out=`` then moves 3 bytes
per byte of input instead of 2. Non-temporal stores write whole lines straight to memory.
LLVM does not vectorize a loop of scalar non-temporal stores from Numba (it needs an alignment
Numba cannot promise), so :func:`stream_affine` emits the loop in LLVM IR: a scalar head up
to a 32-byte boundary of ``dst``, aligned 32-byte vector stores marked ``!nontemporal``, a
scalar tail, then ``sfence``.

The arithmetic carries no fast-math flags, so ``(src - a) * s - b`` is evaluated exactly in
that order (LLVM may not reassociate ``(x - m) - c`` into ``x - (m + c)``, which loses the
low bits of ``x - m`` for large logits).
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_VECTOR_BYTES = 32  # AVX2
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _affine(builder, v, a, s, b):
    return builder.fsub(builder.fmul(builder.fsub(v, a), s), b)


@intrinsic
def stream_affine(typingctx, src, dst, a, s, b):
    """``dst[j] = (src[j] - a) * s - b`` for every j, with non-temporal stores.

    ``src`` and ``dst`` are 1-D C-contiguous arrays of the same float dtype and length
    (``dst`` may be ``src``); ``a``, ``s``, ``b`` are converted to that dtype. Rounding: each
    operation rounds once, in the order written (``s = 1`` and ``b = 0`` are exact no-ops).
    """
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
        if not _X86:
            return context.get_dummy_value()
        with builder.if_then(builder.icmp_signed(">", nvec, zero)):
            sfence = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"
            )
            builder.call(sfence, [])
        return context.get_dummy_value()

    return types.none(src, dst, a, s, b), codegen


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
        # read, high temporal locality (keep in all levels), data cache
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen
