"""Fused sampling and speculative-draft verification over ``[rows, V]`` logits.

Entry kernels for Python and the C ABI: :func:`sample_rows`, :func:`verify_rows`.

Per row, in Hugging Face generate's order (see ``fastlsm.sampling`` for the table):

1. the processed logits ``r``: the row itself when nothing modifies it, else one pass into a
   float64 row buffer (:func:`materialize`): token bitmask (``-inf``), logit bias, repetition
   penalty, frequency/presence penalties over the history;
2. the row state (:func:`row_state`), a few float64 numbers that describe the kept set and
   its mass exactly, without sorting the row: ``max``, argmax, a value threshold with a
   tie rule (top-k, top-p), the min-p ratio and the typical-p band, found by bucket
   histograms (``select``);
3. one uniform from Philox (keyed by the row's seed, counter ``(step, row, draw)``), and the
   token by inverse CDF over the kept tokens in id order (:func:`pick`).

``d = (r - max) / temperature`` is computed by one function (:func:`shifted`) everywhere, and
each kept token's mass ``exp(d)`` by one exp (``math.fexp`` in float64), so the sums that
find a threshold and those that pick a token see the same numbers. Every loop runs in token
order or bucket order: the same bits for any thread count.

Kernels never raise: a row with no allowed token or with NaN / ``+inf`` gets a nonzero
status (:data:`NO_TOKEN`, :data:`BAD_VALUE`) and its outputs are not written.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import kernel
from .math import fexp, flog
from .normalize import chunk_rows, row_chunks, row_lse, row_max
from .philox import uniform
from .select import NB, bucket, crossing, push_top, sort_asc, sort_desc

# columns of the per-row parameter array
P_T, P_K, P_P, P_MINP, P_TYP, P_REP, P_FREQ, P_PRES = range(8)
NPARAM = 8
# fields of a row state
S_T, S_M, S_ARG, S_LO, S_TIE, S_MINP, S_C, S_BAND, S_Z, S_LOGZ = range(10)
NSTATE = 10

OK = 0
NO_TOKEN = 1  # every token masked or -inf
BAD_VALUE = 2  # a NaN or +inf among the processed logits


@kernel
def load(row, j):
    """The one place that reads a logit: element ``j`` of ``row`` as float64."""
    return np.float64(row[j])


@kernel
def allowed(mask, j):
    """Bit ``j % 32`` of word ``j // 32`` of an int32 bitmask row (set = allowed)."""
    return (np.int64(mask[j >> 5]) >> (j & 31)) & 1 == 1


@kernel
def penalized(v, count, p):
    """A logit seen ``count > 0`` times in the history: HF's repetition penalty, then OpenAI's
    frequency and presence penalties."""
    rep = p[P_REP]
    if rep != 1.0:
        v = v * rep if v < 0.0 else v / rep
    return v - p[P_FREQ] * count - p[P_PRES]


@kernel
def needs_buffer(bias, mask, nhist, p):
    """Whether the processed row differs from the logits (then it is materialized)."""
    pen = p[P_REP] != 1.0 or p[P_FREQ] != 0.0 or p[P_PRES] != 0.0
    return bias is not None or mask is not None or (nhist > 0 and pen)


@kernel
def materialize(x, out, bias, mask, hist, extra, nextra, p, counts):
    """``out`` = the processed logits of row ``x`` (steps 1-4 of the order): masked tokens
    ``-inf``, ``bias`` added (a float64 row or None), then the penalties for every token of
    ``hist`` (ids ``< 0`` are padding) and of ``extra[:nextra]``. ``counts`` is an int32 row of
    zeros (left zero)."""
    for j in range(x.size):
        out[j] = load(x, j)
    if bias is not None:
        for j in range(x.size):
            out[j] = out[j] + bias[j]
    if mask is not None:
        for j in range(x.size):
            if not allowed(mask, j):
                out[j] = -np.inf
    if not (p[P_REP] != 1.0 or p[P_FREQ] != 0.0 or p[P_PRES] != 0.0):
        return
    for h in hist:
        if h >= 0:
            counts[h] += 1
    for i in range(nextra):
        counts[extra[i]] += 1
    for h in hist:
        if h >= 0 and counts[h] > 0:
            out[h] = penalized(out[h], counts[h], p)
            counts[h] = 0
    for i in range(nextra):
        h = extra[i]
        if counts[h] > 0:
            out[h] = penalized(out[h], counts[h], p)
            counts[h] = 0


