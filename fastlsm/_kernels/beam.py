"""Beam search kernels: the fused beam step and a complete decoder over caller-owned state.

Entry kernels (Python and the C ABI drive exactly these; signatures in their docstrings):

- :func:`beam_step_rows`: one beam step, ``[B*K, V]`` logits -> top ``C`` candidates per batch.
- :func:`beam_search_layout`, :func:`beam_search_init`, :func:`beam_search_advance`,
  :func:`beam_search_finalize`: the decoder of Hugging Face transformers'
  ``generate(num_beams=K, do_sample=False)``, as a state machine over two flat buffers.

The fused row pass (:func:`row_topk_normalizer`)
-------------------------------------------------
A row is cut into blocks of :data:`BLOCK` elements. For each block, while it sits in L1:
1. its maximum (``llvm.maxnum``, vectorized);
2. only if that maximum beats the current ``C``-th best logit of the row (the threshold), a
   scalar scan that inserts the block's qualifying elements into a small sorted buffer; once
   the buffer is full the threshold rises fast and almost every block is skipped after one
   vectorized compare per element;
3. the running normalizer: when the block maximum exceeds the running maximum ``m``, the
   float64 sum is rescaled once (``s *= exp(m - m_block)``), then ``sum(exp(x - m))`` over the
   block is added (vectorized polynomial exp, float64 accumulation).
So the row is read from memory once, and ``log_softmax(x)[j] = (x[j] - m) - log(s)`` for the
selected ``j`` only; log-probs are never materialized. Candidates are ranked by (logit
descending, token ascending); ``-inf`` and NaN never enter the buffer.

Determinism: rows run in parallel, each with the same serial code; the per-batch merge and
all decoder bookkeeping run serially in batch order. Results are bitwise identical for any
thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import kernel
from .math import fexp, fmax, like

BLOCK = 512
"""Elements per block of the fused row pass (2 KiB of float32: stays in L1 between sweeps)."""

_NEG_INF = -np.inf
_DEAD = -1.0e9
"""transformers' sentinel: initial score of beams 1..K-1 and penalty of finished candidates."""


# ============================================================================ sorted buffers


@kernel
def _before(v1, t1, v2, t2):
    """Rank order of row candidates: higher value first, then lower token."""
    return v1 > v2 or (v1 == v2 and t1 < t2)


@kernel
def _insert(vals, toks, n, cap, v, t):
    """Insert ``(v, t)`` into ``vals/toks[:n]`` sorted by :func:`_before`; returns the new n.

    With ``n == cap`` the last entry drops out (or ``(v, t)`` is ignored when it ranks last).
    """
    if n == cap:
        if not _before(v, t, vals[n - 1], toks[n - 1]):
            return n
        i = n - 1
    else:
        i = n
        n += 1
    while i > 0 and _before(v, t, vals[i - 1], toks[i - 1]):
        vals[i] = vals[i - 1]
        toks[i] = toks[i - 1]
        i -= 1
    vals[i] = v
    toks[i] = t
    return n


@kernel
def _resort(vals, toks, n):
    """Insertion sort of ``vals/toks[:n]`` by :func:`_before` (linear when nearly sorted)."""
    for i in range(1, n):
        v = vals[i]
        t = toks[i]
        j = i
        while j > 0 and _before(v, t, vals[j - 1], toks[j - 1]):
            vals[j] = vals[j - 1]
            toks[j] = toks[j - 1]
            j -= 1
        vals[j] = v
        toks[j] = t


@kernel
def _before3(s1, k1, t1, s2, k2, t2):
    """Rank order of batch candidates: higher score, then lower beam, then lower token."""
    if s1 != s2:
        return s1 > s2
    if k1 != k2:
        return k1 < k2
    return t1 < t2


# ============================================================================ fused row pass


@kernel
def row_topk_normalizer(x, cap, vals, toks):
    """One read of a logits row: its normalizer and its ``cap`` best finite logits.

    ``x``: float32/float64 row ``[V]``. ``vals`` (float64) and ``toks`` (int64), each at least
    ``cap`` long, receive the selected logits and their token ids, ranked by value descending
    then token ascending. Returns ``(m, log_s, n)``: ``m`` the row maximum (float64), ``log_s``
    = ``log(sum(exp(x - m)))`` (float64), ``n`` the number of entries written (at most
    ``cap``; fewer only when the row has fewer finite values). ``log_softmax(x)[j]`` is
    ``(x[j] - m) - log_s``. A row with a NaN or ``+inf`` gives ``log_s`` NaN; a row of all
    ``-inf`` (or empty) gives ``m = log_s = -inf``.
    """
    size = x.size
    ninf = like(x, -np.inf)
    m = ninf
    s = 0.0
    thr = ninf
    n = 0
    nan_seen = False
    for start in range(0, size, BLOCK):
        stop = min(start + BLOCK, size)
        bm = ninf
        for j in range(start, stop):
            bm = fmax(bm, x[j])
        if bm > thr:
            for j in range(start, stop):
                v = x[j]
                if v > thr:
                    n = _insert(vals, toks, n, cap, np.float64(v), np.int64(j))
                    if n == cap:
                        thr = like(x, vals[cap - 1])
        if bm > m:
            s = s * math.exp(np.float64(m) - np.float64(bm))
            m = bm
        if bm > ninf:
            acc = 0.0
            for j in range(start, stop):
                acc += fexp(x[j] - m)
            s += acc
        else:  # an all -inf/NaN block adds nothing, but a NaN must still poison the row
            for j in range(start, stop):
                if x[j] != x[j]:
                    nan_seen = True
    log_s = np.log(s) if s > 0.0 else _NEG_INF
    if nan_seen or s != s:
        log_s = np.nan
    return np.float64(m), log_s, n


