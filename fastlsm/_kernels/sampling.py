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
from .filters import choose, row_state
from .half import row_buffer, row_values, scratch
from .math import flog, like
from .philox import uniform
from .rows import chunk_rows, row_chunks, row_lse, row_max, row_shifted_sumexp
from .rowstate import (  # noqa: F401  (the parameter columns and statuses are the ABI)
    BAD_VALUE,
    CHUNK,
    LIST_CAP,
    NO_TOKEN,
    NPARAM,
    NSTATE,
    OK,
    P_FREQ,
    P_K,
    P_MINP,
    P_P,
    P_PRES,
    P_REP,
    P_T,
    P_TYP,
    S_ARG,
    S_IT,
    S_M,
    S_NL,
    S_T,
    SPLIT_MIN,
    frozen,
    kept,
    load,
    materialize,
    needs_buffer,
    prob,
    processed_logprob,
    total_mass,
)
from .select import NB, push_top


@kernel
def top_n(src, st, raw, vals, ids):
    """The ``vals.size`` best tokens of ``src`` into ``vals/ids``, best first, ties to the lower
    id (raw: by logit; processed: kept tokens by logit, then the others as ``-inf``).

    Once the list is full, a chunk whose maximum (one vectorized pass) is not above the
    list's last value is skipped: nothing in it can enter, and the key of a token is never
    above its logit."""
    nt = vals.size
    if nt == 0:
        return
    count = 0
    s = frozen(st)
    for c0 in range(0, src.size, CHUNK):
        seg = src[c0 : c0 + CHUNK]
        if count == nt and not np.float64(row_max(seg)) > vals[nt - 1]:
            continue
        for jj in range(seg.size):
            j = c0 + jj
            v = load(seg, jj)
            if not raw and not kept(v, j, s, src[0]):
                v = -np.inf
            count = push_top(vals, ids, count, v, j)


@kernel
def raw_lse(x, er, st):
    """log-sum-exp of the logits row ``x`` that is itself the processed row of ``st``: its
    maximum is known, and at temperature 1 with the masses ``er`` filled (row mode) the
    sum is theirs (the same terms as ``row_lse``'s, summed in chunks): no pass over ``x``."""
    m = st[S_M]
    if st[S_T] > 0.0 and st[S_NL] == 0.0 and st[S_IT] == 1.0:
        return flog(total_mass(er)) + m
    return flog(row_shifted_sumexp(x, like(x, m), x[:0])) + m


@kernel
def logprob_outputs(src, st, raw, lse, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp):
    """Chosen, top-N and requested log-probabilities of row ``i``. ``raw``: ``src`` is the
    logits row, under ``log_softmax`` (``lse`` its log-sum-exp, NaN: computed here); else
    ``src`` is the processed row, under the kept distribution of ``st``."""
    if raw and lse != lse:
        lse = row_lse(src, src[:0])
    if not raw:
        lse = 0.0
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


@kernel(parallel=True, entry=False)
def _pick_and_lse(r, xi, er, st, u, eb, kb, lv, li, raw, buffered):
    """``(token, lse)`` of a row on two threads: the pick on one and, on the other, the
    log-sum-exp of the logits row ``xi`` that ``raw`` logprobs need (:func:`raw_lse`; a
    buffered row's is ``row_lse``), NaN when not needed: the same values as in sequence."""
    tok = np.empty(1, np.int64)
    lse = np.full(1, np.nan)
    for c in prange(2):
        if c == 0:
            tok[0] = choose(r, er, st, u, eb, kb, lv, li)
        elif raw:
            lse[0] = row_lse(xi, xi[:0]) if buffered is not None else raw_lse(xi, er, st)
    return tok[0], lse[0]


@kernel(inline="always")
def _sample_processed(r, xi, buffered, lse, i, p, seeds, steps, ctr, raw, lp_ids, tokens,
                      logprobs, top_tok, top_lp, id_lp, er, cnt, mass, st, eb, kb, lv, li,
                      split):
    """Row ``i`` once its processed row ``r`` is known (``xi`` its logits row; ``buffered``
    ``True``: ``r`` is a processed copy, ``None``: ``r`` is ``xi``; different types, so each
    compilation holds only its own branches; ``lse``: the raw log-sum-exp if already known,
    else NaN): state, token and logprobs; returns its status."""
    s = row_state(r, er, p, st, cnt, mass, eb, kb, lv, li, split)
    if s != OK:
        return s
    u = uniform(seeds[i], steps[i], ctr[i], np.uint64(0))
    if split is not None:
        tok, lse = _pick_and_lse(r, xi, er, st, u, eb, kb, lv, li, raw, buffered)
    else:
        tok = choose(r, er, st, u, eb, kb, lv, li)
        if buffered is None and raw:
            lse = raw_lse(xi, er, st)
    tokens[i] = tok
    if buffered is None:  # r is xi
        logprob_outputs(xi, st, raw, lse, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp)
    elif raw:  # lse known (before the copy, or beside the pick)
        logprob_outputs(xi, st, raw, lse, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp)
    else:
        logprob_outputs(r, st, raw, 0.0, tok, i, logprobs, lp_ids, top_tok, top_lp, id_lp)
    return s


