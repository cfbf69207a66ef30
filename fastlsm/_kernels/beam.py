"""Beam search kernels: the fused beam step and a complete decoder over caller-owned state.

Entry kernels (Python and the C ABI drive exactly these; signatures in their docstrings):

- :func:`beam_step_rows`: one beam step, ``[B*K, V]`` logits -> top ``C`` candidates per batch.
- :func:`beam_search_layout`, :func:`beam_search_init`, :func:`beam_search_advance`,
  :func:`beam_search_finalize`: the decoder of Hugging Face transformers'
  ``generate(num_beams=K, do_sample=False)``, as a state machine over two flat buffers.

The fused row pass (:func:`row_topk_normalizer`)
-------------------------------------------------
The row is read from memory once, in blocks of :data:`BLOCK` elements:
1. pass 1: each block's maximum (``llvm.maxnum``, vectorized), the row maximum ``m`` and the
   ``C``-th largest block maximum ``lo``: ``C`` blocks hold an element ``>= lo``, so every
   selected logit is ``>= lo``;
2. pass 2 (row in L2, each block in L1): ``sum(exp(x - m))`` (vectorized polynomial exp,
   float64 accumulation) and the block maximum again; only a block whose maximum reaches
   ``lo`` and beats the current ``C``-th best is scanned element by element into a small
   sorted buffer. About ``C`` blocks are scanned whatever ``V``; the others cost one
   vectorized compare per element.
``log_softmax(x)[j] = (x[j] - m) - log(s)`` is then formed for the selected ``j`` only;
log-probs are never materialized. Candidates are ranked by (logit descending, token
ascending); ``-inf`` and NaN never enter the buffer.

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
from .memory import prefetch
from .rows import LINE, SCRATCH, block_sumexp

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
def _insert_value(vals, n, cap, v):
    """Insert ``v`` into the descending ``vals[:n]`` (capacity ``cap``); returns the new n."""
    if n == cap:
        if not v > vals[n - 1]:
            return n
        i = n - 1
    else:
        i = n
        n += 1
    while i > 0 and v > vals[i - 1]:
        vals[i] = vals[i - 1]
        i -= 1
    vals[i] = v
    return n


@kernel
def row_topk_normalizer(x, cap, vals, toks, nxt=None):
    """One read of a logits row: its normalizer and its ``cap`` best finite logits.

    ``x``: float32/float64 row ``[V]``; ``nxt`` (optional) the row computed next, prefetched
    during pass 2. ``vals`` (float64) and ``toks`` (int64), each at least
    ``cap`` long, receive the selected logits and their token ids, ranked by value descending
    then token ascending. Returns ``(m, log_s, n)``: ``m`` the row maximum (float64), ``log_s``
    = ``log(sum(exp(x - m)))`` (float64), ``n`` the number of entries written (at most
    ``cap``; fewer only when the row has fewer finite values). ``log_softmax(x)[j]`` is
    ``(x[j] - m) - log_s``. A row with a NaN or ``+inf`` gives ``log_s`` NaN; a row of all
    ``-inf`` (or empty) gives ``m = log_s = -inf``.

    Pass 1 (from memory): block maxima, vectorized; the row maximum and the ``cap``-th
    largest block maximum ``lo`` (``cap`` blocks hold an element >= ``lo``, so every selected
    logit is >= ``lo``). Pass 2 (row in L2, block in L1): per block, ``sum(exp(x - m))``
    (vectorized); only a block whose maximum (kept from pass 1) reaches ``lo`` and beats the
    current ``cap``-th best is scanned element by element. Typically about ``cap`` blocks
    are scanned, whatever ``V``.
    """
    size = x.size
    ninf = like(x, -np.inf)
    m = ninf
    nb = 0
    bmax = np.empty((size + BLOCK - 1) // BLOCK, x.dtype)  # block maxima, for pass 2
    for start in range(0, size, BLOCK):
        # Index a block view from 0 so that Numba's negative-index wraparound does not turn
        # the loads into gathers (see normalize.row_shifted_sumexp).
        xb = x[start:min(start + BLOCK, size)]
        bm = ninf
        for j in range(xb.size):
            bm = fmax(bm, xb[j])
        bmax[start // BLOCK] = bm
        m = fmax(m, bm)
        if bm > ninf:
            nb = _insert_value(vals, nb, cap, np.float64(bm))
    lo = like(x, vals[cap - 1]) if nb == cap else ninf

    if not abs(m) < np.inf:
        if m == np.inf:
            return np.float64(m), np.nan, 0
        for j in range(size):  # all -inf, or NaN hidden from the max
            if x[j] != x[j]:
                return np.float64(m), np.nan, 0
        return np.float64(m), _NEG_INF, 0

    s = 0.0
    n = 0
    worst = ninf  # the cap-th best so far, once the buffer is full
    eb = np.empty(max(1, min(size, SCRATCH)), x.dtype)  # exp values, for a fixed-order sum
    for start in range(0, size, BLOCK):
        xb = x[start:min(start + BLOCK, size)]
        if nxt is not None:  # the thread's next row streams in while this one is computed
            for j in range(start, min(start + BLOCK, nxt.size), LINE):
                prefetch(nxt, j)
        s += block_sumexp(xb, m, eb, xb[:0])
        bm = bmax[start // BLOCK]
        if bm >= lo and bm > worst:
            for j in range(xb.size):
                v = xb[j]
                if v >= lo and v > worst:
                    n = _insert(vals, toks, n, cap, np.float64(v), np.int64(start + j))
                    if n == cap:
                        worst = like(x, vals[cap - 1])
    if s != s:  # a NaN in the row reached the sum
        return np.float64(m), np.nan, n
    return np.float64(m), (np.log(s) if s > 0.0 else _NEG_INF), n


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
        m, log_s, cnt = row_topk_normalizer(
            x[r], cap, row_val[r], row_tok[r], x[min(r + 1, x.shape[0] - 1)]
        )
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


# ============================================================================ decoder
#
# The decoder is a state machine over caller-allocated memory, so that Python and C drive the
# very same compiled code:
#
#   cfg    int64   configuration, indices CFG_* below (eos ids at the end)
#   fcfg   float64 [FCFG_SIZE] length_penalty, repetition_penalty
#   fstate float64 [layout[L_FLOAT_SIZE]]  state, sliced into named arrays by beam_search_layout
#   istate int64   [layout[L_INT_SIZE]]    state; istate[:HEADER] is the header (ST_*)
#
#   beam_search_init(cfg, fcfg, input_ids, fstate, istate)          -> status
#   loop:
#       logits = step(sequences = istate seqs[:, :cur_len], parents) (rows b*K + k)
#       status = beam_search_advance(cfg, fcfg, fstate, istate, logits)
#       stop unless status == BEAM_RUNNING
#   beam_search_finalize(cfg, fcfg, fstate, istate, out_seqs, out_scores, out_logp, out_len)
#
# Dimensions: B batch, K beams, L prompt length, M = L + max_new_tokens (maximum total length),
# G = max_new_tokens, N = B * K running rows, C candidates per batch and step
# (transformers: max(2, 1 + n_eos) * K), H finished hypotheses kept per batch
# (transformers: K; CTranslate2's patience: round(K * patience)), S = 2 * M + n_eos.

CFG_BATCH = 0
CFG_BEAMS = 1
CFG_PROMPT_LEN = 2
CFG_MAX_LEN = 3
CFG_CANDIDATES = 4
CFG_MAX_HYPS = 5
CFG_EARLY_STOPPING = 6  # 0: False (transformers' heuristic), 1: True, 2: "never"
CFG_MIN_NEW_TOKENS = 7
CFG_NO_REPEAT_NGRAM = 8
CFG_RENORMALIZE = 9  # 0: bans/penalty applied to log-probs (transformers), 1: to logits
CFG_PAD = 10
CFG_NUM_EOS = 11
CFG_EOS = 12  # cfg[CFG_EOS : CFG_EOS + n_eos] are the EOS ids
CFG_SIZE = 12  # + n_eos

FCFG_LENGTH_PENALTY = 0
FCFG_REPETITION_PENALTY = 1
FCFG_SIZE = 2

EARLY_FALSE = 0
EARLY_TRUE = 1
EARLY_NEVER = 2

# istate header
ST_CUR_LEN = 0  # current sequence length (prompt included)
ST_STATUS = 1  # last status returned
ST_BAD_ROW = 2  # row b*K+k of the logits that had NaN/+inf (status BEAM_BAD_LOGITS)
ST_STEPS = 3  # number of completed advance calls
ST_VOCAB = 4  # vocabulary size seen at the first step (later steps must match)
HEADER = 8

# status codes (returned by init/advance/finalize and kept in istate[ST_STATUS])
BEAM_RUNNING = 0  # call the model and advance again
BEAM_DONE = 1  # search finished: call beam_search_finalize
BEAM_BAD_LOGITS = 2  # a logits row had NaN or +inf (row in istate[ST_BAD_ROW]); state unchanged
BEAM_BAD_SHAPE = 3  # buffers too small, logits of the wrong shape, or C > K * V
BEAM_NOT_RUNNING = 4  # advance called after the search finished

# layout offsets (beam_search_layout): int arrays in istate, float arrays in fstate
L_SEQS = 0  # int64 [N, M] running sequences (prompt + generated)
L_SEQS_TMP = 1  # int64 [N, M] scratch
L_PARENTS = 2  # int64 [N] row each running beam continues (b*K + k); -1 before step 1
L_HYP_TOK = 3  # int64 [B, H, G] generated tokens of finished hypotheses (best first)
L_HYP_LEN = 4  # int64 [B, H] their generated lengths (EOS included)
L_HYP_COUNT = 5  # int64 [B] number of finished hypotheses
L_DONE = 6  # int64 [B] 1 once the batch item can no longer improve
L_ROW_N = 7  # int64 [N] scratch
L_ROW_TOK = 8  # int64 [N, C] scratch
L_CAND_TOK = 9  # int64 [B, C] scratch
L_CAND_BEAM = 10  # int64 [B, C] scratch
L_SPEC_TOK = 11  # int64 [N, S] scratch: tokens with a ban or penalty this step
L_SPEC_KIND = 12  # int64 [N, S] scratch
L_INT_SIZE = 13  # total length of istate
L_BEAM_SCORES = 14  # float64 [N] running scores (sum of log-probs; -1e9 for unused beams)
L_RUN_LOGP = 15  # float64 [N, G] per-token log-probs of the running beams
L_RUN_LOGP_TMP = 16  # float64 [N, G] scratch
L_HYP_SCORE = 17  # float64 [B, H] finished scores, sum / generated_len ** length_penalty
L_HYP_LOGP = 18  # float64 [B, H, G] per-token log-probs of finished hypotheses
L_ROW_VAL = 19  # float64 [N, C] scratch
L_CAND_SCORE = 20  # float64 [B, C] scratch
L_CAND_LOGP = 21  # float64 [B, C] scratch
L_SPEC_VAL = 22  # float64 [N, S] scratch
L_FLOAT_SIZE = 23  # total length of fstate
LAYOUT_SIZE = 24

_BAN = 1
_PENALTY = 2


@kernel
def _dims(cfg):
    nb = cfg[CFG_BATCH]
    nk = cfg[CFG_BEAMS]
    lp = cfg[CFG_PROMPT_LEN]
    ml = cfg[CFG_MAX_LEN]
    nc = cfg[CFG_CANDIDATES]
    nh = cfg[CFG_MAX_HYPS]
    ns = 2 * ml + cfg[CFG_NUM_EOS]
    return nb, nk, lp, ml, nc, nh, nb * nk, ml - lp, ns


@kernel(entry=True)
def beam_search_layout(cfg, layout):
    """Offsets of the state arrays: ``layout`` is int64 ``[LAYOUT_SIZE]``, filled in place.

    ``layout[L_X]`` is the offset of array X in ``istate`` (int arrays, L_SEQS..L_SPEC_KIND) or in
    ``fstate`` (float arrays, L_BEAM_SCORES..L_SPEC_VAL); shapes are listed with the L_*
    constants. ``layout[L_INT_SIZE]`` and ``layout[L_FLOAT_SIZE]`` are the lengths to allocate.
    Returns 0, or BEAM_BAD_SHAPE for an invalid configuration.
    """
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    if (nb < 1 or nk < 1 or lp < 0 or g < 1 or nc < nk or nh < 1
            or cfg[CFG_NUM_EOS] < 0 or cfg.shape[0] < CFG_SIZE + cfg[CFG_NUM_EOS]):
        return np.int64(BEAM_BAD_SHAPE)
    o = np.int64(HEADER)
    sizes_i = (n * ml, n * ml, n, nb * nh * g, nb * nh, nb, nb, n, n * nc, nb * nc, nb * nc,
               n * ns, n * ns)
    for i in range(len(sizes_i)):
        layout[L_SEQS + i] = o
        o += sizes_i[i]
    layout[L_INT_SIZE] = o
    o = np.int64(0)
    sizes_f = (n, n * g, n * g, nb * nh, nb * nh * g, n * nc, nb * nc, nb * nc, n * ns)
    for i in range(len(sizes_f)):
        layout[L_BEAM_SCORES + i] = o
        o += sizes_f[i]
    layout[L_FLOAT_SIZE] = o
    return np.int64(0)


@kernel
def _int_views(cfg, ist):
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    lay = np.empty(LAYOUT_SIZE, np.int64)
    beam_search_layout(cfg, lay)
    seqs = ist[lay[L_SEQS]:lay[L_SEQS] + n * ml].reshape((n, ml))
    seqs_tmp = ist[lay[L_SEQS_TMP]:lay[L_SEQS_TMP] + n * ml].reshape((n, ml))
    parents = ist[lay[L_PARENTS]:lay[L_PARENTS] + n]
    hyp_tok = ist[lay[L_HYP_TOK]:lay[L_HYP_TOK] + nb * nh * g].reshape((nb, nh, g))
    hyp_len = ist[lay[L_HYP_LEN]:lay[L_HYP_LEN] + nb * nh].reshape((nb, nh))
    hyp_count = ist[lay[L_HYP_COUNT]:lay[L_HYP_COUNT] + nb]
    done = ist[lay[L_DONE]:lay[L_DONE] + nb]
    row_n = ist[lay[L_ROW_N]:lay[L_ROW_N] + n]
    row_tok = ist[lay[L_ROW_TOK]:lay[L_ROW_TOK] + n * nc].reshape((n, nc))
    cand_tok = ist[lay[L_CAND_TOK]:lay[L_CAND_TOK] + nb * nc].reshape((nb, nc))
    cand_beam = ist[lay[L_CAND_BEAM]:lay[L_CAND_BEAM] + nb * nc].reshape((nb, nc))
    spec_tok = ist[lay[L_SPEC_TOK]:lay[L_SPEC_TOK] + n * ns].reshape((n, ns))
    spec_kind = ist[lay[L_SPEC_KIND]:lay[L_SPEC_KIND] + n * ns].reshape((n, ns))
    return (seqs, seqs_tmp, parents, hyp_tok, hyp_len, hyp_count, done, row_n, row_tok,
            cand_tok, cand_beam, spec_tok, spec_kind)


@kernel
def _float_views(cfg, fst):
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    lay = np.empty(LAYOUT_SIZE, np.int64)
    beam_search_layout(cfg, lay)
    beam_scores = fst[lay[L_BEAM_SCORES]:lay[L_BEAM_SCORES] + n]
    run_logp = fst[lay[L_RUN_LOGP]:lay[L_RUN_LOGP] + n * g].reshape((n, g))
    run_logp_tmp = fst[lay[L_RUN_LOGP_TMP]:lay[L_RUN_LOGP_TMP] + n * g].reshape((n, g))
    hyp_score = fst[lay[L_HYP_SCORE]:lay[L_HYP_SCORE] + nb * nh].reshape((nb, nh))
    hyp_logp = fst[lay[L_HYP_LOGP]:lay[L_HYP_LOGP] + nb * nh * g].reshape((nb, nh, g))
    row_val = fst[lay[L_ROW_VAL]:lay[L_ROW_VAL] + n * nc].reshape((n, nc))
    cand_score = fst[lay[L_CAND_SCORE]:lay[L_CAND_SCORE] + nb * nc].reshape((nb, nc))
    cand_logp = fst[lay[L_CAND_LOGP]:lay[L_CAND_LOGP] + nb * nc].reshape((nb, nc))
    spec_val = fst[lay[L_SPEC_VAL]:lay[L_SPEC_VAL] + n * ns].reshape((n, ns))
    return (beam_scores, run_logp, run_logp_tmp, hyp_score, hyp_logp, row_val, cand_score,
            cand_logp, spec_val)


@kernel
def _sizes_ok(cfg, fcfg, fst, ist):
    lay = np.empty(LAYOUT_SIZE, np.int64)
    if beam_search_layout(cfg, lay) != 0:
        return False
    return (fcfg.shape[0] >= FCFG_SIZE and ist.shape[0] >= lay[L_INT_SIZE]
            and fst.shape[0] >= lay[L_FLOAT_SIZE])


@kernel(entry=True)
def beam_search_init(cfg, fcfg, input_ids, fstate, istate):
    """Start a search: prompts in, every running beam = its prompt, nothing finished.

    ``input_ids`` int64 ``[B, L]`` (C-contiguous). ``fstate``/``istate`` sized by
    :func:`beam_search_layout`. Beam 0 of each batch item starts at score 0 and beams 1..K-1
    at -1e9 (transformers' convention: the first step expands beam 0 only). Returns
    BEAM_RUNNING, or BEAM_BAD_SHAPE (buffers too small, or ``input_ids`` not ``[B, L]``).
    """
    if not _sizes_ok(cfg, fcfg, fstate, istate):
        return np.int64(BEAM_BAD_SHAPE)
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    if input_ids.shape[0] != nb or input_ids.shape[1] != lp:
        return np.int64(BEAM_BAD_SHAPE)
    (seqs, seqs_tmp, parents, hyp_tok, hyp_len, hyp_count, done, row_n, row_tok, cand_tok,
     cand_beam, spec_tok, spec_kind) = _int_views(cfg, istate)
    (beam_scores, run_logp, run_logp_tmp, hyp_score, hyp_logp, row_val, cand_score, cand_logp,
     spec_val) = _float_views(cfg, fstate)
    pad = cfg[CFG_PAD]
    for r in range(n):
        b = r // nk
        for j in range(lp):
            seqs[r, j] = input_ids[b, j]
        for j in range(lp, ml):
            seqs[r, j] = pad
        for j in range(g):
            run_logp[r, j] = 0.0
        beam_scores[r] = 0.0 if r % nk == 0 else _DEAD
        parents[r] = -1
    for b in range(nb):
        hyp_count[b] = 0
        done[b] = 0
        for h in range(nh):
            hyp_score[b, h] = _NEG_INF
            hyp_len[b, h] = 0
    istate[ST_CUR_LEN] = lp
    istate[ST_STATUS] = BEAM_RUNNING
    istate[ST_BAD_ROW] = -1
    istate[ST_STEPS] = 0
    istate[ST_VOCAB] = -1
    return np.int64(BEAM_RUNNING)


@kernel
def _mark(x, t, kind, spec_tok, spec_kind, spec_val, ns):
    """Record token ``t`` of row ``x`` as special (ban/penalty), hide it with -inf.

    A token already hidden (or already ``-inf``) is skipped: it stays ``-inf`` whatever the
    processing, and a ban recorded first wins over a later penalty. Out-of-vocabulary ids
    (possible in a prompt) are ignored, as transformers does.
    """
    if t < 0 or t >= x.size:
        return ns
    v = x[t]
    if v == -np.inf:
        return ns
    spec_tok[ns] = t
    spec_kind[ns] = kind
    spec_val[ns] = np.float64(v)
    x[t] = like(x, -np.inf)
    return ns + 1


@kernel
def _penalize(v, p):
    """transformers' repetition penalty: ``v * p`` if ``v < 0`` else ``v / p``."""
    return v * p if v < 0.0 else v / p


@kernel
def _row_candidates(x, seq, cur_len, cfg, fcfg, spec_tok, spec_kind, spec_val, row_val,
                    row_tok):
    """Process one running row: bans and penalty, fused normalizer + top-C, restore.

    Returns the number of candidates written to ``row_val`` (processed log-probs, float64)
    and ``row_tok``, ranked by log-prob descending then token ascending; -1 when the row has
    a NaN or ``+inf``. ``x`` is modified during the call and restored bit for bit.
    """
    lp = cfg[CFG_PROMPT_LEN]
    cap = cfg[CFG_CANDIDATES]
    ngram = cfg[CFG_NO_REPEAT_NGRAM]
    rep = fcfg[FCFG_REPETITION_PENALTY]
    renorm = cfg[CFG_RENORMALIZE] != 0
    ns = 0
    if cur_len - lp < cfg[CFG_MIN_NEW_TOKENS]:
        for i in range(cfg[CFG_NUM_EOS]):
            ns = _mark(x, cfg[CFG_EOS + i], _BAN, spec_tok, spec_kind, spec_val, ns)
    if ngram > 0 and cur_len >= ngram:
        # transformers: every window whose first n-1 tokens equal the last n-1 bans its last
        p0 = cur_len - ngram + 1
        for st in range(cur_len - ngram + 1):
            match = True
            for i in range(ngram - 1):
                if seq[st + i] != seq[p0 + i]:
                    match = False
                    break
            if match:
                ns = _mark(x, seq[st + ngram - 1], _BAN, spec_tok, spec_kind, spec_val, ns)
    if rep != 1.0:
        for j in range(cur_len):
            ns = _mark(x, seq[j], _PENALTY, spec_tok, spec_kind, spec_val, ns)

    m, log_s, cnt = row_topk_normalizer(x, cap, row_val, row_tok)

    bad = log_s != log_s or m == np.inf
    for i in range(ns):
        v = spec_val[i]
        x[spec_tok[i]] = like(x, v)
        if not v < np.inf:
            bad = True
    if bad:
        return -1
    if ns > 0:
        # Fold the special tokens into the normalizer: their raw logits (transformers'
        # order: processing comes after log_softmax) or their processed logits (renormalize).
        top = m
        for i in range(ns):
            v = spec_val[i]
            if renorm:
                v = _NEG_INF if spec_kind[i] == _BAN else _penalize(v, rep)
            top = max(top, v)
        if top > _NEG_INF:
            total = math.exp((m - top) + log_s) if m > _NEG_INF else 0.0
            for i in range(ns):
                v = spec_val[i]
                if renorm:
                    v = _NEG_INF if spec_kind[i] == _BAN else _penalize(v, rep)
                total += math.exp(v - top)
            m = top
            log_s = math.log(total)
        else:
            m = _NEG_INF
    if not m > _NEG_INF:
        return 0
    for i in range(cnt):
        row_val[i] = (row_val[i] - m) - log_s
    _resort(row_val, row_tok, cnt)
    for i in range(ns):
        if spec_kind[i] == _BAN:
            continue
        v = spec_val[i]
        if renorm:
            lpv = (_penalize(v, rep) - m) - log_s
        else:
            lpv = _penalize((v - m) - log_s, rep)
        if lpv > _NEG_INF:
            cnt = _insert(row_val, row_tok, cnt, cap, lpv, spec_tok[i])
    return cnt


@kernel
def _is_eos(cfg, t):
    for i in range(cfg[CFG_NUM_EOS]):
        if cfg[CFG_EOS + i] == t:
            return True
    return False


@kernel(parallel=True)
def beam_search_advance(cfg, fcfg, fstate, istate, logits):
    """One decoding step, exactly as transformers' ``_beam_search`` loop body.

    ``logits``: float32/float64 ``[N, V]`` C-contiguous, writable (temporarily modified,
    restored bit for bit), next-token logits of the sequences ``seqs[:, :cur_len]`` (row
    ``b*K + k``). Per step:

    1. per row, in parallel: log-probs with repetition penalty, n-gram bans and the
       ``min_new_tokens`` EOS ban (applied after ``log_softmax``, or to the logits before it
       when CFG_RENORMALIZE), fused with the row's top-C selection;
    2. per batch item, serially: top C of ``beam_score + log-prob`` (ties: lower beam, then
       lower token); a candidate is finished when its token is an EOS id or the sequence
       reaches max length; the K best unfinished candidates (finished ones at -1e9 if
       needed) become the running beams; finished candidates among the top K enter the
       batch's H best hypotheses with score ``sum / generated_len ** length_penalty`` unless
       the batch is done;
    3. the early-stopping test of transformers for each batch item (early_stopping False:
       best running score at the current length cannot beat the worst kept hypothesis;
       "never": same at the maximum length when length_penalty > 0; True: H hypotheses).

    Returns BEAM_RUNNING, BEAM_DONE (max length reached or every batch item done),
    BEAM_BAD_LOGITS (NaN/+inf row stored in istate[ST_BAD_ROW]; nothing changed, the same
    step may be retried), BEAM_BAD_SHAPE, or BEAM_NOT_RUNNING.
    """
    if not _sizes_ok(cfg, fcfg, fstate, istate):
        return np.int64(BEAM_BAD_SHAPE)
    if istate[ST_STATUS] != BEAM_RUNNING and istate[ST_STATUS] != BEAM_BAD_LOGITS:
        return np.int64(BEAM_NOT_RUNNING)
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    vocab = logits.shape[1]
    if logits.shape[0] != n or nc > nk * vocab or (istate[ST_VOCAB] >= 0
                                                    and istate[ST_VOCAB] != vocab):
        return np.int64(BEAM_BAD_SHAPE)
    (seqs, seqs_tmp, parents, hyp_tok, hyp_len, hyp_count, done, row_n, row_tok, cand_tok,
     cand_beam, spec_tok, spec_kind) = _int_views(cfg, istate)
    (beam_scores, run_logp, run_logp_tmp, hyp_score, hyp_logp, row_val, cand_score, cand_logp,
     spec_val) = _float_views(cfg, fstate)
    cur = istate[ST_CUR_LEN]
    istate[ST_VOCAB] = vocab

    for r in prange(n):
        row_n[r] = _row_candidates(logits[r], seqs[r], cur, cfg, fcfg, spec_tok[r],
                                   spec_kind[r], spec_val[r], row_val[r], row_tok[r])
    for r in range(n):
        if row_n[r] < 0:
            istate[ST_BAD_ROW] = r
            istate[ST_STATUS] = BEAM_BAD_LOGITS
            return np.int64(BEAM_BAD_LOGITS)

    lpen = fcfg[FCFG_LENGTH_PENALTY]
    early = cfg[CFG_EARLY_STOPPING]
    last = cur + 1 >= ml
    gen = cur - lp  # tokens generated before this step
    for b in range(nb):
        lo = b * nk
        hi = lo + nk
        merge_candidates(beam_scores[lo:hi], row_val[lo:hi], row_tok[lo:hi], row_n[lo:hi],
                         vocab, cand_score[b], cand_tok[b], cand_beam[b], cand_logp[b])
        # running beams: top K of score - 1e9 * finished (ties: lower candidate index)
        i = 0
        j = 0
        for k in range(nk):
            while i < nc and (last or _is_eos(cfg, cand_tok[b, i])):
                i += 1
            while j < nc and not (last or _is_eos(cfg, cand_tok[b, j])):
                j += 1
            if i < nc and (j >= nc or cand_score[b, i] > cand_score[b, j] + _DEAD
                           or (cand_score[b, i] == cand_score[b, j] + _DEAD and i < j)):
                c = i
                score = cand_score[b, c]
                i += 1
            else:
                c = j
                score = cand_score[b, c] + _DEAD
                j += 1
            r = lo + k
            parent = lo + cand_beam[b, c]
            for t in range(cur):
                seqs_tmp[r, t] = seqs[parent, t]
            seqs_tmp[r, cur] = cand_tok[b, c]
            for t in range(gen):
                run_logp_tmp[r, t] = run_logp[parent, t]
            run_logp_tmp[r, gen] = cand_logp[b, c]
            parents[r] = parent
            beam_scores[r] = score
        # finished hypotheses: top-K candidates that end here, unless the batch is done
        blocked = done[b] != 0 or (early == EARLY_TRUE and hyp_count[b] == nh)
        if not blocked:
            denom = np.float64(gen + 1) ** lpen
            for c in range(nk):
                if not (last or _is_eos(cfg, cand_tok[b, c])):
                    continue
                score = cand_score[b, c] / denom
                cnt = hyp_count[b]
                if cnt == nh and not score > hyp_score[b, nh - 1]:
                    continue
                pos = cnt if cnt < nh else nh - 1
                while pos > 0 and score > hyp_score[b, pos - 1]:
                    pos -= 1
                last_moved = cnt if cnt < nh else nh - 1
                for h in range(last_moved, pos, -1):
                    hyp_score[b, h] = hyp_score[b, h - 1]
                    hyp_len[b, h] = hyp_len[b, h - 1]
                    for t in range(g):
                        hyp_tok[b, h, t] = hyp_tok[b, h - 1, t]
                        hyp_logp[b, h, t] = hyp_logp[b, h - 1, t]
                parent = lo + cand_beam[b, c]
                hyp_score[b, pos] = score
                hyp_len[b, pos] = gen + 1
                for t in range(gen):
                    hyp_tok[b, pos, t] = seqs[parent, lp + t]
                    hyp_logp[b, pos, t] = run_logp[parent, t]
                hyp_tok[b, pos, gen] = cand_tok[b, c]
                hyp_logp[b, pos, gen] = cand_logp[b, c]
                for t in range(gen + 1, g):
                    hyp_tok[b, pos, t] = cfg[CFG_PAD]
                    hyp_logp[b, pos, t] = 0.0
                if cnt < nh:
                    hyp_count[b] = cnt + 1
        for r in range(lo, hi):
            for t in range(cur + 1):
                seqs[r, t] = seqs_tmp[r, t]
            for t in range(gen + 1):
                run_logp[r, t] = run_logp_tmp[r, t]

    cur += 1
    istate[ST_CUR_LEN] = cur
    istate[ST_STEPS] += 1
    istate[ST_BAD_ROW] = -1
    all_done = True
    for b in range(nb):
        if done[b] == 0:
            if early == EARLY_NEVER and lpen > 0.0:
                best_len = ml - lp
            else:
                best_len = cur - lp
            best = beam_scores[b * nk] / np.float64(best_len) ** lpen
            worst = hyp_score[b, nh - 1] if hyp_count[b] == nh else _DEAD
            if not best > worst:
                done[b] = 1
        if not (done[b] != 0 or (early == EARLY_TRUE and hyp_count[b] == nh)):
            all_done = False
    status = BEAM_DONE if (cur >= ml or all_done) else BEAM_RUNNING
    istate[ST_STATUS] = status
    return np.int64(status)


@kernel(entry=True)
def beam_search_finalize(cfg, fcfg, fstate, istate, out_seqs, out_scores, out_logp, out_len):
    """Write the best ``R`` hypotheses of each batch item (``R = out_scores.shape[0] // B``).

    Outputs (C-contiguous): ``out_seqs`` int64 ``[B*R, M]`` prompt + generated tokens, padded
    with CFG_PAD; ``out_scores`` float64 ``[B*R]`` (transformers' ``sequences_scores``:
    summed log-probs / generated_len ** length_penalty); ``out_logp`` float64 ``[B*R, G]``
    per-token log-probs (0 after the end); ``out_len`` int64 ``[B*R]`` generated lengths.
    Row ``b*R + r`` is the r-th best of batch item b. A batch item with fewer than R finished
    hypotheses (only possible when every candidate is ``-inf``) gets score ``-inf`` rows.

    Returns the output length ``L + max(out_len)`` (crop ``out_seqs`` to it), or
    -BEAM_BAD_SHAPE when sizes do not match or R > H.
    """
    if not _sizes_ok(cfg, fcfg, fstate, istate):
        return np.int64(-BEAM_BAD_SHAPE)
    nb, nk, lp, ml, nc, nh, n, g, ns = _dims(cfg)
    nr = out_scores.shape[0] // nb
    if (nr < 1 or nr > nh or out_scores.shape[0] != nb * nr or out_seqs.shape[0] != nb * nr
            or out_seqs.shape[1] != ml or out_logp.shape[0] != nb * nr
            or out_logp.shape[1] != g or out_len.shape[0] != nb * nr):
        return np.int64(-BEAM_BAD_SHAPE)
    (seqs, seqs_tmp, parents, hyp_tok, hyp_len, hyp_count, done, row_n, row_tok, cand_tok,
     cand_beam, spec_tok, spec_kind) = _int_views(cfg, istate)
    (beam_scores, run_logp, run_logp_tmp, hyp_score, hyp_logp, row_val, cand_score, cand_logp,
     spec_val) = _float_views(cfg, fstate)
    pad = cfg[CFG_PAD]
    longest = 0
    for b in range(nb):
        for r in range(nr):
            o = b * nr + r
            for t in range(lp):
                out_seqs[o, t] = seqs[b * nk, t]
            if r < hyp_count[b]:
                length = hyp_len[b, r]
                out_scores[o] = hyp_score[b, r]
            else:
                length = 0
                out_scores[o] = _NEG_INF
            out_len[o] = length
            longest = max(longest, length)
            for t in range(length):
                out_seqs[o, lp + t] = hyp_tok[b, r, t]
                out_logp[o, t] = hyp_logp[b, r, t]
            for t in range(length, g):
                out_seqs[o, lp + t] = pad
                out_logp[o, t] = 0.0
    return np.int64(lp + longest)
