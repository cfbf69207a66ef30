"""The declared benchmark cases: shapes per family and one :class:`KernelSpec` per kernel.

To add a kernel: write a setup ``(inputs) -> {provider: Provider}`` (``fastlsm`` first,
then ``numpy`` / ``torch`` / ``hf`` where they exist; ``inputs.torch`` is None when PyTorch is
not used), then append a :class:`KernelSpec` to :data:`KERNELS`, with its family's shapes in
:data:`SHAPES` (or its own ``shapes=``). Rows of ``fastlsm bench`` follow this order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import fastlsm

from . import baselines as npb
from .baselines import widened
from .registry import Inputs, KernelSpec, Provider, Setup

CALL = [(1, 8)]  # a call's fixed cost: validation, dispatch, launch
ONE_ROW = [(1, 32000), (1, 128256)]
IN_CACHE = [(64, 32000), (64, 128256)]
LARGE = [(4096, 32000), (512, 128256)]

SHAPES = {
    "normalize": {
        "default": CALL + ONE_ROW + IN_CACHE + LARGE,
        "quick": [(1, 8), (1, 32000), (64, 4096)],
    },
    "cross_entropy": {"default": IN_CACHE + LARGE, "quick": [(128, 4096)]},
    "beam_step": {"default": [(8, 4, 32000), (1, 8, 128256)], "quick": [(2, 4, 1000)]},
    "sequence_logprobs": {"default": [(1, 64, 32000), (8, 512, 32000)], "quick": [(2, 64, 1000)]},
}
"""Shapes per family: [rows, vocab], [B, K, V] for beam_step, [B, T, V] for sequences.

