"""The beam-search decoder against a slow NumPy float64 transcription of transformers'
``_beam_search`` (generation/utils.py, transformers 5.x) and its logits processors."""

import ml_dtypes
import naive
import numpy as np
import pytest
from conftest import at_threads

import fastlsm
from fastlsm._kernels import beam as _k
from fastlsm._kernels.decoder import pack_config


class ToyModel:
    """A deterministic 'language model': logits from the last two tokens and the position."""

    def __init__(self, vocab, seed, scale=2.0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((vocab, vocab)) * scale
        self.w2 = rng.standard_normal((vocab, vocab)) * scale * 0.5
        self.wp = rng.standard_normal((64, vocab)) * 0.3
        self.dtype = dtype
        self.calls = []

    def __call__(self, ids, parents):
        self.calls.append((ids.copy(), None if parents is None else parents.copy()))
        last = ids[:, -1]
        prev = ids[:, -2] if ids.shape[1] > 1 else ids[:, -1]
        out = self.w1[last] + self.w2[prev] + self.wp[ids.shape[1] % 64]
        return out.astype(self.dtype)


def compare(opts, vocab=13, seed=0, batch=3, prompt_len=3, dtype=np.float64):
    rng = np.random.default_rng(seed + 1000)
    ids = rng.integers(0, vocab, (batch, prompt_len))
    got = fastlsm.beam_search(ToyModel(vocab, seed, dtype=dtype), ids, **opts)
    seqs, scores, logps, lens, steps = naive.beam_search(
        ToyModel(vocab, seed, dtype=dtype), ids, **opts)
    tol = 1e-10 if dtype == np.float64 else 1e-6  # float32 rows: float32 exp, float64 sums
    assert np.array_equal(got.sequences, seqs), (got.sequences, seqs)
    np.testing.assert_allclose(got.sequences_scores, scores, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.token_logprobs, logps, rtol=tol, atol=tol)
    assert np.array_equal(got.lengths, lens)
    assert got.steps == steps
    return got


BASE = dict(num_beams=3, max_new_tokens=8, eos_token_id=2, pad_token_id=11)

CASES = [
    {},
    dict(early_stopping=True),
    dict(early_stopping="never"),
    dict(early_stopping="never", length_penalty=0.0),
    dict(length_penalty=2.0),
    dict(length_penalty=-1.0, early_stopping="never"),
    dict(num_return_sequences=3),
    dict(eos_token_id=[2, 5, 7], num_return_sequences=2),
    dict(min_new_tokens=4),
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=1, max_new_tokens=6),
    dict(repetition_penalty=1.5),
    dict(repetition_penalty=0.7),
    dict(repetition_penalty=1.3, no_repeat_ngram_size=3, min_new_tokens=2, renormalize=True),
    dict(renormalize=True, no_repeat_ngram_size=2),
    dict(num_beams=1),
    dict(num_beams=5, num_return_sequences=4, max_new_tokens=10),
    dict(patience=2.0, num_return_sequences=3),
    dict(patience=1.5, num_return_sequences=2, early_stopping="never"),
    dict(patience=2.0, early_stopping=True),
    dict(patience=0.5),
    dict(eos_token_id=None, pad_token_id=None),
    dict(max_new_tokens=1),
]


@pytest.mark.parametrize("opts", CASES, ids=[str(c) or "defaults" for c in CASES])
def test_matches_reference(opts):
    for seed in range(3):
        compare({**BASE, **opts}, seed=seed)


def test_float32_logits():
    compare(dict(BASE, num_return_sequences=2), dtype=np.float32, seed=5)


def test_larger_vocab_and_batch():
    compare(dict(BASE, num_beams=4, num_return_sequences=2, eos_token_id=[3, 4]), vocab=700,
            batch=4, seed=7)


