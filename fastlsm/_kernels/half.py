"""16-bit elements: bfloat16 and float16 widened to float32 on load, rounded once on store.

Kernels receive 16-bit arrays as integer views of their bits (``fastlsm/_dtypes.py`` makes
them), so that the element kind is part of the Numba type and every row pass specializes at
compile time:

=============  =========================  ==========================================
kernel dtype   element                    load (in registers)
=============  =========================  ==========================================
``uint16``     bfloat16 (top half of a    ``zext i16 -> i32``, ``shl 16``, ``bitcast``
               binary32)                  (exact)
``int16``      float16 (IEEE binary16)    ``fpext half -> float`` (exact; F16C
                                          ``vcvtph2ps``, x86 since Ivy Bridge / Zen 1)
``float32``    float32                    a plain load
=============  =========================  ==========================================

Stores round a float32 value to the nearest representable value, ties to even, once:

- float16: ``fptrunc float -> half`` (F16C ``vcvtps2ph``: round-to-nearest-even, float16
  subnormals kept, values from 65520 up give ``inf``; NaN stays NaN, quieted);
- bfloat16: integer arithmetic on the binary32 bits, ``(b + 0x7fff + ((b >> 16) & 1)) >> 16``
  (round-to-nearest-even, subnormals kept, overflow to ``inf``), NaN as ``sign | 0x7fc0`` (the
  quiet NaN ml_dtypes gives). Not ``fptrunc float -> bfloat``: LLVM lowers it per CPU
  (AVX-512 BF16's ``vcvtneps2bf16`` treats subnormal inputs as zero), so the bits could
  depend on the CPU.

No AVX-512 FP16/BF16 instruction is needed: the same IR gives the same bits on every x86 with
AVX2 + F16C (tested against a Haswell build). :func:`widen` / :func:`narrow` are the
conversions of the :class:`.ir.Element` s :data:`BFLOAT16` and :data:`FLOAT16`, through which
every vector loop (the row pass, the streaming writes, :func:`convert`) loads and stores, at
any width and under lane masks; :func:`load_element` / :func:`store_element` are the same
conversions for one element in Numba code. Without F16C, float16 is refused before any
kernel compiles (:func:`float16_native`).
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from .._jit import JIT_OPTIONS, kernel
from . import ir

WIDTH = 16  # float32 lanes per vector: one AVX-512 register, two AVX2 registers

F32, BF16, F16 = "float32", "bfloat16", "float16"
_KINDS = {types.float32: F32, types.uint16: BF16, types.int16: F16}

_HALF = llvm_ir.HalfType()


def element_kind(dtype) -> str | None:
    """The element kind of a kernel array dtype (a Numba type): float32, bfloat16 (``uint16``
    bits), float16 (``int16`` bits), or None for any other dtype (float64 included)."""
    return _KINDS.get(dtype)


def is_row(ty) -> bool:
    """A 1-D C-contiguous array of a float32-computed kind (float32, bfloat16, float16)."""
    return (
        isinstance(ty, types.Array)
        and ty.ndim == 1
        and ty.layout == "C"
        and element_kind(ty.dtype) is not None
    )


def _as(value, scalar):
    """``scalar`` (an LLVM type), or a vector of it with ``value``'s lane count."""
    return ir.vec(scalar, ir.width_of(value.type))


def _c(value, const):
    return ir.const(value.type, const)


def widen(builder, raw, kind):
    """float32 value(s) of the 16-bit patterns ``raw`` (``i16`` or a vector of ``i16``)."""
    if kind == BF16:
        wide = builder.zext(raw, _as(raw, ir.I32))
        return builder.bitcast(builder.shl(wide, _c(wide, 16)), _as(raw, ir.F32))
    if kind == F16:
        return builder.fpext(builder.bitcast(raw, _as(raw, _HALF)), _as(raw, ir.F32))
    raise ValueError(f"not a 16-bit element kind: {kind}")


def narrow(builder, value, kind, finite=False):
    """The 16-bit patterns (``i16`` or a vector) of float32 ``value`` rounded to ``kind``,
    to nearest, ties to even (see the module docstring for NaN). ``finite``: no lane is
    NaN (the caller's guarantee), so bfloat16 skips its NaN case (3 of ~10 instructions
    per vector; the same bits for every other value, infinities included)."""
    if kind == F16:
        return builder.bitcast(builder.fptrunc(value, _as(value, _HALF)), _as(value, ir.I16))
    if kind != BF16:
        raise ValueError(f"not a 16-bit element kind: {kind}")
    bits = builder.bitcast(value, _as(value, ir.I32))
    high = builder.lshr(bits, _c(bits, 16))
    odd = builder.and_(high, _c(bits, 1))
    rounded = builder.lshr(builder.add(builder.add(bits, _c(bits, 0x7FFF)), odd), _c(bits, 16))
    if finite:
        return builder.trunc(rounded, _as(value, ir.I16))
    quiet = builder.or_(builder.and_(high, _c(bits, 0x8000)), _c(bits, 0x7FC0))
    is_nan = builder.fcmp_unordered("uno", value, value)
    return builder.trunc(builder.select(is_nan, quiet, rounded), _as(value, ir.I16))


