"""beam_step against a float64 NumPy reference (log_softmax + add + stable sort)."""

import ml_dtypes
import naive
import numba
import numpy as np
import pytest
from conftest import at_threads
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastlsm
from fastlsm._dtypes import kernel_view
from fastlsm._kernels import beam as _kernels_beam
from fastlsm._kernels import beam_rows, topk
from fastlsm._kernels.beam_rows import BLOCK, beam_step_rows
from fastlsm._kernels.sequence import sequence_logprobs_rows


def check(logits, beam_scores, c, rtol):
    """fastlsm's candidates are the reference's: the same scores in the same order, and the
    same (beam, token) wherever the reference's score is apart from every other one. Where
    two candidates' exact scores are within rounding of each other (permuted rows of equal
    values), the reference's float64 (1 ulp from correctly rounded, as PyTorch's) may order
    them otherwise: there each pick must carry its own reference score, and equal scores
    must come in flat-index order."""
    s, t, bm = fastlsm.beam_step(logits, beam_scores, num_candidates=c)
    rs, rt, rb = naive.beam_step(logits, beam_scores, c)
    np.testing.assert_allclose(s, rs, rtol=rtol, atol=rtol)
    x = np.asarray(logits, np.float64)
    every = np.asarray(beam_scores, np.float64)[..., None] + np.where(
        np.isneginf(x), -np.inf, naive.log_softmax(x))
    every = every.reshape(len(s), -1)  # [B, K * V]: each candidate's reference score
    near = np.isclose(rs[..., None], every[:, None, :], rtol=rtol, atol=rtol).sum(-1) > 1
    assert np.array_equal(t[~near], rt[~near]) and np.array_equal(bm[~near], rb[~near])
    flat = bm * x.shape[2] + t
    np.testing.assert_allclose(np.take_along_axis(every, flat, 1), s, rtol=rtol, atol=rtol)
    assert all(len(set(r)) == len(r) for r in flat.tolist())
    same = s[:, 1:] == s[:, :-1]
    assert np.all(flat[:, 1:][same] > flat[:, :-1][same])
    assert s.dtype == np.asarray(logits).dtype and t.dtype == np.int64 and bm.dtype == np.int64
    return s, t, bm


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape", [(2, 3, 50), (1, 4, BLOCK * 2 + 7), (3, 1, 1000)])
def test_matches_reference(dtype, rtol, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    bs = rng.standard_normal(shape[:2]) * 2
    for c in (1, shape[1], 2 * shape[1], min(shape[1] * shape[2], 3 * shape[1] + 5)):
        check(x, bs, c, rtol)


def test_default_candidates_is_2k():
    x = np.random.default_rng(0).standard_normal((2, 3, 20))
    s, t, b = fastlsm.beam_step(x, np.zeros((2, 3)))
    assert s.shape == t.shape == b.shape == (2, 6)
    s, t, b = fastlsm.beam_step(np.zeros((1, 3, 1)), np.zeros((1, 3)))
    assert s.shape == (1, 3)  # capped at K * V


def test_exact_ties_lower_beam_then_lower_token():
    x = np.zeros((1, 3, 4))
    x[:, :, 2] = 1.0
    x[:, :, 0] = 1.0
    s, t, b = fastlsm.beam_step(x, np.zeros((1, 3)), num_candidates=7)
    assert b.tolist() == [[0, 0, 1, 1, 2, 2, 0]]
    assert t.tolist() == [[0, 2, 0, 2, 0, 2, 1]]
    assert s[0, 0] == s[0, 5]


def test_ties_across_block_boundaries():
    v = 3 * BLOCK + 5
    x = np.zeros((1, 2, v), np.float32)
    for j in (v - 1, BLOCK, 7, 2 * BLOCK - 1):
        x[0, :, j] = 2.0
    s, t, b = fastlsm.beam_step(x, np.zeros((1, 2)), num_candidates=10)
    assert t[0, :4].tolist() == [7, BLOCK, 2 * BLOCK - 1, v - 1]
    assert b[0, :8].tolist() == [0] * 4 + [1] * 4
    assert t[0, 8:].tolist() == [0, 1]  # then the zeros, lowest tokens first


def test_neg_inf_never_selected_while_finite_remain():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 10)) + 50.0
    x[..., :7] = -np.inf  # 3 finite tokens per beam, 6 per batch
    x[1, 1, :] = -np.inf  # batch 1: beam 1 all banned
    s, t, b = fastlsm.beam_step(x, np.zeros((2, 2)), num_candidates=6)
    assert np.isfinite(s[0]).all() and (t[0] >= 7).all()
    assert np.isfinite(s[1, :3]).all() and (b[1, :3] == 0).all()
    # then -inf candidates in (beam, token) order
    assert np.isneginf(s[1, 3:]).all()
    assert b[1, 3:].tolist() == [0, 0, 0] and t[1, 3:].tolist() == [0, 1, 2]
    check(x, np.zeros((2, 2)), 6, 1e-13)


