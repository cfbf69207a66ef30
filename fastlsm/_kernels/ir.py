"""LLVM IR building blocks for the hand-written loops (the row pass, streaming writes, sums).

Every IR-emitting module (:mod:`.math`, :mod:`.sumexp`, :mod:`.memory`, :mod:`.rows`) builds
its vectors, constants, masked and streaming memory operations and prefetches here, so each
of these facts is written once:

- vector types and constants (:func:`vec`, :func:`const`, :func:`splat`); every helper takes
  a scalar or a vector type, so the same arithmetic is emitted at any width (a width-1 use
  is the scalar code of a Numba loop, which LLVM vectorizes itself);
- LLVM intrinsics by name and type (:func:`call`: ``fma``, ``maxnum``, ``fabs``, ...);
- memory: :func:`store` (``nontemporal=True``: a streaming store),
  :func:`masked_load` / :func:`masked_store` for tails, :func:`prefetch_l2`, :func:`sfence`;
- array arguments: :func:`elem_ptr` (address of ``a[j]`` as a pointer to a vector).
- dtypes: :class:`Element`, how each dtype is loaded into registers and stored back (the
  one place a dtype enters the loops; its docstring says how to add one).

Nothing here carries fast-math flags: every rounding is the one written.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba.core import cgutils, types

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
"""Streaming-store metadata and ``sfence`` are emitted on x86 only (plain stores elsewhere)."""

LINE_BYTES = 64  # one cache line
I1, I8, I16, I32 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32)
F32, F64 = ir.FloatType(), ir.DoubleType()


def vec(elem: ir.Type, width: int) -> ir.Type:
    """``<width x elem>``, or ``elem`` itself for width 1."""
    return elem if width == 1 else ir.VectorType(elem, width)


def width_of(ty: ir.Type) -> int:
    return ty.count if isinstance(ty, ir.VectorType) else 1


def elem_of(ty: ir.Type) -> ir.Type:
    return ty.element if isinstance(ty, ir.VectorType) else ty


def like_int(ty: ir.Type) -> ir.Type:
    """The integer type of ``ty``'s width and lane count (for bit casts)."""
    e = elem_of(ty)
    bits = 32 if isinstance(e, ir.FloatType) else 64 if isinstance(e, ir.DoubleType) else e.width
    return vec(ir.IntType(bits), width_of(ty))


def const(ty: ir.Type, value) -> ir.Constant:
    """``value`` in every lane of ``ty`` (a scalar or vector type)."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [value] * ty.count)
    return ir.Constant(ty, value)


def splat(builder: ir.IRBuilder, value: ir.Value, width: int) -> ir.Value:
    """A run-time scalar broadcast to ``width`` lanes (``value`` itself for width 1)."""
    if width == 1:
        return value
    vty = ir.VectorType(value.type, width)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(
        v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(I32, width), [0] * width)
    )


def type_suffix(ty: ir.Type) -> str:
    """LLVM's overload suffix of a type: ``f32``, ``v16f32``, ``v8i64``."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    return f"i{ty.width}"


def call(builder: ir.IRBuilder, name: str, args, ret: ir.Type | None = None) -> ir.Value:
    """Call the LLVM intrinsic ``llvm.<name>.<suffix of args[0]>`` (``fma``, ``maxnum``, ...)."""
    ty = args[0].type
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ret or ty, [a.type for a in args]),
        f"llvm.{name}.{type_suffix(ty)}",
    )
    return builder.call(fn, list(args))


def max_across(builder: ir.IRBuilder, vectors) -> ir.Value:
    """``llvm.maxnum`` of four vectors (``(v0, v1)``, ``(v2, v3)``, then the two), then of
    the lanes by halving the vector: the scalar maximum of every lane (NaN ignored)."""
    v0, v1, v2, v3 = vectors
    v = call(builder, "maxnum", [call(builder, "maxnum", [v0, v1]),
                                 call(builder, "maxnum", [v2, v3])])
    width = width_of(v.type)
    while width > 1:
        h = width // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, h), list(range(h))))
        hi = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(I32, h), list(range(h, width)))
        )
        v = call(builder, "maxnum", [lo, hi])
        width = h
    return builder.extract_element(v, ir.Constant(I32, 0))