@kernel
def shifted(v, st):
    """``d = (v - max) / temperature``: the log of a token's unnormalized probability."""
    return (v - st[S_M]) / st[S_T]


@kernel
def typical_key(d, st):
    """Distance of a token's surprisal from the entropy: ``|-log p - H| = |d - E[d]|``."""
    return abs(d - st[S_C])


@kernel
def kept(v, j, st):
    """Whether token ``j`` with processed logit ``v`` survives every filter of ``st``."""
    if st[S_T] == 0.0:
        return j == st[S_ARG]
    lo = st[S_LO]
    if v == -np.inf or v < lo or (v == lo and j < st[S_TIE]):
        return False
    if st[S_MINP] > 0.0 or st[S_BAND] < np.inf:
        d = shifted(v, st)
        if st[S_MINP] > 0.0 and fexp(d) < st[S_MINP]:
            return False
        if typical_key(d, st) > st[S_BAND]:
            return False
    return True


@kernel
def key_of(v, st, typical):
    """The sort key of a histogram: ``-d`` (descending probability) or the typical key."""
    d = shifted(v, st)
    return typical_key(d, st) if typical else -d


@kernel
def histogram(r, st, typical, cnt, mass):
    """Counts and masses ``exp(d)`` of the kept tokens per bucket of their key."""
    cnt[:] = 0
    mass[:] = 0.0
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, st):
            b = bucket(key_of(v, st, typical))
            cnt[b] += 1
            mass[b] += fexp(shifted(v, st))


@kernel
def gather(r, st, typical, b, n):
    """Values and ids (in id order) of the ``n`` kept tokens in bucket ``b``."""
    vals = np.empty(n, np.float64)
    ids = np.empty(n, np.int64)
    i = 0
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, st) and bucket(key_of(v, st, typical)) == b:
            vals[i] = v
            ids[i] = j
            i += 1
    return vals, ids


@kernel
def apply_top_k(r, st, k, cnt, mass):
    """Keep the tokens at least as large as the k-th largest (HF: all ties kept)."""
    histogram(r, st, False, cnt, mass)
    b, before = crossing(cnt, np.float64(k))
    if b < 0:  # fewer than k tokens allowed: nothing to remove
        return
    vals, ids = gather(r, st, False, b, cnt[b])
    order = np.empty(vals.size, np.int64)
    sort_desc(vals, ids, vals.size, order)
    st[S_LO] = vals[order[k - np.int64(before) - 1]]
    st[S_TIE] = 0.0


@kernel
def apply_top_p(r, st, top_p, cnt, mass):
    """Keep the tokens whose mass strictly above them (descending probability, equal values
    by decreasing id: HF's stable ascending sort) is below ``top_p``; the top one always."""
    histogram(r, st, False, cnt, mass)
    target = top_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:
        return
    vals, ids = gather(r, st, False, b, cnt[b])
    order = np.empty(vals.size, np.int64)
    sort_desc(vals, ids, vals.size, order)
    acc = before
    last = order[0]
    for i in range(vals.size):
        o = order[i]
        if not acc < target:
            break
        last = o
        acc += fexp(shifted(vals[o], st))
    st[S_LO] = vals[last]
    st[S_TIE] = np.float64(ids[last])


