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
each kept token's mass ``exp(d)`` by one exp (:func:`token_mass`), so the sums that
find a threshold and those that pick a token see the same numbers. Every loop runs in token
order or bucket order: the same bits for any thread count.

Kernels never raise: a row with no allowed token or with NaN / ``+inf`` gets a nonzero
status (:data:`NO_TOKEN`, :data:`BAD_VALUE`) and its outputs are not written.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import kernel
from .math import fexp_sum, flog, like, neumaier_add, neumaier_result
from .philox import uniform
from .rows import block_sum, chunk_rows, row_chunks, row_lse, row_max
from .select import NB, SCALE, bucket, crossing, push_top, sort_asc, sort_desc

# columns of the per-row parameter array
P_T, P_K, P_P, P_MINP, P_TYP, P_REP, P_FREQ, P_PRES = range(8)
NPARAM = 8
# fields of a row state
S_T, S_M, S_ARG, S_LO, S_TIE, S_MINP, S_C, S_BAND, S_Z, S_LOGZ, S_IT, S_NL = range(12)
NSTATE = 12
LIST_CAP = 4096
"""After top-k, a kept set this small is copied into a candidate list (values and ids, in id
order) and the later filters, the mass and the pick run over the list instead of the row."""

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
    return bias.size > 0 or mask.size > 0 or (nhist > 0 and pen)


@kernel
def materialize(x, out, bias, mask, hist, extra, nextra, p, counts):
    """``out`` = the processed logits of row ``x`` (steps 1-4 of the order, in float64, stored
    in ``out``'s dtype: the logits' for sampling, float64 for verification): masked tokens
    ``-inf`` (``mask`` of size 0: none), ``bias`` added (a float64 row; size 0: none), then
    the penalties for every token of ``hist`` (ids ``< 0`` are padding) and of
    ``extra[:nextra]``. ``counts`` is an int32 row of zeros (left zero)."""
    for j in range(x.size):
        out[j] = load(x, j)
    if bias.size > 0:
        for j in range(x.size):
            out[j] = out[j] + bias[j]
    if mask.size > 0:
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
def frozen(st):
    """The row state as a tuple: per-element helpers take the tuple, not the array (an array
    argument costs a reference-count increment and decrement per call where Numba cannot
    prove them redundant: 14 ns per element measured)."""
    return (st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10],
            st[11])


@kernel
def shifted(v, st, proto):
    """``d = (v - max) * (1 / temperature)``, the log of a token's unnormalized probability,
    in the precision of the row (``proto`` is one of its elements): float32 rows vectorize
    twice as wide. A multiplication: a vector division costs 2 cycles per element here."""
    return like(proto, like(proto, v) - like(proto, st[S_M])) * like(proto, st[S_IT])


@kernel
def typical_key(d, st):
    """Distance of a token's surprisal from the entropy: ``|-log p - H| = |d - E[d]|``."""
    return abs(d - st[S_C])


@kernel
def token_mass(d, proto):
    """``exp(d)`` (``d <= 0``) as float64, computed in the precision of the row (``proto`` is
    one of its elements) by the exp of sum terms (``math.fexp_sum``: float32 rows use the
    float32 core, whose terms below ``exp(-87)`` count as ``exp(-87)``; float64 rows the
    float64 one). The one place a token's probability mass is formed."""
    return np.float64(fexp_sum(like(proto, d)))


@kernel
def kept_e(v, j, d, e, st):
    """The filters of a sampled row (``T > 0``), branch-free: ``d = shifted(v)``, ``e =
    exp(d)``. Above the threshold ``lo`` (equal to it: ids from ``tie`` on), ``e >= min_p``
    (``MinPLogitsWarper``: ``p < min_p * max(p)`` removed, and ``max(p)`` is ``exp(0)``),
    within the typical band."""
    lo = st[S_LO]
    tie = np.int64(st[S_TIE])  # loop-invariant; int64 -> float64 has no AVX2 instruction
    return (((v > lo) | ((v == lo) & (j >= tie))) & (v > -np.inf)
            & (e >= st[S_MINP]) & (typical_key(d, st) <= st[S_BAND]))


