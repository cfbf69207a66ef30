"""sequence_logprobs against the float64 reference ``naive.sequence_logprobs`` (and PyTorch
where installed)."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlsm
from fastlsm._kernels.sequence import sequence_logprobs_rows

TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tdtype", [np.int32, np.int64])
def test_matches_reference(dtype, tdtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 7, 300)) * 4).astype(dtype)
    tok = rng.integers(0, 300, (3, 7)).astype(tdtype)
    got_tok, got_seq = fastlsm.sequence_logprobs(x, tok)
    ref_tok, ref_seq = naive.sequence_logprobs(x, tok)
    assert got_tok.dtype == dtype and got_seq.dtype == dtype
    assert got_tok.shape == (3, 7) and got_seq.shape == (3,)
    np.testing.assert_allclose(got_tok, ref_tok, **TOL[dtype])
    np.testing.assert_allclose(got_seq, ref_seq, rtol=TOL[dtype]["rtol"], atol=1e-5)


def test_mask_zeroes_padding_and_skips_bad_ids():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 10))
    tok = np.array([[1, 2, -100, -100], [3, 4, 5, 99]])
    mask = tok >= 0
    mask[1, 3] = False
    got_tok, got_seq = fastlsm.sequence_logprobs(x, tok, mask=mask)
    ref_tok, ref_seq = naive.sequence_logprobs(x, np.where(mask, tok, 0), mask)
    assert got_tok[0, 2] == 0.0 and got_tok[1, 3] == 0.0
    np.testing.assert_allclose(got_tok, ref_tok, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got_seq, ref_seq, rtol=1e-13)


def test_saturating_logits_keep_every_bit():
    # x[tok] - (max + log(sum)) would give 0 here; the result is -log(2) for both.
    x = np.array([[[1e30, 1e30]]], np.float32)
    tok, seq = fastlsm.sequence_logprobs(x, np.array([[1]]))
    assert tok[0, 0] == np.float32(-np.log(2.0))
    x = np.array([[[1e4, 1e4, -np.inf]]])
    tok, _ = fastlsm.sequence_logprobs(x, np.array([[0]]))
    assert tok[0, 0] == -np.log(2.0)


def test_special_values():
    x = np.array(
        [[[0.0, -np.inf, 1.0], [np.nan, 0.0, 0.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 0.0]]]
    )
    tok, seq = fastlsm.sequence_logprobs(x, np.array([[1, 1, 0, 1]]))
    assert tok[0, 0] == -np.inf
    assert np.isnan(tok[0, 1]) and np.isnan(tok[0, 2]) and np.isnan(tok[0, 3])
    assert np.isnan(seq[0])


def test_v_equal_one_and_empty():
    tok, seq = fastlsm.sequence_logprobs(
        np.full((2, 3, 1), 7.5, np.float32), np.zeros((2, 3), np.int64)
    )
    assert (tok == 0).all() and (seq == 0).all()
    tok, seq = fastlsm.sequence_logprobs(np.zeros((0, 3, 5)), np.zeros((0, 3), np.int64))
    assert tok.shape == (0, 3) and seq.shape == (0,)
    tok, seq = fastlsm.sequence_logprobs(np.zeros((2, 0, 5)), np.zeros((2, 0), np.int64))
    assert tok.shape == (2, 0) and (seq == 0).all()


def test_strided_input_same_bits_as_contiguous():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((4, 6, 40)).astype(np.float32)
    view = big[::2, :, ::2]
    tok = rng.integers(0, 20, (2, 6))
    a = fastlsm.sequence_logprobs(view, tok)
    b = fastlsm.sequence_logprobs(np.ascontiguousarray(view), tok)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_thread_count_does_not_change_bits():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 64, 700)).astype(np.float32)
    tok = rng.integers(0, 700, (4, 64))
    old = fastlsm.get_num_threads()
    runs = []
    try:
        for threads in (1, old):
            fastlsm.set_num_threads(threads)
            runs.append(fastlsm.sequence_logprobs(x, tok))
    finally:
        fastlsm.set_num_threads(old)
    (a_tok, a_seq), (b_tok, b_seq) = runs
    assert np.array_equal(a_tok, b_tok) and np.array_equal(a_seq, b_seq)


def test_errors_name_the_position():
    x = np.zeros((2, 3, 5))
    tok = np.zeros((2, 3), np.int64)
    tok[1, 2] = 5
    with pytest.raises(ValueError, match=r"tokens\[1, 2\] = 5 is outside the vocabulary \[0, 5\)"):
        fastlsm.sequence_logprobs(x, tok)
    tok[1, 2] = -1
    with pytest.raises(ValueError, match=r"tokens\[1, 2\] = -1"):
        fastlsm.sequence_logprobs(x, tok)
    with pytest.raises(ValueError, match="shape"):
        fastlsm.sequence_logprobs(x, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        fastlsm.sequence_logprobs(np.zeros((2, 5)), np.zeros((2,), np.int64))
    with pytest.raises(ValueError, match="mask has shape"):
        fastlsm.sequence_logprobs(x, np.zeros((2, 3), np.int64), mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="boolean"):
        fastlsm.sequence_logprobs(x, np.zeros((2, 3), np.int64), mask=np.ones((2, 3)))
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16"):
        fastlsm.sequence_logprobs(x.astype(np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="integer"):
        fastlsm.sequence_logprobs(x, np.zeros((2, 3)))


def test_kernel_status_and_outputs():
    x = np.log(np.array([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    tok_out = np.empty(4)
    seq_out = np.empty(2)
    mask = np.array([1, 1, 0, 1], np.uint8)
    status = sequence_logprobs_rows(x, np.array([1, 0, 7, 1]), mask, 2, tok_out, seq_out)
    assert status == -1
    np.testing.assert_allclose(tok_out, np.log([0.75, 0.5, 1.0, 0.8]), rtol=1e-14)
    np.testing.assert_allclose(seq_out, [np.log(0.375), np.log(0.8)], rtol=1e-14)
    assert sequence_logprobs_rows(x, np.array([1, 0, 0, 2]), mask, 2, tok_out, seq_out) == 3


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 5),
    v=st.integers(1, 70),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1.0, 30.0, 1e4]),
)
def test_property_matches_reference(b, t, v, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t, v)) * scale
    tok = rng.integers(0, v, (b, t))
    mask = rng.random((b, t)) < 0.8
    got_tok, got_seq = fastlsm.sequence_logprobs(x, tok, mask=mask)
    ref_tok, ref_seq = naive.sequence_logprobs(x, tok, mask)
    np.testing.assert_allclose(got_tok, ref_tok, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(got_seq, ref_seq, rtol=1e-12, atol=1e-11 * scale)
    assert (got_tok <= 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 9, 1000)) * 5).astype(dtype)
    tok = rng.integers(0, 1000, (2, 9))
    got_tok, got_seq = fastlsm.sequence_logprobs(x, tok)
    lp = torch.log_softmax(torch.from_numpy(x), -1)
    ref = lp.gather(-1, torch.from_numpy(tok)[..., None])[..., 0].numpy()
    ref64 = naive.sequence_logprobs(x, tok)[0]
    # no worse than PyTorch's own error against float64
    assert np.abs(got_tok - ref64).max() <= max(np.abs(ref - ref64).max(), 1e-15)
    np.testing.assert_allclose(got_tok, ref, **TOL[dtype])
    np.testing.assert_allclose(got_seq, ref.sum(-1), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipelined_rows_are_bitwise_single_rows(rng, dtype):
    """Each row's result in a block of rows (the next row's maximum taken in this row's
    exp-sum pass, padding skipped) has the bits of that row scored alone."""
    x = (rng.standard_normal((12, 700)) * 3).astype(dtype)
    x[3] = -np.inf
    x[7, 5] = np.inf
    x[8, 9] = np.nan
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1], np.uint8)
    tok = rng.integers(0, 700, 12)
    tok_out, seq_out = np.empty(12), np.empty(1)
    assert sequence_logprobs_rows(x, tok, mask, 12, tok_out, seq_out) == -1
    one, one_seq = np.empty(1), np.empty(1)
    for i in range(12):
        sequence_logprobs_rows(x[i:i + 1], tok[i:i + 1], mask[i:i + 1], 1, one, one_seq)
        np.testing.assert_array_equal(one, tok_out[i:i + 1])
    assert np.isnan(tok_out[[3, 7, 8]]).all() and (tok_out[mask == 0] == 0).all()