Default: one tiny row (the fixed cost of a call), one row (a server's per-token call),
cache-resident blocks ([64, V]: what a server sees per step) and memory-bound sizes;
``quick``: seconds in all (tests, CI)."""

FRESH_SHAPES = {"default": LARGE, "quick": [(64, 4096)]}
"""Fresh-output log_softmax/softmax: where allocating the output costs (page faults)."""


def _rows(shape: tuple) -> int:
    return math.prod(shape[:-1])


def _copy_bytes(shape: tuple, itemsize: int) -> int:  # logits read, same-size output written
    return 2 * math.prod(shape) * itemsize


def _read_bytes(shape: tuple, itemsize: int) -> int:  # logits read, one value per row written
    return (math.prod(shape) + _rows(shape)) * itemsize


# --------------------------------------------------------------------------- setups


def _beside_numpy(fast: Callable, numpy_fn: Callable, *args: object) -> dict:
    """``fastlsm`` and ``numpy`` providers of ``fast(*args)`` and ``numpy_fn(*args)``."""
    return {
        "fastlsm": Provider(lambda: fast(*args)),
        "numpy": Provider(widened(numpy_fn, *args)),
    }


def _normalizer(name: str, numpy_fn: Callable, out: bool = False) -> Setup:
    """Setup of ``fastlsm.<name>(x)`` (``out=True``: into a preallocated output) beside
    ``numpy_fn`` and ``torch.<name>(x, -1)``, which are given the same output."""

    def setup(inputs: Inputs) -> dict:
        x, fast = inputs.logits(), getattr(fastlsm, name)
        if out:
            o = inputs.out()
            p = {"fastlsm": Provider(lambda: fast(x, out=o))}
            if x.dtype.itemsize > 2:  # NumPy has no 16-bit out= idiom worth timing
                p["numpy"] = Provider(lambda: numpy_fn(x, out=o))
        else:
            p = _beside_numpy(fast, numpy_fn, x)
        if inputs.torch is not None:
            peer, xt = getattr(inputs.torch, name), inputs.tensor(x)
            if out:
                ot = inputs.tensor(o)
                p["torch"] = Provider(lambda: peer(xt, -1, out=ot))
            else:
                p["torch"] = Provider(lambda: peer(xt, -1))
        return p

    return setup


def _cross_entropy(inputs: Inputs) -> dict:
    x, t = inputs.logits(), inputs.targets()
    p = _beside_numpy(fastlsm.cross_entropy, npb.cross_entropy, x, t)
    if inputs.torch is not None:
        import torch.nn.functional as F

        xt, tt = inputs.tensor(x), inputs.tensor(t)
        p["torch"] = Provider(lambda: F.cross_entropy(xt, tt))
    return p


def _cross_entropy_grad(inputs: Inputs) -> dict:
    x, t = inputs.logits(), inputs.targets()
    buf = inputs.out()  # the in-place call overwrites it: refilled (untimed) before every call

    p = {
        "fastlsm": Provider(
            lambda: fastlsm.cross_entropy_with_grad(buf, t, inplace=True),
            prepare=lambda: np.copyto(buf, x),
        ),
        "numpy": Provider(widened(npb.cross_entropy_with_grad, x, t)),
    }
    if inputs.torch is not None:
        import torch.nn.functional as F

        xt, tt = inputs.tensor(x).requires_grad_(), inputs.tensor(t)

        def clear() -> None:
            xt.grad = None

        p["torch"] = Provider(lambda: F.cross_entropy(xt, tt).backward(), prepare=clear)
    return p


def _beam_step(inputs: Inputs) -> dict:
    x = inputs.logits()
    s = inputs.pool.scores(inputs.shape[:2])
    b, k, v = inputs.shape
    p = _beside_numpy(fastlsm.beam_step, npb.beam_step, x, s)
    if inputs.torch is not None:
        torch, xt, st = inputs.torch, inputs.tensor(x), inputs.tensor(s)

        def torch_beam():
            cand = torch.log_softmax(xt, -1) + st[..., None]
            vals, idx = cand.view(b, k * v).topk(2 * k, dim=1)
            return vals, idx % v, idx // v

        p["torch"] = Provider(torch_beam)
    return p


def _sequence_logprobs(inputs: Inputs) -> dict:
    x, tok = inputs.logits(), inputs.targets()
    p = _beside_numpy(fastlsm.sequence_logprobs, npb.sequence_logprobs, x, tok)
    if inputs.torch is not None:
        torch, xt, tt = inputs.torch, inputs.tensor(x), inputs.tensor(tok)

        def torch_seq():
            lp = torch.log_softmax(xt, -1).gather(-1, tt[..., None])[..., 0]
            return lp, lp.sum(-1)

        p["torch"] = Provider(torch_seq)
    return p


# --------------------------------------------------------------------------- sampling

SAMPLING_CASES = {
    "sample_top_p": ({"temperature": 0.7, "top_p": 0.9}, [(1, 128256)], [(1, 4096)]),
    "sample_filters": ({"repetition_penalty": 1.2, "temperature": 0.8, "top_k": 50,
                        "top_p": 0.9, "min_p": 0.05}, [(8, 128256)], [(2, 4096)]),
    "sample_top_p_batch": ({"top_p": 0.9}, [(64, 32000)], [(8, 4096)]),
    "sample_greedy_top5": ({"temperature": 0.0, "num_logprobs": 5}, [(1, 128256)],
                           [(1, 4096)]),
}
"""Issue 12's sampling cases: fastlsm.sample parameters, default and quick shapes. Peers:
``hf``, Hugging Face's processors + ``torch.multinomial``; ``torch``, the same step in plain
PyTorch (greedy: argmax + log_softmax + topk); ``sample_filters`` gets a 256-token history
per row."""


def hf_processors(params: dict) -> list:
    """Hugging Face's logits processors for ``fastlsm.sample``'s parameters, in generate's
    order (repetition penalty, temperature, top-k, top-p, min-p, typical-p); those at their
    off values are left out, as generate does."""
    from transformers.generation import logits_process as lp

    procs = []
    if params.get("repetition_penalty", 1.0) != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(params["repetition_penalty"]))
    if params.get("temperature", 1.0) != 1.0:
        procs.append(lp.TemperatureLogitsWarper(params["temperature"]))
    if params.get("top_k", 0):
        procs.append(lp.TopKLogitsWarper(params["top_k"]))
    if params.get("top_p", 1.0) < 1.0:
        procs.append(lp.TopPLogitsWarper(params["top_p"]))
    if params.get("min_p", 0.0) > 0.0:
        procs.append(lp.MinPLogitsWarper(params["min_p"]))
    if params.get("typical_p", 1.0) < 1.0:
        procs.append(lp.TypicalLogitsWarper(params["typical_p"]))
    return procs


def hf_sampler(torch, params: dict, history):
    """Hugging Face's equivalent of ``fastlsm.sample(x, **params)`` on a tensor ``x``."""
    if params.get("temperature", 1.0) == 0.0:
        def greedy(xt):
            tok = xt.argmax(-1)
            logp = torch.log_softmax(xt, -1)
            return tok, logp.gather(-1, tok[:, None]), logp.topk(params["num_logprobs"], -1)
        return greedy
    procs = hf_processors(params)
    gen = torch.Generator().manual_seed(0)
    ids = torch.from_numpy(history)

    def sampled(xt):
        scores = xt
        for proc in procs:
            scores = proc(ids, scores)
        return torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)

    return sampled


