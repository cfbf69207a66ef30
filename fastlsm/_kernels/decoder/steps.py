"""The jobs of one decoding step, each a kernel over the named state (:mod:`.state`).

In the order :func:`fastlsm._kernels.decoder.machine.beam_search_advance` runs them
(transformers' ``_beam_search`` loop body):

1. :func:`row_candidates` (per row, in parallel): the logits processors (repetition
   penalty, n-gram bans, the ``min_new_tokens`` EOS ban, the token bitmask) fused with the
   row's normalizer and its top-C log-probs;
2. per batch item, serially: :func:`~fastlsm._kernels.beam_rows.merge_candidates` (top C of
   ``beam_score + log-prob``), :func:`select_running` (the K best unfinished candidates
   become the running beams), :func:`insert_finished` (finished candidates among the top K
   enter the H best hypotheses), :func:`commit_rows` (the new beams replace the old);
3. :func:`stopping_test`: transformers' early-stopping rule for each batch item.
"""

from __future__ import annotations

import math

import numpy as np

from ..._jit import kernel
from ..beam_rows import row_topk_masked, row_topk_normalizer, to_logprobs
from ..bitmask import allowed
from ..half import load_element, store_element
from ..math import like
from ..topk import admits, insert_ranked
from .config import (
    CFG_EARLY_STOPPING,
    CFG_EOS,
    CFG_MIN_NEW_TOKENS,
    CFG_NO_REPEAT_NGRAM,
    CFG_NUM_EOS,
    CFG_PAD,
    CFG_PROMPT_LEN,
    CFG_RENORMALIZE,
    EARLY_NEVER,
    EARLY_TRUE,
    FCFG_LENGTH_PENALTY,
    FCFG_REPETITION_PENALTY,
)

DEAD = -1.0e9
"""transformers' sentinel: initial score of beams 1..K-1 and penalty of finished candidates."""

_NEG_INF = -np.inf
_BAN = 1
_PENALTY = 2


# ============================================================================ 1. per row


@kernel
def _mark(x, t, kind, mask, spec_tok, spec_kind, spec_val, ns):
    """Record token ``t`` of row ``x`` as special (ban/penalty), hide it with -inf.

    A token already hidden (or already ``-inf``) is skipped: it stays ``-inf`` whatever the
    processing, and a ban recorded first wins over a later penalty; a token the bitmask
    (or None) disallows is a ban. A NaN is left in place (the row is invalid either way: the
    normalizer reports it), so every value written back is restored bit for bit, 16-bit
    rows included. Out-of-vocabulary ids (possible in a prompt) are ignored, as
    transformers does.
    """
    if t < 0 or t >= x.size:
        return ns
    v = load_element(x, t)
    if v == -np.inf or v != v:
        return ns
    spec_tok[ns] = t
    spec_kind[ns] = kind if mask is None or allowed(mask, t) else _BAN
    spec_val[ns] = np.float64(v)
    store_element(x, t, like(x, -np.inf))
    return ns + 1


@kernel
def _penalize(v, p):
    """transformers' repetition penalty: ``v * p`` if ``v < 0`` else ``v / p``."""
    return v * p if v < 0.0 else v / p


@kernel
def _processed(v, kind, renorm, rep):
    """A special token's logit as the normalizer sees it: raw (transformers' order, the
    processors come after log_softmax), or processed (renormalize)."""
    if not renorm:
        return v
    return _NEG_INF if kind == _BAN else _penalize(v, rep)