def test_step_fn_inputs_and_parents():
    model = ToyModel(13, 3)
    out = fastlsm.beam_search(model, [[1, 2], [3, 4]], **dict(BASE, max_new_tokens=5))
    ids0, parents0 = model.calls[0]
    assert parents0 is None and ids0.shape == (6, 2) and ids0.dtype == np.int64
    assert ids0.tolist() == [[1, 2]] * 3 + [[3, 4]] * 3
    for (prev, _), (ids, parents) in zip(model.calls, model.calls[1:], strict=False):
        assert parents.shape == (6,) and parents.dtype == np.int64
        assert ((parents // 3) == np.arange(6) // 3).all()  # stays within its batch item
        assert np.array_equal(ids[:, :-1], prev[parents])
    assert out.steps == len(model.calls)


def test_pad_and_lengths():
    # a bigram model where token 0 (EOS) is likely after 1: hypotheses of different length
    table = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]]))

    def step(ids, parents):
        return table[ids[:, -1]]

    out = fastlsm.beam_search(step, [[2]], num_beams=2, max_new_tokens=4, eos_token_id=0,
                              pad_token_id=9, num_return_sequences=2, length_penalty=0.0,
                              early_stopping=True)
    seqs, scores, logps, lens, _ = naive.beam_search(
        step, [[2]], num_beams=2, max_new_tokens=4, eos_token_id=0, pad_token_id=9,
        num_return_sequences=2, length_penalty=0.0, early_stopping=True)
    assert np.array_equal(out.sequences, seqs)
    assert out.sequences.tolist() == [[2, 0, 9], [2, 1, 0]]
    np.testing.assert_allclose(out.sequences_scores, [np.log(0.3), np.log(0.3 * 0.5)])
    assert out.lengths.tolist() == [1, 2]
    np.testing.assert_allclose(out.token_logprobs, [[np.log(0.3), 0.0],
                                                    [np.log(0.3), np.log(0.5)]])
    # scores are the length-normalized sums of the per-token log-probs
    out = fastlsm.beam_search(step, [[2], [1]], num_beams=2, max_new_tokens=6, eos_token_id=0,
                              num_return_sequences=2, length_penalty=1.5)
    np.testing.assert_allclose(out.sequences_scores,
                               out.token_logprobs.sum(1) / out.lengths ** 1.5, rtol=1e-12)


def test_thread_count_does_not_change_results():
    opts = dict(BASE, num_beams=4, num_return_sequences=2)
    ids = np.arange(8).reshape(4, 2)
    a, b = (at_threads(n, fastlsm.beam_search, ToyModel(300, 1, dtype=np.float32), ids, **opts)
            for n in (1, fastlsm.get_num_threads()))
    assert np.array_equal(a.sequences, b.sequences)
    assert np.array_equal(a.sequences_scores, b.sequences_scores)
    assert np.array_equal(a.token_logprobs, b.token_logprobs)


def test_logits_are_restored():
    kept = []

    def step(ids, parents):
        x = np.random.default_rng(ids.shape[1]).standard_normal((ids.shape[0], 9))
        kept.append((x, x.copy()))
        return x

    fastlsm.beam_search(step, [[1, 1, 2]], num_beams=2, max_new_tokens=4, eos_token_id=0,
                        repetition_penalty=1.2, no_repeat_ngram_size=1, min_new_tokens=3)
    assert all(np.array_equal(a, b) for a, b in kept)


def test_read_only_and_strided_logits_are_accepted():
    model = ToyModel(13, 4)

    def step(ids, parents):
        x = np.repeat(model(ids, parents), 2, axis=1)[:, ::2]
        x.flags.writeable = False
        return x

    a = fastlsm.beam_search(step, [[1, 2]], **BASE)
    b = fastlsm.beam_search(ToyModel(13, 4), [[1, 2]], **BASE)
    assert np.array_equal(a.sequences, b.sequences)


def test_bad_step_fn_results_name_the_step():
    def make(bad_at, kind):
        model = ToyModel(13, 0)

        def step(ids, parents):
            x = model(ids, parents)
            if len(model.calls) - 1 == bad_at:
                if kind == "nan":
                    x[4, 3] = np.nan
                elif kind == "inf":
                    x[1, 0] = np.inf
                elif kind == "shape":
                    x = x[:, :5]
                elif kind == "rows":
                    x = x[:-1]
                elif kind == "dtype":
                    x = x.astype(np.int32)
                elif kind == "3d":
                    x = x[None]
            return x
        return step

    with pytest.raises(ValueError, match=r"step 2: .*NaN or \+inf in row 4 \(batch 1, beam 1\)"):
        fastlsm.beam_search(make(2, "nan"), [[1], [2]], **BASE)
    with pytest.raises(ValueError, match=r"step 0: .*row 1 \(batch 0, beam 1\)"):
        fastlsm.beam_search(make(0, "inf"), [[1], [2]], **BASE)
    with pytest.raises(ValueError, match=r"step 1: step_fn returned logits of shape \(6, 5\), "
                                         r"expected \[6, 13\]"):
        fastlsm.beam_search(make(1, "shape"), [[1], [2]], **BASE)
    with pytest.raises(ValueError, match=r"step 0: .*shape \(5, 13\)"):
        fastlsm.beam_search(make(0, "rows"), [[1], [2]], **BASE)
    with pytest.raises(ValueError, match=r"step 0: .*shape \(1, 6, 13\)"):
        fastlsm.beam_search(make(0, "3d"), [[1], [2]], **BASE)
    with pytest.raises(TypeError, match=r"step 3: .*dtype int32"):
        fastlsm.beam_search(make(3, "dtype"), [[1], [2]], **BASE)
    with pytest.raises(ValueError, match="step 0: vocabulary size 1 is too small"):
        fastlsm.beam_search(lambda ids, p: np.zeros((3, 1)), [[0]], **BASE)


