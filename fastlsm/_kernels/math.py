"""Scalar building blocks that vectorize: exp, max, bit casts.

Numba on this platform has no SVML, so ``np.exp`` in a loop stays a scalar libm call and caps
a pass over the logits at a few elements per cycle. :func:`fexp` is a branch-free polynomial
exp (Cody-Waite range reduction, minimax/Taylor polynomial, exponent built with integer bit
operations) that LLVM turns into AVX2 code. :func:`fmax` maps to ``llvm.maxnum``, which
vectorizes where a Python ``max`` or an ``if`` does not.

All functions dispatch on the scalar type in one place (float32 math for float32 data,
float64 for float64), so kernels are written once for both dtypes.

Accuracy (measured against float64/mpmath in tests/test_math.py):
- float32: at most 2 ulp relative error on the whole range, denormal results correctly
  scaled, ``exp(-inf) == 0``, ``exp(+inf) == inf``, ``exp(nan) is nan``.
- float64: at most 2 ulp relative error, same special values.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from .._jit import JIT_OPTIONS
from numba.extending import intrinsic, overload, register_jitable

# ----------------------------------------------------------------------------- bit casts


@intrinsic
def _bits_as_f64(typingctx, bits):
    """The float64 whose bit pattern is a 64-bit integer."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _f64_bits(typingctx, x):
    """The int64 bit pattern of a float64."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


def _ldexp2_codegen(bits, magic_bits, bias, mant_bits):
    def codegen(context, builder, signature, args):
        p, t = args
        ity = ir.IntType(bits)
        n = builder.sub(builder.bitcast(t, ity), ir.Constant(ity, magic_bits))
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)

        def pow2(k):
            biased = builder.add(k, ir.Constant(ity, bias))
            return builder.bitcast(builder.shl(biased, ir.Constant(ity, mant_bits)), p.type)

        return builder.fmul(builder.fmul(p, pow2(n1)), pow2(n2))

    return codegen


@intrinsic
def _ldexp2(typingctx, p, t):
    """``p * 2**n`` where ``t = n + 1.5 * 2**mant`` (the integer read from ``t``'s bits).

    ``2**n`` is applied as two normal factors ``2**(n // 2)`` and ``2**(n - n // 2)``, so
    results down into the denormal range round once. Integer work in the float's width
    (no float/int conversion: AVX2 has none for 64-bit integers).
    """
    if p == t == types.float32:
        return p(p, t), _ldexp2_codegen(32, 0x4B400000, 127, 23)
    if p == t == types.float64:
        return p(p, t), _ldexp2_codegen(64, 0x4338000000000000, 1023, 52)
    return None


def _ldexp1_codegen(bits, magic_bits, bias, mant_bits):
    def codegen(context, builder, signature, args):
        p, t = args
        ity = ir.IntType(bits)
        n = builder.sub(builder.bitcast(t, ity), ir.Constant(ity, magic_bits))
        biased = builder.add(n, ir.Constant(ity, bias))
        return builder.fmul(p, builder.bitcast(builder.shl(biased, ir.Constant(ity, mant_bits)), p.type))

    return codegen


@intrinsic
def _ldexp1(typingctx, p, t):
    """As :func:`_ldexp2` with one factor: only for normal results (``n >= -126``/``-1022``)."""
    if p == t == types.float32:
        return p(p, t), _ldexp1_codegen(32, 0x4B400000, 127, 23)
    if p == t == types.float64:
        return p(p, t), _ldexp1_codegen(64, 0x4338000000000000, 1023, 52)
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
            "llvm.maxnum", [ty], ir.FunctionType(ty, [ty, ty])
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

# float32 constants (Cephes expf): ln2 split so that n * _LN2_HI_F is exact.
_F32 = np.float32
_LOG2E_F = _F32(1.44269504088896341)
_LN2_HI_F = _F32(0.693359375)
_LN2_LO_F = _F32(-2.12194440e-4)
_P0_F = _F32(1.9875691500e-4)
_P1_F = _F32(1.3981999507e-3)
_P2_F = _F32(8.3334519073e-3)
_P3_F = _F32(4.1665795894e-2)
_P4_F = _F32(1.6666665459e-1)
_P5_F = _F32(5.0000001201e-1)
_ONE_F = _F32(1.0)
_LO_F = _F32(-104.0)  # exp(-104) < smallest denormal / 2: rounds to 0
_HI_F = _F32(89.0)  # exp(89) > FLT_MAX: overflows to inf


_MAGIC_F = _F32(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer


@register_jitable(**JIT_OPTIONS)
def _exp_parts_f32(xc):
    """``exp(xc) = p * 2**n`` for a clamped argument: returns ``(p, t)``, ``n`` in ``t``'s bits."""
    t = fma(xc, _LOG2E_F, _MAGIC_F)
    fx = t - _MAGIC_F
    r = fma(-fx, _LN2_HI_F, xc)
    r = fma(-fx, _LN2_LO_F, r)
    p = fma(_P0_F, r, _P1_F)
    p = fma(p, r, _P2_F)
    p = fma(p, r, _P3_F)
    p = fma(p, r, _P4_F)
    p = fma(p, r, _P5_F)
    return fma(p, r * r, r) + _ONE_F, t


@register_jitable(**JIT_OPTIONS)
def exp_f32(x):
    """exp for float32 in float32 arithmetic, branch-free (vectorizes).

    The argument is clamped to [-104, 89]: below, the result rounds to 0 (``exp(-inf) = 0``);
    above, it overflows to inf. A NaN passes through every step (no float/int conversion,
    whose result on NaN LLVM leaves undefined).
    """
    xc = _LO_F if x < _LO_F else x
    p, t = _exp_parts_f32(_HI_F if xc > _HI_F else xc)
    return _ldexp2(p, t)


_F64 = np.float64
_LOG2E_D = _F64(1.4426950408889634)
_LN2_HI_D = _F64(6.93147180369123816490e-01)  # fdlibm: low 32 bits zero, n * hi exact
_LN2_LO_D = _F64(1.90821492927058770002e-10)
# Taylor coefficients 1/k!, k = 2..13: on |r| <= ln2/2 the truncation error is below 1e-17.
_C_D = tuple(_F64(1.0) / _F64(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(2, 14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C_D
_ONE_D = _F64(1.0)
_ZERO_D = _F64(0.0)
_LO_D = _F64(-746.0)
_HI_D = _F64(710.0)


_MAGIC_D = _F64(6755399441055744.0)  # 1.5 * 2**52: adding it rounds to an integer


@register_jitable(**JIT_OPTIONS)
def _exp_parts_f64(xc):
    """float64 twin of :func:`_exp_parts_f32` (degree-13 Taylor polynomial)."""
    t = fma(xc, _LOG2E_D, _MAGIC_D)
    fx = t - _MAGIC_D
    r = fma(-fx, _LN2_HI_D, xc)
    r = fma(-fx, _LN2_LO_D, r)
    p = fma(_C13, r, _C12)
    p = fma(p, r, _C11)
    p = fma(p, r, _C10)
    p = fma(p, r, _C9)
    p = fma(p, r, _C8)
    p = fma(p, r, _C7)
    p = fma(p, r, _C6)
    p = fma(p, r, _C5)
    p = fma(p, r, _C4)
    p = fma(p, r, _C3)
    p = fma(p, r, _C2)
    return fma(p, r * r, r) + _ONE_D, t


@register_jitable(**JIT_OPTIONS)
def exp_f64(x):
    """exp for float64, branch-free (vectorizes); as :func:`exp_f32`, clamped to [-746, 710].

    The integer n = round(x / ln 2) is read from the bits of ``x * log2(e) + 1.5 * 2**52``.
    """
    xc = _LO_D if x < _LO_D else x
    p, t = _exp_parts_f64(_HI_D if xc > _HI_D else xc)
    return _ldexp2(p, t)


_SUM_LO_F = _F32(-87.0)  # exp(-87) = 1.6e-38 >= 2**-126: the result stays normal
_SUM_LO_D = _F64(-708.0)  # exp(-708) = 3.3e-308 >= 2**-1022


@register_jitable(**JIT_OPTIONS)
def exp_sum_f32(x):
    """exp for a term of a sum ``sum(exp(x - m))``, ``x - m <= 0``: faster, not for outputs.

    Same polynomial as :func:`exp_f32`, but arguments below -87 give ``exp(-87)`` (1.6e-38)
    instead of a denormal or 0, so ``2**n`` is a single normal factor. In a sum that holds
    at least ``exp(0) = 1`` this changes nothing: a 256k-term row moves by at most 4e-33.
    """
    xc = _SUM_LO_F if x < _SUM_LO_F else x
    p, t = _exp_parts_f32(_HI_F if xc > _HI_F else xc)
    return _ldexp1(p, t)


@register_jitable(**JIT_OPTIONS)
def exp_sum_f64(x):
    """float64 twin of :func:`exp_sum_f32` (arguments below -708 give ``exp(-708)``)."""
    xc = _SUM_LO_D if x < _SUM_LO_D else x
    p, t = _exp_parts_f64(_HI_D if xc > _HI_D else xc)
    return _ldexp1(p, t)


def fexp_sum(x):
    """Exponential of a term of a max-shifted sum (``x <= 0``); see :func:`exp_sum_f32`."""
    return np.exp(x)


@overload(fexp_sum, jit_options=JIT_OPTIONS)
def _fexp_sum_impl(x):
    if x == types.float32:
        return lambda x: exp_sum_f32(x)
    if x == types.float64:
        return lambda x: exp_sum_f64(x)
    return None


def fexp(x):
    """Vectorizable exp for float32 or float64 scalars, in the argument's precision."""
    return np.exp(x)


@overload(fexp, jit_options=JIT_OPTIONS)
def _fexp_impl(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    if x == types.float64:
        return lambda x: exp_f64(x)
    return None


def like(x, v):
    """``v`` converted to the type of the scalar ``x``, or to the dtype of the array ``x``."""
    return np.asarray(x).dtype.type(v)


@overload(like, jit_options=JIT_OPTIONS)
def _like_impl(x, v):
    if isinstance(x, types.Array):
        x = x.dtype
    if x == types.float32:
        return lambda x, v: np.float32(v)
    if x == types.float64:
        return lambda x, v: np.float64(v)
    return None


def acc_zero(x):
    """The zero of the accumulator type for data of x's type (float64 for float32 data).

    Sums of exponentials are accumulated in float64 for every input dtype: it costs little
    (the loop is exp-bound) and makes the normalizer more exact than a float32 sum.
    """
    return 0.0


@overload(acc_zero, jit_options=JIT_OPTIONS)
def _acc_zero_impl(x):
    if isinstance(x, types.Float):
        return lambda x: _ZERO_D
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
