"""fastlsm.verify_draft: emitted tokens follow the target's processed distribution (chi-square
tests with fixed seeds), greedy rows, penalties over the draft, errors."""

from __future__ import annotations

import numpy as np
import pytest
from naive import sampling_distribution, verify_first_token_distribution
from scipy import stats

from fastlsm import sample, verify_draft

V = 10
K = 3
N = 12000


def _chisq(tokens, p):
    counts = np.bincount(tokens, minlength=p.size)
    assert counts[p == 0].sum() == 0
    keep = p > 0
    return stats.chisquare(counts[keep], p[keep] * tokens.size).pvalue


@pytest.mark.parametrize("with_draft_logits", [True, False])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.7, "top_k": 6, "top_p": 0.9}],
                         ids=["plain", "filtered"])
def test_emitted_tokens_follow_target(rng, with_draft_logits, params):
    target = rng.standard_normal((1, K + 1, V)) * 1.5
    draft_logits = target[:, :K] + rng.standard_normal((1, K, V))  # a close, imperfect draft
    t = np.ascontiguousarray(np.broadcast_to(target, (N, K + 1, V)))
    d = np.ascontiguousarray(np.broadcast_to(draft_logits, (N, K, V)))
    if with_draft_logits:  # draft tokens sampled from the draft's processed distribution
        draft = np.stack([sample(d[:, i], seed=10**6 + np.arange(N), step=i, **params).tokens
                          for i in range(K)], axis=1)
    else:  # a deterministic draft: the same tokens in every row
        draft = np.tile([[int(np.argmax(draft_logits[0, i])) for i in range(K)]], (N, 1))
    out = verify_draft(t, draft, draft_logits=d if with_draft_logits else None,
                       seed=np.arange(N), step=3, **params)
    assert np.all((out.num_accepted >= 0) & (out.num_accepted <= K))
    rows = np.arange(N)
    assert np.all(out.tokens[rows, out.num_accepted] >= 0)  # the correction or bonus token
    cols = np.arange(K + 1)[None]
    assert np.all((out.tokens >= 0) == (cols <= out.num_accepted[:, None]))
    np.testing.assert_array_equal(out.tokens[:, :K][cols[:, :K] < out.num_accepted[:, None]],
                                  draft[cols[:, :K] < out.num_accepted[:, None]])
    p0 = verify_first_token_distribution(target, **params)[0]
    assert _chisq(out.tokens[:, 0], p0) > 1e-4
    # given the first draft token was accepted, the second follows the target at position 1
    p1 = np.exp(sampling_distribution(target[:, 1], **params))[0]
    acc = out.num_accepted >= 1
    assert acc.sum() > 1000
    assert _chisq(out.tokens[acc, 1], p1) > 1e-4


def test_greedy_rows(rng):
    target = rng.standard_normal((3, K + 1, V))
    best = target.argmax(-1)
    draft = best[:, :K].copy()
    draft[1, 1] = (best[1, 1] + 1) % V  # row 1 rejects at position 1
    out = verify_draft(target, draft, temperature=0)
    assert out.num_accepted.tolist() == [K, 1, K]
    assert out.tokens[0].tolist() == best[0].tolist()
    assert out.tokens[1].tolist() == [best[1, 0], best[1, 1], -1, -1]


def test_penalties_count_the_draft(rng):
    target = np.zeros((1, 2, V))
    target[0, :, 4] = 2.0  # the favourite at both positions
    target[0, :, 5] = 1.9
    hist = np.array([[1, -1]])
    out = verify_draft(target, np.array([[4]]), temperature=0, repetition_penalty=2.0,
                       history=hist)
    # position 1 counts the accepted draft token 4: its logit halves, 5 wins
    assert out.num_accepted.tolist() == [1]
    assert out.tokens[0].tolist() == [4, 5]
    alone = sample(target[:, 1], temperature=0, repetition_penalty=2.0, history=[[1, 4]])
    assert out.tokens[0, 1] == alone.tokens[0]


def test_seeded_rows_independent_of_batch(rng):
    target = rng.standard_normal((6, K + 1, V))
    draft = rng.integers(0, V, size=(6, K))
    seeds = np.arange(50, 56)
    full = verify_draft(target, draft, seed=seeds)
    for i in range(6):
        one = verify_draft(target[i : i + 1], draft[i : i + 1], seed=seeds[i : i + 1])
        assert one.tokens[0].tolist() == full.tokens[i].tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"draft_tokens": np.zeros((2, 2), int)}, r"draft_tokens must have shape \[B, k\]"),
        ({"draft_tokens": np.full((2, K), V)}, "draft_tokens"),
        ({"draft_logits": np.zeros((2, K + 1, V))}, "draft_logits must have shape"),
        ({"temperature": -1.0}, "temperature"),
        ({"target_logits": np.zeros((2, V))}, "target_logits must have shape"),
    ],
)
def test_errors(rng, kwargs, match):
    args = {"target_logits": rng.standard_normal((2, K + 1, V)),
            "draft_tokens": np.zeros((2, K), int)} | kwargs
    with pytest.raises(ValueError, match=match):
        verify_draft(args.pop("target_logits"), args.pop("draft_tokens"), **args)