OPTION_ERRORS = [  # (exception, message, options changed from BASE)
    (ValueError, "num_return_sequences=4 is larger than num_beams=3",
     {"num_return_sequences": 4}),
    (ValueError, "num_return_sequences=4 is larger than num_beams=3",
     {"num_return_sequences": 4, "patience": 2.0}),
    (ValueError, "num_beams must be at least 1", {"num_beams": 0}),
    (ValueError, "max_new_tokens must be at least 1", {"max_new_tokens": 0}),
    (ValueError, "early_stopping", {"early_stopping": "always"}),
    (ValueError, "repetition_penalty must be > 0", {"repetition_penalty": 0.0}),
    (ValueError, "patience", {"patience": 0.1}),
    (ValueError, "round\\(num_beams \\* patience\\)",
     {"patience": 0.5, "num_return_sequences": 3}),
    (TypeError, "eos_token_id", {"eos_token_id": 1.5}),
    (ValueError, "length_penalty must be finite", {"length_penalty": float("nan")}),
    (ValueError, "pad_token_id must be >= 0", {"pad_token_id": -2}),
    (ValueError, "eos_token_id must hold non-negative", {"eos_token_id": [0, -1]}),
    (ValueError, "no_repeat_ngram_size must be at least 0", {"no_repeat_ngram_size": -1}),
]


@pytest.mark.parametrize("exc,match,change", OPTION_ERRORS, ids=[m for _, m, _ in OPTION_ERRORS])
def test_option_errors(exc, match, change):
    with pytest.raises(exc, match=match):
        fastlsm.beam_search(ToyModel(13, 0), [[1]], **{**BASE, **change})


def test_argument_errors():
    step = ToyModel(13, 0)
    with pytest.raises(ValueError, match=r"input_ids must have shape \[B, L\]"):
        fastlsm.beam_search(step, [1, 2], **BASE)
    with pytest.raises(TypeError, match="input_ids must hold integer"):
        fastlsm.beam_search(step, [[1.0]], **BASE)
    with pytest.raises(TypeError, match="step_fn must be callable"):
        fastlsm.beam_search(None, [[1]], **BASE)