@kernel(inline="always")
def sample_row(x, i, bias, mask, hist, params, seeds, steps, ctr, raw, lp_ids, tokens,
               logprobs, top_tok, top_lp, id_lp, wide, work, er, seen, cnt, mass, st, eb, kb,
               lv, li, split):
    """Row ``i`` of :func:`sample_rows` with its block's scratch; returns its status.
    ``split``: ``True``, the only row, on several threads (:func:`row_state`,
    :func:`_pick_and_lse`), or ``None``."""
    p = params[i]
    bi = bias[min(i, bias.shape[0] - 1)]
    mi = mask[i]
    xi = row_values(x, i, wide)
    if needs_buffer(bi, mi, hist.shape[1], p):
        # raw logprobs of a processed copy: the logits' log-sum-exp first, while the row is
        # in L2 (after the copy and the masses it is read from L3 again); a split row
        # computes it beside the pick instead
        lse = row_lse(xi, xi[:0]) if raw and split is None else np.nan
        materialize(xi, work, bi, mi, hist[i], hist[i], 0, p, seen)
        return _sample_processed(work, xi, True, lse, i, p, seeds, steps, ctr, raw, lp_ids,
                                 tokens, logprobs, top_tok, top_lp, id_lp, er, cnt, mass, st,
                                 eb, kb, lv, li, split)
    return _sample_processed(xi, xi, None, np.nan, i, p, seeds, steps, ctr, raw, lp_ids,
                             tokens, logprobs, top_tok, top_lp, id_lp, er, cnt, mass, st, eb,
                             kb, lv, li, split)


@kernel
def _row_scratch(x, nv, buffered, nh):
    """One block's scratch for :func:`sample_row`: the widened row, the processed row (only
    rows that need it), the masses, the sorted history, the histograms, the row state, the
    chunk masses and buckets, the candidate list."""
    return (row_buffer(x), scratch(nv if buffered else 0, x), scratch(nv, x),
            np.empty(nh, np.int64), np.empty(NB, np.int64), np.empty(NB, np.float64),
            np.empty(NSTATE, np.float64), scratch(CHUNK, x), np.empty(CHUNK, np.int32),
            scratch(LIST_CAP, x), np.empty(LIST_CAP, np.int64))


@kernel(parallel=True)
def sample_rows(x, bias, mask, hist, params, seeds, steps, ctr, raw, lp_ids,
                tokens, logprobs, top_tok, top_lp, id_lp, status, split):
    """Sample one token per row of ``x`` ``[B, V]`` (C-contiguous float32/float64, or the
    uint16/int16 view of bfloat16/float16 data: each row is widened exactly into a float32
    row buffer, so 16-bit rows give the bits of their float32 values).

    bias: float64 ``[1 or B, V]`` (``[1, 0]``: none); mask: int32 ``[B, ceil(V/32)]``
    (``[B, 0]``: none); hist:
    int64 ``[B, L]`` (``-1`` padding, ids checked by the caller); params: float64
    ``[B, NPARAM]``; seeds, steps, ctr: uint64 ``[B]`` (Philox key, counter words 0-1 and 2);
    raw: bool; lp_ids: int64 ``[1 or B, M]``. Outputs: tokens int64 ``[B]``, logprobs
    ``[B]``, top_tok int64 ``[B, N]``, top_lp ``[B, N]``, id_lp ``[B, M]``, status int64
    ``[B]`` (:data:`OK` or the row's error; its outputs are then not written).

    ``split``: ``None``, or ``True`` for a single row of ``SPLIT_MIN`` tokens or more given
    to the parallel kernel launched with several threads (never its serial copy): its
    passes then spread over two threads (``rowstate.SPLIT_MIN``); the bits do not change.
    ``None`` and ``True`` are different types: every ``split is not None`` branch below is
    pruned at compile time from the ``None`` compilation, so the kernels that never split
    (the serial copy, batches, the C library) carry no parallel helpers (their compile time
    stays that of a kernel without the split).
    """
    nb, nv = x.shape
    buffered = bias.size > 0 or mask.size > 0 or hist.shape[1] > 0
    if split is not None and nb == 1 and nv >= SPLIT_MIN:
        wide, work, er, seen, cnt, mass, st, eb, kb, lv, li = _row_scratch(
            x, nv, buffered, hist.shape[1])
        status[0] = sample_row(x, 0, bias, mask, hist, params, seeds, steps, ctr, raw, lp_ids,
                               tokens, logprobs, top_tok, top_lp, id_lp, wide, work, er, seen,
                               cnt, mass, st, eb, kb, lv, li, True)
        return
    nchunk = row_chunks(nb)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nb)
        wide, work, er, seen, cnt, mass, st, eb, kb, lv, li = _row_scratch(
            x, nv, buffered, hist.shape[1])
        for i in range(r0, r1):
            status[i] = sample_row(x, i, bias, mask, hist, params, seeds, steps, ctr, raw,
                                   lp_ids, tokens, logprobs, top_tok, top_lp, id_lp, wide, work,
                                   er, seen, cnt, mass, st, eb, kb, lv, li, None)


