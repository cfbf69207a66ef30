"""Sampled generation with fastlsm.sample: a continuous batch of requests, each with its own
settings and seed, over a tiny Hugging Face GPT-2 built in-process (nothing is downloaded),
printing OpenAI-style logprobs. Then one speculative step with fastlsm.verify_draft.

Run: python examples/sample_generation.py
"""

from __future__ import annotations

import json

import numpy as np
import torch
import transformers

import fastlsm

VOCAB, EOS = 64, 1
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB,
                                 n_positions=64, bos_token_id=0, eos_token_id=EOS,
                                 initializer_range=0.3)  # random weights, peaked logits
model = transformers.GPT2LMHeadModel(config).eval()
draft_model = transformers.GPT2LMHeadModel(config).eval()  # other random weights

# Three requests in one batch, each with its own sampling settings (per-row arrays).
requests = [
    {"prompt": [0, 5, 9], "temperature": 0.0, "seed": 11},  # greedy
    {"prompt": [0, 7, 3], "temperature": 0.8, "top_p": 0.9, "seed": 12},
    {"prompt": [0, 4, 4], "temperature": 1.0, "top_k": 8, "repetition_penalty": 1.3,
     "presence_penalty": 0.5, "seed": 13},
]
defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0}
params = {k: np.array([r.get(k, d) for r in requests]) for k, d in defaults.items()}
seeds = np.array([r["seed"] for r in requests])

ids = torch.tensor([r["prompt"] for r in requests])
logprobs = [[] for _ in requests]
with torch.no_grad():
    for step in range(8):
        logits = model(ids).logits[:, -1].numpy()  # [B, V] float32
        out = fastlsm.sample(logits, **params, history=ids.numpy(), seed=seeds, step=step,
                             num_logprobs=3)
        for b in range(len(requests)):
            logprobs[b].append({
                "token": int(out.tokens[b]),
                "logprob": round(float(out.logprobs[b]), 4),
                "top_logprobs": [
                    {"token": int(t), "logprob": round(float(lp), 4)}
                    for t, lp in zip(out.top_tokens[b], out.top_logprobs[b], strict=True)
                ],
            })
        ids = torch.cat([ids, torch.from_numpy(out.tokens)[:, None]], dim=1)

for b, r in enumerate(requests):
    settings = {k: v for k, v in r.items() if k != "prompt"}
    print(f"request {b} {settings}: tokens {ids[b, len(r['prompt']):].tolist()}")
    print("  logprobs.content[:2] =", json.dumps(logprobs[b][:2]))

# Speculative decoding: a draft model proposes 3 tokens greedily (a deterministic draft:
# draft_logits=None); the target scores them in one forward pass and verify_draft keeps a
# prefix: the emitted tokens follow the target's own sampling distribution exactly.
K = 3
with torch.no_grad():
    proposal = ids
    for _ in range(K):
        nxt = draft_model(proposal).logits[:, -1].argmax(-1)
        proposal = torch.cat([proposal, nxt[:, None]], dim=1)
    target = model(proposal).logits[:, -K - 1 :].numpy()  # predicts the K drafts + a bonus
draft_tokens = proposal[:, -K:].numpy()
ver = fastlsm.verify_draft(target, draft_tokens, **params, history=ids.numpy(), seed=seeds,
                           step=8)
for b in range(len(requests)):
    n = int(ver.num_accepted[b])
    print(f"request {b}: draft {draft_tokens[b].tolist()} -> accepted {n}, emitted "
          f"{ver.tokens[b, : n + 1].tolist()}")