@kernel
def kept(v, j, st, proto):
    """Whether token ``j`` with processed logit ``v`` survives every filter of ``st``."""
    if st[S_T] == 0.0:
        return np.float64(j) == st[S_ARG]
    d = shifted(v, st, proto)
    return kept_e(v, j, d, token_mass(d, proto), st)


CHUNK = 1024  # tokens per block of a pass: their masses and buckets sit in L1 scratch


@kernel
def chunk_pass(r, c0, st, typical, eb, kb):
    """For tokens ``c0 + j`` of a chunk (``j < eb.size``): ``eb[j]`` = the kept mass
    ``exp(d)`` (0 if not kept) and ``kb[j]`` = the bucket of the key (-1 if not kept). One
    vectorizable loop (``st`` a tuple from :func:`frozen`, ``T > 0``)."""
    rc = r[c0 : c0 + eb.size]  # a view indexed from 0: plain vector loads
    proto = rc[0]
    for j in range(eb.size):
        v = load(rc, j)
        d = shifted(v, st, proto)
        e = token_mass(d, proto)
        ok = kept_e(v, c0 + j, d, e, st)
        key = min(typical_key(d, st) if typical else -d, NB)
        eb[j] = e if ok else 0.0
        kb[j] = np.int32(bucket(key)) if ok else np.int32(-1)


@kernel
def histogram(r, st, typical, cnt, mass, eb, kb):
    """Counts and masses ``exp(d)`` of the kept tokens per bucket of their key."""
    cnt[:] = 0
    mass[:] = 0.0
    s = frozen(st)
    for c0 in range(0, r.size, CHUNK):
        n = min(CHUNK, r.size - c0)
        chunk_pass(r, c0, s, typical, eb[:n], kb[:n])
        for j in range(n):
            b = kb[j]
            if b >= 0:
                cnt[b] += 1
                mass[b] += eb[j]


@kernel
def gather(r, st, typical, b, n, eb, kb):
    """Values and ids (in id order) of the ``n`` kept tokens in bucket ``b``.

    For the descending-probability key the bucket is a range of logits: a plain compare
    loop finds the tokens in that range (widened by a relative 1e-6 against rounding), and
    only those get the exact bucket test."""
    vals = np.empty(n, np.float64)
    ids = np.empty(n, np.int64)
    i = 0
    s = frozen(st)
    if typical:
        for c0 in range(0, r.size, CHUNK):
            m = min(CHUNK, r.size - c0)
            chunk_pass(r, c0, s, typical, eb[:m], kb[:m])
            for j in range(m):
                if kb[j] == b and i < n:
                    vals[i] = load(r, c0 + j)
                    ids[i] = c0 + j
                    i += 1
        return vals, ids
    t = st[S_T]
    hi = st[S_M] - (b / SCALE) * t
    lo = st[S_M] - ((b + 1) / SCALE) * t if b < NB - 1 else -np.inf
    pad = 1e-6 * (abs(st[S_M]) + abs(hi) + t)
    hi += pad
    lo -= pad
    proto = r[0]
    for j in range(r.size):
        v = load(r, j)
        if v >= lo and v <= hi:
            d = shifted(v, s, proto)
            if kept_e(v, j, d, token_mass(d, proto), s) and bucket(min(-d, NB)) == b and i < n:
                vals[i] = v
                ids[i] = j
                i += 1
    return vals, ids


@kernel
def apply_top_k(r, st, k, cnt, mass, eb, kb):
    """Keep the tokens at least as large as the k-th largest (HF: all ties kept); returns
    the kept mass (bucket order)."""
    histogram(r, st, False, cnt, mass, eb, kb)
    b, before = crossing(cnt, np.float64(k))
    if b < 0:  # fewer than k tokens allowed: nothing to remove
        st[S_NL] = cnt.sum()
        return mass.sum()
    vals, ids = gather(r, st, False, b, cnt[b], eb, kb)
    order = np.empty(vals.size, np.int64)
    sort_desc(vals, ids, vals.size, order)
    kth = vals[order[k - np.int64(before) - 1]]
    st[S_LO] = kth
    st[S_TIE] = 0.0
    z = mass[:b].sum()  # the kept mass: buckets above, then bucket b's tokens >= kth
    count = cnt[:b].sum()
    for i in range(vals.size):
        if vals[order[i]] >= kth:
            z += token_mass(shifted(vals[order[i]], st, r[0]), r[0])
            count += 1
    st[S_NL] = count
    return z