def test_kernel_state_machine_statuses():
    cfg = np.zeros(_k.CFG_SIZE + 1, np.int64)
    cfg[[_k.CFG_BATCH, _k.CFG_BEAMS, _k.CFG_PROMPT_LEN, _k.CFG_MAX_LEN, _k.CFG_CANDIDATES,
         _k.CFG_MAX_HYPS, _k.CFG_PAD, _k.CFG_NUM_EOS, _k.CFG_EOS]] = [1, 2, 1, 3, 4, 2, 0, 1, 0]
    fcfg = np.array([1.0, 1.0])
    layout = np.empty(_k.LAYOUT_SIZE, np.int64)
    assert _k.beam_search_layout(cfg, layout) == 0
    ist = np.empty(layout[_k.L_INT_SIZE], np.int64)
    fst = np.empty(layout[_k.L_FLOAT_SIZE])
    assert _k.beam_search_init(cfg, fcfg, np.array([[1]]), fst[:-1], ist) == _k.BEAM_BAD_SHAPE
    assert _k.beam_search_init(cfg, fcfg, np.array([[1, 2]]), fst, ist) == _k.BEAM_BAD_SHAPE
    assert _k.beam_search_init(cfg, fcfg, np.array([[1]]), fst, ist) == _k.BEAM_RUNNING
    table = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]]))
    assert _k.beam_search_advance(cfg, fcfg, fst, ist, np.zeros((3, 3))) == _k.BEAM_BAD_SHAPE
    bad = table[[1, 1]].copy()
    bad[1, 2] = np.nan
    assert _k.beam_search_advance(cfg, fcfg, fst, ist, bad) == _k.BEAM_BAD_LOGITS
    assert ist[_k.ST_BAD_ROW] == 1 and ist[_k.ST_CUR_LEN] == 1
    assert _k.beam_search_advance(cfg, fcfg, fst, ist, table[[1, 1]].copy()) == _k.BEAM_RUNNING
    p = layout[_k.L_PARENTS]
    assert ist[p:p + 2].tolist() == [0, 0] and ist[_k.ST_CUR_LEN] == 2
    assert _k.beam_search_advance(cfg, fcfg, fst, ist, table[[2, 1]].copy()) == _k.BEAM_DONE
    assert _k.beam_search_advance(cfg, fcfg, fst, ist, table[[2, 1]].copy()) == _k.BEAM_NOT_RUNNING
    out_seqs = np.empty((2, 3), np.int64)
    out_scores, out_logp, out_len = np.empty(2), np.empty((2, 2)), np.empty(2, np.int64)
    total = _k.beam_search_finalize(cfg, fcfg, fst, ist, out_seqs, out_scores, out_logp, out_len)
    assert total == 3
    # step 1 finishes [1, 0] (p = 0.5); step 2 reaches max length with [1, 2, 2] (0.4 * 0.4)
    # ahead of [1, 2, 0] (0.4 * 0.3); scores are normalized by the generated length
    assert out_seqs.tolist() == [[1, 0, 0], [1, 2, 2]]  # pad 0
    np.testing.assert_allclose(out_scores, [np.log(0.5), np.log(0.4 * 0.4) / 2])
    np.testing.assert_allclose(out_logp, [[np.log(0.5), 0.0], [np.log(0.4), np.log(0.4)]])
    assert out_len.tolist() == [1, 2]
    assert _k.beam_search_finalize(cfg, fcfg, fst, ist, out_seqs[:1], out_scores[:1],
                                   out_logp[:1], out_len[:1]) == 2  # R = 1: [1, 0] only
    assert _k.beam_search_finalize(cfg, fcfg, fst, ist, out_seqs, out_scores, out_logp,
                                   out_len[:1]) == -_k.BEAM_BAD_SHAPE


def test_config_check_codes_and_messages():
    """One validator (used by Python and C): each code blames its field, every code has text."""
    from fastlsm._kernels.decoder import config as c

    ok = dict(batch=2, prompt_len=1, vocab=13, num_beams=3, max_new_tokens=4,
              eos_ids=np.array([1]), pad_token_id=-1, length_penalty=1.0, early_stopping=0,
              num_return_sequences=2, min_new_tokens=0, no_repeat_ngram_size=0,
              repetition_penalty=1.0, patience=1.0)
    assert c.check_config(**ok) == c.CONFIG_OK
    assert c.check_config(**dict(ok, vocab=-1)) == c.CONFIG_OK
    bad = {
        c.CONFIG_BATCH: dict(batch=0), c.CONFIG_NUM_BEAMS: dict(num_beams=0),
        c.CONFIG_MAX_NEW_TOKENS: dict(max_new_tokens=0),
        c.CONFIG_NUM_RETURN_SEQUENCES: dict(num_return_sequences=0),
        c.CONFIG_RETURN_EXCEEDS_BEAMS: dict(num_return_sequences=4),
        c.CONFIG_MIN_NEW_TOKENS: dict(min_new_tokens=-1),
        c.CONFIG_NO_REPEAT_NGRAM_SIZE: dict(no_repeat_ngram_size=-1),
        c.CONFIG_LENGTH_PENALTY: dict(length_penalty=np.inf),
        c.CONFIG_REPETITION_PENALTY: dict(repetition_penalty=np.nan),
        c.CONFIG_EARLY_STOPPING: dict(early_stopping=3),
        c.CONFIG_PATIENCE: dict(patience=1e300),
        c.CONFIG_MAX_HYPS: dict(patience=0.1),  # round(0.3) = 0 hypotheses kept
        c.CONFIG_EOS_TOKEN_ID: dict(eos_ids=np.array([1, -2])),
        c.CONFIG_PAD_TOKEN_ID: dict(pad_token_id=-2),
        c.CONFIG_VOCAB: dict(vocab=1),
    }
    assert set(bad) | {c.CONFIG_BUFFER} == set(c.CONFIG_ERRORS)
    for code, change in bad.items():
        args = dict(ok, **change)
        assert c.check_config(**args) == code, c.CONFIG_ERRORS[code][0]
        cfg, fcfg = np.full(c.CFG_SIZE + 2, 7), np.full(c.FCFG_SIZE, 7.0)
        assert c.pack_config(cfg, fcfg, **args, renormalize=0) == code
        assert (cfg == 7).all() and (fcfg == 7.0).all()  # untouched on error
        text = c.config_message(code, **dict(args, num_eos=args["eos_ids"].size))
        assert c.CONFIG_ERRORS[code][0].split("_")[0] in text
        fmt, names = c.printf_message(code)
        py_values = tuple(dict(args, num_eos=args["eos_ids"].size)[n] for n in names)
        assert fmt.replace("%lld", "%d") % py_values == text  # C prints what Python raises
    cfg, fcfg = np.zeros(c.CFG_SIZE, np.int64), np.zeros(c.FCFG_SIZE)
    assert c.pack_config(cfg, fcfg, **ok, renormalize=1) == c.CONFIG_BUFFER
    cfg = np.zeros(c.CFG_SIZE + 1, np.int64)
    assert c.pack_config(cfg, fcfg, **ok, renormalize=1) == c.CONFIG_OK
    assert cfg[c.CFG_PAD] == 1 and cfg[c.CFG_MAX_HYPS] == 3 and cfg[c.CFG_CANDIDATES] == 6
    assert cfg[c.CFG_MAX_LEN] == 5 and cfg[c.CFG_RENORMALIZE] == 1 and cfg[c.CFG_EOS] == 1