BFLOAT16 = ir.Element("bfloat16", ir.I16, ir.F32, types.uint16,
                      widen=lambda builder, raw: widen(builder, raw, BF16),
                      narrow=lambda builder, value: narrow(builder, value, BF16),
                      narrow_finite=lambda builder, value: narrow(builder, value, BF16, True))
FLOAT16 = ir.Element("float16", ir.I16, ir.F32, types.int16,
                     widen=lambda builder, raw: widen(builder, raw, F16),
                     narrow=lambda builder, value: narrow(builder, value, F16))
_ELEMENTS = {**ir.ELEMENTS, types.uint16: BFLOAT16, types.int16: FLOAT16}


def element(dtype) -> ir.Element | None:
    """The :class:`.ir.Element` of a kernel array dtype (a Numba type), or None."""
    return _ELEMENTS.get(dtype)


def _scalar_row(ty):
    return isinstance(ty, types.Array) and ty.ndim == 1 and (
        element_kind(ty.dtype) is not None or ty.dtype == types.float64
    )


def _compute_type(dtype):
    return types.float64 if dtype == types.float64 else types.float32


@intrinsic
def load_element(typingctx, x, j):
    """``x[j]`` in its compute type for a 1-D row of any kernel kind: float32 for float32,
    bfloat16 and float16 rows (widened exactly), float64 for float64 (no bounds check)."""
    if not (_scalar_row(x) and isinstance(j, types.Integer)):
        return None
    kind = element_kind(x.dtype)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], arr, [args[1]])
        raw = builder.load(ptr)
        return raw if kind in (F32, None) else widen(builder, raw, kind)

    return _compute_type(x.dtype)(x, j), codegen


@intrinsic
def store_element(typingctx, out, j, v):
    """``out[j] = v`` rounded once to ``out``'s dtype (a float32 ``v`` for float32/16-bit
    rows: a float64 ``v`` is rounded to float32 first; no bounds check)."""
    if not (_scalar_row(out) and isinstance(j, types.Integer) and isinstance(v, types.Float)):
        return None
    kind = element_kind(out.dtype)
    compute = _compute_type(out.dtype)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], arr, [args[1]])
        value = context.cast(builder, args[2], signature.args[2], compute)
        builder.store(value if kind in (F32, None) else narrow(builder, value, kind), ptr)
        return context.get_dummy_value()

    return types.none(out, j, v), codegen


@intrinsic
def convert(typingctx, src, dst):
    """``dst[j] = src[j]`` for rows of any two kinds of equal length: widened to float32,
    rounded once to ``dst``'s kind; vectors of ``WIDTH`` elements and one masked tail."""
    if not (is_row(src) and is_row(dst)):
        return None
    selem, delem = element(src.dtype), element(dst.dtype)

    def codegen(context, builder, signature, args):
        sa = context.make_array(signature.args[0])(context, builder, args[0])
        da = context.make_array(signature.args[1])(context, builder, args[1])
        intp = context.get_value_type(types.intp)
        n = builder.extract_value(sa.shape, 0)
        width = llvm_ir.Constant(intp, WIDTH)
        nvec = builder.sdiv(n, width)
        with cgutils.for_range(builder, nvec, intp=intp) as loop:
            j = builder.mul(loop.index, width)
            delem.store(builder, selem.load(builder, sa.data, j, WIDTH), da.data, j)
        j = builder.mul(nvec, width)
        with builder.if_then(builder.icmp_signed("<", j, n)):
            mask = ir.lane_mask(builder, builder.sub(n, j), WIDTH)
            value = selem.load_masked(builder, sa.data, j, mask)
            delem.store_masked(builder, value, da.data, j, mask)
        return context.get_dummy_value()

    return types.none(src, dst), codegen


@kernel(parallel=True)
def convert_rows(src, dst):
    """``dst[i] = src[i]`` for every row of two C-contiguous 2-D arrays of any kinds
    (:func:`convert`): 16-bit data to float32 exactly, float32 to 16-bit rounded once."""
    rows = src.shape[0]
    for i in prange(rows):
        convert(src[i], dst[i])