@kernel
def apply_top_p(r, st, top_p, cnt, mass, eb, kb):
    """Keep the tokens whose mass strictly above them (descending probability, equal values
    by decreasing id: HF's stable ascending sort) is below ``top_p``; the top one always.
    Returns the kept mass (bucket order, then the bucket of the cut in sorted order)."""
    histogram(r, st, False, cnt, mass, eb, kb)
    target = top_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:
        return mass.sum()
    vals, ids = gather(r, st, False, b, cnt[b], eb, kb)
    order = np.empty(vals.size, np.int64)
    sort_desc(vals, ids, vals.size, order)
    acc = before
    last = order[0]
    for i in range(vals.size):
        o = order[i]
        if not acc < target:
            break
        last = o
        acc += token_mass(shifted(vals[o], st, r[0]), r[0])
    st[S_LO] = vals[last]
    st[S_TIE] = np.float64(ids[last])
    return acc


@kernel
def apply_typical(r, st, mass_p, cnt, mass, eb, kb):
    """HF's typical-p: the tokens closest to the entropy (by ``|d - E[d]|``) holding
    ``mass_p``, all ties of the last one included."""
    z = 0.0
    zd = 0.0
    s = frozen(st)
    for j in range(r.size):
        v = load(r, j)
        if kept(v, j, s, r[0]):
            d = shifted(v, s, r[0])
            e = token_mass(d, r[0])
            z += e
            zd += e * d
    st[S_C] = zd / z
    histogram(r, st, True, cnt, mass, eb, kb)
    target = mass_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:  # rounding: HF's clamp to the last position keeps everything
        return
    vals, _ids = gather(r, st, True, b, cnt[b], eb, kb)
    n = vals.size
    keys = np.empty(n, np.float64)
    for i in range(n):
        keys[i] = typical_key(shifted(vals[i], st, r[0]), st)
    order = np.empty(n, np.int64)
    sort_asc(keys, n, order)
    acc = before
    band = keys[order[n - 1]]
    for i in range(n):
        o = order[i]
        acc += token_mass(shifted(vals[o], st, r[0]), r[0])
        if acc >= target:
            band = keys[o]
            break
    st[S_BAND] = band


@kernel
def kept_mass(r, st, eb, kb):
    """``sum(exp(d))`` over the kept tokens: chunk sums (``block_sum``, fixed order) added
    with Neumaier's compensation, in id order (the order of :func:`pick`)."""
    s = frozen(st)
    z = 0.0
    comp = 0.0
    for c0 in range(0, r.size, CHUNK):
        n = min(CHUNK, r.size - c0)
        chunk_pass(r, c0, s, False, eb[:n], kb[:n])
        z, comp = neumaier_add(z, comp, block_sum(eb[:n]))
    return neumaier_result(z, comp)


STRIDE = 16  # every 16th token estimates where the k-th largest lies


@kernel
def small_top_k(r, st, k, lv, li):
    """Top-k for small ``k`` without a histogram: the ``(2k/16 + 8)``-th largest of every
    16th logit is, with high probability, below the k-th largest of the row; the tokens
    above it (one compare pass) go to the candidate list, where the k-th largest is found
    by one sort. Sets ``st``'s threshold and returns the list size, or 0 when the estimate
    missed (fewer than ``k`` or more than the list holds): then the caller takes the
    histogram path. The result never depends on the estimate, only the speed does."""
    nv = r.size
    ns = (nv + STRIDE - 1) // STRIDE
    kk = 2 * k // STRIDE + 8
    if kk >= ns // 2 or 4 * k > lv.size:
        return 0
    best = np.empty(kk, np.float64)
    bid = np.empty(kk, np.int64)
    count = 0
    for i in range(ns):
        count = push_top(best, bid, count, load(r, i * STRIDE), i)
    t0 = best[kk - 1]
    if not t0 > -np.inf:
        return 0
    n = 0
    for j in range(nv):
        v = load(r, j)
        if v >= t0:
            if n == lv.size:
                return 0
            lv[n] = v
            li[n] = j
            n += 1
    if n < k:
        return 0
    order = np.empty(n, np.int64)
    sort_desc(lv[:n], li[:n], n, order)
    kth = lv[order[k - 1]]
    st[S_LO] = kth
    st[S_TIE] = 0.0
    m = 0
    for i in range(n):  # keep the entries >= kth, in id order
        if lv[i] >= kth:
            lv[m] = lv[i]
            li[m] = li[i]
            m += 1
    return m