def fma(builder: ir.IRBuilder, a, b, c) -> ir.Value:
    """``a * b + c`` rounded once."""
    return call(builder, "fma", [a, b, c])


def select_lt(builder: ir.IRBuilder, v, lo):
    """``lo`` where ``v < lo``, else ``v`` (a NaN stays NaN: the compare is ordered)."""
    return builder.select(builder.fcmp_ordered("<", v, lo), lo, v)


def select_gt(builder: ir.IRBuilder, v, hi):
    """``hi`` where ``v > hi``, else ``v`` (a NaN stays NaN)."""
    return builder.select(builder.fcmp_ordered(">", v, hi), hi, v)


# ----------------------------------------------------------------------------- memory


def elem_ptr(builder: ir.IRBuilder, data: ir.Value, j: ir.Value, ty: ir.Type) -> ir.Value:
    """Address of element ``j`` of ``data`` as a pointer to ``ty`` (a vector or a scalar)."""
    return builder.bitcast(builder.gep(data, [j]), ty.as_pointer())


def store(builder: ir.IRBuilder, value, ptr, align: int, nontemporal: bool = False):
    """A store; ``nontemporal``: a streaming store (whole lines to memory, past the caches).

    A streaming vector store must be aligned to its size (``align`` = the vector's bytes, at
    most 64); streaming stores are weakly ordered: the kernel issues :func:`sfence` after its
    last one. Off x86 the metadata is not emitted (a plain store).
    """
    st = builder.store(value, ptr, align=align)
    if nontemporal and X86:
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(I32, 1)]))
    return st


def lane_mask(builder: ir.IRBuilder, remaining: ir.Value, width: int) -> ir.Value:
    """``<width x i1>``: lane ``k`` is on when ``k < remaining`` (an intp)."""
    ity = remaining.type
    lanes = ir.Constant(ir.VectorType(ity, width), list(range(width)))
    return builder.icmp_signed("<", lanes, splat(builder, remaining, width))


def masked_load(builder, ptr, mask, passthru, align: int) -> ir.Value:
    """Lanes of ``*ptr`` where ``mask``, ``passthru`` elsewhere (nothing read there)."""
    vty = passthru.type
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vty, [ptr.type, I32, mask.type, vty]),
        f"llvm.masked.load.{type_suffix(vty)}.p0",
    )
    return builder.call(fn, [ptr, ir.Constant(I32, align), mask, passthru])


def masked_store(builder, value, ptr, mask, align: int) -> None:
    """Store the lanes of ``value`` where ``mask`` (nothing written elsewhere)."""
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [value.type, ptr.type, I32, mask.type]),
        f"llvm.masked.store.{type_suffix(value.type)}.p0",
    )
    builder.call(fn, [value, ptr, ir.Constant(I32, align), mask])


def prefetch_l2(builder: ir.IRBuilder, ptr: ir.Value) -> None:
    """Prefetch the line at ``ptr`` into L2 (``llvm.prefetch``, locality 2: ``prefetcht1``).

    Measured on Zen 4 (logsumexp, [4096, 32000] float32, 2 threads, rows in contiguous
    blocks per thread): prefetching the next row into L2 took 20 ms, into L1
    (``prefetcht0``) 24 ms, no prefetch 30 ms, loading the next row in the same loop (for
    its maximum) 28 ms: demand misses and L1 prefetches hold the core's few L1 miss
    buffers, and the exp arithmetic waits behind them.
    """
    i8p = I8.as_pointer()
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32]), "llvm.prefetch.p0"
    )
    args = [
        builder.bitcast(ptr, i8p),
        ir.Constant(I32, 0),
        ir.Constant(I32, 2),
        ir.Constant(I32, 1),
    ]
    builder.call(fn, args)


def sfence(builder: ir.IRBuilder) -> None:
    """Order every streaming store issued so far before later stores (a no-op off x86)."""
    if X86:
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"
        )
        builder.call(fn, [])


