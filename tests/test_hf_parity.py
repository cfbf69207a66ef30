"""Parity with transformers' ``generate(num_beams=..., do_sample=False)`` on a tiny randomly
initialized GPT-2 built in-process (nothing is downloaded)."""

import warnings

import numpy as np
import pytest

import fastlsm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 48


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
        eos_token_id=1, pad_token_id=2, initializer_range=0.3,  # wide logits: no near-ties
    )
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def hf_generate(model, ids, opts):
    ids = torch.from_numpy(ids)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             output_scores=True, return_dict_in_generate=True, **opts)
    return out.sequences.numpy(), out.sequences_scores.numpy()


def make_step(model, calls=None):
    def step(ids, parents):
        if calls is not None:
            calls.append(parents)
        with torch.no_grad():  # the full sequences, no cache; same float32 logits as generate
            return model(torch.from_numpy(ids)).logits[:, -1, :].float().numpy()
    return step


PROMPTS = np.array([[5, 6, 7, 8], [9, 10, 11, 3], [20, 21, 22, 23]])

# EOS ids 23/43/17/36 are tokens this model likes: hypotheses end at different lengths.
CASES = [
    dict(num_beams=3, max_new_tokens=10, eos_token_id=23, pad_token_id=2),
    dict(num_beams=4, max_new_tokens=12, eos_token_id=43, pad_token_id=2, early_stopping=True,
         num_return_sequences=3),
    dict(num_beams=3, max_new_tokens=10, eos_token_id=[17, 36, 23], pad_token_id=5,
         early_stopping="never", num_return_sequences=2, length_penalty=1.5),
    dict(num_beams=4, max_new_tokens=9, eos_token_id=23, pad_token_id=2, length_penalty=-0.5,
         num_return_sequences=4),
    dict(num_beams=3, max_new_tokens=10, eos_token_id=23, pad_token_id=2, min_new_tokens=4,
         no_repeat_ngram_size=2),
    dict(num_beams=3, max_new_tokens=10, eos_token_id=[43, 23], pad_token_id=2,
         repetition_penalty=1.3, num_return_sequences=2),
    dict(num_beams=2, max_new_tokens=8, eos_token_id=43, pad_token_id=2, repetition_penalty=0.8,
         no_repeat_ngram_size=3, early_stopping=True),
    dict(num_beams=5, max_new_tokens=6, eos_token_id=43, pad_token_id=2, length_penalty=0.0,
         early_stopping="never", num_return_sequences=5),
]


@pytest.mark.parametrize("opts", CASES, ids=[str(i) for i in range(len(CASES))])
def test_generate_parity(model, opts):
    seqs, scores = hf_generate(model, PROMPTS, opts)
    got = fastlsm.beam_search(make_step(model), PROMPTS, **opts)
    assert np.array_equal(got.sequences, seqs), (got.sequences, seqs)
    np.testing.assert_allclose(got.sequences_scores, scores, rtol=1e-4, atol=1e-4)
    # the per-token log-probs add up to the unnormalized score
    lp = opts.get("length_penalty", 1.0)
    np.testing.assert_allclose(got.token_logprobs.sum(1) / got.lengths.astype(float) ** lp,
                               got.sequences_scores, rtol=1e-12)


def test_some_cases_end_early(model):
    # guard against a vacuous parity test: EOS is really produced and padding really happens
    got = fastlsm.beam_search(make_step(model), PROMPTS, **CASES[1])
    assert (got.lengths < CASES[1]["max_new_tokens"]).any()
    assert (got.sequences == 2).any()


def test_scores_match_compute_transition_scores(model):
    opts = dict(num_beams=3, max_new_tokens=8, eos_token_id=23, pad_token_id=2,
                num_return_sequences=3, length_penalty=0.0)
    ids = torch.from_numpy(PROMPTS[:2])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             output_scores=True, output_logits=True,
                             return_dict_in_generate=True, **opts)
        trans = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                normalize_logits=False).numpy()
    got = fastlsm.beam_search(make_step(model), PROMPTS[:2], **opts)
    assert np.array_equal(got.sequences, out.sequences.numpy())
    width = got.token_logprobs.shape[1]
    np.testing.assert_allclose(got.token_logprobs, trans[:, :width], rtol=1e-4, atol=1e-4)


def test_parent_beams_reorder_a_kv_cache(model):
    """The intended use of parent_beams: feed one token per step and reorder the model's cache."""
    state = {}

    def step(ids, parents):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # cache argument renamed in 5.x
            if parents is None:
                out = model(torch.from_numpy(ids), use_cache=True)
            else:
                state["cache"].reorder_cache(torch.from_numpy(parents))
                out = model(torch.from_numpy(ids[:, -1:]), past_key_values=state["cache"],
                            use_cache=True)
        state["cache"] = out.past_key_values
        return out.logits[:, -1, :].float().numpy()

    for opts in (CASES[0], CASES[2]):
        seqs, scores = hf_generate(model, PROMPTS, opts)
        got = fastlsm.beam_search(step, PROMPTS, **opts)
        assert np.array_equal(got.sequences, seqs)
        np.testing.assert_allclose(got.sequences_scores, scores, rtol=1e-4, atol=1e-4)


def test_token_bitmask_matches_prefix_allowed_tokens_fn(model):
    """A bitmask bans like transformers' PrefixConstrainedLogitsProcessor: -inf after
    log_softmax, the allowed tokens' log-probs not renormalized."""
    import naive

    table = np.random.default_rng(7).random((VOCAB, VOCAB)) < 0.4
    table[:, 23] = True  # EOS always allowed

    def allowed_tokens(batch_id, ids):
        return np.flatnonzero(table[int(ids[-1])]).tolist()

    def mask(ids, parents):
        return naive.pack_bitmask(table[ids[:, -1]])

    opts = dict(num_beams=3, max_new_tokens=8, eos_token_id=23, pad_token_id=2,
                num_return_sequences=2)
    seqs, scores = hf_generate(model, PROMPTS,
                               dict(opts, prefix_allowed_tokens_fn=allowed_tokens))
    got = fastlsm.beam_search(make_step(model), PROMPTS, **opts, token_bitmask=mask)
    assert np.array_equal(got.sequences, seqs), (got.sequences, seqs)
    np.testing.assert_allclose(got.sequences_scores, scores, rtol=1e-4, atol=1e-4)
    for row, n in zip(got.sequences, got.lengths, strict=True):  # every new token allowed
        assert table[row[3:3 + n], row[4:4 + n]].all()
    assert not table[PROMPTS[:, -1]].all()  # the mask really constrains