def test_dead_beam_and_all_masked_rows():
    x = np.random.default_rng(2).standard_normal((1, 3, 4))
    bs = np.array([[0.0, -np.inf, -1.0]])
    s, t, b = fastlsm.beam_step(x, bs, num_candidates=12)
    assert set(b[0, :8].tolist()) == {0, 2}
    assert np.isneginf(s[0, 8:]).all() and b[0, 8:].tolist() == [1, 1, 1, 1]
    check(x, bs, 12, 1e-13)
    x[0, 0] = -np.inf
    check(x, bs, 12, 1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_do_not_overflow(dtype):
    x = np.array([[[1e30, 1e30, -1e30], [0.0, 1.0, 2.0]]], dtype)
    s, t, b = fastlsm.beam_step(x, np.array([[0.0, -10.0]]), num_candidates=3)
    assert s[0, 0] == s[0, 1] == dtype(-np.log(2.0))
    assert t[0].tolist() == [0, 1, 2] and b[0].tolist() == [0, 0, 1]


def test_bad_rows_and_scores_raise():
    x = np.zeros((2, 3, 5))
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"logits\[1, 2\] contains NaN"):
        fastlsm.beam_step(x, np.zeros((2, 3)))
    x[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match=r"logits\[1, 2\]"):
        fastlsm.beam_step(x, np.zeros((2, 3)))
    x = np.zeros((1, 1, 2 * BLOCK))
    x[0, 0, BLOCK:] = -np.inf
    x[0, 0, BLOCK + 3] = np.nan  # NaN inside an otherwise all -inf block
    with pytest.raises(ValueError, match=r"logits\[0, 0\]"):
        fastlsm.beam_step(x, np.zeros((1, 1)))
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        fastlsm.beam_step(np.zeros((1, 2, 3)), np.array([[0.0, np.nan]]))


def test_shape_and_option_errors():
    x = np.zeros((2, 3, 5))
    with pytest.raises(ValueError, match="beam_scores has shape"):
        fastlsm.beam_step(x, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\[B, K, V\]"):
        fastlsm.beam_step(np.zeros((2, 5)), np.zeros(2))
    with pytest.raises(ValueError, match="exceeds"):
        fastlsm.beam_step(x, np.zeros((2, 3)), num_candidates=16)
    with pytest.raises(ValueError, match="at least 1"):
        fastlsm.beam_step(x, np.zeros((2, 3)), num_candidates=0)
    with pytest.raises(TypeError, match="integer"):
        fastlsm.beam_step(x, np.zeros((2, 3)), num_candidates=2.5)
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        fastlsm.beam_step(x.astype(np.int32), np.zeros((2, 3)))


def test_thread_count_does_not_change_bits():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 4, 5000)).astype(np.float32)
    bs = rng.standard_normal((4, 4))
    a, b = (at_threads(n, fastlsm.beam_step, x, bs) for n in (1, fastlsm.get_num_threads()))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_kernel_entry_writes_logprobs():
    x = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    bs = np.log(np.array([0.5, 0.5]))
    rv, rt, rn = np.empty((2, 3)), np.empty((2, 3), np.int64), np.empty(2, np.int64)
    sc, lp = np.empty((1, 3)), np.empty((1, 3))
    tk, bm = np.empty((1, 3), np.int64), np.empty((1, 3), np.int64)
    assert beam_step_rows(x, bs, 2, rv, rt, rn, sc, tk, bm, lp) == -1
    np.testing.assert_allclose(np.exp(lp[0]), [0.8, 0.7, 0.2], rtol=1e-14)
    assert tk[0].tolist() == [2, 0, 1] and bm[0].tolist() == [1, 0, 0]
    x[1, 1] = np.nan
    assert beam_step_rows(x, bs, 2, rv, rt, rn, sc, tk, bm, lp) == 1