@kernel
def apply_typical(r, st, mass_p, cnt, mass):
    """HF's typical-p: the tokens closest to the entropy (by ``|d - E[d]|``) holding
    ``mass_p``, all ties of the last one included."""
    z = 0.0
    zd = 0.0
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, st):
            d = shifted(v, st)
            e = fexp(d)
            z += e
            zd += e * d
    st[S_C] = zd / z
    histogram(r, st, True, cnt, mass)
    target = mass_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:  # rounding: HF's clamp to the last position keeps everything
        return
    vals, _ids = gather(r, st, True, b, cnt[b])
    n = vals.size
    keys = np.empty(n, np.float64)
    for i in range(n):
        keys[i] = typical_key(shifted(vals[i], st), st)
    order = np.empty(n, np.int64)
    sort_asc(keys, n, order)
    acc = before
    band = keys[order[n - 1]]
    for i in range(n):
        o = order[i]
        acc += fexp(shifted(vals[o], st))
        if acc >= target:
            band = keys[o]
            break
    st[S_BAND] = band


@kernel
def kept_mass(r, st):
    """``sum(exp(d))`` over the kept tokens, in id order (the order of :func:`pick`)."""
    z = 0.0
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, st):
            z += fexp(shifted(v, st))
    return z


@kernel
def row_state(r, p, st, cnt, mass):
    """Fill ``st`` for processed row ``r`` and parameters ``p``; returns a status."""
    nv = r.size
    bad = 0
    for j in range(nv):
        v = load(r, j)
        if not v < np.inf:  # NaN or +inf
            bad += 1
    if bad:
        return BAD_VALUE
    m = np.float64(row_max(r))
    if m == -np.inf:
        return NO_TOKEN
    arg = 0
    while load(r, arg) != m:
        arg += 1
    st[S_M] = m
    st[S_ARG] = arg
    st[S_LO] = -np.inf
    st[S_TIE] = 0.0
    st[S_MINP] = 0.0
    st[S_C] = 0.0
    st[S_BAND] = np.inf
    st[S_T] = p[P_T]
    if p[P_T] == 0.0:
        st[S_Z] = 1.0
        st[S_LOGZ] = 0.0
        return OK
    k = np.int64(p[P_K])
    if 0 < k < nv:
        apply_top_k(r, st, k, cnt, mass)
    if p[P_P] < 1.0:
        apply_top_p(r, st, p[P_P], cnt, mass)
    st[S_MINP] = p[P_MINP]
    if p[P_TYP] < 1.0:
        apply_typical(r, st, p[P_TYP], cnt, mass)
    z = kept_mass(r, st)
    st[S_Z] = z
    st[S_LOGZ] = flog(z)
    return OK


@kernel
def prob(r, st, j):
    """The processed probability of token ``j``."""
    v = load(r, j)
    if not kept(v, j, st):
        return 0.0
    if st[S_T] == 0.0:
        return 1.0
    return fexp(shifted(v, st)) / st[S_Z]


@kernel
def processed_logprob(v, j, st):
    """log of the processed probability of token ``j`` with processed logit ``v``."""
    if not kept(v, j, st):
        return -np.inf
    if st[S_T] == 0.0:
        return 0.0
    return shifted(v, st) - st[S_LOGZ]


@kernel
def pick(r, st, u):
    """Inverse CDF: the first kept token (id order) whose cumulative mass exceeds ``u * Z``."""
    if st[S_T] == 0.0:
        return np.int64(st[S_ARG])
    target = u * st[S_Z]
    acc = 0.0
    last = np.int64(st[S_ARG])
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, st):
            acc += fexp(shifted(v, st))
            last = j
            if acc > target:
                return np.int64(j)
    return last


@kernel
def top_n(src, st, raw, vals, ids):
    """The ``vals.size`` best tokens of ``src`` into ``vals/ids``, best first, ties to the lower
    id (raw: by logit; processed: kept tokens by logit, then the others as ``-inf``)."""
    if vals.size == 0:
        return
    count = 0
    for j in range(src.size):
        v = load(src, j)
        if not raw and not kept(v, j, st):
            v = -np.inf
        count = push_top(vals, ids, count, v, j)


