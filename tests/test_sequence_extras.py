"""sequence_logprobs extras (top-N, rank, entropy, labels) against float64 references."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from naive import log_softmax

import fastlsm
from fastlsm._kernels import sequence as _sequence
from fastlsm._kernels import sequence_extras as _extras


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extras_match_reference(rng, dtype):
    x = (rng.standard_normal((2, 5, 37)) * 3).astype(dtype)
    x[0, 1, [3, 4]] = x[0, 1].max() + 1  # a tie at the top: lower id first
    x[1, 2, 7] = -np.inf
    tok = rng.integers(0, 37, size=(2, 5))
    tok[1, 2] = 7
    mask = np.ones((2, 5), bool)
    mask[1, 4] = False
    out = fastlsm.sequence_logprobs(x, tok, mask=mask, top_logprobs=3, return_rank=True,
                                    return_entropy=True)
    lp = log_softmax(x)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    want_tok = np.where(mask, np.take_along_axis(lp, tok[..., None], -1)[..., 0], 0)
    np.testing.assert_allclose(out.token_logprobs, want_tok, rtol=tol, atol=tol)
    np.testing.assert_allclose(out.sequence_logprobs, want_tok.sum(1), rtol=tol, atol=tol)
    xt = np.take_along_axis(x, tok[..., None], -1)
    np.testing.assert_array_equal(out.ranks, np.where(mask, (x > xt).sum(-1), 0))
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * lp, 0), -1)
    np.testing.assert_allclose(out.entropy, np.where(mask, ent, 0), rtol=tol, atol=tol)
    order = np.argsort(-lp, axis=-1, kind="stable")[..., :3]
    np.testing.assert_array_equal(out.top_tokens[mask], order[mask])
    np.testing.assert_allclose(out.top_logprobs[mask],
                               np.take_along_axis(lp, order, -1)[mask], rtol=tol, atol=tol)
    assert out.top_tokens[0, 1, :2].tolist() == [3, 4]
    assert (out.top_tokens[1, 4] == -1).all() and np.isnan(out.top_logprobs[1, 4]).all()
    # the plain call keeps its two arrays, with the same values
    tl, sl = fastlsm.sequence_logprobs(x, tok, mask=mask)
    np.testing.assert_array_equal(tl, out.token_logprobs)


def test_labels_and_ignore_index(rng):
    x = rng.standard_normal((2, 4, 11))
    labels = rng.integers(0, 11, size=(2, 4))
    labels[0, 3] = -100
    a = fastlsm.sequence_logprobs(x, labels=labels, return_rank=True)
    b = fastlsm.sequence_logprobs(x, np.where(labels < 0, 0, labels), mask=labels != -100,
                                  return_rank=True)
    np.testing.assert_array_equal(a.token_logprobs, b.token_logprobs)
    assert a.token_logprobs[0, 3] == 0 and a.ranks[0, 3] == 0
    assert a.entropy is None and a.top_tokens is None
    tl, _ = fastlsm.sequence_logprobs(x, labels=labels)
    np.testing.assert_array_equal(tl, a.token_logprobs)
    with pytest.raises(ValueError, match="either labels"):
        fastlsm.sequence_logprobs(x, labels, labels=labels)
    with pytest.raises(ValueError, match=r"tokens\[1, 0\] = 11"):
        bad = labels.copy()
        bad[1, 0] = 11
        fastlsm.sequence_logprobs(x, labels=bad, return_entropy=True)
    with pytest.raises(ValueError, match="top_logprobs"):
        fastlsm.sequence_logprobs(x, labels=labels, top_logprobs=12)


@pytest.mark.parametrize("dtype", [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)],
                         ids=["bfloat16", "float16"])
def test_16_bit_logits_are_read_as_they_are(rng, dtype, monkeypatch):
    """bfloat16/float16 logits reach both kernels (plain call and extras) as their bits, no
    float32 copy, and give bitwise the float32 results of their exact values (special
    values included); results are float32."""
    x = (rng.standard_normal((3, 4, 601)) * 4).astype(dtype)
    x[0, 1, ::3] = -np.inf
    x[0, 2, :] = -np.inf  # all -inf: NaN
    x[1, 0, 9] = np.nan
    x[1, 1, 4] = np.inf
    x[2, 3, 10:20] = x[2, 3].max()  # ties at the top
    tok = rng.integers(0, 601, (3, 4))
    tok[0, 1] = 3  # a -inf token
    mask = np.ones((3, 4), bool)
    mask[2, 1] = False
    seen = []
    for name in ("sequence_logprobs_rows", "sequence_extras_rows"):
        module = _sequence if name == "sequence_logprobs_rows" else _extras
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda rows, *a, _k=kernel: seen.append(rows.dtype) or _k(rows, *a))
    x32 = x.astype(np.float32)
    for opts in ({}, {"top_logprobs": 5, "return_rank": True, "return_entropy": True}):
        got = fastlsm.sequence_logprobs(x, tok, mask=mask, **opts)
        want = fastlsm.sequence_logprobs(x32, tok, mask=mask, **opts)
        for a, b in zip(got, want, strict=True):
            assert a is None if b is None else a.dtype == b.dtype
            if b is not None:
                np.testing.assert_array_equal(a, b)
    view = np.dtype(np.uint16 if dtype.name == "bfloat16" else np.int16)
    assert seen == [view, np.float32, view, np.float32]
