"""The decoder's entry kernels: a state machine that Python and C drive the same way.

::

    cfg, fcfg = pack_config(...)                        (config.py)
    beam_search_layout(cfg, layout)                     -> sizes of fstate / istate (state.py)
    beam_search_init(cfg, fcfg, input_ids, fstate, istate)            -> status
    loop:
        logits = step(sequences = seqs[:, :cur_len], parents)        (rows b*K + k)
        status = beam_search_advance(cfg, fcfg, fstate, istate, logits[, mask])
        stop unless status == BEAM_RUNNING
    beam_search_finalize(cfg, fcfg, fstate, istate, out_seqs, out_scores, out_logp, out_len)

Determinism: rows run in contiguous blocks, each row with the same serial code; all the
per-batch bookkeeping runs serially in batch order. Results are bitwise identical for any
thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._jit import kernel
from ..beam_rows import merge_candidates, row_scratch
from ..bitmask import empty_row
from ..rows import chunk_rows, row_chunks
from .config import CFG_PAD
from .state import (
    BEAM_BAD_LOGITS,
    BEAM_BAD_MASK,
    BEAM_BAD_SHAPE,
    BEAM_DONE,
    BEAM_NOT_RUNNING,
    BEAM_RUNNING,
    ST_BAD_ROW,
    ST_CUR_LEN,
    ST_STATUS,
    ST_STEPS,
    ST_VOCAB,
    checked_layout,
    dims,
    state_views,
)
from .steps import (
    DEAD,
    commit_rows,
    insert_finished,
    row_candidates,
    select_running,
    stopping_test,
)

_NEG_INF = -np.inf


@kernel(entry=True)
def beam_search_init(cfg, fcfg, input_ids, fstate, istate):
    """Start a search: prompts in, every running beam = its prompt, nothing finished.

    ``input_ids`` int64 ``[B, L]`` (C-contiguous). ``fstate``/``istate`` sized by
    :func:`~.state.beam_search_layout`. Beam 0 of each batch item starts at score 0 and
    beams 1..K-1 at -1e9 (transformers' convention: the first step expands beam 0 only).
    Returns BEAM_RUNNING, or BEAM_BAD_SHAPE (buffers too small, or ``input_ids`` not
    ``[B, L]``).
    """
    ok, lay = checked_layout(cfg, fcfg, fstate, istate)
    if not ok:
        return np.int64(BEAM_BAD_SHAPE)
    d = dims(cfg)
    if input_ids.shape[0] != d.batch or input_ids.shape[1] != d.prompt_len:
        return np.int64(BEAM_BAD_SHAPE)
    st = state_views(lay, fstate, istate)
    for r in range(d.rows):
        st.seqs[r, :d.prompt_len] = input_ids[r // d.beams]
        st.seqs[r, d.prompt_len:] = cfg[CFG_PAD]
        st.run_logp[r] = 0.0
        st.beam_scores[r] = 0.0 if r % d.beams == 0 else DEAD
        st.parents[r] = -1
    st.hyp_count[:] = 0
    st.done[:] = 0
    st.hyp_score[:] = _NEG_INF
    st.hyp_len[:] = 0
    istate[ST_CUR_LEN] = d.prompt_len
    istate[ST_STATUS] = BEAM_RUNNING
    istate[ST_BAD_ROW] = -1
    istate[ST_STEPS] = 0
    istate[ST_VOCAB] = -1
    return np.int64(BEAM_RUNNING)


@kernel
def _candidates_block(logits, seqs, cur, cfg, fcfg, spec_tok, spec_kind, spec_val, row_val,
                      row_tok, row_n, r0, r1, mask):
    """:func:`~.steps.row_candidates` of rows ``[r0, r1)``, in order, with one scratch."""
    bmax, eb, xm = row_scratch(logits.shape[1], logits, mask is not None)
    for r in range(r0, r1):
        if mask is not None:
            mrow = mask[r]
        else:
            mrow = None
        row_n[r] = row_candidates(logits[r], seqs[r], cur, cfg, fcfg, spec_tok[r],
                                  spec_kind[r], spec_val[r], row_val[r], row_tok[r], bmax,
                                  eb, xm, mrow)


@kernel(parallel=True)
def beam_search_advance(cfg, fcfg, fstate, istate, logits, mask=None):
    """One decoding step, exactly as transformers' ``_beam_search`` loop body.

    ``logits``: float32/float64 ``[N, V]`` C-contiguous, writable (temporarily modified,
    restored bit for bit), or bfloat16/float16 ones as their :mod:`..half` views (searched
    as their exact float32 values): next-token logits of the sequences
    ``seqs[:, :cur_len]`` (row ``b*K + k``). ``mask`` (optional): int32
    ``[N, ceil(V / 32)]`` token bitmask, a ban of every disallowed token (as the n-gram
    bans: after ``log_softmax``, or before it with CFG_RENORMALIZE). The jobs, in order
    (:mod:`.steps`): per row in parallel, :func:`~.steps.row_candidates`; per batch item
    serially, the merge of its rows' top C, :func:`~.steps.select_running`,
    :func:`~.steps.insert_finished`, :func:`~.steps.commit_rows`; then
    :func:`~.steps.stopping_test`.

    Returns BEAM_RUNNING, BEAM_DONE (max length reached or every batch item done),
    BEAM_BAD_LOGITS (NaN/+inf row stored in istate[ST_BAD_ROW]; nothing changed, the same
    step may be retried), BEAM_BAD_MASK (a mask row allowing no token, in istate[ST_BAD_ROW];
    nothing changed), BEAM_BAD_SHAPE, or BEAM_NOT_RUNNING.
    """
    ok, lay = checked_layout(cfg, fcfg, fstate, istate)
    if not ok:
        return np.int64(BEAM_BAD_SHAPE)
    status = istate[ST_STATUS]
    if status != BEAM_RUNNING and status != BEAM_BAD_LOGITS and status != BEAM_BAD_MASK:
        return np.int64(BEAM_NOT_RUNNING)
    d = dims(cfg)
    vocab = logits.shape[1]
    if logits.shape[0] != d.rows or d.cands > d.beams * vocab or (istate[ST_VOCAB] >= 0
                                                                  and istate[ST_VOCAB] != vocab):
        return np.int64(BEAM_BAD_SHAPE)
    if mask is not None:
        if mask.shape[0] != d.rows or mask.shape[1] != (vocab + 31) // 32:
            return np.int64(BEAM_BAD_SHAPE)
        empty = empty_row(mask, vocab)
        if empty >= 0:
            istate[ST_BAD_ROW] = empty
            istate[ST_STATUS] = BEAM_BAD_MASK
            return np.int64(BEAM_BAD_MASK)
    st = state_views(lay, fstate, istate)
    cur = istate[ST_CUR_LEN]
    istate[ST_VOCAB] = vocab

    seqs, spec_tok, spec_kind, spec_val = st.seqs, st.spec_tok, st.spec_kind, st.spec_val
    row_val, row_tok, row_n = st.row_val, st.row_tok, st.row_n
    nrows = d.rows  # (a parallel loop body sees arrays and scalars only)
    nchunk = row_chunks(nrows)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nrows)
        _candidates_block(logits, seqs, cur, cfg, fcfg, spec_tok, spec_kind, spec_val,
                          row_val, row_tok, row_n, r0, r1, mask)
    for r in range(d.rows):
        if row_n[r] < 0:
            istate[ST_BAD_ROW] = r
            istate[ST_STATUS] = BEAM_BAD_LOGITS
            return np.int64(BEAM_BAD_LOGITS)

    last = cur + 1 >= d.max_len
    step = istate[ST_STEPS]
    for b in range(d.batch):
        lo = b * d.beams
        hi = lo + d.beams
        merge_candidates(st.beam_scores[lo:hi], row_val[lo:hi], row_tok[lo:hi], row_n[lo:hi],
                         vocab, st.cand_score[b], st.cand_tok[b], st.cand_beam[b],
                         st.cand_logp[b])
        select_running(st, cfg, d, b, cur, last)
        insert_finished(st, cfg, fcfg, d, b, cur, last, step)
        commit_rows(st, d, b, cur)

    cur += 1
    istate[ST_CUR_LEN] = cur
    istate[ST_STEPS] += 1
    istate[ST_BAD_ROW] = -1
    all_done = stopping_test(st, cfg, fcfg, d, cur)
    status = BEAM_DONE if (cur >= d.max_len or all_done) else BEAM_RUNNING
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
    ok, lay = checked_layout(cfg, fcfg, fstate, istate)
    if not ok:
        return np.int64(-BEAM_BAD_SHAPE)
    d = dims(cfg)
    nr = out_scores.shape[0] // d.batch
    nout = d.batch * nr
    if (nr < 1 or nr > d.hyps or out_scores.shape[0] != nout or out_seqs.shape[0] != nout
            or out_seqs.shape[1] != d.max_len or out_logp.shape[0] != nout
            or out_logp.shape[1] != d.max_new or out_len.shape[0] != nout):
        return np.int64(-BEAM_BAD_SHAPE)
    st = state_views(lay, fstate, istate)
    lp = d.prompt_len
    longest = 0
    for b in range(d.batch):
        for r in range(nr):
            o = b * nr + r
            out_seqs[o, :lp] = st.seqs[b * d.beams, :lp]
            length = 0
            out_scores[o] = _NEG_INF
            if r < st.hyp_count[b]:
                slot = st.hyp_id[b, r] % d.hyps
                length = st.hyp_len[b, slot]
                out_scores[o] = st.hyp_score[b, r]
                out_seqs[o, lp:lp + length] = st.hyp_tok[b, slot, :length]
                out_logp[o, :length] = st.hyp_logp[b, slot, :length]
            out_len[o] = length
            longest = max(longest, length)
            out_seqs[o, lp + length:] = cfg[CFG_PAD]
            out_logp[o, length:] = 0.0
    return np.int64(lp + longest)