@kernel
def collect(r, st, lv, li):
    """Copy the kept tokens (values, ids; id order) into ``lv`` / ``li``; returns their
    number (at most ``lv.size``)."""
    lo = st[S_LO]
    n = 0
    for j in range(r.size):
        v = load(r, j)
        if v >= lo and v > -np.inf and n < lv.size:
            lv[n] = v
            li[n] = j
            n += 1
    return n


@kernel
def list_masses(lv, li, n, st, e):
    """``e[i]`` = the kept mass of list entry ``i`` (0 if not kept); returns their sum in
    list (id) order."""
    s = frozen(st)
    z = 0.0
    for i in range(n):
        v = lv[i]
        e[i] = token_mass(shifted(v, s, lv[0]), lv[0]) if kept(v, li[i], s, lv[0]) else 0.0
        z += e[i]
    return z


@kernel
def list_top_p(lv, li, n, st, top_p, e):
    """:func:`apply_top_p` over a candidate list (one sort of at most ``LIST_CAP``)."""
    z = list_masses(lv, li, n, st, e)
    order = np.empty(n, np.int64)
    sort_desc(lv[:n], li[:n], n, order)
    target = top_p * z
    acc = 0.0
    last = order[0]
    for i in range(n):
        o = order[i]
        if not acc < target:
            break
        last = o
        acc += e[o]
    st[S_LO] = lv[last]
    st[S_TIE] = np.float64(li[last])


@kernel
def list_typical(lv, li, n, st, mass_p, e):
    """:func:`apply_typical` over a candidate list."""
    z = list_masses(lv, li, n, st, e)
    zd = 0.0
    for i in range(n):
        if e[i] > 0.0:
            zd += e[i] * shifted(lv[i], st, lv[0])
    st[S_C] = zd / z
    keys = np.empty(n, np.float64)
    for i in range(n):
        keys[i] = typical_key(shifted(lv[i], st, lv[0]), st) if e[i] > 0.0 else np.inf
    order = np.empty(n, np.int64)
    sort_asc(keys, n, order)
    target = mass_p * z
    acc = 0.0
    for i in range(n):
        o = order[i]
        acc += e[o]
        if acc >= target:
            st[S_BAND] = keys[o]
            return


@kernel
def list_pick(lv, li, n, st, u):
    """Inverse CDF over the candidate list in id order (the order of its mass ``Z``)."""
    s = frozen(st)
    target = u * st[S_Z]
    acc = 0.0
    last = li[0]
    for i in range(n):
        v = lv[i]
        if kept(v, li[i], s, lv[0]):
            acc += token_mass(shifted(v, s, lv[0]), lv[0])
            last = li[i]
            if acc > target:
                return np.int64(li[i])
    return np.int64(last)


@kernel
def choose(r, st, u, eb, kb, lv, li):
    """The sampled token for uniform ``u``: from the candidate list if the row has one."""
    n = np.int64(st[S_NL])
    if st[S_T] > 0.0 and n > 0:
        return list_pick(lv, li, n, st, u)
    return pick(r, st, u, eb, kb)


