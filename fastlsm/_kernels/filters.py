"""The filters of a sampler (top-k, top-p, min-p, typical-p) as exact thresholds on the row
state, found without sorting the row (``select``), and :func:`row_state`, which applies them
in Hugging Face generate's order.

Row mode: each filter is one bucket histogram of the kept tokens' sort key, then a gather and
sort of the one bucket where the running count or mass crosses the target. List mode: after
a top-k that keeps at most ``LIST_CAP`` tokens, the kept tokens are copied once into a
candidate list (id order) and the later filters, the mass and the pick run over the list.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import kernel
from .math import flog, like
from .rowstate import (
    BAD_VALUE,
    BLOCK,
    CHUNK,
    LIST_CAP,
    NO_TOKEN,
    OK,
    P_K,
    P_MINP,
    P_P,
    P_T,
    P_TYP,
    S_ARG,
    S_BAND,
    S_C,
    S_IT,
    S_LO,
    S_LOGZ,
    S_M,
    S_MINP,
    S_NL,
    S_T,
    S_TIE,
    S_Z,
    block_bits,
    chunk_pass,
    drop_lowest,
    fill,
    fill_masses,
    frozen,
    kept,
    kept_e,
    kept_mass,
    load,
    lowest_bit,
    part_bounds,
    parts,
    pick,
    scan_row,
    shifted,
    token_mass,
    typical_key,
)
from .select import NB, SCALE, bucket, crossing, push_top, sort_asc, sort_desc


@kernel
def _histogram_part(r, er, lo, hi, s, typical, counting, filling, cnt, mass, eb, kb):
    """The histogram of tokens ``lo <= j < hi`` (chunk-aligned ``lo``) into ``cnt`` / ``mass``
    (zeroed first), in token order; ``filling``: each chunk's masses are written into ``er``
    first (``rowstate.fill_masses``: the same values, read back from L1)."""
    cnt[:] = 0
    mass[:] = 0.0
    for c0 in range(lo, hi, CHUNK):
        n = min(CHUNK, hi - c0)
        if filling:
            fill_masses(r[c0 : c0 + n], s, er[c0 : c0 + n])
        chunk_pass(r, er, c0, s, typical, eb[:n], kb[:n])
        if counting:
            for j in range(n):
                b = kb[j]
                if b >= 0:
                    cnt[b] += 1
                    mass[b] += eb[j]
        else:
            for j in range(n):
                b = kb[j]
                if b >= 0:
                    mass[b] += eb[j]


@kernel
def _histogram_of(r, er, c, s, typical, counting, filling, cnt, mass, eb, kb):
    """Part ``c`` of :func:`histogram` (``rowstate.part_bounds``) into ``cnt`` / ``mass``."""
    lo, hi = part_bounds(r.size, c)
    _histogram_part(r, er, lo, hi, s, typical, counting, filling, cnt, mass, eb, kb)


@kernel(parallel=True, entry=False)
def _histogram_halves(r, er, s, typical, counting, filling, cnt, mass, eb, kb, cnt1, mass1,
                      eb1, kb1):
    """Both parts of :func:`histogram`, one thread each."""
    for c in prange(2):
        _histogram_of(r, er, c, s, typical, counting, filling, cnt if c == 0 else cnt1,
                      mass if c == 0 else mass1, eb if c == 0 else eb1, kb if c == 0 else kb1)


@kernel
def histogram(r, er, st, typical, counting, filling, cnt, mass, eb, kb, split):
    """Masses ``exp(d)`` of the kept tokens per bucket of their key, and their counts if
    ``counting`` (a scatter costs about a cycle per token and array: top-p counts only the
    bucket it gathers, :func:`gather`); ``filling``: the masses ``er`` are written on the
    way (the row's one exp pass). A row of ``SPLIT_MIN`` tokens or more is counted in two
    parts (``rowstate.part_bounds``) added bucket by bucket, on two threads when ``split``
    is ``True``: the same bits either way."""
    s = frozen(st)
    nparts = parts(r.size)
    cnt1 = np.empty_like(cnt) if nparts == 2 else cnt  # the second part's (none: unused)
    mass1 = np.empty_like(mass) if nparts == 2 else mass
    if split is not None and nparts == 2:
        _histogram_halves(r, er, s, typical, counting, filling, cnt, mass, eb, kb, cnt1,
                          mass1, np.empty_like(eb), np.empty_like(kb))
    else:
        for c in range(nparts):  # one call site: one inlined copy of the pass per filter
            _histogram_of(r, er, c, s, typical, counting, filling, cnt if c == 0 else cnt1,
                          mass if c == 0 else mass1, eb, kb)
    if nparts == 1:
        return
    for b in range(mass.size):
        cnt[b] += cnt1[b]
        mass[b] += mass1[b]


@kernel
def _range_pass(r, er, s, b, lo, hi, vals, ids):
    """The kept tokens of bucket ``b`` (descending-probability key) among the logits in
    ``[lo, hi]``, in id order, into ``vals/ids`` while they have room; returns how many there
    are. Only the logits in the range are visited (one vectorized test per block in the
    row's precision, ``rowstate.block_bits``: ``lo``/``hi`` carry a padding far wider than
    its rounding)."""
    proto = r[0]
    lo_r = like(proto, lo)
    hi_r = like(proto, hi)
    i = 0
    for c0 in range(0, r.size, BLOCK):
        bits = block_bits(r, c0, lo_r, hi_r)
        while bits != np.uint64(0):
            j = c0 + lowest_bit(bits)
            bits = drop_lowest(bits)
            v = load(r, j)
            if v >= lo and v <= hi:
                d = shifted(v, s, proto)
                e = np.float64(er[j])
                if kept_e(v, j, d, e, s) and bucket(min(-d, NB)) == b:
                    if i < vals.size:
                        vals[i] = v
                        ids[i] = j
                    i += 1
    return i


@kernel
def gather(r, er, st, typical, b, n, eb, kb):
    """Values and ids (in id order) of the ``n`` kept tokens in bucket ``b`` (``n < 0``: not
    counted yet; descending-probability key only).

    For the descending-probability key the bucket is a range of logits: a compare pass
    finds the tokens in that range (widened by a relative 1e-6 against rounding), and
    only those get the exact bucket test."""
    s = frozen(st)
    if typical:
        vals = np.empty(n, np.float64)
        ids = np.empty(n, np.int64)
        i = 0
        for c0 in range(0, r.size, CHUNK):
            m = min(CHUNK, r.size - c0)
            chunk_pass(r, er, c0, s, typical, eb[:m], kb[:m])
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
    if n < 0:  # one pass into a list of LIST_CAP, a second only when the bucket is larger
        vals = np.empty(LIST_CAP, np.float64)
        ids = np.empty(LIST_CAP, np.int64)
        n = _range_pass(r, er, s, b, lo, hi, vals, ids)
        if n <= LIST_CAP:
            return vals[:n], ids[:n]
    vals = np.empty(n, np.float64)
    ids = np.empty(n, np.int64)
    _range_pass(r, er, s, b, lo, hi, vals, ids)
    return vals, ids


@kernel
def apply_top_k(r, er, st, k, cnt, mass, eb, kb, split):
    """Keep the tokens at least as large as the k-th largest (HF: all ties kept); returns
    the kept mass (bucket order). Fills the masses ``er`` on the way."""
    histogram(r, er, st, False, True, True, cnt, mass, eb, kb, split)
    b, before = crossing(cnt, np.float64(k))
    if b < 0:  # fewer than k tokens allowed: nothing to remove
        st[S_NL] = cnt.sum()
        return mass.sum()
    vals, ids = gather(r, er, st, False, b, cnt[b], eb, kb)
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
def apply_top_p(r, er, st, top_p, cnt, mass, eb, kb, filling, split):
    """Keep the tokens whose mass strictly above them (descending probability, equal values
    by decreasing id: HF's stable ascending sort) is below ``top_p``; the top one always
    (``filling``: the masses ``er`` are filled on the way).
    Returns the kept mass (bucket order, then the bucket of the cut in sorted order)."""
    histogram(r, er, st, False, False, filling, cnt, mass, eb, kb, split)
    target = top_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:
        return mass.sum()
    vals, ids = gather(r, er, st, False, b, -1, eb, kb)
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
def apply_typical(r, er, st, mass_p, cnt, mass, eb, kb, split):
    """HF's typical-p: the tokens closest to the entropy (by ``|d - E[d]|``) holding
    ``mass_p``, all ties of the last one included."""
    z = 0.0
    zd = 0.0
    s = frozen(st)
    for j in range(r.size):
        v = load(r, j)
        d = shifted(v, s, r[0])
        e = np.float64(er[j])
        if kept_e(v, j, d, e, s):
            z += e
            zd += e * d
    st[S_C] = zd / z
    histogram(r, er, st, True, True, False, cnt, mass, eb, kb, split)
    target = mass_p * mass.sum()
    b, before = crossing(mass, target)
    if b < 0:  # rounding: HF's clamp to the last position keeps everything
        return
    vals, _ids = gather(r, er, st, True, b, cnt[b], eb, kb)
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
    tr = like(r, t0)  # a value of the row: exact in its dtype
    n = 0
    top = like(r, np.inf)
    for c0 in range(0, nv, BLOCK):
        bits = block_bits(r, c0, tr, top)
        while bits != np.uint64(0):
            j = c0 + lowest_bit(bits)
            bits = drop_lowest(bits)
            if r[j] >= tr:
                if n == lv.size:
                    return 0
                lv[n] = r[j]
                li[n] = j
                n += 1
    if n < k:
        return 0
    order = np.empty(n, np.int64)  # a sort (np.partition: 1 us faster, 10 s more compile)
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
def choose(r, er, st, u, eb, kb, lv, li):
    """The sampled token for uniform ``u``: from the candidate list if the row has one."""
    n = np.int64(st[S_NL])
    if st[S_T] > 0.0 and n > 0:
        return list_pick(lv, li, n, st, u)
    return pick(r, er, st, u, eb, kb)


@kernel
def row_state(r, er, p, st, cnt, mass, eb, kb, lv, li, split):
    """Fill ``st`` for processed row ``r`` and parameters ``p``; returns a status.
    ``split``: ``True``, a single row on several threads (its passes over two halves at
    once, the same bits), or ``None`` (``rowstate.SPLIT_MIN``)."""
    nv = r.size
    mr, nan, arg = scan_row(r, split)
    m = np.float64(mr)
    if nan or m == np.inf:
        return BAD_VALUE
    if m == -np.inf:
        return NO_TOKEN
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
    filled = False  # er holds the masses (fill_masses)
    if 0 < k < nv:
        n = small_top_k(r, st, k, lv, li)
        if n == 0:  # no small candidate set: the histogram path (fills the masses)
            filled = True
            z = apply_top_k(r, er, st, k, cnt, mass, eb, kb, split)
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
        z = apply_top_p(r, er, st, p[P_P], cnt, mass, eb, kb, not filled, split)
    elif not filled:
        fill(r, st, er, split)
    st[S_MINP] = p[P_MINP]
    if p[P_TYP] < 1.0:
        apply_typical(r, er, st, p[P_TYP], cnt, mass, eb, kb, split)
    if p[P_MINP] > 0.0 or p[P_TYP] < 1.0 or not z > 0.0:
        z = kept_mass(r, er, st, eb)
    st[S_Z] = z
    st[S_LOGZ] = flog(z)
    return OK