@kernel
def row_candidates(x, seq, cur_len, cfg, fcfg, spec_tok, spec_kind, spec_val, row_val,
                   row_tok, bmax, eb, xm, mask):
    """Process one running row: bans and penalty, fused normalizer + top-C, restore.

    ``mask``: the row's int32 token bitmask, or None. Returns the number of candidates
    written to ``row_val`` (processed log-probs, float64) and ``row_tok``, ranked by
    log-prob descending then token ascending; -1 when the row has a NaN or ``+inf``. ``x``
    is modified during the call and restored bit for bit. ``bmax``, ``eb``, ``xm``: scratch
    (:func:`~fastlsm._kernels.beam_rows.row_scratch`).
    """
    lp = cfg[CFG_PROMPT_LEN]
    cap = row_val.shape[0]
    ngram = cfg[CFG_NO_REPEAT_NGRAM]
    rep = fcfg[FCFG_REPETITION_PENALTY]
    renorm = cfg[CFG_RENORMALIZE] != 0
    ns = 0
    if cur_len - lp < cfg[CFG_MIN_NEW_TOKENS]:
        for i in range(cfg[CFG_NUM_EOS]):
            ns = _mark(x, cfg[CFG_EOS + i], _BAN, mask, spec_tok, spec_kind, spec_val, ns)
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
                ns = _mark(x, seq[st + ngram - 1], _BAN, mask, spec_tok, spec_kind, spec_val,
                           ns)
    if rep != 1.0:
        for j in range(cur_len):
            ns = _mark(x, seq[j], _PENALTY, mask, spec_tok, spec_kind, spec_val, ns)

    if mask is not None:
        m, log_s, cnt = row_topk_masked(x, cap, row_val, row_tok, bmax, eb, mask, xm, renorm)
    else:
        m, log_s, cnt = row_topk_normalizer(x, cap, row_val, row_tok, bmax, eb)

    bad = log_s != log_s or m == np.inf
    for i in range(ns):
        v = spec_val[i]
        store_element(x, spec_tok[i], like(x, v))  # exact: v is a value of the row
        if not v < np.inf:
            bad = True
    if bad:
        return -1
    if ns > 0:
        # Fold the special tokens into the normalizer (see _processed).
        top = m
        for i in range(ns):
            top = max(top, _processed(spec_val[i], spec_kind[i], renorm, rep))
        if top > _NEG_INF:
            total = math.exp((m - top) + log_s) if m > _NEG_INF else 0.0
            for i in range(ns):
                total += math.exp(_processed(spec_val[i], spec_kind[i], renorm, rep) - top)
            m = top
            log_s = math.log(total)
        else:
            m = _NEG_INF
    if not m > _NEG_INF:
        return 0
    to_logprobs(row_val, row_tok, cnt, m, log_s)
    for i in range(ns):
        if spec_kind[i] == _BAN:
            continue
        v = spec_val[i]
        if renorm:
            lpv = (_penalize(v, rep) - m) - log_s
        else:
            lpv = _penalize((v - m) - log_s, rep)
        if lpv > _NEG_INF:
            cnt = insert_ranked(row_val, row_tok, cnt, cap, lpv, spec_tok[i])
    return cnt


# ============================================================================ 2. per batch


@kernel
def is_eos(cfg, t):
    for i in range(cfg[CFG_NUM_EOS]):
        if cfg[CFG_EOS + i] == t:
            return True
    return False


@kernel
def _ends(cfg, last, t):
    """A candidate ends its hypothesis: an EOS token, or the maximum length reached."""
    return last or is_eos(cfg, t)


@kernel
def select_running(st, cfg, d, b, cur, last):
    """Running beams of batch item ``b``: the K best of ``score - 1e9 * finished`` among
    its C candidates (ties: lower candidate index), into ``seqs_tmp``/``run_logp_tmp``,
    ``parents`` and ``beam_scores``."""
    nc = d.cands
    gen = cur - d.prompt_len
    lo = b * d.beams
    score_c = st.cand_score[b]
    tok_c = st.cand_tok[b]
    i = 0  # next unfinished candidate
    j = 0  # next finished candidate
    for k in range(d.beams):
        while i < nc and _ends(cfg, last, tok_c[i]):
            i += 1
        while j < nc and not _ends(cfg, last, tok_c[j]):
            j += 1
        if i < nc and (j >= nc or score_c[i] > score_c[j] + DEAD
                       or (score_c[i] == score_c[j] + DEAD and i < j)):
            c = i
            score = score_c[c]
            i += 1
        else:
            c = j
            score = score_c[c] + DEAD
            j += 1
        r = lo + k
        parent = lo + st.cand_beam[b, c]
        st.seqs_tmp[r, :cur] = st.seqs[parent, :cur]
        st.seqs_tmp[r, cur] = tok_c[c]
        st.run_logp_tmp[r, :gen] = st.run_logp[parent, :gen]
        st.run_logp_tmp[r, gen] = st.cand_logp[b, c]
        st.parents[r] = parent
        st.beam_scores[r] = score