@kernel
def row_state(r, p, st, cnt, mass, eb, kb, lv, li):
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
    st[S_IT] = 1.0 / p[P_T] if p[P_T] > 0.0 else 0.0
    if not st[S_IT] < np.inf:  # a denormal temperature: 1 / T overflows; the limit is greedy
        st[S_T] = 0.0
        st[S_IT] = 0.0
    if st[S_T] == 0.0:
        st[S_Z] = 1.0
        st[S_LOGZ] = 0.0
        return OK
    st[S_NL] = 0.0
    k = np.int64(p[P_K])
    z = -1.0  # the kept mass, when a filter found it on the way (else one more pass)
    if 0 < k < nv:
        n = small_top_k(r, st, k, lv, li)
        if n == 0:  # no small candidate set: the histogram path
            z = apply_top_k(r, st, k, cnt, mass, eb, kb)
            if st[S_NL] <= min(LIST_CAP, lv.size):
                n = collect(r, st, lv, li)
        if n > 0:
            st[S_NL] = n
            e = np.empty(n, np.float64)
            if p[P_P] < 1.0:
                list_top_p(lv, li, n, st, p[P_P], e)
            st[S_MINP] = p[P_MINP]
            if p[P_TYP] < 1.0:
                list_typical(lv, li, n, st, p[P_TYP], e)
            z = list_masses(lv, li, n, st, e)
            st[S_Z] = z
            st[S_LOGZ] = flog(z)
            return OK
        st[S_NL] = 0.0
    if p[P_P] < 1.0:
        z = apply_top_p(r, st, p[P_P], cnt, mass, eb, kb)
    st[S_MINP] = p[P_MINP]
    if p[P_TYP] < 1.0:
        apply_typical(r, st, p[P_TYP], cnt, mass, eb, kb)
    if p[P_MINP] > 0.0 or p[P_TYP] < 1.0 or not z > 0.0:
        z = kept_mass(r, st, eb, kb)
    st[S_Z] = z
    st[S_LOGZ] = flog(z)
    return OK


@kernel
def prob(v, j, st, proto):
    """The processed probability of token ``j`` with processed logit ``v``."""
    if not kept(v, j, st, proto):
        return 0.0
    if st[S_T] == 0.0:
        return 1.0
    return token_mass(shifted(v, st, proto), proto) / st[S_Z]


@kernel
def processed_logprob(v, j, st, proto):
    """log of the processed probability of token ``j`` with processed logit ``v``."""
    if not kept(v, j, st, proto):
        return -np.inf
    if st[S_T] == 0.0:
        return 0.0
    return (v - st[S_M]) * st[S_IT] - st[S_LOGZ]  # float64 d for the output


@kernel
def pick(r, st, u, eb, kb):
    """Inverse CDF: the first kept token (id order) whose cumulative mass exceeds ``u * Z``.

    Whole chunks are skipped by their sums, accumulated exactly as :func:`kept_mass` forms
    ``Z``; the chunk where the target falls is walked token by token."""
    if st[S_T] == 0.0:
        return np.int64(st[S_ARG])
    s = frozen(st)
    target = u * st[S_Z]
    z = 0.0
    comp = 0.0
    last = np.int64(st[S_ARG])
    for c0 in range(0, r.size, CHUNK):
        n = min(CHUNK, r.size - c0)
        chunk_pass(r, c0, s, False, eb[:n], kb[:n])
        cs = block_sum(eb[:n])
        base = neumaier_result(z, comp)
        if base + cs > target:
            acc = base
            for j in range(n):
                if kb[j] >= 0:
                    acc += eb[j]
                    last = c0 + j
                    if acc > target:
                        return np.int64(last)
        elif cs > 0.0:
            for j in range(n - 1, -1, -1):
                if kb[j] >= 0:
                    last = c0 + j
                    break
        z, comp = neumaier_add(z, comp, cs)
    return last


@kernel
def top_n(src, st, raw, vals, ids):
    """The ``vals.size`` best tokens of ``src`` into ``vals/ids``, best first, ties to the lower
    id (raw: by logit; processed: kept tokens by logit, then the others as ``-inf``)."""
    if vals.size == 0:
        return
    count = 0
    s = frozen(st)
    for j in range(src.size):
        v = load(src, j)
        if not raw and not kept(v, j, s, src[0]):
            v = -np.inf
        count = push_top(vals, ids, count, v, j)