@settings(max_examples=30, deadline=None)
@example(b=3, k=4, v=4, seed=4, ban=0.0, ties=True)  # permuted rows: reference 1 ulp off
@given(
    b=st.integers(1, 3), k=st.integers(1, 4), v=st.integers(1, 40), seed=st.integers(0, 10**6),
    ban=st.floats(0.0, 0.9), ties=st.booleans(),
)
def test_property_matches_reference(b, k, v, seed, ban, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, k, v))
    if ties:
        x = np.round(x)
    x[rng.random(x.shape) < ban] = -np.inf
    bs = np.round(rng.standard_normal((b, k))) if ties else rng.standard_normal((b, k))
    c = int(rng.integers(1, k * v + 1))
    check(x, bs, c, 1e-13)


@pytest.mark.parametrize("shape", [(8, 4, 3000), (1, 8, 4001)])
def test_torch_parity(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    bs = rng.standard_normal(shape[:2]).astype(np.float32)
    b, k, _ = shape
    s, t, bm = fastlsm.beam_step(x, bs)
    lp = torch.log_softmax(torch.from_numpy(x), -1) + torch.from_numpy(bs)[..., None]
    ts, ti = lp.reshape(b, -1).topk(2 * k)
    np.testing.assert_allclose(s, ts.numpy(), rtol=2e-6, atol=2e-6)
    assert np.array_equal(t, ti.numpy() % shape[2]) and np.array_equal(bm, ti.numpy() // shape[2])


@pytest.mark.parametrize("seed", range(4))
def test_many_blocks_with_ties_and_masks(seed):
    # the block-maximum lower bound must keep tied values of lower tokens in later blocks
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((2, 3, 6 * BLOCK + 11)) * 1.5).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[0, 1, : 3 * BLOCK] = -np.inf  # whole masked blocks
    bs = np.round(rng.standard_normal((2, 3)))
    for c in (1, 3, 7, 40):
        check(x, bs, c, 2e-6)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape,density", [((2, 3, 50), 0.5), ((1, 4, BLOCK * 3 + 7), 0.3),
                                           ((2, 2, BLOCK * 4), 0.002), ((3, 1, 33), 0.9)])
def test_token_bitmask_matches_reference(dtype, rtol, shape, density):
    rng = np.random.default_rng(sum(shape))
    b, k, v = shape
    x = np.round(rng.standard_normal(shape) * 3, 1).astype(dtype)  # ties across blocks
    x[rng.random(shape) < 0.1] = -np.inf
    allowed = rng.random((b * k, v)) < density
    allowed[:, rng.integers(0, v)] = True
    mask = naive.pack_bitmask(allowed)
    bs = rng.standard_normal((b, k))
    for c in (1, k, 2 * k, 3 * k + 5):
        s, t, bm = fastlsm.beam_step(x, bs, num_candidates=c, token_bitmask=mask)
        rs, rt, rb = naive.beam_step(x, bs, c, mask)
        assert np.array_equal(t, rt) and np.array_equal(bm, rb)
        np.testing.assert_allclose(s, rs, rtol=rtol, atol=rtol)
        finite = np.isfinite(s)
        assert allowed.reshape(b, k, v)[np.arange(b)[:, None], bm, t][finite].all()
    # the same mask as [B, K, W] or as uint32: the same result
    for m in (mask.reshape(b, k, -1), mask.view(np.uint32)):
        got = fastlsm.beam_step(x, bs, token_bitmask=m)
        want = fastlsm.beam_step(x, bs, token_bitmask=mask)
        assert all(np.array_equal(p, q) for p, q in zip(got, want, strict=True))