def head_to_line(builder: ir.IRBuilder, data: ir.Value, n: ir.Value, itemsize: int, intp):
    """Elements of a row before its first 64-byte boundary (at most ``n``; all ``n`` when the
    row is not even aligned to its itemsize): the unaligned head written with plain stores
    before aligned streaming vectors."""
    addr = builder.ptrtoint(data, intp)
    c_line, c_item = ir.Constant(intp, LINE_BYTES), ir.Constant(intp, itemsize)
    to_line = builder.udiv(
        builder.urem(builder.sub(c_line, builder.urem(addr, c_line)), c_line), c_item
    )
    aligned = builder.icmp_unsigned("==", builder.urem(addr, c_item), ir.Constant(intp, 0))
    head = builder.select(aligned, to_line, n)
    return builder.select(builder.icmp_signed("<", n, head), n, head)


# ----------------------------------------------------------------------------- elements


class Element:
    """How a dtype's elements are loaded into registers and stored back: the one place a
    dtype enters the IR loops (the row pass of :mod:`.sumexp`, the writes of :mod:`.memory`).

    ``mem`` is the LLVM type in memory, ``reg`` the arithmetic type (float32 math for every
    float32-or-narrower dtype), ``numba_dtype`` the dtype of the Numba arrays that hold it.
    ``widen(builder, raw) -> reg`` and ``narrow(builder, reg) -> raw`` convert (identity for
    float32 and float64); ``narrow_finite`` (default ``narrow``) is ``narrow`` for values
    known not to be NaN.

    Adding a dtype (for instance bfloat16, held in ``uint16`` arrays) is adding one
    ``Element`` here: ``widen`` a zero-extension and a 16-bit shift into a float32, ``narrow``
    the round-to-nearest-even of the float32 to its top half; then name it in the
    :class:`.sumexp.RowPass` specs (``src=``, ``store=``, ``dst=``) that should read or write
    it. The loops take every load and store from these methods, at any vector width.
    """

    def __init__(self, name, mem, reg, numba_dtype, widen=None, narrow=None, narrow_finite=None):
        self.name, self.mem, self.reg, self.numba_dtype = name, mem, reg, numba_dtype
        self.itemsize = (
            mem.width // 8
            if isinstance(mem, ir.IntType)
            else (4 if isinstance(mem, ir.FloatType) else 8)
        )
        self._widen = widen or (lambda builder, v: v)
        self._narrow = narrow or (lambda builder, v: v)
        self._narrow_finite = narrow_finite or self._narrow

    def __repr__(self) -> str:
        return f"Element({self.name})"

    def load(self, builder, data, j, width: int):
        """Elements ``j .. j + width - 1`` as a ``reg`` vector (no alignment assumed)."""
        raw = builder.load(elem_ptr(builder, data, j, vec(self.mem, width)), align=self.itemsize)
        return self._widen(builder, raw)

    def load_masked(self, builder, data, j, mask):
        """The lanes of ``mask`` (0 elsewhere, nothing read there)."""
        vty = vec(self.mem, mask.type.count)
        raw = masked_load(
            builder, elem_ptr(builder, data, j, vty), mask, const(vty, 0), self.itemsize
        )
        return self._widen(builder, raw)

    def store(
        self, builder, value, data, j, aligned=False, nontemporal=False, finite=False
    ):
        """Store a ``reg`` vector at ``j``; ``aligned``: the address is a multiple of the
        vector's size (required for ``nontemporal``, a streaming store); ``finite``: the
        caller guarantees no lane is NaN (``narrow_finite``: the same bits without the NaN
        case, where a dtype has one)."""
        raw = (self._narrow_finite if finite else self._narrow)(builder, value)
        width = width_of(value.type)
        align = self.itemsize * width if aligned else self.itemsize
        store(builder, raw, elem_ptr(builder, data, j, raw.type), align, nontemporal)

    def store_masked(self, builder, value, data, j, mask):
        raw = self._narrow(builder, value)
        masked_store(builder, raw, elem_ptr(builder, data, j, raw.type), mask, self.itemsize)


FLOAT32 = Element("float32", F32, F32, types.float32)
FLOAT64 = Element("float64", F64, F64, types.float64)
ELEMENTS = {types.float32: FLOAT32, types.float64: FLOAT64}
"""The element of each plain float dtype (the default for arrays of that Numba dtype)."""
