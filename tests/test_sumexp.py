"""The exp-sum row pass (``fastlsm/_kernels/sumexp.py``) and its float64 twin path.

``block_sumexp`` is the arithmetic core of every normalizer, so its contract is checked
directly, against the references of ``tests/naive.py`` (sums in long double):

- each term is ``exp(x - m)`` within 2 ulp where it matters (``x - m >= -17``; below, terms
  are under 4e-8 of the largest and the single-constant range reduction may cost a few ulp);
- the sum is within 3 float32 ulp (relative) of the exact sum of exact terms, for every
  length around the vector (16), block (64) and chunk (256) boundaries;
- the bits depend only on the data and the length: not on the alignment of the row in
  memory, nor on which row is prefetched meanwhile;
- ``-inf`` entries add (almost) nothing, a NaN makes the sum NaN, an empty row sums to 0;
- ``exp_store_sum`` (softmax, cross-entropy's gradient) stores output values: within 2 ulp
  down to the smallest denormal, ``exp(-inf) = 0``, and returns exactly the bits of the
  summing pass (the loss is the same with and without a gradient);
- ``sumexp_write_prev`` and ``exp_store_write_prev`` (the log_softmax and softmax
  pipelines) give the bits of the separate passes for every length and every alignment of
  the output row, with streaming and with plain stores, in place too.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

from fastlsm._jit import kernel
from fastlsm._kernels.math import like
from fastlsm._kernels.memory import store_fence, stream_affine, stream_divide
from fastlsm._kernels.normalize import exp_store_write_prev, sumexp_write_prev
from fastlsm._kernels.rows import (
    SCRATCH,
    block_sum,
    block_sumexp,
    exp_store_sum,
    row_shifted_sumexp,
)

F32_EPS = float(np.finfo(np.float32).eps)  # 2**-23


@kernel
def sumexp(x, m):
    return block_sumexp(x, m, np.empty(SCRATCH, x.dtype), x[:0])


@kernel
def sumexp_prefetching(x, m, nxt):
    return block_sumexp(x, m, np.empty(SCRATCH, x.dtype), nxt)


@kernel
def each_term(d, out):
    """``out[i] = block_sumexp([d[i]], 0)``: one term at a time (the masked tail path)."""
    for i in range(d.size):
        out[i] = block_sumexp(d[i : i + 1], np.float32(0.0), np.empty(1, d.dtype), d[:0])


def test_terms_within_two_ulp():
    d = np.linspace(-17.0, 0.0, 400_001).astype(np.float32)
    got = np.empty(d.size)
    each_term(d, got)
    ref = naive.exp(d)
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    err = np.abs(got - ref) / ulp
    assert err.max() <= 2.0, f"{err.max():.2f} ulp at x - m = {d[err.argmax()]}"
    assert got[-1] == 1.0  # exp(0) is exactly 1


def test_far_terms_stay_tiny_and_positive():
    d = np.linspace(-200.0, -17.0, 100_001).astype(np.float32)
    got = np.empty(d.size)
    each_term(d, got)
    ref = np.maximum(naive.exp(d), np.exp(-87.0))
    assert np.all(got > 0)
    np.testing.assert_allclose(got, ref, rtol=5e-7)


LENGTHS = sorted(set(range(0, 70)) | {127, 128, 129, 255, 256, 257, 511, 513, 1000, 4099, 32000})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0, 1e4])
def test_sum_matches_float64_reference_at_every_boundary(dtype, scale, rng):
    # float32: terms within 2 ulp, 4-term float32 partial sums (<= 3 roundings), then float64
    # float64: terms within 2 ulp, compensated sum
    bound = 4 * F32_EPS if dtype == np.float32 else 3 * np.finfo(np.float64).eps
    for n in LENGTHS:
        x = (scale * rng.standard_normal(n)).astype(dtype)
        m = x.max() if n else dtype(0.0)
        got = sumexp(x, m)
        want = naive.sumexp(x, m)  # in long double
        assert abs(got - want) <= bound * want, (n, got, want)


@kernel
def float64_sum(a):
    return block_sum(a)


def test_float64_sum_is_its_terms_exact_sum_rounded(rng):
    """float64 data: the correctly rounded sum of the same terms (``math.fsum``) on rows
    with one dominant term, the case that came out 1 ulp high when each lane was rounded
    with its compensation before the lanes were added."""
    for n in (1, 3, 15, 16, 17, 31, 48, 100, 255, 256, 1000):
        for _ in range(30):
            a = np.exp(-np.abs(3 * rng.standard_normal(n)))
            a[rng.integers(n)] = 1.0
            got = float64_sum(a)
            exact = math.fsum(a)
            assert got == exact, (n, got, exact, (got - exact) / np.spacing(exact))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bits_independent_of_alignment_and_prefetch(dtype, rng):
    for n in (1, 15, 17, 255, 300, 4099):
        base = (3 * rng.standard_normal(n)).astype(dtype)
        m = base.max()
        want = sumexp(base, m)
        for offset in range(1, 8):  # the same values at every misalignment
            buf = np.empty(n + offset, dtype)
            buf[offset:] = base
            assert sumexp(buf[offset:], m) == want
        for nxt_len in (0, 1, n // 2, n, 3 * n):
            nxt = rng.standard_normal(nxt_len).astype(dtype)
            assert sumexp_prefetching(base, m, nxt) == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.zeros(300, dtype)
    x[::3] = -np.inf
    assert sumexp(x, dtype(0)) == pytest.approx(200.0, rel=1e-15)  # -inf adds ~1e-38
    for pos in (0, 15, 16, 255, 256, 299):
        y = np.zeros(300, dtype)
        y[pos] = np.nan
        assert np.isnan(sumexp(y, dtype(0))), pos
    assert sumexp(np.zeros(0, dtype), dtype(0)) == 0.0


# ----------------------------------------------------------------------------- stored exp
# ``exp_store_sum`` (softmax): the exponentials are outputs, so the contract is tighter.


@kernel
def store_each(d, out):
    """``out[i]`` from a one-element row: the masked tail path of the float32 loop."""
    for i in range(d.size):
        exp_store_sum(d[i : i + 1], d.dtype.type(0.0), out[i : i + 1], d[:0])


@kernel
def store_row(x, m, out):
    return exp_store_sum(x, m, out, x[:0])


@kernel
def store_row_no_prefetch(x, m, out):
    return exp_store_sum(x, m, out, x, False)


@kernel
def sum_row(x, m, nxt):
    return row_shifted_sumexp(x, m, nxt)


def test_stored_exp_within_two_ulp_down_to_denormals():
    d = np.concatenate([np.linspace(-110.0, 0.0, 1_000_001), -np.logspace(-9, 0, 10_001)])
    d = d.astype(np.float32)
    got = np.empty_like(d)
    store_each(d, got)
    ref = naive.exp(d)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    ulp = np.maximum(np.spacing(ref.astype(np.float32)).astype(np.float64), tiny)
    err = np.abs(got.astype(np.float64) - ref) / ulp
    assert err.max() <= 2.0, f"{err.max():.2f} ulp at x - m = {d[err.argmax()]}"
    assert np.all(got[d < -104] == 0)
    # the vector body (full chunks) gives the same bits as the one-element tail path
    again = np.empty_like(d)
    store_row(d, np.float32(0.0), again)
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_exp_sum_is_the_sum_of_the_stored_values(dtype, rng):
    for n in (1, 15, 16, 17, 255, 256, 257, 1000, 4099):
        x = (3 * rng.standard_normal(n)).astype(dtype)
        x[rng.random(n) < 0.2] = -np.inf
        m = x.max()
        out = np.empty_like(x)
        s = store_row(x, m, out)
        assert np.all(out[np.isneginf(x)] == 0)
        want = float(np.sum(out.astype(np.longdouble)))
        assert abs(s - want) <= 4 * np.finfo(dtype).eps * want, n
        assert s == store_row(x, m, np.empty_like(x))  # deterministic


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_storing_pass_sums_the_bits_of_the_summing_pass(dtype, rng):
    """Cross-entropy with and without a gradient, softmax and logsumexp share one sum: the
    storing pass derives each term from its stored value, giving the summing pass's bits,
    also for terms far below the maximum (clamped in the sum, denormal or 0 when stored)."""
    lo = -120.0 if dtype == np.float32 else -800.0
    for n in (1, 15, 16, 17, 255, 256, 257, 1000, 4099):
        x = (3 * rng.standard_normal(n)).astype(dtype)
        x[rng.random(n) < 0.1] = -np.inf
        x[rng.random(n) < 0.1] = lo * rng.random()
        m = x.max()
        want = sum_row(x, m, x[:0])
        out = np.empty_like(x)
        assert store_row(x, m, out) == want, n
        assert sum_row(x, m, out) == want  # prefetching changes nothing
        inplace = x.copy()
        assert store_row_no_prefetch(inplace, m, inplace) == want
        np.testing.assert_array_equal(inplace, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_exp_nan(dtype):
    x = np.zeros(300, dtype)
    x[257] = np.nan
    out = np.empty_like(x)
    assert np.isnan(store_row(x, dtype(0.0), out))
    assert np.isnan(out[257]) and np.all(out[np.arange(300) != 257] == 1.0)


# ----------------------------------------------------------------------------- fused write
# ``sumexp_write_prev`` (log_softmax's pipeline): the sum of one row and the streamed output
# of the previous row in one loop must give exactly what the two separate passes give.


@kernel
def write_prev(x, m, px, po, a, b, nt=True):
    s = sumexp_write_prev(x, m, x[:0], px, po, a, b, nt)
    store_fence()
    return s


@kernel
def write_separately(px, po, a, b, nt=True):
    stream_affine(px, po, a, like(a, 1.0), b, nt)
    store_fence()


def _misaligned(base, offset):
    """``base``'s values in a fresh array starting ``offset`` elements past a 64-byte line."""
    buf = np.empty(base.size + 32, base.dtype)
    start = (-buf.ctypes.data % 64) // base.itemsize + offset
    out = buf[start : start + base.size]
    out[...] = base
    return out