@kernel
def logprob_outputs(src, st, raw, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp):
    """Chosen, top-N and requested log-probabilities of row ``i``. ``raw``: ``src`` is the
    logits row, under ``log_softmax``; else ``src`` is the processed row, under the kept
    distribution of ``st``."""
    lse = row_lse(src) if raw else 0.0
    nt = top_tok.shape[1]
    row = lp_ids[min(i, lp_ids.shape[0] - 1)]
    vals = np.empty(nt, np.float64)
    ids = np.empty(nt, np.int64)
    top_n(src, st, raw, vals, ids)
    for n in range(nt + 1 + row.size):
        j = tok if n == 0 else (ids[n - 1] if n <= nt else row[n - 1 - nt])
        v = load(src, j)
        lp = v - lse if raw else processed_logprob(v, j, st)
        if n == 0:
            logprobs[i] = lp
        elif n <= nt:
            top_tok[i, n - 1] = j
            top_lp[i, n - 1] = lp
        else:
            id_lp[i, n - 1 - nt] = lp


@kernel(parallel=True)
def sample_rows(x, bias, mask, hist, params, seeds, steps, ctr, raw, lp_ids,
                tokens, logprobs, top_tok, top_lp, id_lp, status):
    """Sample one token per row of ``x`` ``[B, V]`` (float32/float64, C-contiguous).

    bias: float64 ``[1 or B, V]`` or None; mask: int32 ``[B, ceil(V/32)]`` or None; hist:
    int64 ``[B, L]`` (``-1`` padding, ids checked by the caller); params: float64
    ``[B, NPARAM]``; seeds, steps, ctr: uint64 ``[B]`` (Philox key, counter words 0-1 and 2);
    raw: bool; lp_ids: int64 ``[1 or B, M]``. Outputs: tokens int64 ``[B]``, logprobs
    ``[B]``, top_tok int64 ``[B, N]``, top_lp ``[B, N]``, id_lp ``[B, M]``, status int64
    ``[B]`` (:data:`OK` or the row's error; its outputs are then not written).
    """
    nb, nv = x.shape
    nchunk = row_chunks(nb)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nb)
        work = np.empty(nv, np.float64)
        counts = np.zeros(nv if hist.shape[1] > 0 else 0, np.int32)
        cnt = np.empty(NB, np.int64)
        mass = np.empty(NB, np.float64)
        st = np.empty(NSTATE, np.float64)
        for i in range(r0, r1):
            p = params[i]
            bi = None if bias is None else bias[min(i, bias.shape[0] - 1)]
            mi = None if mask is None else mask[i]
            if needs_buffer(bi, mi, hist.shape[1], p):
                materialize(x[i], work, bi, mi, hist[i], hist[i], 0, p, counts)
                r = work
                s = row_state(r, p, st, cnt, mass)
                if s == OK:
                    tok = pick(r, st, uniform(seeds[i], steps[i], ctr[i], np.uint64(0)))
                    tokens[i] = tok
                    if raw:
                        logprob_outputs(x[i], st, raw, tok, i, logprobs, lp_ids, top_tok,
                                        top_lp, id_lp)
                    else:
                        logprob_outputs(r, st, raw, tok, i, logprobs, lp_ids, top_tok,
                                        top_lp, id_lp)
            else:
                s = row_state(x[i], p, st, cnt, mass)
                if s == OK:
                    tok = pick(x[i], st, uniform(seeds[i], steps[i], ctr[i], np.uint64(0)))
                    tokens[i] = tok
                    logprob_outputs(x[i], st, raw, tok, i, logprobs, lp_ids, top_tok,
                                    top_lp, id_lp)
            status[i] = s


@kernel
def draft_prob(rd, st_d, has_draft, tok, j):
    """The draft's probability of token ``j``: one-hot at ``tok`` without draft logits."""
    if not has_draft:
        return 1.0 if j == tok else 0.0
    return prob(rd, st_d, j)


@kernel
def residual_pick(rt, st_t, rd, st_d, has_draft, tok, u):
    """A token from ``max(0, p - q)`` normalized (``q`` from :func:`draft_prob`); from ``p``
    when the residual has no mass (``p == q`` up to rounding)."""
    total = 0.0
    for j in range(rt.size):
        q = draft_prob(rd, st_d, has_draft, tok, j)
        total += max(0.0, prob(rt, st_t, j) - q)
    if not total > 0.0:
        return pick(rt, st_t, u)
    target = u * total
    acc = 0.0
    last = -1
    for j in range(rt.size):
        q = draft_prob(rd, st_d, has_draft, tok, j)
        w = max(0.0, prob(rt, st_t, j) - q)
        if w > 0.0:
            acc += w
            last = j
            if acc > target:
                return np.int64(j)
    return np.int64(last)


