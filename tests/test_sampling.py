"""fastlsm.sample: kept sets and logprobs vs float64 references and HF, sampled frequencies,
determinism, bitmask layout, errors."""

from __future__ import annotations

import numpy as np
import pytest
from naive import bitmask_allowed, log_softmax, sampling_distribution
from scipy import stats

import fastlsm
from fastlsm.sampling import sample

V = 257  # not a multiple of 32: the last bitmask word is partial

FILTERS = [
    {"temperature": 0.7},
    {"top_k": 10},
    {"top_p": 0.6},
    {"min_p": 0.1},
    {"typical_p": 0.7},
    {"repetition_penalty": 1.5},
    {"frequency_penalty": 0.4, "presence_penalty": 0.3},
    {"temperature": 0.8, "top_k": 40, "top_p": 0.8, "min_p": 0.02, "typical_p": 0.9,
     "repetition_penalty": 1.2, "frequency_penalty": 0.1, "presence_penalty": 0.2},
]


def _history(rng, nb, nv, length=12):
    h = rng.integers(0, nv, size=(nb, length))
    h[:, -3:] = -1  # padding
    h[:, 1] = h[:, 0]  # a repeated token: counts of 2
    return h


def _processed(x, **params):
    """All processed logprobs from fastlsm (logprob_token_ids = every token)."""
    out = sample(x, logprob_token_ids=np.arange(x.shape[-1]), logprobs_mode="processed",
                 **params)
    return out.token_id_logprobs.astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", FILTERS, ids=lambda p: "+".join(p))
def test_processed_matches_reference(rng, dtype, params):
    x = (rng.standard_normal((6, V)) * 3).astype(dtype)
    hist = _history(rng, 6, V)
    got = _processed(x, history=hist, **params)
    want = sampling_distribution(x, history=hist, **params)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    tol = 2e-6 if dtype == np.float32 else 1e-12
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol)


def test_per_row_parameters(rng):
    x = rng.standard_normal((4, V)) * 2
    params = {"temperature": np.array([0.5, 1.0, 0.0, 1.3]), "top_k": np.array([0, 5, 0, 50]),
              "top_p": np.array([0.9, 1.0, 1.0, 0.5]), "min_p": np.array([0.0, 0.0, 0.0, 0.05]),
              "typical_p": np.array([1.0, 0.8, 1.0, 1.0])}
    got = _processed(x, **params)
    np.testing.assert_allclose(got, sampling_distribution(x, **params), rtol=1e-12, atol=1e-12)
    for i in range(4):  # each row alone, scalar parameters
        alone = _processed(x[i : i + 1], **{k: v[i] for k, v in params.items()})
        np.testing.assert_array_equal(alone[0], got[i])


def test_ties():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0, 2.0, 2.0]])
    # top-k: every token equal to the k-th largest stays
    assert np.isfinite(_processed(x, top_k=2)[0]).tolist() == [0, 1, 1, 0, 1, 0, 0, 0]
    # top-p: the tie at the boundary is cut, higher ids first (HF's stable ascending sort)
    p3 = np.exp(3.0) / np.exp(x).sum()
    kept = np.isfinite(_processed(x, top_p=1.5 * p3)[0])
    assert kept.tolist() == [0, 0, 1, 0, 1, 0, 0, 0]
    want = sampling_distribution(x, top_p=1.5 * p3)
    np.testing.assert_array_equal(np.isfinite(want), kept[None])
    # greedy: the lowest id of the maxima; top-N ties to the lower id
    out = sample(x, temperature=0, num_logprobs=5)
    assert out.tokens[0] == 1
    assert out.top_tokens[0].tolist() == [1, 2, 4, 3, 6]