def test_state_table_drives_layout_and_views():
    """The FIELDS table is the only description of the state: offsets, extents, views."""
    from fastlsm._kernels.decoder import c_constants
    from fastlsm._kernels.decoder import state as s

    cfg = np.zeros(_k.CFG_SIZE + 2, np.int64)
    fcfg = np.zeros(_k.FCFG_SIZE)
    assert pack_config(cfg, fcfg, 2, 3, -1, 4, 5, np.array([1, 7]), -1, 1.0, 0, 2, 0, 0,
                          1.0, 1.5, 0) == 0
    d = s.dims(cfg)
    layout = np.empty(s.LAYOUT_SIZE, np.int64)
    assert s.beam_search_layout(cfg, layout) == 0
    ist = np.empty(layout[s.L_INT_SIZE], np.int64)
    fst = np.empty(layout[s.L_FLOAT_SIZE])
    views = s.state_views(layout, fst, ist)
    assert views._fields == s.NAMES
    spans = {"int64": [], "float64": []}
    for f, (name, dtype, shape, _) in enumerate(s.FIELDS):
        want = tuple(getattr(d, e.strip()) for e in shape.split(","))
        view = getattr(views, name)
        assert view.shape == want and view.dtype == dtype, name
        base = ist if dtype == "int64" else fst
        assert np.shares_memory(view, base), name
        spans[dtype].append((layout[f], layout[f] + view.size))
        assert c_constants()["L_" + name.upper()] == f == getattr(s.F, name)
    for dtype, start in (("int64", s.HEADER), ("float64", 0)):  # packed, in table order
        ends = [start] + [e for _, e in spans[dtype]]
        assert [b for b, _ in spans[dtype]] == ends[:-1]
    assert spans["int64"][-1][1] == ist.size and spans["float64"][-1][1] == fst.size
    assert d.hyps == 6 and d.cands == 12 and d.spec == 2 * 8 + 2  # round(4 * 1.5), 3 * 4


def grammar(vocab, seed, density=0.6):
    """A toy grammar matcher: the allowed tokens depend on each row's last two tokens."""
    table = np.random.default_rng(seed).random((vocab, vocab, vocab)) < density
    table[..., 3] = True  # never an empty row

    def mask(ids, parents):
        prev = ids[:, -2] if ids.shape[1] > 1 else ids[:, -1]
        return naive.pack_bitmask(table[prev, ids[:, -1]])
    return mask


@pytest.mark.parametrize("opts", [
    {}, dict(renormalize=True), dict(repetition_penalty=1.4, no_repeat_ngram_size=2),
    dict(renormalize=True, repetition_penalty=0.8, min_new_tokens=3),
    dict(eos_token_id=[2, 5], num_return_sequences=2, early_stopping="never"),
], ids=str)
def test_token_bitmask_matches_reference(opts):
    for seed in range(2):
        compare({**BASE, **opts, "token_bitmask": grammar(13, seed)}, seed=seed)
        compare({**BASE, **opts, "token_bitmask": grammar(40, seed, 0.2)}, vocab=40, seed=seed,
                dtype=np.float32)


