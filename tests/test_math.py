"""The scalar building blocks of every kernel: ``fexp``, ``fmax``, ``like``, ``radd``.

They are compiled here exactly as kernels use them, through ``fastlsm._jit.kernel`` (same
fast-math flags, same error model), inside loops long enough for LLVM to vectorize them: the
vectorized and the scalar code paths are both checked, and must agree bit for bit.

Accuracy of ``fexp`` (the documented contract in ``fastlsm/_kernels/math.py``: at most 2 ulp
for both dtypes) is measured in ulp of the correctly rounded result, denormal results
included (there an ulp is the smallest denormal):

- float32 against ``naive.exp`` in float64 (its error is 2**-29 float32 ulp: negligible), on
  every float32 of the overflow and denormal ranges and a strided sample of all the others;
- float64 against ``naive.exp`` in ``np.longdouble`` (64-bit mantissa on x86-64) on random and
  boundary arguments.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

from fastlsm._jit import kernel
from fastlsm._kernels.math import fexp, fmax, like, radd
from fastlsm._kernels.rows import row_max

EXP_ULP = 2.0
"""Documented bound of fexp (``fastlsm/_kernels/math.py``): measured maxima are 1.01 ulp for
float32 (exhaustive over all float32) and 0.99 ulp for float64 (sampled)."""

DTYPES = [np.float32, np.float64]


@kernel
def exp_each(x, out):
    """``out[i] = fexp(x[i])``: a loop LLVM vectorizes (tails run the scalar code)."""
    for i in range(x.size):
        out[i] = fexp(x[i])


@kernel
def max_pairs(a, b, out):
    for i in range(a.size):
        out[i] = fmax(a[i], b[i])


max_reduce = row_max  # the reduction pattern of every row kernel: vectorized maxnum


@kernel
def radd_sum(x):
    s = 0.0  # sums of either dtype accumulate in float64
    for j in range(x.size):
        s = radd(s, x[j])
    return s


@kernel
def typed_constants(x):
    z = 0.0
    z += like(x, 1.0)
    z += like(x, 1e-10)  # kept only by a float64 accumulator
    return like(x, 0.1), like(x[0], 0.1), z


def fexp_np(x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    exp_each(x, out)
    return out


def fexp_scalar_path(x):
    """fexp of each element through a 1-element call: the non-vectorized code."""
    out = np.empty_like(x)
    for i in range(x.size):
        exp_each(x[i : i + 1], out[i : i + 1])
    return out


def ulp_error(x, dtype):
    """Max error of ``fexp(x)`` in ulp of the correctly rounded result, over finite results.

    Returns ``(max_ulp, worst_x)``; also asserts that non-finite and overflowing results
    are exactly the correctly rounded ones.
    """
    x = np.asarray(x, dtype)
    got = fexp_np(x)
    with np.errstate(over="ignore"):
        ref = naive.exp(x, dtype=np.float64 if dtype == np.float32 else np.longdouble)
        rounded = ref.astype(dtype)
    finite = np.isfinite(rounded)
    # Infinities (overflow), NaN: exactly as a correctly rounded exp.
    np.testing.assert_array_equal(got[~finite], rounded[~finite])
    assert np.isfinite(got[finite]).all(), x[finite][~np.isfinite(got[finite])]
    ulp = np.spacing(np.abs(rounded[finite])).astype(ref.dtype)
    err = (np.abs(got[finite].astype(ref.dtype) - ref[finite]) / ulp).astype(np.float64)
    if err.size == 0:
        return 0.0, None
    i = int(np.argmax(err))
    return float(err[i]), x[finite][i]


def float32_range(lo, hi):
    """Every float32 in ``[lo, hi]`` (same sign)."""
    a, b = sorted(np.array([lo, hi], np.float32).view(np.int32).tolist())
    return np.arange(a, b + 1, dtype=np.int32).view(np.float32)


# ----------------------------------------------------------------------------- fexp float32


@pytest.mark.parametrize(
    "lo, hi",
    [
        (88.0, 89.0),  # around FLT_MAX: exp(88.7228) is the largest finite result
        (-87.0, -88.0),  # results crossing into the denormal range
        (-88.0, -104.0),  # denormal results down to underflow to 0
    ],
)
def test_fexp_float32_exhaustive_on_critical_ranges(lo, hi):
    x = float32_range(lo, hi)
    err, worst = ulp_error(x, np.float32)
    assert err <= EXP_ULP, f"fexp({worst!r}) is off by {err:.3f} ulp"


def test_fexp_float32_strided_over_every_float():
    # Every 509th bit pattern (a prime stride: all mantissa residues appear), positive and
    # negative, finite or not: about 8.4 million arguments.
    for start in range(0, 2**32, 2**30):  # in 4 chunks: bounded memory
        bits = np.arange(start, start + 2**30, 509, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        x = x[~np.isnan(x)]
        err, worst = ulp_error(x, np.float32)
        assert err <= EXP_ULP, f"fexp({worst!r}) is off by {err:.3f} ulp"


def test_fexp_float32_overflow_threshold_exact():
    top = np.float32(88.72283)  # the largest float32 whose exp is finite
    x = np.array([top, np.nextafter(top, np.float32(np.inf))], np.float32)
    with np.errstate(over="ignore"):
        expected = naive.exp(x).astype(np.float32)
    assert np.isfinite(expected[0]) and np.isinf(expected[1])
    np.testing.assert_array_equal(fexp_np(x), expected)


# ----------------------------------------------------------------------------- fexp float64


def test_fexp_float64_random_arguments(rng):
    x = np.concatenate(
        [
            rng.uniform(-746.0, 710.0, 1_000_000),
            rng.uniform(-1, 1, 200_000) * 10.0 ** rng.uniform(-20, 0, 200_000),
            rng.uniform(700.0, 709.7827, 200_000),  # near the overflow threshold
            rng.uniform(-745.2, -708.0, 200_000),  # denormal results
            rng.integers(0, 2**64, 400_000, dtype=np.uint64).view(np.float64),  # any bits
        ]
    )
    x = x[~np.isnan(x)]
    err, worst = ulp_error(x, np.float64)
    assert err <= EXP_ULP, f"fexp({worst!r}) is off by {err:.3f} ulp"


def test_fexp_float64_overflow_threshold_exact():
    top = 709.782712893384  # the largest float64 whose exp is finite
    x = np.array([top, np.nextafter(top, np.inf), 709.78, 709.0])
    got = fexp_np(x)
    assert np.isfinite(got[0]) and np.isinf(got[1])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got[[0, 1]], np.exp(x[[0, 1]]))
    err, worst = ulp_error(x, np.float64)
    assert err <= EXP_ULP, f"fexp({worst!r}) is off by {err:.3f} ulp"


# ----------------------------------------------------------------------------- fexp specials


@pytest.mark.parametrize("dtype", DTYPES)
def test_fexp_special_values(dtype):
    info = np.finfo(dtype)
    neg_nan = -np.array(np.nan, dtype)
    x = np.array(
        [
            0.0,
            -0.0,
            -np.inf,
            np.inf,
            np.nan,
            neg_nan,
            info.max,
            -info.max,
            info.tiny,
            -info.tiny,
            info.smallest_subnormal,
            -info.smallest_subnormal,
            1.0,
            -1.0,
        ],
        dtype,
    )
    expected = np.array(
        [
            1.0,
            1.0,
            0.0,
            np.inf,
            np.nan,
            np.nan,
            np.inf,
            0.0,
            1.0,
            1.0,
            1.0,
            1.0,
            math.e,
            1 / math.e,
        ],
        dtype,
    )
    got = fexp_np(x)
    np.testing.assert_array_equal(got[:12], expected[:12])  # NaN where NaN, exact elsewhere
    np.testing.assert_allclose(got[12:], expected[12:], rtol=2 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fexp_smallest_denormal_and_underflow(dtype):
    info = np.finfo(dtype)
    tiny = float(info.smallest_subnormal)
    # exp(log(tiny)) is tiny; exp of anything below log(tiny / 2) rounds to 0.
    x = np.array([math.log(tiny), math.log(tiny) - math.log(2.0) - 0.01, -1000.0, -1e30], dtype)
    np.testing.assert_array_equal(fexp_np(x), np.array([tiny, 0.0, 0.0, 0.0], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fexp_vectorized_and_scalar_paths_agree(dtype, rng):
    info = np.finfo(dtype)
    x = np.concatenate(
        [
            rng.uniform(-110.0, 90.0, 200),
            [0.0, -0.0, np.inf, -np.inf, np.nan, info.max, -info.max],
            np.log(np.array([info.max, info.tiny, info.smallest_subnormal], np.float64)),
        ]
    ).astype(dtype)
    np.testing.assert_array_equal(fexp_np(x), fexp_scalar_path(x))


# ----------------------------------------------------------------------------- fmax


@pytest.mark.parametrize("dtype", DTYPES)
def test_fmax_ignores_one_nan(dtype):
    nan, inf = np.nan, np.inf
    a = np.array([nan, 1.0, nan, nan, -inf, 2.0, -inf, inf, -1.0, 3.0] * 7, dtype)
    b = np.array([1.0, nan, nan, -inf, nan, 3.0, -inf, nan, -2.0, 3.0] * 7, dtype)
    want = np.array([1.0, 1.0, nan, -inf, -inf, 3.0, -inf, inf, -1.0, 3.0] * 7, dtype)
    out = np.empty_like(a)
    max_pairs(a, b, out)  # 70 elements: vector body and scalar tail
    np.testing.assert_array_equal(out, want)
    max_pairs(a[:3], b[:3], out[:3])  # scalar only
    np.testing.assert_array_equal(out[:3], want[:3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 37, 130])
def test_fmax_reduction_skips_nan_at_every_position(dtype, n, rng):
    x = rng.standard_normal(n).astype(dtype)
    expected = x.max()
    for pos in range(n):
        y = x.copy()
        y[pos] = np.nan
        want = np.max(np.delete(x, pos), initial=-np.inf)
        assert max_reduce(y) == want, (pos, max_reduce(y), want)
    assert max_reduce(x) == expected
    # maxnum(-inf, NaN) = -inf: an all-NaN row has maximum -inf (its NaN reaches the
    # result through the exp sum, not through the max).
    assert max_reduce(np.full(n, np.nan, dtype)) == -np.inf
    assert max_reduce(np.full(n, -np.inf, dtype)) == -np.inf
    assert max_reduce(np.zeros(0, dtype)) == -np.inf


# ----------------------------------------------------------------------------- typed helpers


def test_like_types():
    # Numba boxes every float as a Python float: a float32 constant shows as 0.1 rounded
    # to float32 (0.10000000149...), not as 0.1.
    a, b, z = typed_constants(np.zeros(2, np.float32))
    assert a == float(np.float32(0.1)) != 0.1
    assert b == float(np.float32(0.1))
    assert z == 1.0 + float(np.float32(1e-10))  # float32 data accumulates in float64
    a, b, z = typed_constants(np.zeros(2, np.float64))
    assert a == 0.1 and b == 0.1 and z == 1.0 + 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
def test_radd_sum_is_exact_enough_and_alignment_independent(dtype, rng):
    n = 1001
    buf = np.empty(n + 1, dtype)
    x = buf[1:]  # a misaligned row (the vectorized sum must not peel by alignment)
    x[...] = rng.standard_normal(n)
    s = radd_sum(x)
    assert isinstance(s, float)
    assert abs(s - math.fsum(x.tolist())) <= 1e-12 * np.abs(x).sum()
    aligned = x.copy()
    assert radd_sum(aligned) == s  # same bits whatever the address
    assert radd_sum(x) == s  # and on every call