def test_raw_logprobs_and_top(rng):
    x = rng.standard_normal((3, V)).astype(np.float32) * 4
    ids = np.array([[0, 5, 256], [1, 2, 3], [7, 7, 7]])
    out = sample(x, temperature=0.9, top_p=0.8, num_logprobs=4, logprob_token_ids=ids, seed=3)
    ref = log_softmax(x)
    np.testing.assert_allclose(out.logprobs, ref[np.arange(3), out.tokens], rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(out.top_tokens, np.argsort(-ref, kind="stable")[:, :4])
    np.testing.assert_allclose(out.top_logprobs, np.sort(ref)[:, ::-1][:, :4], rtol=2e-6)
    np.testing.assert_allclose(out.token_id_logprobs, np.take_along_axis(ref, ids, 1),
                               rtol=2e-6, atol=2e-6)
    assert out.logprobs.dtype == np.float32 and out.tokens.dtype == np.int64


def test_processed_chosen_logprob(rng):
    x = rng.standard_normal((5, V)) * 2
    out = sample(x, top_k=20, temperature=0.6, logprobs_mode="processed", seed=11)
    want = sampling_distribution(x, top_k=20, temperature=0.6)
    np.testing.assert_allclose(out.logprobs, want[np.arange(5), out.tokens], rtol=1e-12)


def _frequencies(row, n, **params):
    x = np.ascontiguousarray(np.broadcast_to(row, (n, row.size)))
    tokens = sample(x, seed=np.full(n, 1234), step=np.arange(n), **params).tokens
    return np.bincount(tokens, minlength=row.size)


@pytest.mark.parametrize("params", FILTERS[:5] + [{"temperature": 1.0}], ids=lambda p: "+".join(p))
def test_sampled_frequencies(rng, params):
    row = rng.standard_normal(12) * 1.5
    n = 20000
    counts = _frequencies(row, n, **params)
    p = np.exp(sampling_distribution(row[None], **params)[0])
    assert counts[p == 0].sum() == 0  # never a filtered token
    keep = p > 0
    res = stats.chisquare(counts[keep], p[keep] * n)
    assert res.pvalue > 1e-4, (counts, p * n)


def test_seed_batch_and_thread_invariance(rng):
    x = rng.standard_normal((8, 5000)).astype(np.float32)
    seeds = np.arange(100, 108)
    params = {"temperature": 0.9, "top_p": 0.95, "seed": seeds, "step": 7}
    full = sample(x, **params).tokens
    perm = rng.permutation(8)
    moved = sample(x[perm], temperature=0.9, top_p=0.95, seed=seeds[perm], step=7).tokens
    np.testing.assert_array_equal(moved, full[perm])
    alone = [sample(x[i], temperature=0.9, top_p=0.95, seed=[seeds[i]], step=7).tokens
             for i in range(8)]
    np.testing.assert_array_equal(np.array(alone), full)
    before = fastlsm.get_num_threads()
    try:
        fastlsm.set_num_threads(1)
        one = sample(x, **params)
    finally:
        fastlsm.set_num_threads(before)
    np.testing.assert_array_equal(one.tokens, full)
    # a scalar seed keys by row index: rows differ, and every call repeats
    a = sample(np.tile(x[:1], (8, 1)), seed=5).tokens
    assert len(set(a.tolist())) > 1
    np.testing.assert_array_equal(a, sample(np.tile(x[:1], (8, 1)), seed=5).tokens)


@pytest.mark.parametrize(
    ("ctr", "key", "want"),
    [  # Random123's known-answer vectors (kat_vectors, philox4x32 10 rounds)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_known_answers(ctr, key, want):
    from fastlsm._kernels.philox import philox4x32

    got = philox4x32(*(np.uint64(v) for v in ctr + key))
    assert tuple(int(w) for w in got) == want


def test_bitmask_layout(rng):
    x = rng.standard_normal((3, V))
    allowed = [[3, 40, 63, 64, 256], [0], list(range(0, V, 7))]
    mask = np.zeros((3, (V + 31) // 32), np.int32)
    for i, toks in enumerate(allowed):
        for j in toks:
            mask[i, j // 32] |= np.int32(np.uint32(1 << (j % 32)).view(np.int32))
        assert np.flatnonzero(bitmask_allowed(mask[i : i + 1], V)[0]).tolist() == toks
    lp = _processed(x, token_bitmask=mask)
    for i, toks in enumerate(allowed):
        assert np.flatnonzero(np.isfinite(lp[i])).tolist() == toks
    tokens = sample(np.tile(x[:1], (200, 1)), token_bitmask=np.tile(mask[:1], (200, 1))).tokens
    assert set(tokens.tolist()) <= set(allowed[0])
    np.testing.assert_array_equal(
        sample(x, token_bitmask=mask.view(np.uint32), seed=4).tokens,
        sample(x, token_bitmask=mask, seed=4).tokens,
    )
    mask[1] = 0
    with pytest.raises(ValueError, match="row 1 of logits has no allowed token"):
        sample(x, token_bitmask=mask)


def test_logit_bias_forms(rng):
    x = rng.standard_normal((2, V))
    dense = np.zeros(V)
    dense[[4, 9]] = [5.0, -np.inf]
    a = _processed(x, logit_bias={4: 5.0, 9: -np.inf})
    np.testing.assert_array_equal(a, _processed(x, logit_bias=dense))
    np.testing.assert_array_equal(a, _processed(x, logit_bias=np.stack([dense, dense])))
    np.testing.assert_allclose(a, sampling_distribution(x, logit_bias=dense), rtol=1e-12)


def test_one_dimensional_and_special_rows(rng):
    x = rng.standard_normal(V)
    out = sample(x, temperature=0, num_logprobs=2)
    assert out.tokens.shape == () and int(out.tokens) == int(np.argmax(x))
    assert out.top_tokens.shape == (2,)
    assert sample(np.array([[2.5]]), temperature=0.3).tokens.tolist() == [0]  # V = 1
    masked = np.full((1, 6), -np.inf)
    masked[0, 4] = 1e30  # huge logits: one finite token
    assert sample(masked, top_p=0.5).tokens.tolist() == [4]
    assert sample(np.empty((0, 5))).tokens.shape == (0,)
    ro = x.copy()
    ro.flags.writeable = False
    assert int(sample(ro[::-1], seed=2).tokens) == int(sample(x[::-1].copy(), seed=2).tokens)
    # a denormal temperature (1 / T overflows) is its limit, greedy; a tiny one nearly so
    assert int(sample(x, temperature=5e-324).tokens) == int(np.argmax(x))
    assert int(sample(x, temperature=1e-30, top_p=0.5).tokens) == int(np.argmax(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.1}, "temperature must be finite and >= 0"),
        ({"temperature": np.nan}, "temperature"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"min_p": 2.0}, "min_p"),
        ({"typical_p": 0.0}, "typical_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"temperature": np.ones(3)}, r"shape \[4\]"),
        ({"history": np.array([[0, 300]] * 4)}, r"history\[0, 1\] = 300"),
        ({"history": np.array([[0, -2]] * 4)}, "-1 \\(padding\\)"),
        ({"history": np.zeros((3, 2), int)}, "history must have shape"),
        ({"logit_bias": np.zeros(5)}, "logit_bias must have shape"),
        ({"logit_bias": {400: 1.0}}, "outside the vocabulary"),
        ({"token_bitmask": np.zeros((4, 8), np.int32)}, "token_bitmask must have shape"),
        ({"logprob_token_ids": [0, 257]}, "logprob_token_ids"),
        ({"num_logprobs": 300}, "num_logprobs"),
        ({"logprobs_mode": "both"}, "logprobs_mode"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_parameters(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(rng.standard_normal((4, V)), **kwargs)


def test_bad_types_and_values(rng):
    with pytest.raises(TypeError, match="logits must be float32, float64, bfloat16 or float16"):
        sample(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="token_bitmask must be int32"):
        sample(np.zeros((2, 40)), token_bitmask=np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="top_k"):
        sample(np.zeros((2, 40)), top_k=2.5)
    x = rng.standard_normal((3, 10))
    x[2, 4] = np.nan
    with pytest.raises(ValueError, match="row 2 of logits holds NaN"):
        sample(x)
    with pytest.raises(ValueError, match="shape"):
        sample(np.zeros((2, 3, 4)))


def test_processed_matches_hf(rng, torch_or_skip):
    torch = torch_or_skip
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        pytest.skip(f"transformers is not available: {e}")
    from fastlsm.bench.cases import hf_processors

    x = rng.standard_normal((4, V)) * 3
    hist = rng.integers(0, V, size=(4, 10))
    cases = FILTERS[:5] + [{"repetition_penalty": 1.3}, FILTERS[-1] | {"frequency_penalty": 0.0,
                                                                      "presence_penalty": 0.0}]
    for params in cases:
        procs = hf_processors(params)
        scores = torch.tensor(x)
        ids = torch.tensor(hist)
        for proc in procs:
            scores = proc(ids, scores)
        want = torch.log_softmax(scores, -1).numpy()
        got = _processed(x, history=hist, **params)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=str(params))
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-9, atol=1e-9)


def test_example_runs(torch_or_skip, capsys):
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        pytest.skip(f"transformers is not available: {e}")
    import os
    import runpy

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "sample_generation.py")
    runpy.run_path(path, run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("logprobs.content[:2]") == 3
    assert "accepted" in out


def test_top_tokens_across_chunks(rng):
    """Rows longer than a chunk (1024): skipped chunks never hide a top token or a tie."""
    x = rng.standard_normal((2, 5000))
    x[:, [4000, 10, 2500]] = 9.0  # ties in three chunks: ids in increasing order
    x[1, 4999] = 9.5
    for mode in ("raw", "processed"):
        out = sample(x, temperature=0.5, top_k=3, num_logprobs=4, logprobs_mode=mode)
        want = np.argsort(-x, axis=1, kind="stable")[:, :4]
        if mode == "processed":  # top_k=3 keeps the three 9.0 (row 0), 9.5 and 9.0s (row 1)
            assert out.top_tokens[0, :3].tolist() == [10, 2500, 4000]
            assert out.top_logprobs[0, 3] == -np.inf and out.top_tokens[0, 3] == 0
            assert out.top_tokens[1].tolist() == [4999, 10, 2500, 4000]
        else:
            np.testing.assert_array_equal(out.top_tokens, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_path_matches_general_path(rng, dtype):
    """The common call (Python scalars, int seed, optional history) takes the short path
    (fastlsm.sampling._fast_sample); NumPy scalars take the general one: the same bits."""
    x = (rng.standard_normal((5, V)) * 3).astype(dtype)
    hist = _history(rng, 5, V)
    for params in FILTERS + [{"temperature": 0.0}, {"top_k": 3, "top_p": 0.5}]:
        for kw in ({}, {"history": hist}, {"num_logprobs": 4, "logprobs_mode": "processed"}):
            slow = {k: np.float64(v) if k != "top_k" else np.int64(v) for k, v in params.items()}
            for rows in (x, x[0]):
                kw1 = dict(kw, history=hist[0]) if rows.ndim == 1 and "history" in kw else kw
                a = sample(rows, seed=3, step=2, **params, **kw1)
                b = sample(rows, seed=np.int64(3), step=2, **slow, **kw1)
                for u, v in zip(a, b):
                    assert (u is None) == (v is None)
                    if u is not None:
                        assert u.dtype == v.dtype
                        np.testing.assert_array_equal(u, v)


def test_short_path_errors(rng):
    """Bad values in a call the short path looks at raise the general path's errors."""
    x = rng.standard_normal((2, V))
    with pytest.raises(ValueError, match="temperature must be finite and >= 0"):
        sample(x, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p must be in"):
        sample(x, top_p=0.0)
    with pytest.raises(TypeError, match="top_k"):
        sample(x, top_k=2.0)
    with pytest.raises(ValueError, match="-1 \\(padding\\)"):
        sample(x, history=np.array([[0, V]] * 2))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        sample(x, seed=-1)
    with pytest.raises(ValueError, match="row 1 of logits holds NaN"):
        sample(np.array([[0.0, 1.0], [np.nan, 0.0]]), temperature=0.5)
    for _ in range(2):  # the second time from the cached table: the same error
        with pytest.raises(ValueError, match="min_p must be in"):
            sample(x, min_p=1.5)


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_rows_read_in_place(rng, half):
    """bfloat16/float16 logits give the bits of their float32 values (sample and
    verify_draft), without a float32 copy of the logits (each row is widened in the kernel's
    row buffer)."""
    import tracemalloc

    import ml_dtypes

    dt = ml_dtypes.bfloat16 if half == "bfloat16" else np.float16
    x = (rng.standard_normal((8, 4096)) * 3).astype(dt)
    hist = _history(rng, 8, 4096)
    for params in FILTERS[:3] + [FILTERS[-1], {"temperature": 0.0}]:
        for kw in ({"num_logprobs": 3}, {"history": hist, "logit_bias": {5: 1.0}},
                   {"logprobs_mode": "processed", "logprob_token_ids": [0, 7]}):
            a = sample(x, seed=4, **params, **kw)
            b = sample(x.astype(np.float32), seed=4, **params, **kw)
            for u, v in zip(a, b):
                if u is not None:
                    assert u.dtype == v.dtype
                    np.testing.assert_array_equal(u, v)
    t = (rng.standard_normal((2, 4, 4096)) * 2).astype(dt)
    d = (rng.standard_normal((2, 3, 4096)) * 2).astype(dt)
    drafts = rng.integers(0, 4096, size=(2, 3))
    for dl in (None, d):
        a = fastlsm.verify_draft(t, drafts, draft_logits=dl, top_p=0.8, seed=2)
        b = fastlsm.verify_draft(t.astype(np.float32), drafts, seed=2, top_p=0.8,
                                 draft_logits=None if dl is None else d.astype(np.float32))
        np.testing.assert_array_equal(a.tokens, b.tokens)

    def peak(rows):  # kernels' scratch is traced too: compare with the float32 call
        sample(rows, temperature=0.7, top_p=0.9)  # compiled
        tracemalloc.start()
        sample(rows, temperature=0.7, top_p=0.9)
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return used

    big = (rng.standard_normal((16, 20000)) * 3).astype(dt)
    # a float32 copy of the logits would add 16 rows; a row buffer per thread adds one each
    assert peak(big) < peak(big.astype(np.float32)) + 8 * 20000 * 4


def _split_cases(nv):
    allow = np.full((1, (nv + 31) // 32), -1, np.int32)
    allow[0, 3:40] = 0  # tokens 96..1279 masked
    return [
        {"temperature": 0.7, "top_p": 0.9, "logprobs_mode": "processed",
         "num_logprobs": 2},  # the histogram (masses filled on the way); Z in the logprobs
        {"temperature": 1.0, "num_logprobs": 3},  # raw lse from the masses
        {"temperature": 0.8, "top_k": 3000},  # top-k by the histogram
        {"top_k": 40, "top_p": 0.8, "min_p": 0.02},  # the candidate list
        {"temperature": 1.3, "typical_p": 0.9, "top_p": 0.95},
        {"temperature": 0.0, "num_logprobs": 5},  # greedy
        {"min_p": 0.1, "logprobs_mode": "processed", "num_logprobs": 2},
        {"repetition_penalty": 1.3, "frequency_penalty": 0.2, "top_p": 0.95,
         "history": np.array([[5, 9, 9, 70000 % nv, -1]])},  # a processed copy of the row
        {"token_bitmask": allow, "logit_bias": {7: 3.0}, "temperature": 0.9},
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_long_row_split_over_two_threads_gives_the_bits_of_a_batch_row(
        rng, dtype, monkeypatch):
    """A single row of SPLIT_MIN tokens or more sampled on two threads runs its passes over
    both halves at once (split); its token and every logprob equal those of the same row
    inside a batch (one thread per row) and on one thread, bit for bit."""
    from fastlsm._kernels import sampling as kernels

    nv = kernels.SPLIT_MIN + 4464  # two halves, a partial last chunk
    x = (rng.standard_normal((3, nv)) * 2.5).astype(dtype)
    x[:, 11] = x[:, 12] = x[:, 13]  # ties
    calls = []
    real = kernels.sample_rows

    class Spy:
        def __call__(self, *args):
            calls.append(args[-1])
            return real(*args)

        def serial(self, *args):
            calls.append("serial")
            return real.serial(*args)

        def __getattr__(self, name):
            return getattr(real, name)

    before = fastlsm.get_num_threads()
    try:
        for params in _split_cases(nv):
            seed = np.array([11, 12, 13])
            batch_params = dict(params)
            for key in ("history", "token_bitmask"):
                if key in params:
                    batch_params[key] = np.repeat(params[key], 3, axis=0)
            fastlsm.set_num_threads(min(2, numba_pool()))
            batch = sample(x, seed=seed, step=3, logprob_token_ids=[0, 11, 500], **batch_params)
            if numba_pool() > 1:  # the split path is taken (split=True, not None)
                monkeypatch.setattr(kernels, "sample_rows", Spy())
            calls.clear()
            alone = [sample(x[i:i + 1], seed=seed[i:i + 1], step=3, logprob_token_ids=[0, 11, 500],
                            **params) for i in range(3)]
            monkeypatch.setattr(kernels, "sample_rows", real)
            assert calls == ([True] * 3 if numba_pool() > 1 else []), params
            fastlsm.set_num_threads(1)
            one = sample(x[1:2], seed=seed[1:2], step=3, logprob_token_ids=[0, 11, 500],
                         **params)
            for i, out in enumerate(alone):
                for field in ("tokens", "logprobs", "top_tokens", "top_logprobs",
                              "token_id_logprobs"):
                    got, want = getattr(out, field), getattr(batch, field)
                    if want is None:  # not asked for (num_logprobs=0)
                        assert got is None and getattr(one, field) is None
                        continue
                    np.testing.assert_array_equal(got, want[i:i + 1], err_msg=f"{params} {field}")
                    if i == 1:
                        np.testing.assert_array_equal(getattr(one, field), got)
    finally:
        fastlsm.set_num_threads(before)


def numba_pool():
    import numba

    return numba.config.NUMBA_NUM_THREADS