@kernel
def processed_row(x, work, bias, mask, hist, draft, i, p, counts, st, cnt, mass):
    """The processed row for position ``i`` of a draft (history + ``draft[:i]``) and its
    state: ``(row, status)``; ``row`` is ``x`` itself or ``work``."""
    if needs_buffer(bias, mask, hist.size + i, p):
        materialize(x, work, bias, mask, hist, draft, i, p, counts)
        return work, row_state(work, p, st, cnt, mass)
    for j in range(x.size):  # one row type for both branches: a float64 copy
        work[j] = load(x, j)
    return work, row_state(work, p, st, cnt, mass)


@kernel(parallel=True)
def verify_rows(tl, dl, draft, bias, mask, hist, params, seeds, steps, ctr,
                num_acc, out, status):
    """Speculative rejection sampling (Leviathan et al. 2023, Chen et al. 2023).

    tl: target logits ``[B, K+1, V]``; dl: draft logits ``[B, K, V]`` or None (a
    deterministic draft); draft: int64 ``[B, K]`` (ids checked by the caller); bias, hist,
    params, seeds, steps, ctr as in :func:`sample_rows` (the penalties at position ``i`` count
    ``hist[b]`` and ``draft[b, :i]``); mask: int32 ``[B, K+1, W]`` or None. Outputs:
    num_acc int64 ``[B]``, out int64 ``[B, K+1]`` (accepted tokens, then the corrected or
    bonus token, then -1), status int64 ``[B]``. Draws: ``2i`` accepts position ``i``,
    ``2i + 1`` samples its correction, ``2K`` the bonus token.
    """
    nb = tl.shape[0]
    nk = draft.shape[1]
    nv = tl.shape[2]
    nchunk = row_chunks(nb)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nb)
        wt = np.empty(nv, np.float64)
        wd = np.empty(nv, np.float64)
        counts = np.zeros(nv, np.int32)
        cnt = np.empty(NB, np.int64)
        mass = np.empty(NB, np.float64)
        st_t = np.empty(NSTATE, np.float64)
        st_d = np.empty(NSTATE, np.float64)
        for b in range(r0, r1):
            p = params[b]
            bi = None if bias is None else bias[min(b, bias.shape[0] - 1)]
            s = OK
            for n in range(nk + 1):
                out[b, n] = -1
            acc_n = nk
            for i in range(nk + 1):
                mi = None if mask is None else mask[b, i]
                rt, s = processed_row(tl[b, i], wt, bi, mi, hist[b], draft[b], i, p, counts,
                                      st_t, cnt, mass)
                if s != OK:
                    break
                if i == nk:
                    out[b, i] = pick(rt, st_t, uniform(seeds[b], steps[b], ctr[b],
                                                       np.uint64(2 * nk)))
                    break
                tok = draft[b, i]
                q = 1.0
                if dl is not None:
                    _rd, s = processed_row(dl[b, i], wd, bi, mi, hist[b], draft[b], i, p,
                                           counts, st_d, cnt, mass)
                    if s != OK:
                        break
                    q = prob(wd, st_d, tok)
                u = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * i))
                if st_t[S_T] == 0.0:
                    accept = tok == st_t[S_ARG]
                else:
                    accept = u * q < prob(rt, st_t, tok)
                if accept:
                    out[b, i] = tok
                    continue
                u2 = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * i + 1))
                if st_t[S_T] == 0.0:
                    out[b, i] = np.int64(st_t[S_ARG])
                else:
                    out[b, i] = residual_pick(rt, st_t, wd, st_d, dl is not None, tok, u2)
                acc_n = i
                break
            if s != OK:
                for n in range(nk + 1):
                    out[b, n] = -1
            num_acc[b] = acc_n
            status[b] = s