def test_token_bitmask_fixed_and_errors():
    allowed = np.ones(13, bool)
    allowed[[0, 4, 9]] = False
    fixed = naive.pack_bitmask(allowed[None])[0]
    out = compare({**BASE, "token_bitmask": fixed})  # one [W] mask for every row and step
    assert not np.isin(out.sequences[:, 1:], [0, 4, 9]).any()
    ids = np.random.default_rng(1000).integers(0, 13, (3, 3))
    a = fastlsm.beam_search(ToyModel(13, 0), ids, **BASE, token_bitmask=np.full(1, -1, np.int32))
    b = fastlsm.beam_search(ToyModel(13, 0), ids, **BASE)
    assert np.array_equal(a.sequences, b.sequences)
    assert np.array_equal(a.sequences_scores, b.sequences_scores)  # all allowed: same bits

    def late_empty(ids, parents):
        m = np.full((ids.shape[0], 1), -1, np.int32)
        if ids.shape[1] == 3:
            m[4] = np.int32(-(1 << 13))  # only bits >= V = 13 set: no token allowed
        return m
    with pytest.raises(ValueError, match=r"step 2: token_bitmask row 4 \(batch 1, beam 1\) "
                                         r"allows no token of the 13"):
        fastlsm.beam_search(ToyModel(13, 0), [[1], [2]], **BASE, token_bitmask=late_empty)
    with pytest.raises(TypeError, match="step 0: token_bitmask must be int32"):
        fastlsm.beam_search(ToyModel(13, 0), [[1]], **BASE, token_bitmask=np.ones(1))
    with pytest.raises(ValueError, match=r"step 0: token_bitmask has shape \(2, 1\)"):
        fastlsm.beam_search(ToyModel(13, 0), [[1]], **BASE,
                            token_bitmask=np.ones((2, 1), np.int32))


@pytest.mark.parametrize("dtype", [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)],
                         ids=["bfloat16", "float16"])
def test_16_bit_step_logits_are_read_as_they_are(dtype, monkeypatch):
    """A step function returning bfloat16/float16 logits: searched as their exact float32
    values (bitwise the float32 search) with bans, penalties and a bitmask, without a float32
    copy; the returned arrays are restored bit for bit, also after a NaN row's error."""
    opts = dict(BASE, num_return_sequences=2, repetition_penalty=1.3, no_repeat_ngram_size=2,
                min_new_tokens=2, token_bitmask=grammar(40, 3, 0.5))
    kept, seen = [], set()
    advance = _k.beam_search_advance
    monkeypatch.setattr(_k, "beam_search_advance",
                        lambda *a: seen.add(a[4].dtype) or advance(*a))

    model = ToyModel(40, 3)  # deterministic: logits from the ids alone

    def half_model(ids, parents):
        x = model(ids, parents).astype(dtype)
        kept.append((x, x.copy()))
        return x

    for renormalize in (False, True):
        ids = np.random.default_rng(5).integers(0, 40, (2, 3))
        got = fastlsm.beam_search(half_model, ids, renormalize=renormalize, **opts)
        want = fastlsm.beam_search(
            lambda i, p: model(i, p).astype(dtype).astype(np.float32), ids,
            renormalize=renormalize, **opts)
        for name in ("sequences", "sequences_scores", "token_logprobs", "lengths"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert all(np.array_equal(a.view(np.uint16), b.view(np.uint16)) for a, b in kept)
    assert seen == {np.dtype(np.uint16 if dtype.name == "bfloat16" else np.int16),
                    np.dtype(np.float32)}

    def nan_at_a_penalized_token(ids, parents):
        x = np.zeros((ids.shape[0], 40), dtype)
        x.view(np.uint16)[1, ids[1, 0]] = 0x7FC1  # a NaN with a payload, at a prompt token
        kept.append((x, x.copy()))
        return x

    with pytest.raises(ValueError, match=r"step 0: step_fn returned logits with NaN"):
        fastlsm.beam_search(nan_at_a_penalized_token, ids, **dict(opts, token_bitmask=None))
    assert np.array_equal(kept[-1][0].view(np.uint16), kept[-1][1].view(np.uint16))
