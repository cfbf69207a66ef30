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


def cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    dtype=np.float64,
):
    """PyTorch's ``F.cross_entropy`` with class-index targets, class axis last.

    ``logits`` is ``[..., C]``, ``target`` an integer array of the batch shape. Returns
    ``(loss, grad)``: ``loss`` is per-position (``reduction="none"``, 0 at ignored
    positions) or a scalar (``"sum"``, ``"mean"``); ``grad`` is the gradient of
    ``loss.sum()`` (for ``"none"``) or of ``loss`` with respect to ``logits``.

    Definitions (``w`` = class weights, default 1; ``eps`` = label smoothing; ``lp`` =
    log_softmax(logits); positions with ``target == ignore_index`` contribute nothing)::

        nll_i    = -w[t_i] * lp[i, t_i]
        smooth_i = -sum_c w[c] * lp[i, c] / C
        loss_i   = (1 - eps) * nll_i + eps * smooth_i
        "mean"   = sum_i loss_i / sum_i w[t_i]     (NaN when every position is ignored)

    and ``d loss_i / d logits[i] = (1 - eps) * w[t_i] * (p_i - onehot(t_i))
    + eps / C * (sum_c w[c] * p_i - w)`` with ``p_i = softmax(logits[i])``.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    x = np.asarray(logits, dtype=dtype)
    c = x.shape[-1]
    target = np.asarray(target)
    w = np.ones(c, dtype) if weight is None else np.asarray(weight, dtype)
    keep = target != ignore_index
    t = np.where(keep, target, 0)
    lp = log_softmax(x, -1, dtype=dtype)
    p = np.exp(lp)
    eps = float(label_smoothing)
    lp_t = np.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
    w_t = np.where(keep, w[t], 0)
    nll = -w_t * lp_t
    smooth = -np.sum(w * lp, axis=-1) / c
    loss = np.where(keep, (1 - eps) * nll + eps * smooth, 0)
    onehot = np.zeros_like(x)
    np.put_along_axis(onehot, t[..., None], 1, axis=-1)
    # d smooth_i / d x_ij = -sum_c w_c (delta_cj - p_ij) / C = (sum(w) * p_ij - w_j) / C
    grad = (1 - eps) * w_t[..., None] * (p - onehot) + eps / c * (np.sum(w) * p - w)
    grad = np.where(keep[..., None], grad, 0)
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return np.sum(loss), grad
    with np.errstate(all="ignore"):
        den = np.sum(w_t)
        return np.sum(loss) / den, grad / den


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