@kernel
def draft_prob(rd, st_d, has_draft, tok, j):
    """The draft's probability of token ``j``: one-hot at ``tok`` without draft logits."""
    if not has_draft:
        return 1.0 if j == tok else 0.0
    return prob(load(rd, j), j, st_d, rd[0])


@kernel
def residual_pick(rt, er, st_t, rd, st_d, has_draft, tok, u, eb, kb, lv, li):
    """A token from ``max(0, p - q)`` normalized (``q`` from :func:`draft_prob`); from ``p``
    when the residual has no mass (``p == q`` up to rounding)."""
    s_t = frozen(st_t)
    s_d = frozen(st_d)
    total = 0.0
    for j in range(rt.size):
        q = draft_prob(rd, s_d, has_draft, tok, j)
        total += max(0.0, prob(load(rt, j), j, s_t, rt[0]) - q)
    if not total > 0.0:
        return choose(rt, er, st_t, u, eb, kb, lv, li)
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
def processed_row(x, work, er, bias, mask, hist, draft, i, p, ids, st, cnt, mass, eb, kb,
                  lv, li):
    """The processed row for position ``i`` of a draft (history + ``draft[:i]``) and its
    state: ``(row, status)``; ``row`` is ``x`` itself or ``work``."""
    if needs_buffer(bias, mask, hist.size + i, p):
        materialize(x, work, bias, mask, hist, draft, i, p, ids)
        return work, row_state(work, er, p, st, cnt, mass, eb, kb, lv, li, None)
    for j in range(x.size):  # one row type for both branches: a float64 copy
        work[j] = load(x, j)
    return work, row_state(work, er, p, st, cnt, mass, eb, kb, lv, li, None)


@kernel
def _distribution_scratch(nv):
    """Per-block scratch of one processed distribution: its float64 row, masses, row state
    and candidate list (values, ids)."""
    return (np.empty(nv, np.float64), np.empty(nv, np.float64), np.empty(NSTATE, np.float64),
            np.empty(LIST_CAP, np.float64), np.empty(LIST_CAP, np.int64))


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
        wt, et, st_t, lv_t, li_t = _distribution_scratch(nv)  # the target's row
        wd, ed, st_d, lv_d, li_d = _distribution_scratch(nv)  # the draft's
        seen = np.empty(hist.shape[1] + nk, np.int64)  # history + draft, sorted
        cnt = np.empty(NB, np.int64)
        mass = np.empty(NB, np.float64)
        eb = np.empty(CHUNK, np.float64)
        kb = np.empty(CHUNK, np.int32)
        for b in range(r0, r1):
            p = params[b]
            bi = bias[min(b, bias.shape[0] - 1)]
            s = OK
            for n in range(nk + 1):
                out[b, n] = -1
            acc_n = nk
            for i in range(nk + 1):
                mi = mask[b, i]
                rt, s = processed_row(tl[b, i], wt, et, bi, mi, hist[b], draft[b], i, p, seen,
                                      st_t, cnt, mass, eb, kb, lv_t, li_t)
                if s != OK:
                    break
                if i == nk:
                    u = uniform(seeds[b], steps[b], ctr[b], np.uint64(2 * nk))
                    out[b, i] = choose(rt, et, st_t, u, eb, kb, lv_t, li_t)
                    break
                tok = draft[b, i]
                q = 1.0
                if has_draft:
                    _rd, s = processed_row(dl[b, i], wd, ed, bi, mi, hist[b], draft[b], i, p,
                                           seen, st_d, cnt, mass, eb, kb, lv_d, li_d)
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
                    out[b, i] = residual_pick(rt, et, st_t, wd, st_d, has_draft, tok, u2, eb,
                                              kb, lv_t, li_t)
                acc_n = i
                break
            if s != OK:
                for n in range(nk + 1):
                    out[b, n] = -1
            num_acc[b] = acc_n
            status[b] = s