def test_token_bitmask_all_allowed_is_bitwise_unmasked():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, BLOCK + 70)).astype(np.float32)
    bs = rng.standard_normal((2, 3))
    words = (x.shape[2] + 31) // 32
    got = fastlsm.beam_step(x, bs, token_bitmask=np.full(words, -1, np.int32))
    want = fastlsm.beam_step(x, bs)
    assert all(np.array_equal(p, q) for p, q in zip(got, want, strict=True))


def test_token_bitmask_errors():
    x = np.zeros((2, 3, 40))
    mask = np.full((6, 2), -1, np.int32)
    mask[4] = [0, np.int32(-(1 << 8))]  # only bits past V = 40: nothing allowed
    with pytest.raises(ValueError, match=r"token_bitmask\[1, 1\] allows no token of the 40"):
        fastlsm.beam_step(x, np.zeros((2, 3)), token_bitmask=mask)
    with pytest.raises(TypeError, match="int32"):
        fastlsm.beam_step(x, np.zeros((2, 3)), token_bitmask=mask.astype(np.int64))
    with pytest.raises(ValueError, match=r"token_bitmask has shape \(6, 3\)"):
        fastlsm.beam_step(x, np.zeros((2, 3)), token_bitmask=np.ones((6, 3), np.int32))
    x[0, 0, 39] = np.nan  # a NaN is an error even where the mask disallows the token
    with pytest.raises(ValueError, match=r"logits\[0, 0\] contains NaN"):
        fastlsm.beam_step(x, np.zeros((2, 3)), token_bitmask=np.full(2, 1, np.int32))


# ------------------------------------------------------------------ 16-bit logits (issue 11)

HALVES = pytest.mark.parametrize("dtype", [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)],
                                 ids=["bfloat16", "float16"])


@HALVES
def test_16_bit_logits_are_read_as_they_are(dtype, rng, monkeypatch):
    """bfloat16/float16 rows reach the kernel as their bits (no float32 copy) and give
    bitwise the results of the float32 kernel on their exact values: -inf masks, an all
    -inf row but one token, ties, a dead beam, a token bitmask, several candidate counts."""
    x = (rng.standard_normal((3, 4, 3 * BLOCK + 29)) * 4).astype(dtype)
    x[0, 1, :] = -np.inf
    x[0, 1, 5] = 0
    x[1, 2, ::7] = -np.inf
    x[2, 0, 100:110] = x[2, 0].max()
    bs = rng.standard_normal((3, 4))
    bs[1, 3] = -np.inf
    seen = []
    kernel = _kernels_beam.beam_step_rows
    monkeypatch.setattr(_kernels_beam, "beam_step_rows",
                        lambda rows, *a: seen.append(rows.dtype) or kernel(rows, *a))
    words = (x.shape[-1] + 31) // 32
    mask = rng.integers(-(2**31), 2**31, (3, 4, words), dtype=np.int64).astype(np.int32)
    for opts in ({}, {"num_candidates": 1}, {"num_candidates": 37},
                 {"num_candidates": 4 * x.shape[-1]}, {"token_bitmask": mask}):
        got = fastlsm.beam_step(x, bs, **opts)
        want = fastlsm.beam_step(x.astype(np.float32), bs, **opts)
        assert got[0].dtype == np.float32
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert seen[::2] == [np.dtype(np.uint16 if dtype.name == "bfloat16" else np.int16)] * 5
    got = fastlsm.beam_step(x[:, :, ::2], bs)  # strided
    want = fastlsm.beam_step(x[:, :, ::2].astype(np.float32), bs)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    x[1, 3, 2 * BLOCK + 1] = np.nan
    with pytest.raises(ValueError, match=r"logits\[1, 3\] contains NaN"):
        fastlsm.beam_step(x, bs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype(ml_dtypes.bfloat16),
                                   np.float16], ids=["float32", "float64", "bfloat16", "float16"])
