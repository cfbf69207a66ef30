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


@intrinsic
def _fadd_reassoc(typingctx, a, b):
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc", "nsz"))

    return a(a, b), codegen


def radd(acc, x):
    """``acc + x`` that LLVM may reassociate: use it for, and only for, sum reductions.

    The project's fast-math flags exclude ``reassoc`` (it would turn ``(x - m) - c`` into
    ``x - (m + c)`` and lose the low bits of large logits), and without it LLVM keeps a sum
    strictly sequential and scalar. This add carries ``reassoc`` itself, so a loop
    ``s = radd(s, v)`` vectorizes into several partial sums. The order is fixed at compile
    time: results are deterministic, independent of threads. ``x`` is converted to
    ``acc``'s type (float32 terms into a float64 accumulator).
    """
    return acc + x


@overload(radd)
def _radd_impl(acc, x):
    if isinstance(acc, types.Float) and isinstance(x, types.Float):
        if acc == x:
            return lambda acc, x: _fadd_reassoc(acc, x)
        if acc == types.float64:
            return lambda acc, x: _fadd_reassoc(acc, np.float64(x))
    return None


def fmax(a, b):
    """max(a, b) ignoring NaN (``llvm.maxnum``): vectorizes. NaN only if both are NaN."""
    return max(a, b)


@overload(fmax)
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


@register_jitable
def exp_f32(x):
    """exp for float32 in float32 arithmetic, branch-free (vectorizes)."""
    xc = _LO_F if x < _LO_F else x
    xc = _HI_F if xc > _HI_F else xc
    fx = np.floor(xc * _LOG2E_F + _HALF_F)
    r = xc - fx * _LN2_HI_F
    r = r - fx * _LN2_LO_F
    p = _P0_F
    p = p * r + _P1_F
    p = p * r + _P2_F
    p = p * r + _P3_F
    p = p * r + _P4_F
    p = p * r + _P5_F
    p = p * (r * r) + r + _ONE_F
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


@register_jitable
def exp_f64(x):
    """exp for float64, branch-free (vectorizes)."""
    xc = _LO_D if x < _LO_D else x
    xc = _HI_D if xc > _HI_D else xc
    fx = np.floor(xc * _LOG2E_D + _HALF_D)
    r = xc - fx * _LN2_HI_D
    r = r - fx * _LN2_LO_D
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * (r * r) + r + _ONE_D
    n = np.int64(fx)
    n1 = n >> _ONE_I64
    n2 = n - n1
    y = p * _bits_as_f64((n1 + _BIAS_D) << _SHIFT_D) * _bits_as_f64((n2 + _BIAS_D) << _SHIFT_D)
    y = _ZERO_D if x < _LO_D else y
    y = _INF_D if x > _HI_D else y
    return x if x != x else y


def fexp(x):
    """Vectorizable exp for float32 or float64 scalars, in the argument's precision."""
    return np.exp(x)


@overload(fexp)
def _fexp_impl(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    if x == types.float64:
        return lambda x: exp_f64(x)
    return None


def like(x, v):
    """``v`` converted to the type of the scalar ``x``, or to the dtype of the array ``x``."""
    return np.asarray(x).dtype.type(v)


@overload(like)
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


@overload(acc_zero)
def _acc_zero_impl(x):
    if isinstance(x, types.Float):
        return lambda x: _ZERO_D
    return None