def torch_sampler(torch, params: dict, history):
    """The same step in plain PyTorch (vLLM's style: one sort for top-p), the ``torch`` peer;
    for greedy rows PyTorch's argmax + log_softmax + topk."""
    t = params.get("temperature", 1.0)
    if t == 0.0:
        return hf_sampler(torch, params, history)
    k, top_p, min_p = params.get("top_k", 0), params.get("top_p", 1.0), params.get("min_p", 0.0)
    rp = params.get("repetition_penalty", 1.0)
    ids = torch.from_numpy(history)
    gen = torch.Generator().manual_seed(0)

    def sampled(xt):
        x = xt
        if rp != 1.0:
            seen = x.gather(1, ids)
            x = x.scatter(1, ids, torch.where(seen < 0, seen * rp, seen / rp))
        if t != 1.0:
            x = x / t
        if k:
            x = x.masked_fill(x < x.topk(k, -1).values[:, -1:], -float("inf"))
        if top_p < 1.0:
            sx, si = x.sort(-1, descending=True)
            p = sx.softmax(-1)
            drop = (p.cumsum(-1) - p) >= top_p
            x = x.scatter(1, si, sx.masked_fill(drop, -float("inf")))
        probs = x.softmax(-1)
        if min_p > 0.0:
            probs = probs.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), 0.0)
        return torch.multinomial(probs, 1, generator=gen)

    return sampled


def _sampling(name: str) -> Setup:
    params = SAMPLING_CASES[name][0]

    def setup(inputs: Inputs) -> dict:
        x = inputs.logits()
        b, v = x.shape
        hist = np.random.default_rng(0).integers(0, v, size=(b, 256 if "repetition_penalty"
                                                             in params else 1))
        kw = dict(params, history=hist) if "repetition_penalty" in params else params
        p = {"fastlsm": Provider(lambda: fastlsm.sample(x, seed=1, **kw))}
        if inputs.torch is not None:
            xt = inputs.tensor(x)
            plain = torch_sampler(inputs.torch, params, hist)
            p["torch"] = Provider(lambda: plain(xt))
            if params.get("temperature", 1.0) != 0.0:
                try:
                    run = hf_sampler(inputs.torch, params, hist)
                except ImportError:  # transformers missing: no hf peer
                    return p
                p["hf"] = Provider(lambda: run(xt))
        return p

    return setup


def _sampling_spec(name: str) -> KernelSpec:
    _params, default, quick = SAMPLING_CASES[name]
    return KernelSpec(
        name,
        "sampling",
        label=name,
        ceiling="read",
        nbytes=lambda s, i: math.prod(s) * i,  # the logits, read once
        setup=_sampling(name),
        requires=("sample",),
        shapes={"default": default, "quick": quick},  # every dtype (16-bit: read in place)
        thread_rows=lambda s, dt: fastlsm.sampling._launch_rows(_rows(s), s[-1], dt.itemsize),
    )


# --------------------------------------------------------------------------- the registry


def _normalizer_spec(
    name: str, numpy_fn: Callable, *, out: bool = False, shapes: dict | None = None
) -> KernelSpec:
    read_only = name == "logsumexp"
    return KernelSpec(
        name + ("_out" if out else ""),
        "normalize",
        label=name + ("(out=)" if out else ""),
        ceiling="read" if read_only else "copy",
        nbytes=_read_bytes if read_only else _copy_bytes,
        setup=_normalizer(name, numpy_fn, out),
        shapes=shapes,
        out_twin=None if out or read_only else name + "_out",  # fresh output: beside out=
    )


KERNELS = [
    _normalizer_spec("log_softmax", npb.log_softmax, out=True),
    _normalizer_spec("softmax", npb.softmax, out=True),
    _normalizer_spec("log_softmax", npb.log_softmax, shapes=FRESH_SHAPES),
    _normalizer_spec("softmax", npb.softmax, shapes=FRESH_SHAPES),
    _normalizer_spec("logsumexp", npb.lse),
    KernelSpec(
        "cross_entropy",
        "cross_entropy",
        label="cross_entropy",
        ceiling="read",
        nbytes=lambda s, i: math.prod(s) * i + _rows(s) * 8,  # logits + int64 targets
        setup=_cross_entropy,
        requires=("cross_entropy",),
    ),
    KernelSpec(
        "cross_entropy_grad",
        "cross_entropy",
        label="cross_entropy_with_grad(inplace)",
        ceiling="copy",
        nbytes=lambda s, i: 2 * math.prod(s) * i + _rows(s) * 8,  # logits in, grad over them
        setup=_cross_entropy_grad,
        requires=("cross_entropy_with_grad",),
    ),
    KernelSpec(
        "beam_step",
        "beam_step",
        label="beam_step",
        ceiling="read",
        nbytes=lambda s, i: math.prod(s) * i + s[0] * s[1] * 4,  # logits + float32 scores
        setup=_beam_step,
        requires=("beam_step",),
    ),
    KernelSpec(
        "sequence_logprobs",
        "sequence_logprobs",
        label="sequence_logprobs",
        ceiling="read",
        nbytes=lambda s, i: math.prod(s) * i + _rows(s) * (8 + i),  # logits, tokens, logprobs
        setup=_sequence_logprobs,
        requires=("sequence_logprobs",),
    ),
    *(_sampling_spec(name) for name in SAMPLING_CASES),
]
"""Every benchmarked kernel, in table order."""
