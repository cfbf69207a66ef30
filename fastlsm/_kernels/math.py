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
def _bits_as_f32(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of an integer."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


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
_HALF_F = _F32(0.5)
_ZERO_F = _F32(0.0)
_INF_F = _F32(np.inf)
_LO_F = _F32(-104.0)  # exp(-104) < smallest denormal / 2: rounds to 0
_HI_F = _F32(89.0)  # exp(89) > FLT_MAX: overflows to inf
_BIAS_F = np.int32(127)
_SHIFT_F = np.int32(23)
_ONE_I32 = np.int32(1)


@register_jitable(**JIT_OPTIONS)
def exp_f32(x):
    """exp for float32 in float32 arithmetic, branch-free (vectorizes)."""
    xc = _LO_F if x < _LO_F else x
    xc = _HI_F if xc > _HI_F else xc
    fx = np.floor(fma(xc, _LOG2E_F, _HALF_F))
    r = fma(-fx, _LN2_HI_F, xc)
    r = fma(-fx, _LN2_LO_F, r)
    p = fma(_P0_F, r, _P1_F)
    p = fma(p, r, _P2_F)
    p = fma(p, r, _P3_F)
    p = fma(p, r, _P4_F)
    p = fma(p, r, _P5_F)
    p = fma(p, r * r, r) + _ONE_F
    # 2**n as two normal factors so that results down to the denormal range round once.
    n = np.int32(fx)
    n1 = n >> _ONE_I32
    n2 = n - n1
    # (Numba widens int32 arithmetic to int64; _bits_as_f32 takes the low 32 bits.)
    y = p * _bits_as_f32((n1 + _BIAS_F) << _SHIFT_F) * _bits_as_f32((n2 + _BIAS_F) << _SHIFT_F)
    y = _ZERO_F if x < _LO_F else y
    y = _INF_F if x > _HI_F else y
    return x if x != x else y


_F64 = np.float64
_LOG2E_D = _F64(1.4426950408889634)
_LN2_HI_D = _F64(6.93147180369123816490e-01)  # fdlibm: low 32 bits zero, n * hi exact
_LN2_LO_D = _F64(1.90821492927058770002e-10)
# Taylor coefficients 1/k!, k = 2..13: on |r| <= ln2/2 the truncation error is below 1e-17.
_C_D = tuple(_F64(1.0) / _F64(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(2, 14))
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = _C_D
_ONE_D = _F64(1.0)
_HALF_D = _F64(0.5)
_ZERO_D = _F64(0.0)
_INF_D = _F64(np.inf)
_LO_D = _F64(-746.0)
_HI_D = _F64(710.0)
_BIAS_D = np.int64(1023)
_SHIFT_D = np.int64(52)
_ONE_I64 = np.int64(1)


_MAGIC_D = _F64(6755399441055744.0)  # 1.5 * 2**52: adding it rounds to an integer
_MAGIC_BITS = np.int64(0x4338000000000000)


@register_jitable(**JIT_OPTIONS)
def exp_f64(x):
    """exp for float64, branch-free; vectorizes on AVX2 too.

    The integer n = round(x / ln 2) is read from the bits of ``x * log2(e) + 1.5 * 2**52``
    (no float/int64 conversion, which AVX2 lacks), and split as n = n1 + n2 with
    n1 = floor(n / 2) so that 2**n1 * 2**n2 stays normal down to the denormal range.
    """
    xc = _LO_D if x < _LO_D else x
    xc = _HI_D if xc > _HI_D else xc
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
    p = fma(p, r * r, r) + _ONE_D
    n = _f64_bits(t) - _MAGIC_BITS
    n1 = _f64_bits(np.floor(fx * _HALF_D) + _MAGIC_D) - _MAGIC_BITS
    n2 = n - n1
    y = p * _bits_as_f64((n1 + _BIAS_D) << _SHIFT_D) * _bits_as_f64((n2 + _BIAS_D) << _SHIFT_D)
    y = _ZERO_D if x < _LO_D else y
    y = _INF_D if x > _HI_D else y
    return x if x != x else y


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