@pytest.mark.parametrize("nt", [True, False], ids=["streaming", "plain"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_write_matches_separate_passes(dtype, nt, rng):
    for n in (0, 1, 15, 16, 17, 255, 256, 257, 271, 272, 300, 1000, 4099):
        x = (3 * rng.standard_normal(n)).astype(dtype)
        px = (3 * rng.standard_normal(n)).astype(dtype)
        m = x.max() if n else dtype(0.0)
        a, b = dtype(0.75), dtype(1.5)
        want_sum = sumexp(x, m)
        want = np.empty_like(px)
        write_separately(px, want, a, b, not nt)  # the other store kind: the same bits
        for offset in range(0, 16, 3):  # every alignment of the output row
            po = _misaligned(np.full(n, np.nan, dtype), offset)
            assert write_prev(x, m, px, po, a, b, nt) == want_sum, (n, offset)
            np.testing.assert_array_equal(po, want, err_msg=f"n={n} offset={offset}")
        # in place: the previous row's output overwrites its input
        inplace = px.copy()
        assert write_prev(x, m, inplace, inplace, a, b, nt) == want_sum
        np.testing.assert_array_equal(inplace, want)


def test_fused_write_to_an_array_not_aligned_to_its_itemsize(rng):
    n = 600
    x = rng.standard_normal(n).astype(np.float32)
    px = rng.standard_normal(n).astype(np.float32)
    raw = np.zeros(4 * n + 8, np.uint8)
    po = raw[1 : 1 + 4 * n].view(np.float32)  # 1 byte past alignment
    want = np.empty_like(px)
    write_separately(px, want, np.float32(0.5), np.float32(2.0))
    assert write_prev(x, x.max(), px, po, np.float32(0.5), np.float32(2.0)) == sumexp(x, x.max())
    np.testing.assert_array_equal(po, want)


@kernel
def store_write_prev(x, m, buf, pbuf, po, s_prev, nt):
    s = exp_store_write_prev(x, m, buf, x[:0], pbuf, po, s_prev, nt)
    store_fence()
    return s


@kernel
def divide_separately(pbuf, po, s_prev, nt):
    zero = like(pbuf, 0.0)
    stream_divide(pbuf, po, zero, s_prev, zero, nt)
    store_fence()


@pytest.mark.parametrize("nt", [True, False], ids=["streaming", "plain"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_softmax_write_matches_separate_passes(dtype, nt, rng):
    for n in (0, 1, 15, 16, 17, 255, 257, 271, 300, 1000, 4099):
        x = (3 * rng.standard_normal(n)).astype(dtype)
        pbuf = rng.random(n).astype(dtype)
        m = x.max() if n else dtype(0.0)
        s_prev = 7.25 + float(rng.random())
        want_buf = np.empty_like(x)
        want_sum = store_row(x, m, want_buf)
        want = np.empty_like(pbuf)
        divide_separately(pbuf, want, s_prev, not nt)
        for offset in range(0, 16, 5):
            buf = np.empty_like(x)
            po = _misaligned(np.full(n, np.nan, dtype), offset)
            assert store_write_prev(x, m, buf, pbuf, po, s_prev, nt) == want_sum, (n, offset)
            np.testing.assert_array_equal(buf, want_buf)
            np.testing.assert_array_equal(po, want, err_msg=f"n={n} offset={offset}")
