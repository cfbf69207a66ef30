"""Beam search with fastlsm: a toy bigram model, then a tiny GPT-2 if transformers is installed.

Run: python examples/beam_search.py
"""

import inspect

import numpy as np

import fastlsm

# 1. Any model is a step function: (sequences [B*K, cur_len], parent rows or None) -> logits.
rng = np.random.default_rng(0)
V, EOS, PAD = 50, 0, 1
bigram = rng.standard_normal((V, V)).astype(np.float32) * 3  # logits of the next token


def step(ids, parents):
    return bigram[ids[:, -1]]


prompts = np.array([[5, 6], [7, 8]])
out = fastlsm.beam_search(step, prompts, num_beams=4, max_new_tokens=12, eos_token_id=EOS,
                          pad_token_id=PAD, num_return_sequences=2, no_repeat_ngram_size=2,
                          repetition_penalty=1.2)
for seq, score, n in zip(out.sequences, out.sequences_scores, out.lengths, strict=True):
    print(f"score {score:8.4f}  generated {n:2d}  {seq.tolist()}")

# 2. The building blocks: one fused beam step and sequence scoring.
logits = rng.standard_normal((2, 4, V)).astype(np.float32)  # [B, K, V]
scores, tokens, beams = fastlsm.beam_step(logits, np.zeros((2, 4), np.float32))
print("best candidates of batch 0:", list(zip(beams[0].tolist(), tokens[0].tolist(), strict=True)))
tok_lp, seq_lp = fastlsm.sequence_logprobs(bigram[out.sequences[:, :-1]],
                                           out.sequences[:, 1:])
print("log p(tokens after the first | bigram):", seq_lp.round(3))

# 2b. Constrained beam search: a token bitmask (xgrammar's layout: bit j % 32 of word j // 32
# set = token j allowed), here "only even tokens, or EOS", the same for every row and step; a
# callable (input_ids, parent_beams) -> mask [B*K, ceil(V / 32)] can change it per step.
allowed = (np.arange(V) % 2 == 0) | (np.arange(V) == EOS)
words = np.zeros((V + 31) // 32, np.uint32)
for j in np.flatnonzero(allowed):
    words[j // 32] |= np.uint32(1) << np.uint32(j % 32)
out = fastlsm.beam_search(step, prompts, num_beams=4, max_new_tokens=12, eos_token_id=EOS,
                          pad_token_id=PAD, token_bitmask=words.view(np.int32))
print("even tokens only:", out.sequences[0].tolist())

# 3. A Hugging Face model, with its KV cache reordered by parent_beams.
try:
    import torch
    import transformers
except ImportError:
    raise SystemExit("(install torch and transformers for the GPT-2 part)") from None

torch.manual_seed(0)
cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=V, n_positions=64,
                              bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                              initializer_range=0.3)
model = transformers.GPT2LMHeadModel(cfg).eval()
CACHE_ARG = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
cache = {}


def gpt2_step(ids, parents):
    with torch.no_grad():
        if parents is None:
            res = model(torch.from_numpy(ids), use_cache=True)
        else:
            cache["kv"].reorder_cache(torch.from_numpy(parents))
            res = model(torch.from_numpy(ids[:, -1:]), use_cache=True, **{CACHE_ARG: cache["kv"]})
    cache["kv"] = res[CACHE_ARG]
    return res.logits[:, -1, :].numpy()


out = fastlsm.beam_search(gpt2_step, prompts, num_beams=3, max_new_tokens=8, eos_token_id=EOS,
                          pad_token_id=PAD, early_stopping=True)
print("GPT-2:", out.sequences.tolist(), out.sequences_scores.round(4).tolist())
