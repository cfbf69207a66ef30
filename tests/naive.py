"""Slow, obviously correct references for fastlsm's tests (import them: ``from naive import ...``).

Every function takes array_like input, computes in float64 (or in ``dtype=np.longdouble``
when a test needs a reference more exact than float64 itself) and returns arrays of that
type. They are written from the definitions, one NumPy expression per step, with the
max-shifted form so that large logits do not overflow, and without any special-casing:
the special values documented in ``fastlsm/normalize.py`` fall out of IEEE arithmetic the
same way they do in PyTorch:

- ``m = max(x)`` propagates NaN (``np.max``), so a NaN anywhere makes its row NaN;
- ``-inf`` entries give ``exp(-inf - m) = 0`` (masked vocabulary);
- a ``+inf`` or an all ``-inf`` row gives ``x - m = inf - inf = NaN`` in log_softmax/softmax;
- logsumexp shifts by 0 when the maximum is infinite (PyTorch, SciPy), so it gives ``+inf``
  and ``-inf`` for those rows, and ``-inf`` for an empty axis.
"""

from __future__ import annotations

import numpy as np


def _moved(x, axis, dtype):
    x = np.moveaxis(np.asarray(x, dtype=dtype), axis, -1)
    return x


def _max_shift(x):
    """Row maxima along the last axis, keepdims, ``-inf`` for empty rows, NaN propagated."""
    return np.max(x, axis=-1, keepdims=True, initial=-np.inf)


def logsumexp(x, axis=-1, *, keepdims=False, dtype=np.float64):
    """``log(sum(exp(x)))`` along ``axis`` as ``m + log(sum(exp(x - m)))``.

    ``m`` is the row maximum when it is finite and 0 otherwise (an all ``-inf`` or empty row
    gives ``-inf``, a ``+inf`` gives ``+inf``, a NaN gives NaN).
    """
    x = _moved(x, axis, dtype)
    m = _max_shift(x)
    shift = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    with np.errstate(all="ignore"):
        out = (np.log(np.sum(np.exp(x - shift), axis=-1, keepdims=True)) + shift)[..., 0]
    if keepdims:
        out = np.moveaxis(out[..., None], -1, axis)
    return out


def exp(x, *, dtype=np.float64):
    """``exp(x)`` computed in ``dtype`` (overflow gives ``inf`` silently).

    Rounded to float32, the float64 result is the correctly rounded float32 ``exp`` (its own
    error is 2**-29 float32 ulp); the reference of a float64 ``exp`` is ``np.longdouble``
    (64-bit mantissa on x86-64).
    """
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, dtype))


def sumexp(x, m, *, dtype=np.longdouble):
    """``sum(exp(x - m))`` over all of ``x`` in ``dtype``, as a Python float; in long double
    (the default) exact enough for float64 sums too."""
    return float(exp(np.asarray(x, dtype) - np.asarray(m, dtype), dtype=dtype).sum())


def sequence_logprobs(logits, tokens, mask=None, *, dtype=np.float64):
    """``(log_softmax(logits)[..., tokens], their sum over the last axis)``; masked -> 0."""
    lp = log_softmax(logits, -1, dtype=dtype)
    tokens = np.asarray(tokens)
    safe = np.where(tokens >= 0, tokens, 0)
    tok = np.take_along_axis(lp, safe[..., None], -1)[..., 0]
    if mask is not None:
        tok = np.where(mask, tok, 0.0)
    return tok, tok.sum(-1)


