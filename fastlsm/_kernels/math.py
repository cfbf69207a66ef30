"""Scalar building blocks that vectorize: exp, softcap, max, log, bit casts.

Numba on this platform has no SVML, so ``np.exp`` in a loop stays a scalar libm call and caps
a pass over the logits at a few elements per cycle. The exps here are branch-free
polynomials (Cody-Waite range reduction, minimax/Taylor polynomial, exponent built with
integer bit operations) that LLVM vectorizes. :func:`fmax` maps to ``llvm.maxnum``, which
vectorizes where a Python ``max`` or an ``if`` does not.

One exp per job and precision:

- float32 **sum terms** (:func:`exp_sum_ir`) and float32 **output values**
  (:func:`exp_out_ir`) are LLVM IR written once, emitted at any vector width: the row pass
  of :mod:`.sumexp` uses them on 16 lanes, Numba loops through :func:`exp_sum_f32` /
  :func:`exp_f32` (the same IR at width 1). They share the range reduction and the
  polynomial, so a sum term and an output value of the same argument have the same bits
  wherever both are normal (``x >= -87``);
- float64: :func:`exp_sum_f64` and :func:`exp_f64`, one range reduction and polynomial
  (:func:`_exp_parts_f64`), likewise equal for ``x >= -708``.

:func:`fexp` / :func:`fexp_sum` dispatch on the scalar type in one place, so kernels are
written once for both dtypes. :func:`softcap` is the one softcap formula
(:func:`softcap_ir` for float32).

Accuracy (measured against float64/mpmath in tests/test_math.py):
- float32: at most 2 ulp relative error on the whole range, denormal results correctly
  scaled, ``exp(-inf) == 0``, ``exp(+inf) == inf``, ``exp(nan) is nan``.
- float64: at most 2 ulp relative error, same special values.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic, overload, register_jitable

from .._jit import JIT_OPTIONS
from . import ir

# ----------------------------------------------------------------------------- bit casts


@intrinsic
def _bits_as_f64(typingctx, bits):
    """The float64 whose bit pattern is a 64-bit integer."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _f64_bits(typingctx, x):
    """The int64 bit pattern of a float64."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(64))

    return types.int64(x), codegen


def ldexp_f64_ir(builder, p, t, two_factors):
    """``p * 2**n`` (float64, any width) where ``t = n + 1.5 * 2**52`` (see :func:`_ldexp2`)."""
    ity = ir.like_int(p.type)
    n = builder.sub(builder.bitcast(t, ity), ir.const(ity, 0x4338000000000000))

    def pow2(k):
        biased = builder.add(k, ir.const(ity, 1023))
        return builder.bitcast(builder.shl(biased, ir.const(ity, 52)), p.type)

    if not two_factors:
        return builder.fmul(p, pow2(n))
    n1 = builder.ashr(n, ir.const(ity, 1))
    return builder.fmul(builder.fmul(p, pow2(n1)), pow2(builder.sub(n, n1)))


def _ldexp_f64_codegen(two_factors):
    def codegen(context, builder, signature, args):
        return ldexp_f64_ir(builder, *args, two_factors)

    return codegen


@intrinsic
def _ldexp2(typingctx, p, t):
    """``p * 2**n`` (float64) where ``t = n + 1.5 * 2**52`` (the integer read from ``t``'s
    bits), as two normal factors ``2**(n // 2)`` and ``2**(n - n // 2)``, so that results
    down into the denormal range round once. Integer work in 64 bits (no float/int
    conversion: AVX2 has none for 64-bit integers). The float32 twin is :func:`exp_out_ir`.
    """
    if p == t == types.float64:
        return p(p, t), _ldexp_f64_codegen(True)
    return None


@intrinsic
def _ldexp1(typingctx, p, t):
    """As :func:`_ldexp2` with one factor: only for normal results (``n >= -1022``)."""
    if p == t == types.float64:
        return p(p, t), _ldexp_f64_codegen(False)
    return None


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``).

    Kernels write every fused multiply-add explicitly and carry no ``contract`` flag, so no
    rounding is left to the code generator's choice.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.fma", [args[0].type] * 3)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _maxnum(typingctx, a, b):
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic(
            "llvm.maxnum", [ty], llvm_ir.FunctionType(ty, [ty, ty])
        )
        return builder.call(fn, args)

    return a(a, b), codegen


def radd(acc, x):
    """``acc + x`` with ``x`` converted to ``acc``'s type (float32 terms, float64 sum).

    A plain, ordered add: no reduction is left to the vectorizer's choice of order (see
    ``stream.block_sum`` for the fast, fixed-order sum of an array).
    """
    return acc + x


@overload(radd, jit_options=JIT_OPTIONS)
def _radd_impl(acc, x):
    if isinstance(acc, types.Float) and isinstance(x, types.Float):
        if acc == x:
            return lambda acc, x: acc + x
        if acc == types.float64:
            return lambda acc, x: acc + np.float64(x)
    return None


@register_jitable(**JIT_OPTIONS)
def neumaier_add(s, c, x):
    """One step of Neumaier's compensated sum: returns the new ``(sum, compensation)``.

    The final value is ``sum + compensation`` (or ``sum`` when the compensation is NaN,
    which an infinite term causes): see :func:`neumaier_result`.
    """
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@register_jitable(**JIT_OPTIONS)
def neumaier_result(s, c):
    return s + c if c == c else s


def fmax(a, b):
    """max(a, b) ignoring NaN (``llvm.maxnum``): vectorizes. NaN only if both are NaN."""
    return max(a, b)


@overload(fmax, jit_options=JIT_OPTIONS)
def _fmax_impl(a, b):
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _maxnum(a, b)
    return None


# ----------------------------------------------------------------------------- exp

# float32: the exp cores are LLVM IR (written once, emitted at any vector width), see
# :func:`exp_sum_ir` and :func:`exp_out_ir`; the scalar functions below are the same IR at
# width 1, inside loops that LLVM vectorizes.

_LOG2E_F = float(np.float32(1.4426950408889634))
_LN2_HI_F = 0.693359375  # Cody-Waite split: n * _LN2_HI_F is exact for |n| < 2**9
_LN2_LO_F = float(np.float32(0.6931471805599453 - 0.693359375))
_SHIFTER_F = 12582912.0 + 127.0  # 1.5 * 2**23 + bias: t's low bits hold n + 127
_SHIFTER_BITS_F = 0x4B40007F  # the bits of _SHIFTER_F: bits(t) - this = n
# exp(r) ~ 1 + r * (1 + r * (C2 + ... + r * C6)): minimax for relative error on
# [-ln2/2, ln2/2] (2e-9, below float32 rounding); constant term exactly 1: exp(0) == 1.
_POLY_F = (
    1.0,
    1.0,
    0.4999999403953552,
    0.16666431725025177,
    0.04166800156235695,
    0.008374163880944252,
    0.0013843643246218562,
)
SUM_LO_F = -87.0
"""Lower clamp of a sum term: ``exp(-87) = 1.6e-38 >= 2**-126``, so ``2**n`` is one normal
factor. For ``x >= -87`` a sum term and an output value have the same bits."""
OUT_LO_F = -104.0  # exp(-104) < half the smallest denormal: rounds to 0, exp(-inf) == 0
OUT_HI_F = 89.0  # exp(89) > FLT_MAX: overflows to inf


def _exp_reduce_ir(builder, d, lo, hi):
    """Shared core of both float32 exps (any width): clamp ``d`` to ``[lo, hi]`` (NaN stays
    NaN), ``t = d * log2(e) + shifter`` (``n`` in its low bits), ``r = d - n * ln2`` with a
    two-constant ln2 (exact for every ``n``), ``p = exp(r)``. Returns ``(p, t)``."""
    ty = d.type
    d = ir.select_lt(builder, d, ir.const(ty, lo))
    if hi is not None:
        d = ir.select_gt(builder, d, ir.const(ty, hi))
    t = ir.fma(builder, d, ir.const(ty, _LOG2E_F), ir.const(ty, _SHIFTER_F))
    n = builder.fneg(builder.fsub(t, ir.const(ty, _SHIFTER_F)))
    r = ir.fma(builder, n, ir.const(ty, _LN2_HI_F), d)
    r = ir.fma(builder, n, ir.const(ty, _LN2_LO_F), r)
    p = ir.const(ty, _POLY_F[-1])
    for c in reversed(_POLY_F[:-1]):
        p = ir.fma(builder, p, r, ir.const(ty, c))
    return p, t


def exp_sum_ir(builder, d):
    """float32 ``exp(d)`` as a term of a max-shifted sum (``d <= 0`` or NaN), any width.

    Arguments below -87 give ``exp(-87)`` (negligible in a sum holding ``exp(0) = 1``;
    ``-inf`` too); ``2**n`` is one normal factor: the shifted bits of ``t`` (one shift and
    one multiplication). Bitwise equal to :func:`exp_out_ir` for ``-87 <= d <= 0``.
    """
    ity = ir.like_int(d.type)
    p, t = _exp_reduce_ir(builder, d, SUM_LO_F, None)
    # (bits(t) << 23) == (n + 127) << 23: the shifter's own bits shift out
    scale = builder.shl(builder.bitcast(t, ity), ir.const(ity, 23))
    return builder.fmul(p, builder.bitcast(scale, d.type))  # NaN * 2**n is NaN


def exp_out_ir(builder, d):
    """float32 ``exp(d)`` as an output value (any ``d``, any width): within 2 ulp on the
    whole range, denormal results rounded once (``2**n`` as two normal factors),
    ``exp(-inf) = 0``, ``exp(+inf) = inf``, NaN stays NaN."""
    ity = ir.like_int(d.type)
    p, t = _exp_reduce_ir(builder, d, OUT_LO_F, OUT_HI_F)
    n = builder.sub(builder.bitcast(t, ity), ir.const(ity, _SHIFTER_BITS_F))
    n1 = builder.ashr(n, ir.const(ity, 1))
    n2 = builder.sub(n, n1)

    def pow2(k):
        biased = builder.add(k, ir.const(ity, 127))
        return builder.bitcast(builder.shl(biased, ir.const(ity, 23)), d.type)

    return builder.fmul(builder.fmul(p, pow2(n1)), pow2(n2))


def sum_term_from_out_ir(builder, d, e_out):
    """The sum term of ``d`` from its output value ``e_out = exp_out_ir(d)`` (one select):
    :func:`exp_sum_ir`'s bits, so a pass that stores exponentials sums exactly what a pass
    that only sums adds."""
    ty = d.type
    floor = exp_sum_ir(builder, ir.const(ty, SUM_LO_F))  # a constant: folded by LLVM
    return builder.select(builder.fcmp_ordered("<", d, ir.const(ty, SUM_LO_F)), floor, e_out)


def _scalar_exp(core):
    def typer(typingctx, x):
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return core(builder, args[0])

        return types.float32(x), codegen

    return intrinsic(typer)


exp_f32 = _scalar_exp(exp_out_ir)
exp_f32.__doc__ = """float32 exp as a value (:func:`exp_out_ir` at width 1; vectorizes)."""
exp_sum_f32 = _scalar_exp(exp_sum_ir)
exp_sum_f32.__doc__ = """float32 exp of a sum term (:func:`exp_sum_ir` at width 1)."""


# ----------------------------------------------------------------------------- softcap
#
# y = cap * tanh(x / cap) (Gemma 2's logit softcap), slope = dy/dx = sech(x / cap)**2, in
# float32. tanh is Cephes tanhf: an odd polynomial for |u| < 0.625, (1 - e) / (1 + e) with
# e = exp(-2|u|) above (about 2 ulp); the slope is 4 e / (1 + e)**2 from the same e, so the
# small slopes of saturated logits keep full relative precision (1 - t*t from a rounded t
# loses them all). The only softcap formula for float32: the row pass loads through it, the
# gradient loops call :func:`softcap_f32` (the same IR at width 1).

_TANH_F = (
    -5.70498872745e-3,
    2.06390887954e-2,
    -5.37397155531e-2,
    1.33314422036e-1,
    -3.33332819422e-1,
)
_TANH_SPLIT_F = 0.625


def softcap_ir(builder, x, inv, cap):
    """``(cap * tanh(x * inv), sech(x * inv)**2)`` for float32 ``x`` of any width (``inv``
    and ``cap`` of ``x``'s type, ``inv = 1 / cap`` rounded once: a multiplication, never a
    division, at every call site). Every operation rounds once, in the order written."""
    ty = x.type
    u = builder.fmul(x, inv)
    a = ir.call(builder, "fabs", [u])
    z = builder.fmul(u, u)
    p = ir.const(ty, _TANH_F[0])
    for c in _TANH_F[1:]:
        p = builder.fadd(builder.fmul(p, z), ir.const(ty, c))
    small = builder.fadd(builder.fmul(builder.fmul(p, z), u), u)
    e = exp_out_ir(builder, builder.fmul(ir.const(ty, -2.0), a))
    d1 = builder.fadd(ir.const(ty, 1.0), e)
    big = builder.fdiv(builder.fsub(ir.const(ty, 1.0), e), d1)
    big = builder.select(builder.fcmp_ordered("<", u, ir.const(ty, 0.0)), builder.fneg(big), big)
    t = builder.select(builder.fcmp_ordered("<", a, ir.const(ty, _TANH_SPLIT_F)), small, big)
    slope = builder.fdiv(builder.fmul(ir.const(ty, 4.0), e), builder.fmul(d1, d1))
    return builder.fmul(cap, t), slope


@intrinsic
def softcap_f32(typingctx, x, inv, cap):
    """``(softcap(x), slope)`` for a float32 ``x``: :func:`softcap_ir` at width 1."""
    if not (x == inv == cap == types.float32):
        return None
    rty = types.UniTuple(types.float32, 2)

    def codegen(context, builder, signature, args):
        y, slope = softcap_ir(builder, *args)
        return context.make_tuple(builder, rty, [y, slope])

    return rty(x, inv, cap), codegen


@register_jitable(**JIT_OPTIONS)
def softcap_f64(x, inv, cap):
    """float64 twin of :func:`softcap_f32`: libm tanh (exact, scalar), the slope as
    ``4 e / (1 + e)**2`` with ``e = exp(-2 |x * inv|)``."""
    u = x * inv
    e = np.exp(-2.0 * abs(u))
    d = 1.0 + e
    return cap * np.tanh(u), 4.0 * e / (d * d)


def softcap(x, cap):
    """``(cap * tanh(x / cap), sech(x / cap)**2)`` in the precision of ``x`` (``cap`` a
    float64 > 0): :func:`softcap_f32` or :func:`softcap_f64` with ``inv = 1 / cap``."""
    u = x / cap
    return cap * np.tanh(u), 1.0 / np.cosh(u) ** 2


@overload(softcap, jit_options=JIT_OPTIONS)
def _softcap_impl(x, cap):
    if x == types.float32:
        return lambda x, cap: softcap_f32(x, np.float32(1.0 / cap), np.float32(cap))
    if x == types.float64:
        return lambda x, cap: softcap_f64(x, 1.0 / cap, np.float64(cap))
    return None


_F64 = np.float64
_LOG2E_D = _F64(1.4426950408889634)
_LN2_HI_D = _F64(6.93147180369123816490e-01)  # fdlibm: low 32 bits zero, n * hi exact
_LN2_LO_D = _F64(1.90821492927058770002e-10)
# Taylor coefficients 1/k!, k = 2..13: on |r| <= ln2/2 the truncation error is below 1e-17.
_C_D = tuple(_F64(1.0) / _F64(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(2, 14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C_D
_LO_D = _F64(-746.0)
_HI_D = _F64(710.0)


_MAGIC_D = _F64(6755399441055744.0)  # 1.5 * 2**52: adding it rounds to an integer


def exp_parts_f64_ir(builder, xc):
    """float64 twin of :func:`_exp_reduce_ir` for a clamped argument ``xc`` (any width):
    ``t = xc * log2(e) + 1.5 * 2**52`` (``n`` in its bits), ``r = xc - n * ln2`` with
    fdlibm's two-constant ln2, ``p = exp(r)`` (degree-13 Taylor polynomial,
    ``r + r**2 * P(r) + 1``). Returns ``(p, t)``."""
    ty = xc.type
    t = ir.fma(builder, xc, ir.const(ty, float(_LOG2E_D)), ir.const(ty, float(_MAGIC_D)))
    nfx = builder.fneg(builder.fsub(t, ir.const(ty, float(_MAGIC_D))))
    r = ir.fma(builder, nfx, ir.const(ty, float(_LN2_HI_D)), xc)
    r = ir.fma(builder, nfx, ir.const(ty, float(_LN2_LO_D)), r)
    p = ir.const(ty, float(_C_D[-1]))
    for c in reversed(_C_D[:-1]):
        p = ir.fma(builder, p, r, ir.const(ty, float(c)))
    p = builder.fadd(ir.fma(builder, p, builder.fmul(r, r), r), ir.const(ty, 1.0))
    return p, t


def exp_sum_f64_ir(builder, d):
    """float64 ``exp(d)`` of a sum term, any width: :func:`exp_sum_f64`'s bits (arguments
    below -708 give ``exp(-708)``; ``2**n`` one normal factor)."""
    ty = d.type
    xc = ir.select_lt(builder, d, ir.const(ty, SUM_LO_D))
    xc = ir.select_gt(builder, xc, ir.const(ty, float(_HI_D)))
    return ldexp_f64_ir(builder, *exp_parts_f64_ir(builder, xc), False)


@intrinsic
def _exp_parts_f64(typingctx, xc):
    """:func:`exp_parts_f64_ir` at width 1: ``(p, t)`` for a float64 ``xc``."""
    if xc != types.float64:
        return None
    rty = types.UniTuple(types.float64, 2)

    def codegen(context, builder, signature, args):
        return context.make_tuple(builder, rty, list(exp_parts_f64_ir(builder, args[0])))

    return rty(xc), codegen


@register_jitable(**JIT_OPTIONS)
def exp_f64(x):
    """exp for float64, branch-free (vectorizes); as :func:`exp_f32`, clamped to [-746, 710].

    The integer n = round(x / ln 2) is read from the bits of ``x * log2(e) + 1.5 * 2**52``.
    """
    xc = _LO_D if x < _LO_D else x
    p, t = _exp_parts_f64(_HI_D if xc > _HI_D else xc)
    return _ldexp2(p, t)


SUM_LO_D = -708.0  # exp(-708) = 3.3e-308 >= 2**-1022: float64 twin of SUM_LO_F


@register_jitable(**JIT_OPTIONS)
def exp_sum_f64(x):
    """float64 twin of :func:`exp_sum_f32` (arguments below -708 give ``exp(-708)``)."""
    xc = SUM_LO_D if x < SUM_LO_D else x
    p, t = _exp_parts_f64(_HI_D if xc > _HI_D else xc)
    return _ldexp1(p, t)


def fexp_sum(x):
    """Exponential of a term of a max-shifted sum (``x <= 0``): :func:`exp_sum_f32` or
    :func:`exp_sum_f64`."""
    return np.exp(x)


def fexp(x):
    """Vectorizable exp for float32 or float64 scalars, in the argument's precision:
    :func:`exp_f32` or :func:`exp_f64`."""
    return np.exp(x)


def _by_dtype(f32, f64):
    """An ``@overload`` implementation calling ``f32`` or ``f64`` by the argument's type."""

    def impl(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return impl


overload(fexp_sum, jit_options=JIT_OPTIONS)(_by_dtype(exp_sum_f32, exp_sum_f64))
overload(fexp, jit_options=JIT_OPTIONS)(_by_dtype(exp_f32, exp_f64))


def like(x, v):
    """``v`` converted to the type of the scalar ``x``, or to the dtype of the array ``x``."""
    return np.asarray(x).dtype.type(v)


@overload(like, jit_options=JIT_OPTIONS)
def _like_impl(x, v):
    if isinstance(x, types.Array):
        x = x.dtype
    if x in (types.float32, types.uint16, types.int16):  # 16-bit rows: float32 math
        return lambda x, v: np.float32(v)
    if x == types.float64:
        return lambda x, v: np.float64(v)
    return None


# ----------------------------------------------------------------------------- log
#
# Kernels never call libm's log: a fresh compile and Numba's cached object code were seen to
# bind ``log`` differently (glibc exports several versions), giving results 1 ulp apart from
# run to run. This is fdlibm's __ieee754_log (error < 1 ulp), in plain float64 arithmetic.

_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_TWO54 = 1.80143985094819840000e16
_HI_MASK = np.int64(0xFFFFFFFF)


@register_jitable(**JIT_OPTIONS)
def flog(x):
    """Natural log of a float64 (fdlibm algorithm; < 1 ulp; same bits in every process).

    ``log(0) = -inf``, ``log(x < 0) = NaN``, ``log(inf) = inf``, ``log(NaN) = NaN``.
    """
    x = np.float64(x)
    if not x > 0.0:
        if x == 0.0:
            return -np.inf
        return np.nan  # negative or NaN
    if x == np.inf:
        return x
    k = 0
    if x < 2.2250738585072014e-308:  # subnormal: scale up
        k -= 54
        x *= _TWO54
    bits = _f64_bits(x)
    hx = bits >> 32
    k += (hx >> 20) - 1023
    hx &= 0x000FFFFF
    i = (hx + 0x95F64) & 0x100000
    # normalize x or x/2 into [sqrt(2)/2, sqrt(2))
    bits = ((hx | (i ^ 0x3FF00000)) << 32) | (bits & _HI_MASK)
    x = _bits_as_f64(bits)
    k += i >> 20
    f = x - 1.0
    dk = np.float64(k)
    if (0x000FFFFF & (2 + hx)) < 3:  # |f| < 2**-20
        if f == 0.0:
            return dk * _LN2_HI_D + dk * _LN2_LO_D
        r = f * f * (0.5 - 0.33333333333333333 * f)
        return dk * _LN2_HI_D - ((r - dk * _LN2_LO_D) - f)
    s = f / (2.0 + f)
    z = s * s
    i = hx - 0x6147A
    w = z * z
    j = 0x6B851 - hx
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    i |= j
    r = t2 + t1
    if i > 0:
        hfsq = 0.5 * f * f
        return dk * _LN2_HI_D - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO_D)) - f)
    return dk * _LN2_HI_D - ((s * (f - r) - dk * _LN2_LO_D) - f)