@kernel
def insert_finished(st, cfg, fcfg, d, b, cur, last, step):
    """Finished candidates among batch item ``b``'s top K enter its H best hypotheses with
    score ``sum / generated_len ** length_penalty`` (unless the batch item is done).

    The hypotheses are a ranked list (``hyp_score``, ``hyp_id``) whose ids are
    ``arrival * H + slot``: equal scores keep their arrival order, and the tokens and
    log-probs stay in their slot (the one a dropped hypothesis frees is reused).
    """
    nh = d.hyps
    if st.done[b] != 0 or (cfg[CFG_EARLY_STOPPING] == EARLY_TRUE and st.hyp_count[b] == nh):
        return
    gen = cur - d.prompt_len
    lo = b * d.beams
    denom = np.float64(gen + 1) ** fcfg[FCFG_LENGTH_PENALTY]
    scores = st.hyp_score[b]
    ids = st.hyp_id[b]
    for c in range(d.beams):
        if not _ends(cfg, last, st.cand_tok[b, c]):
            continue
        score = st.cand_score[b, c] / denom
        n = st.hyp_count[b]
        slot = n if n < nh else ids[nh - 1] % nh  # a new slot, or the one dropping out
        hid = (step * d.beams + c) * nh + slot
        if not admits(scores, ids, n, nh, score, hid):
            continue
        st.hyp_count[b] = insert_ranked(scores, ids, n, nh, score, hid)
        parent = lo + st.cand_beam[b, c]
        st.hyp_len[b, slot] = gen + 1
        st.hyp_tok[b, slot, :gen] = st.seqs[parent, d.prompt_len:cur]
        st.hyp_logp[b, slot, :gen] = st.run_logp[parent, :gen]
        st.hyp_tok[b, slot, gen] = st.cand_tok[b, c]
        st.hyp_logp[b, slot, gen] = st.cand_logp[b, c]
        st.hyp_tok[b, slot, gen + 1:] = cfg[CFG_PAD]
        st.hyp_logp[b, slot, gen + 1:] = 0.0


@kernel
def commit_rows(st, d, b, cur):
    """Batch item ``b``'s new running beams replace the old ones."""
    gen = cur - d.prompt_len
    for r in range(b * d.beams, (b + 1) * d.beams):
        st.seqs[r, :cur + 1] = st.seqs_tmp[r, :cur + 1]
        st.run_logp[r, :gen + 1] = st.run_logp_tmp[r, :gen + 1]


# ============================================================================ 3. stopping


@kernel
def stopping_test(st, cfg, fcfg, d, cur):
    """transformers' stopping rule per batch item, after the step (``cur`` the new length).

    early_stopping False: done when the best running score at the current length cannot
    beat the worst kept hypothesis; "never": the same at the maximum length when
    length_penalty > 0; True: once H hypotheses are kept. Returns whether every batch item
    is done.
    """
    lpen = fcfg[FCFG_LENGTH_PENALTY]
    early = cfg[CFG_EARLY_STOPPING]
    nh = d.hyps
    all_done = True
    for b in range(d.batch):
        if st.done[b] == 0:
            if early == EARLY_NEVER and lpen > 0.0:
                best_len = d.max_len - d.prompt_len
            else:
                best_len = cur - d.prompt_len
            best = st.beam_scores[b * d.beams] / np.float64(best_len) ** lpen
            worst = st.hyp_score[b, nh - 1] if st.hyp_count[b] == nh else DEAD
            if not best > worst:
                st.done[b] = 1
        if not (st.done[b] != 0 or (early == EARLY_TRUE and st.hyp_count[b] == nh)):
            all_done = False
    return all_done