def log_softmax(x, axis=-1, *, dtype=np.float64):
    """``(x - m) - log(sum(exp(x - m)))`` along ``axis``, ``m`` the row maximum.

    The subtraction of ``m`` comes first, so the entries near the maximum keep every bit.
    """
    x = _moved(x, axis, dtype)
    with np.errstate(all="ignore"):
        d = x - _max_shift(x)
        out = d - np.log(np.sum(np.exp(d), axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def softmax(x, axis=-1, *, dtype=np.float64):
    """``exp(x - m) / sum(exp(x - m))`` along ``axis``, ``m`` the row maximum."""
    x = _moved(x, axis, dtype)
    with np.errstate(all="ignore"):
        e = np.exp(x - _max_shift(x))
        out = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


# ----------------------------------------------------------------------------- losses


CROSS_ENTROPY_OPTIONS = {
    "axis": -1,
    "weight": None,
    "ignore_index": -100,
    "reduction": "mean",
    "label_smoothing": 0.0,
    "z_loss": 0.0,
    "softcap": None,
    "token_weight": None,
    "grad_output": 1.0,
}
"""The options of :func:`cross_entropy` and their defaults (those of fastlsm.cross_entropy)."""


def _options(given, defaults):
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    return {**defaults, **given}


def cross_entropy(x, target, *, return_magnitude=False, **options):
    """Float64 ``(loss, grad, lse)`` written from PyTorch's definitions (plus z_loss,
    softcap and token_weight), options as :data:`CROSS_ENTROPY_OPTIONS`;
    ``return_magnitude`` adds the magnitude of the gradient terms that cancel."""
    o = _options(options, CROSS_ENTROPY_OPTIONS)
    axis, weight, ignore_index, reduction = (
        o["axis"],
        o["weight"],
        o["ignore_index"],
        o["reduction"],
    )
    label_smoothing, z_loss, softcap = o["label_smoothing"], o["z_loss"], o["softcap"]
    token_weight, grad_output = o["token_weight"], o["grad_output"]
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    c = x.shape[-1]
    y = softcap * np.tanh(x / softcap) if softcap else x
    m = y.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(y - m).sum(-1, keepdims=True)))[..., 0]
    lp = y - lse[..., None]
    p = np.exp(lp)
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    tw = np.ones(lse.shape) if token_weight is None else np.asarray(token_weight, np.float64)
    eps = label_smoothing
    target = np.asarray(target)
    if target.dtype.kind == "f":
        q = np.moveaxis(target.astype(np.float64), axis, -1) * (1 - eps) + eps / c
        per = -(q * w * lp).sum(-1) + z_loss * lse**2
        dy = p * ((q * w).sum(-1) + 2 * z_loss * lse)[..., None] - q * w
        coef = (q * w).sum(-1) + 2 * z_loss * np.abs(lse)
        den = tw.sum()
        mask = np.ones(lse.shape, bool)
    else:
        mask = target != ignore_index
        tt = np.where(mask, target, 0)
        lpt = np.take_along_axis(lp, tt[..., None], -1)[..., 0]
        per = (1 - eps) * w[tt] * -lpt + z_loss * lse**2
        dy = (1 - eps) * w[tt][..., None] * p
        np.put_along_axis(
            dy,
            tt[..., None],
            np.take_along_axis(dy, tt[..., None], -1) - (1 - eps) * w[tt][..., None],
            -1,
        )
        if eps > 0:
            per = per + eps / c * -(lp * w).sum(-1)
            dy = dy + eps / c * (w.sum() * p - w)
        dy = dy + 2 * z_loss * lse[..., None] * p
        coef = (1 - eps) * w[tt] + eps * w.sum() / c + 2 * z_loss * np.abs(lse)
        den = (w[tt] * tw * mask).sum()
    per = np.where(mask, per * tw, 0.0)
    dy = np.where(mask[..., None], dy * tw[..., None], 0.0)
    # magnitude of the terms that cancel in dy: tolerances for the gradient scale with it
    mag = np.where(mask[..., None], p * (coef * tw)[..., None], 0.0)
    dy = np.stack([dy, mag])
    if softcap:  # sech**2, not 1 - tanh**2 (which cancels for saturated logits)
        with np.errstate(over="ignore"):
            dy = dy / np.cosh(x / softcap) ** 2
    if reduction == "none":
        loss = per
        g = np.broadcast_to(np.asarray(grad_output, np.float64), per.shape)
        dy = dy * g[..., None]
    elif reduction == "sum":
        loss = per.sum()
        dy = dy * grad_output
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = per.sum() / den
            dy = dy * (grad_output / den) if den != 0 else dy * 0.0
    dy = np.moveaxis(dy, -1, axis + (1 if axis >= 0 else 0))
    if return_magnitude:
        return loss, dy[0], lse, float(np.abs(dy[1]).max()) if dy[1].size else 0.0
    return loss, dy[0], lse