_F16_PROBE = """
define float @widen(i16 %x) {
  %h = bitcast i16 %x to half
  %f = fpext half %h to float
  ret float %f
}
define i16 @narrow(float %x) {
  %h = fptrunc float %x to half
  %i = bitcast half %h to i16
  ret i16 %i
}
"""


@functools.cache
def float16_native() -> bool:
    """Whether Numba's target CPU converts float16 in hardware (x86: F16C, since 2012).

    Without it LLVM lowers ``fpext``/``fptrunc`` of ``half`` to calls of compiler-rt's
    ``__extendhfsf2``/``__truncsfhf2``, which Numba's JIT does not provide: compiling a
    float16 kernel would abort the process. This compiles the two conversions alone for the
    target (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``, else the host) and looks for calls.
    """
    try:
        from numba.core.registry import cpu_target

        machine = cpu_target.target_context.codegen()._tm
        module = llvm.parse_assembly(_F16_PROBE)
        module.triple = machine.triple
        asm = machine.emit_assembly(module)
    except Exception:  # pragma: no cover - a Numba without these internals: assume F16C
        return True
    return "hfsf2" not in asm and "sfhf2" not in asm


def is_f32_math(dtype) -> bool:
    """Whether rows of the kernel dtype ``dtype`` (a Numba type) are computed in float32."""
    return element_kind(dtype) is not None


def scratch(shape, x):
    """``np.empty(shape)`` of ``x``'s compute dtype: float32 for float32/16-bit rows, else
    ``x``'s dtype (a row buffer of intermediate values)."""
    raise NotImplementedError("compiled only")


@overload(scratch, jit_options=JIT_OPTIONS)
def _scratch_impl(shape, x):
    if is_f32_math(x.dtype):
        return lambda shape, x: np.empty(shape, np.float32)
    return lambda shape, x: np.empty(shape, x.dtype)


def row_values(x, i, buf):
    """Row ``i`` of 2-D ``x`` as float32/float64 values a row kernel of those dtypes reads:
    the row itself for float32/float64 data; for 16-bit data ``buf`` (:func:`row_buffer`)
    after :func:`convert` widened the row into it exactly (one vectorized pass over a row
    that stays in cache: no float32 copy of the whole array)."""
    raise NotImplementedError("compiled only")


@overload(row_values, jit_options=JIT_OPTIONS)
def _row_values_impl(x, i, buf):
    if element_kind(x.dtype) in (BF16, F16):

        def widened(x, i, buf):
            convert(x[i], buf)
            return buf

        return widened
    return lambda x, i, buf: x[i]


# ------------------------------------------------------------------ float32 gradient rows
# Cross-entropy reads 16-bit rows directly, but computes a gradient row in several passes
# (exponentials, then scaling): those run on a per-thread float32 row buffer, and the
# result is rounded once into the 16-bit gradient. float32/float64 rows use no buffer.


def row_buffer(x):
    """A float32 row-sized buffer for the rows of 2-D ``x`` when they are 16-bit (one per
    thread's block of rows), else an empty array (never used)."""
    raise NotImplementedError("compiled only")


@overload(row_buffer, jit_options=JIT_OPTIONS)
def _row_buffer_impl(x):
    if element_kind(x.dtype) in (BF16, F16):
        return lambda x: np.empty(x.shape[1], np.float32)
    return lambda x: np.empty(0, x.dtype)


def grad_row(grad, i, spare, buf, want):
    """Where row ``i``'s gradient is computed: ``grad[i]`` for float32/float64 gradients
    (``spare``, an empty writeable row of ``grad``'s type, when not ``want``: the logits
    may be read-only); the float32 ``buf`` for 16-bit ones, which :func:`store_grad` then
    rounds into ``grad[i]``."""
    raise NotImplementedError("compiled only")


@overload(grad_row, jit_options=JIT_OPTIONS)
def _grad_row_impl(grad, i, spare, buf, want):
    if element_kind(grad.dtype) in (BF16, F16):
        return lambda grad, i, spare, buf, want: buf
    return lambda grad, i, spare, buf, want: grad[i] if want else spare


def store_grad(g, grad, i, want):
    """When ``want``: round the float32 gradient ``g`` into the 16-bit row ``grad[i]`` (a
    no-op for float32/float64 gradients: :func:`grad_row` computed them in place)."""
    raise NotImplementedError("compiled only")


@overload(store_grad, jit_options=JIT_OPTIONS)
def _store_grad_impl(g, grad, i, want):
    if element_kind(grad.dtype) in (BF16, F16):

        def store(g, grad, i, want):
            if want:
                convert(g, grad[i])

        return store
    return lambda g, grad, i, want: None