# ============================================================================ beam step


@kernel
def _insert_candidate(score, beam, tok, logp, n, cap, s, k, t, lp):
    """Insert a batch candidate into the arrays ranked by :func:`_before3`; returns new n."""
    if n == cap:
        if not _before3(s, k, t, score[n - 1], beam[n - 1], tok[n - 1]):
            return n
        i = n - 1
    else:
        i = n
        n += 1
    while i > 0 and _before3(s, k, t, score[i - 1], beam[i - 1], tok[i - 1]):
        score[i] = score[i - 1]
        beam[i] = beam[i - 1]
        tok[i] = tok[i - 1]
        logp[i] = logp[i - 1]
        i -= 1
    score[i] = s
    beam[i] = k
    tok[i] = t
    logp[i] = lp
    return n


@kernel
def merge_candidates(beam_scores, row_val, row_tok, row_n, vocab, out_score, out_tok,
                     out_beam, out_logp):
    """Top ``C`` candidates of one batch from its ``K`` rows' candidate lists.

    ``beam_scores`` float64 ``[K]``; ``row_val`` float64 ``[K, >=C]`` log-probs and ``row_tok``
    int64 ``[K, >=C]`` token ids of each row's best candidates (sorted by log-prob descending,
    token ascending), ``row_n`` int64 ``[K]`` their counts; ``vocab`` the vocabulary size.
    Outputs ``[C]``: ``out_score`` (``beam_scores[k] + logp``, float64), ``out_tok``,
    ``out_beam`` (0..K-1), ``out_logp``. Ranked by score descending, then lower beam, then
    lower token. Candidates with score ``-inf`` come only after every finite one, in (beam,
    token) order, with ``out_logp = -inf``.
    """
    nbeams = row_n.shape[0]
    cap = out_score.shape[0]
    n = 0
    for k in range(nbeams):
        bs = beam_scores[k]
        for i in range(row_n[k]):
            s = bs + row_val[k, i]
            t = row_tok[k, i]
            if not s > _NEG_INF:
                break
            if n == cap and not _before3(s, k, t, out_score[n - 1], out_beam[n - 1],
                                         out_tok[n - 1]):
                break  # the rest of this row ranks lower still
            n = _insert_candidate(out_score, out_beam, out_tok, out_logp, n, cap, s, k, t,
                                  row_val[k, i])
    nfinite = n
    if n < cap:  # fewer finite candidates than asked: -inf ones in (beam, token) order
        for k in range(nbeams):
            if n == cap:
                break
            for v in range(vocab):
                if n == cap:
                    break
                taken = False
                for i in range(nfinite):
                    if out_beam[i] == k and out_tok[i] == v:
                        taken = True
                        break
                if not taken:
                    out_score[n] = _NEG_INF
                    out_beam[n] = k
                    out_tok[n] = v
                    out_logp[n] = _NEG_INF
                    n += 1


@kernel(parallel=True)
def beam_step_rows(x, beam_scores, num_beams, row_val, row_tok, row_n, out_score, out_tok,
                   out_beam, out_logp):
    """One beam-search step: ``score = beam_scores + log_softmax(x)``, top ``C`` per batch.

    Parameters (all C-contiguous; ``N = B * K`` rows, row ``b * K + k``):
        x:           float32/float64 ``[N, V]`` logits (read once, not modified).
        beam_scores: float64 ``[N]`` running scores (no NaN, no ``+inf``; ``-inf`` = dead).
        num_beams:   int64 ``K``.
        row_val:     float64 ``[N, C]`` scratch (per-row candidate log-probs).
        row_tok:     int64 ``[N, C]`` scratch (per-row candidate tokens).
        row_n:       int64 ``[N]`` scratch.
        out_score:   float64 ``[B, C]`` out, candidate scores, descending per batch.
        out_tok:     int64 ``[B, C]`` out, token ids.
        out_beam:    int64 ``[B, C]`` out, beam index in ``0..K-1``.
        out_logp:    float64 ``[B, C]`` out, the token's log-prob ``log_softmax(x[row])[tok]``.
        ``C`` is ``out_score.shape[1]``, at most ``K * V``.

    Returns:
        int64: -1 on success, else the first row (``b * K + k``) holding a NaN or ``+inf``
        (outputs are then unspecified).

    Ties are broken toward the lower beam, then the lower token; ``-inf`` candidates are taken
    only when fewer than ``C`` finite ones exist (see :func:`merge_candidates`).
    """
    nrows = x.shape[0]
    cap = row_val.shape[1]
    for r in prange(nrows):
        m, log_s, cnt = row_topk_normalizer(x[r], cap, row_val[r], row_tok[r])
        if log_s != log_s or m == np.inf:
            row_n[r] = -1
            continue
        if not beam_scores[r] > _NEG_INF:
            cnt = 0
        for i in range(cnt):
            row_val[r, i] = (row_val[r, i] - m) - log_s
        _resort(row_val[r], row_tok[r], cnt)
        row_n[r] = cnt
    for r in range(nrows):
        if row_n[r] < 0:
            return np.int64(r)
    nbatch = out_score.shape[0]
    vocab = x.shape[1]
    for b in range(nbatch):
        lo = b * num_beams
        hi = lo + num_beams
        merge_candidates(beam_scores[lo:hi], row_val[lo:hi], row_tok[lo:hi], row_n[lo:hi],
                         vocab, out_score[b], out_tok[b], out_beam[b], out_logp[b])
    return np.int64(-1)