def nll_loss(
    lp, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", token_weight=None
):
    lp = np.moveaxis(np.asarray(lp, np.float64), axis, -1)
    c = lp.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    tw = np.ones(target.shape) if token_weight is None else np.asarray(token_weight, np.float64)
    mask = target != ignore_index
    tt = np.where(mask, target, 0)
    per = np.where(mask, -w[tt] * np.take_along_axis(lp, tt[..., None], -1)[..., 0] * tw, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    with np.errstate(invalid="ignore"):
        return per.sum() / (w[tt] * tw * mask).sum()


# --------------------------------------------------------------------------- beam search


def bitmask_allowed(mask, vocab):
    """bool ``[rows, vocab]`` of an int32 token bitmask ``[rows, ceil(vocab / 32)]`` (bit
    ``j % 32`` of word ``j // 32`` set = token ``j`` allowed: xgrammar's layout)."""
    m = np.asarray(mask).astype(np.int64) & 0xFFFFFFFF
    j = np.arange(vocab)
    return ((m[:, j // 32] >> (j % 32)) & 1).astype(bool)


def pack_bitmask(allowed):
    """The int32 token bitmask ``[rows, ceil(V / 32)]`` of a bool ``[rows, V]`` array."""
    allowed = np.asarray(allowed, bool)
    rows, v = allowed.shape
    out = np.zeros((rows, (v + 31) // 32), np.int64)
    for j in range(v):
        out[:, j // 32] |= allowed[:, j].astype(np.int64) << (j % 32)
    return out.astype(np.uint32).view(np.int32)


def beam_step(logits, beam_scores, num_candidates, token_bitmask=None):
    """``beam_scores + log_softmax(logits)`` ([B, K, V]) and its top ``num_candidates`` per
    batch item: ``(scores, tokens, beams)``; ties by flat index (beam, then token) via a
    stable sort. Tokens the bitmask ``[B * K, ceil(V / 32)]`` disallows get ``-inf`` after
    the log_softmax (transformers' processor order)."""
    x = np.asarray(logits, np.float64)
    b, k, v = x.shape
    lp = log_softmax(x)
    lp = np.where(np.isneginf(x), -np.inf, lp)
    if token_bitmask is not None:
        lp = np.where(bitmask_allowed(token_bitmask, v).reshape(b, k, v), lp, -np.inf)
    scores = (np.asarray(beam_scores, np.float64)[..., None] + lp).reshape(b, k * v)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :num_candidates]
    return np.take_along_axis(scores, order, 1), order % v, order // v


def _beam_processors(seqs, scores, prompt_len, eos, min_new, ngram, rep, allowed):
    """RepetitionPenalty, NoRepeatNGram, MinNewTokensLength processors (in that order), then
    the token bitmask (``allowed`` bool ``[rows, V]`` or None) as -inf."""
    scores = scores.copy()
    n, cur = seqs.shape
    v = scores.shape[1]
    if rep != 1.0:
        for r in range(n):
            toks = np.unique(seqs[r][seqs[r] < v])
            s = scores[r, toks]
            scores[r, toks] = np.where(s < 0, s * rep, s / rep)
    if ngram > 0 and cur >= ngram:
        for r in range(n):
            prefix = seqs[r, cur + 1 - ngram:]
            for st in range(cur - ngram + 1):
                w = seqs[r, st:st + ngram]
                if np.array_equal(w[:-1], prefix) and w[-1] < v:
                    scores[r, w[-1]] = -np.inf
    if cur - prompt_len < min_new:
        scores[:, [e for e in eos if e < v]] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    return scores


def _topk(x, k):
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, order, -1), order


def beam_search(step_fn, input_ids, *, num_beams, max_new_tokens, eos_token_id,
                pad_token_id=None, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, min_new_tokens=0, no_repeat_ngram_size=0,
                repetition_penalty=1.0, patience=1.0, renormalize=False, token_bitmask=None):
    """transformers' ``_beam_search`` (generation/utils.py, transformers 5.x) and its logits
    processors, transcribed in float64 NumPy; returns ``(sequences, scores, token_logprobs,
    lengths, steps)`` as :class:`fastlsm.BeamSearchOutput` holds them. ``token_bitmask``: a
    ``[rows, ceil(V / 32)]`` int32 mask or a callable ``(input_ids, parents) -> mask``."""
    ids = np.asarray(input_ids, np.int64)
    nb, lp = ids.shape
    nk = num_beams
    ml = lp + max_new_tokens
    eos = [] if eos_token_id is None else np.atleast_1d(eos_token_id).tolist()
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else -1)
    nc = max(2, 1 + len(eos)) * nk
    nh = int(round(nk * patience))
    bidx = np.arange(nb)[:, None]

    running = np.full((nb, nk, ml), pad, np.int64)
    running[:, :, :lp] = ids[:, None, :]
    run_logp = np.zeros((nb, nk, max_new_tokens))
    run_scores = np.zeros((nb, nk))
    run_scores[:, 1:] = -1e9
    fin_seqs = np.full((nb, nh, ml), pad, np.int64)
    fin_logp = np.zeros((nb, nh, max_new_tokens))
    fin_len = np.zeros((nb, nh), np.int64)
    fin_scores = np.full((nb, nh), -1e9)
    is_fin = np.zeros((nb, nh), bool)
    unsatisfied = np.ones(nb, bool)
    cur = lp
    parents = None
    steps = 0
    while True:
        flat = running[:, :, :cur].reshape(nb * nk, cur)
        logits = np.asarray(step_fn(flat.copy(), parents), np.float64)
        v = logits.shape[1]
        mask = token_bitmask(flat.copy(), parents) if callable(token_bitmask) else token_bitmask
        allowed = None if mask is None else bitmask_allowed(
            np.broadcast_to(mask, (nb * nk, (v + 31) // 32)), v)
        args = (lp, eos, min_new_tokens, no_repeat_ngram_size, repetition_penalty, allowed)
        if renormalize:
            logp = log_softmax(_beam_processors(flat, logits, *args))
        else:
            logp = _beam_processors(flat, log_softmax(logits), *args)
        logp = logp.reshape(nb, nk, v)
        acc = (logp + run_scores[..., None]).reshape(nb, nk * v)
        top_scores, order = _topk(acc, nc)
        beam, tok = order // v, order % v
        top_seqs = running[bidx, beam].copy()
        top_seqs[:, :, cur] = tok
        top_logp = run_logp[bidx, beam].copy()
        top_logp[:, :, cur - lp] = logp[bidx, beam, tok]
        hits = (cur + 1 >= ml) | np.isin(tok, eos)

        adj = top_scores + hits * -1e9
        _, sel = _topk(adj, nk)
        new_running = top_seqs[bidx, sel]
        new_run_logp = top_logp[bidx, sel]
        new_scores = np.take_along_axis(adj, sel, 1)
        parents = (bidx * nk + np.take_along_axis(beam, sel, 1)).reshape(-1)

        just = hits & (np.arange(nc) < nk)[None]
        norm = top_scores / float(cur + 1 - lp) ** length_penalty
        full = is_fin.all(1) & (early_stopping is True)
        norm = norm + full[:, None] * -1e9 + (~unsatisfied)[:, None] * -1e9 + (~just) * -1e9
        m_scores, msel = _topk(np.concatenate([fin_scores, norm], 1), nh)
        fin_seqs = np.concatenate([fin_seqs, top_seqs], 1)[bidx, msel]
        fin_logp = np.concatenate([fin_logp, top_logp], 1)[bidx, msel]
        fin_len = np.concatenate([fin_len, np.full((nb, nc), cur + 1 - lp)], 1)[bidx, msel]
        is_fin = np.concatenate([is_fin, just], 1)[bidx, msel]
        fin_scores = m_scores
        running, run_logp, run_scores = new_running, new_run_logp, new_scores
        cur += 1
        steps += 1

        if early_stopping == "never" and length_penalty > 0:
            best_len = ml - lp
        else:
            best_len = cur - lp
        best = run_scores[:, 0] / best_len ** length_penalty
        worst = np.where(is_fin, fin_scores.min(1, keepdims=True), -1e9)
        unsatisfied = unsatisfied & (best[:, None] > worst).any(1)
        if not unsatisfied.any() or (is_fin.all() and early_stopping is True) or cur >= ml:
            break

    r = num_return_sequences
    seqs = fin_seqs[:, :r].reshape(nb * r, ml)
    lens = fin_len[:, :r].reshape(-1)
    total = lp + lens.max()
    logps = fin_logp[:, :r].reshape(nb * r, -1)[:, :total - lp]
    logps = np.where(np.arange(total - lp)[None] < lens[:, None], logps, 0.0)
    return seqs[:, :total], fin_scores[:, :r].reshape(-1), logps, lens, steps


# ------------------------------------------------------------------ 16-bit data (issue 11)
# bfloat16 / float16 results are checked in ulps of their dtype against the float64
# reference computed from the 16-bit input values and then correctly rounded to that dtype.


def _ordinal(a):
    """Each 16-bit value's position on the number line of its dtype (+0 and -0 both 0):
    neighbouring values differ by 1, ``inf`` is one step past the largest finite value."""
    b = np.asarray(a).view(np.uint16).astype(np.int64)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def _from_ordinal(k, dtype):
    bits = np.where(k < 0, 0x8000 | -k, k).astype(np.uint16)
    return bits.view(dtype)


def round_to(ref, dtype):
    """float64 ``ref`` rounded to the 16-bit ``dtype`` to nearest, ties to even, in one step.

    (Converting through float32 can round twice.) Candidates are the value a conversion
    gives and its two neighbours; the nearest to ``ref`` wins, an exact tie goes to the even
    bit pattern. Differences are exact in float64 (each candidate is within a factor 2 of
    ``ref``). NaN stays NaN; beyond the largest finite value rounding follows IEEE (to inf
    from half an ulp past it).
    """
    ref = np.asarray(ref, np.float64)
    with np.errstate(all="ignore"):
        guess = ref.astype(np.float32).astype(dtype)
    k = _ordinal(guess)
    best, best_err = guess, np.full(ref.shape, np.inf)
    inf_k = int(_ordinal(np.asarray(np.inf, dtype)))
    for step in (-1, 0, 1):
        cand = _from_ordinal(np.clip(k + step, -inf_k, inf_k), dtype)
        c64 = cand.astype(np.float64)
        with np.errstate(all="ignore"):
            err = np.abs(c64 - ref)
        if np.isinf(c64).any():  # inf is nearest from half an ulp past the maximum on
            top_k = _ordinal(np.asarray(np.finfo(dtype).max, dtype))
            top = float(_from_ordinal(top_k, dtype).astype(np.float64))
            half_ulp = (top - float(_from_ordinal(top_k - 1, dtype).astype(np.float64))) / 2
            err = np.where(np.isinf(c64), np.where(np.sign(c64) * ref >= top + half_ulp, 0.0,
                                                   np.inf), err)
        even = (cand.view(np.uint16) & 1) == 0
        better = (err < best_err) | ((err == best_err) & even)
        best = np.where(better, cand, best)
        best_err = np.where(better, err, best_err)
    zero = np.where(np.signbit(ref), np.asarray(-0.0, dtype), np.asarray(0.0, dtype))
    best = np.where(best.astype(np.float64) == 0, zero, best)  # a zero keeps ref's sign
    return np.where(np.isnan(ref), np.asarray(np.nan, dtype), best).astype(dtype)


def ulp_error(got, ref):
    """Distance in ulps of ``got``'s 16-bit dtype between ``got`` and ``round_to(ref)``:
    0 for equal values (and for NaN against NaN), ``inf`` when one of them is NaN and the
    other is not."""
    got = np.asarray(got)
    want = round_to(ref, got.dtype)
    nan_got, nan_want = np.isnan(got.astype(np.float32)), np.isnan(want.astype(np.float32))
    dist = np.abs(_ordinal(got) - _ordinal(want)).astype(np.float64)
    return np.where(nan_got | nan_want, np.where(nan_got & nan_want, 0.0, np.inf), dist)


# ================================================================ sampling (fastlsm.sampling)
# Hugging Face's processors restated in float64 NumPy with full stable sorts, one row at a time.


def _row_param(value, i):
    a = np.asarray(value)
    return a.item() if a.ndim == 0 else a[i].item()


def sampling_logits(logits, *, repetition_penalty=1.0, frequency_penalty=0.0,
                    presence_penalty=0.0, history=None, logit_bias=None, token_bitmask=None):
    """Steps 1-4 of ``fastlsm.sampling``'s order on [B, V] logits: mask, bias, penalties."""
    x = np.array(logits, dtype=np.float64)
    nb, nv = x.shape
    for i in range(nb):
        if token_bitmask is not None:
            x[i, ~bitmask_allowed(token_bitmask[i : i + 1], nv)[0]] = -np.inf
        if logit_bias is not None:
            if isinstance(logit_bias, dict):
                for j, b in logit_bias.items():
                    x[i, j] += b
            else:
                bias = np.asarray(logit_bias, np.float64)
                x[i] += bias if bias.ndim == 1 else bias[i]
        if history is not None:
            h = np.asarray(history[i])
            ids, counts = np.unique(h[h >= 0], return_counts=True)
            rp = _row_param(repetition_penalty, i)
            v = x[i, ids]
            v = np.where(v < 0, v * rp, v / rp)
            v = v - _row_param(frequency_penalty, i) * counts - _row_param(presence_penalty, i)
            x[i, ids] = v
    return x


def _softmax1(s):
    with np.errstate(all="ignore"):
        e = np.exp(s - np.max(s))
        return e / e.sum()


def warp_row(s, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0):
    """HF's warpers in generate's order on one float64 row, ``-inf`` where filtered
    (``min_tokens_to_keep=1``). ``temperature == 0``: only the first argmax stays."""
    s = np.array(s, dtype=np.float64)
    if temperature == 0:
        out = np.full_like(s, -np.inf)
        j = int(np.argmax(s))
        out[j] = s[j]
        return out
    s = s / temperature
    if top_k > 0:
        k = min(top_k, s.size)
        kth = np.sort(s)[::-1][k - 1]
        s = np.where(s < kth, -np.inf, s)
    if top_p < 1.0:
        order = np.argsort(s, kind="stable")
        cum = np.cumsum(_softmax1(s[order]))
        remove = cum <= 1 - top_p
        remove[-1] = False
        s[order[remove]] = -np.inf
    if min_p > 0.0:
        p = _softmax1(s)
        remove = p < min_p * p.max()
        remove[np.argmax(p)] = False
        s = np.where(remove, -np.inf, s)
    if typical_p < 1.0:
        with np.errstate(all="ignore"):
            lp = s - np.max(s)
            lp = lp - np.log(np.exp(lp).sum())
            p = np.exp(lp)
            ent = -np.nansum(lp * p)
            key = np.abs(-lp - ent)
        order = np.argsort(key, kind="stable")
        cum = np.cumsum(_softmax1(s[order]))
        last = min(int(np.sum(cum < typical_p)), s.size - 1)
        remove = key[order] > key[order][last]
        remove[0] = False
        s[order[remove]] = -np.inf
    return s


def sampling_distribution(logits, **params):
    """Processed log-probabilities [B, V] (float64) of ``fastlsm.sample``'s parameters:
    ``log_softmax`` of the warped row, ``-inf`` where filtered; a greedy row has 0 at its
    first argmax."""
    pre = {k: params.pop(k) for k in ("repetition_penalty", "frequency_penalty",
                                      "presence_penalty", "history", "logit_bias",
                                      "token_bitmask") if k in params}
    x = sampling_logits(logits, **pre)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        w = warp_row(x[i], **{k: _row_param(v, i) for k, v in params.items()})
        if _row_param(params.get("temperature", 1.0), i) == 0:
            out[i] = np.where(np.isfinite(w), 0.0, -np.inf)
        else:
            out[i] = log_softmax(w)
    return out


def verify_first_token_distribution(target_logits, **params):
    """The distribution of the first emitted token of speculative verification: the target's
    processed distribution at position 0, whatever the draft."""
    return np.exp(sampling_distribution(np.asarray(target_logits)[:, 0], **params))


def block_maxima(x, block):
    """Maximum of each ``block``-element block of a 1-D row, NaN ignored (``-inf`` for a
    block without a number), in float64."""
    x = np.asarray(x, np.float64)
    out = []
    for start in range(0, x.size, block):
        b = x[start:start + block]
        b = b[~np.isnan(b)]
        out.append(b.max() if b.size else -np.inf)
    return np.array(out)


def ranked(pairs, cap):
    """The ``cap`` best ``(value, id)`` pairs: value descending, then id ascending."""
    return sorted(pairs, key=lambda p: (-p[0], p[1]))[:cap]