@kernel
def logprob_outputs(src, st, raw, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp):
    """Chosen, top-N and requested log-probabilities of row ``i``. ``raw``: ``src`` is the
    logits row, under ``log_softmax``; else ``src`` is the processed row, under the kept
    distribution of ``st``."""
    lse = row_lse(src, src[:0]) if raw else 0.0
    nt = top_tok.shape[1]
    row = lp_ids[min(i, lp_ids.shape[0] - 1)]
    vals = np.empty(nt, np.float64)
    ids = np.empty(nt, np.int64)
    top_n(src, st, raw, vals, ids)
    for n in range(nt + 1 + row.size):
        j = tok if n == 0 else (ids[n - 1] if n <= nt else row[n - 1 - nt])
        v = load(src, j)
        lp = v - lse if raw else processed_logprob(v, j, st, src[0])
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

    bias: float64 ``[1 or B, V]`` (``[1, 0]``: none); mask: int32 ``[B, ceil(V/32)]``
    (``[B, 0]``: none); hist:
    int64 ``[B, L]`` (``-1`` padding, ids checked by the caller); params: float64
    ``[B, NPARAM]``; seeds, steps, ctr: uint64 ``[B]`` (Philox key, counter words 0-1 and 2);
    raw: bool; lp_ids: int64 ``[1 or B, M]``. Outputs: tokens int64 ``[B]``, logprobs
    ``[B]``, top_tok int64 ``[B, N]``, top_lp ``[B, N]``, id_lp ``[B, M]``, status int64
    ``[B]`` (:data:`OK` or the row's error; its outputs are then not written).
    """
    nb, nv = x.shape
    nchunk = row_chunks(nb)
    buffered = bias.size > 0 or mask.size > 0 or hist.shape[1] > 0
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nb)
        work = np.empty(nv if buffered else 0, x.dtype)  # only rows that need it
        counts = np.zeros(nv if hist.shape[1] > 0 else 0, np.int32)
        cnt = np.empty(NB, np.int64)
        mass = np.empty(NB, np.float64)
        st = np.empty(NSTATE, np.float64)
        eb = np.empty(CHUNK, np.float64)
        kb = np.empty(CHUNK, np.int32)
        lv = np.empty(LIST_CAP, x.dtype)  # candidate list in the row's dtype
        li = np.empty(LIST_CAP, np.int64)
        for i in range(r0, r1):
            p = params[i]
            bi = bias[min(i, bias.shape[0] - 1)]
            mi = mask[i]
            if needs_buffer(bi, mi, hist.shape[1], p):
                materialize(x[i], work, bi, mi, hist[i], hist[i], 0, p, counts)
                r = work
                s = row_state(r, p, st, cnt, mass, eb, kb, lv, li)
                if s == OK:
                    u = uniform(seeds[i], steps[i], ctr[i], np.uint64(0))
                    tok = choose(r, st, u, eb, kb, lv, li)
                    tokens[i] = tok
                    if raw:
                        logprob_outputs(x[i], st, raw, tok, i, logprobs, lp_ids, top_tok,
                                        top_lp, id_lp)
                    else:
                        logprob_outputs(r, st, raw, tok, i, logprobs, lp_ids, top_tok,
                                        top_lp, id_lp)
            else:
                s = row_state(x[i], p, st, cnt, mass, eb, kb, lv, li)
                if s == OK:
                    u = uniform(seeds[i], steps[i], ctr[i], np.uint64(0))
                    tok = choose(x[i], st, u, eb, kb, lv, li)
                    tokens[i] = tok
                    logprob_outputs(x[i], st, raw, tok, i, logprobs, lp_ids, top_tok,
                                    top_lp, id_lp)
            status[i] = s


@kernel
def draft_prob(rd, st_d, has_draft, tok, j):
    """The draft's probability of token ``j``: one-hot at ``tok`` without draft logits."""
    if not has_draft:
        return 1.0 if j == tok else 0.0
    return prob(load(rd, j), j, st_d, rd[0])


@kernel
def residual_pick(rt, st_t, rd, st_d, has_draft, tok, u, eb, kb, lv, li):
    """A token from ``max(0, p - q)`` normalized (``q`` from :func:`draft_prob`); from ``p``
    when the residual has no mass (``p == q`` up to rounding)."""
    s_t = frozen(st_t)
    s_d = frozen(st_d)
    total = 0.0
    for j in range(rt.size):
        q = draft_prob(rd, s_d, has_draft, tok, j)
        total += max(0.0, prob(load(rt, j), j, s_t, rt[0]) - q)
    if not total > 0.0:
        return choose(rt, st_t, u, eb, kb, lv, li)
    target = u * total
    acc = 0.0
    last = -1
    for j in range(rt.size):
        q = draft_prob(rd, s_d, has_draft, tok, j)
        w = max(0.0, prob(load(rt, j), j, s_t, rt[0]) - q)
        if w > 0.0:
            acc += w
            last = j
            if acc > target:
                return np.int64(j)
    return np.int64(last)


@kernel
def processed_row(x, work, bias, mask, hist, draft, i, p, counts, st, cnt, mass, eb, kb, lv,
                  li):
    """The processed row for position ``i`` of a draft (history + ``draft[:i]``) and its
    state: ``(row, status)``; ``row`` is ``x`` itself or ``work``."""
    if needs_buffer(bias, mask, hist.size + i, p):
        materialize(x, work, bias, mask, hist, draft, i, p, counts)
        return work, row_state(work, p, st, cnt, mass, eb, kb, lv, li)
    for j in range(x.size):  # one row type for both branches: a float64 copy
        work[j] = load(x, j)
    return work, row_state(work, p, st, cnt, mass, eb, kb, lv, li)


@kernel(parallel=True)
def verify_rows(tl, dl, draft, bias, mask, hist, params, seeds, steps, ctr,
                num_acc, out, status):
    """Speculative rejection sampling (Leviathan et al. 2023, Chen et al. 2023).

    tl: target logits ``[B, K+1, V]``; dl: draft logits ``[B, K, V]`` of the same dtype
    (``[B, 0, V]``: a deterministic draft); draft: int64 ``[B, K]`` (ids checked by the
    caller); bias, hist, params, seeds, steps, ctr as in :func:`sample_rows` (the penalties
    at position ``i`` count
    ``hist[b]`` and ``draft[b, :i]``); mask: int32 ``[B, K+1, W]`` (``W = 0``: none). Outputs:
    num_acc int64 ``[B]``, out int64 ``[B, K+1]`` (accepted tokens, then the corrected or
    bonus token, then -1), status int64 ``[B]``. Draws: ``2i`` accepts position ``i``,
    ``2i + 1`` samples its correction, ``2K`` the bonus token.
    """
    nb = tl.shape[0]
    nk = draft.shape[1]
    nv = tl.shape[2]
    has_draft = dl.shape[1] > 0
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
        eb = np.empty(CHUNK, np.float64)
        kb = np.empty(CHUNK, np.int32)
        lv_t = np.empty(LIST_CAP, np.float64)
        li_t = np.empty(LIST_CAP, np.int64)
        lv_d = np.empty(LIST_CAP, np.float64)
        li_d = np.empty(LIST_CAP, np.int64)
        for b in range(r0, r1):
            p = params[b]
            bi = bias[min(b, bias.shape[0] - 1)]
            s = OK
            for n in range(nk + 1):
                out[b, n] = -1
            acc_n = nk
            for i in range(nk + 1):
                mi = mask[b, i]
                rt, s = processed_row(tl[b, i], wt, bi, mi, hist[b], draft[b], i, p, counts,
                                      st_t, cnt, mass, eb, kb, lv_t, li_t)
                if s != OK:
                    break
                if i == nk:
                    u = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * nk))
                    out[b, i] = choose(rt, st_t, u, eb, kb, lv_t, li_t)
                    break
                tok = draft[b, i]
                q = 1.0
                if has_draft:
                    _rd, s = processed_row(dl[b, i], wd, bi, mi, hist[b], draft[b], i, p,
                                           counts, st_d, cnt, mass, eb, kb, lv_d, li_d)
                    if s != OK:
                        break
                    q = prob(load(wd, tok), tok, st_d, wd[0])
                u = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * i))
                if st_t[S_T] == 0.0:
                    accept = tok == st_t[S_ARG]
                else:
                    accept = u * q < prob(load(rt, tok), tok, st_t, rt[0])
                if accept:
                    out[b, i] = tok
                    continue
                u2 = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * i + 1))
                if st_t[S_T] == 0.0:
                    out[b, i] = np.int64(st_t[S_ARG])
                else:
                    out[b, i] = residual_pick(rt, st_t, wd, st_d, has_draft, tok, u2, eb,
                                              kb, lv_t, li_t)
                acc_n = i
                break
            if s != OK:
                for n in range(nk + 1):
                    out[b, n] = -1
            num_acc[b] = acc_n
            status[b] = s