def test_candidate_logprobs_are_sequence_logprobs_bitwise(dtype, rng):
    """A candidate's log-prob has the bits of ``sequence_logprobs`` of its token (one
    normalizer: the same row maximum, exp-sum pass and formula)."""
    n, v, c = 5, 2 * BLOCK + 3, 6
    x = kernel_view((rng.standard_normal((n, v)) * 3).astype(dtype))
    rv, rt, rn = np.empty((n, c)), np.empty((n, c), np.int64), np.empty(n, np.int64)
    sc, lp = np.empty((n, c)), np.empty((n, c))
    tok, beam = np.empty((n, c), np.int64), np.empty((n, c), np.int64)
    assert beam_step_rows(x, np.zeros(n), 1, rv, rt, rn, sc, tok, beam, lp) == -1
    tok_out, seq_out = np.empty(n), np.empty(n)
    for j in range(c):
        sequence_logprobs_rows(x, tok[:, j].copy(), np.ones(n, np.uint8), 1, tok_out, seq_out)
        np.testing.assert_array_equal(lp[:, j], tok_out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype(ml_dtypes.bfloat16),
                                   np.float16], ids=["float32", "float64", "bfloat16", "float16"])
def test_block_maxima_and_vector_scan_test(dtype, rng):
    """The vectorized pass 1 (block maxima, NaN ignored) and the candidate scan's vector test,
    against NumPy, on every kind of block end and with NaN / -inf."""
    for n in (0, 1, 15, 16, 17, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 37):
        x = (rng.standard_normal(n) * 4).astype(dtype)
        x[: min(n, BLOCK)][::7] = -np.inf
        if n > 20:
            x[[3, n - 2]] = np.nan
        if n > 2 * BLOCK:  # a block of -inf and NaN only
            x[BLOCK:2 * BLOCK] = -np.inf
            x[BLOCK + 5] = np.nan
        kx = kernel_view(x)
        compute = np.float64 if dtype == np.float64 else np.float32
        bmax = np.full(max(1, -(-n // BLOCK)), 7.0, compute)
        m = _block_maxima(kx, bmax)
        want = naive.block_maxima(x, BLOCK)
        np.testing.assert_array_equal(bmax[: want.size], want)
        assert m == (want.max() if n else -np.inf)
        for j in range(0, n, 16):
            for thr in (-np.inf, 0.0, 3.0):
                got = _any_at_least(kx, j, thr)
                assert got == bool((x[j:j + 16].astype(np.float64) >= thr).any())


def test_insert_ranked_keeps_the_best_in_rank_order(rng):
    """The ranked list against a sort (value descending, id ascending), with ties, a full
    list, capacity 0 and values alone."""
    for cap in (0, 1, 3, 8):
        v = np.round(rng.standard_normal(40) * 2)
        vals, ids = np.empty(max(cap, 1)), np.empty(max(cap, 1), np.int64)
        order = rng.permutation(40)
        n = _insert_all(vals, ids, cap, v[order], order)
        want = naive.ranked(list(zip(v[order], order, strict=True)), cap)
        assert n == len(want)
        assert [(vals[i], ids[i]) for i in range(n)] == [(a, int(b)) for a, b in want]
        nv = _insert_values(vals, cap, v)
        assert nv == min(cap, 40) and vals[:nv].tolist() == sorted(v, reverse=True)[:cap]



@numba.njit
def _block_maxima(x, bmax):
    return beam_rows.block_maxima(x, bmax)


@numba.njit
def _any_at_least(x, j, thr):
    return beam_rows.any_at_least(x, j, thr)


@numba.njit
def _insert_all(vals, ids, cap, v, t):
    n = 0
    for i in range(v.size):
        n = topk.insert_ranked(vals, ids, n, cap, v[i], t[i])
    return n


@numba.njit
def _insert_values(vals, cap, v):
    n = 0
    for i in range(v.size):
        n = topk.insert_ranked(vals, None, n, cap, v[i], 0)
    return n
