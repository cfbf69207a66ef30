"""The fused normalizer + top-k row pass and the beam step (ranked lists: :mod:`.topk`).

The fused row pass (:func:`row_topk_normalizer`)
-------------------------------------------------
The row is read from memory once; float32, bfloat16 and float16 rows are widened to float32
in registers (:mod:`.half`), so a 16-bit row gives the results of its exact float32 values.
1. pass 1: each block's maximum (:data:`BLOCK` elements; :func:`block_maxima`, LLVM IR,
   one ``vmaxps`` per 64-byte line), the row maximum ``m`` and the ``C``-th largest block
   maximum ``lo``: ``C`` blocks hold an element ``>= lo``, so every selected logit is
   ``>= lo``;
2. pass 2 (row in L2): ``sum(exp(x - m))``, the exp-sum row pass of every normalizer
   (:func:`.rows.block_sumexp`: the bits of ``row_shifted_sumexp``), prefetching the next row;
   about three quarters of the row's time (0.55-0.6 cycles per element on the Xeon);
3. pass 3: only a block whose maximum reaches ``lo`` and beats the current ``C``-th best is
   scanned, :data:`SCAN` elements per vector test (:func:`any_at_least`), element by element
   only where a vector holds a candidate, into a small sorted buffer: about ``C`` blocks
   whatever ``V``.
``log_softmax(x)[j] = (x[j] - m) - log(s)`` is then formed for the selected ``j`` only;
log-probs are never materialized. ``-inf`` and NaN never enter the buffer.

Determinism: rows run in contiguous blocks, one block per task, each row with the same serial
code; the per-batch merge runs serially in batch order. Results are bitwise identical for any
thread count.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._jit import kernel
from . import half, ir
from .bitmask import allowed
from .half import load_element, scratch
from .math import like
from .rows import SCRATCH, block_sumexp, chunk_rows, row_chunks
from .sumexp import _max_lanes
from .topk import admits, insert_ranked, sort_ranked

BLOCK = 512
"""Elements per block of the fused row pass (2 KiB of float32: stays in L1 between sweeps)."""

SCAN = 16
"""Elements per vector test of the candidate scan (:func:`any_at_least`)."""

_ACCS = 4  # independent max accumulators per block (hide the max latency)
_NEG_INF = -np.inf

# ============================================================================ fused row pass


@kernel
def row_scratch(cols, dtype_like, masked):
    """Scratch of :func:`row_topk_normalizer` for rows of ``cols`` elements (one per task):
    ``(bmax, eb, xm)``, block maxima, exp values, and a masked row copy when ``masked``, of
    the rows' compute dtype (float32 for float32, bfloat16 and float16 rows)."""
    bmax = scratch(max(1, (cols + BLOCK - 1) // BLOCK), dtype_like)
    eb = scratch(max(1, min(cols, SCRATCH)), dtype_like)
    xm = scratch(cols if masked else 1, dtype_like)
    return bmax, eb, xm


def _max_ir(builder, acc, v):
    """``v`` where ``v > acc``, else ``acc``: one ``vmaxps``/``vmaxpd``. A NaN ``v`` is
    ignored (the compare is ordered) and ``acc`` (never NaN) keeps its value; of equal
    values (``-0.0``, ``+0.0``) the first stays."""
    return builder.select(builder.fcmp_ordered(">", v, acc), v, acc)


def _row_args(x, bmax):
    """The element of row ``x`` when ``(x, bmax)`` suit :func:`block_maxima`, else None."""
    el = half.element(getattr(x, "dtype", None))
    if el is None or not all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (x, bmax)
    ):
        return None
    compute = types.float64 if el.reg == ir.F64 else types.float32
    return el if bmax.dtype == compute else None


@intrinsic
def block_maxima(typingctx, x, bmax):
    """Pass 1 of :func:`row_topk_normalizer`: ``bmax[b]`` = the maximum of block ``b``
    (:data:`BLOCK` elements; NaN ignored, ``-inf`` for a block of ``-inf``/NaN only);
    returns the row maximum (``-inf`` for an empty row). ``bmax`` (compute dtype: float32,
    or float64 for float64 rows) holds at least ``ceil(x.size / BLOCK)`` entries.

    One 64-byte line per vector (16 float32 / 32 16-bit / 8 float64 lanes), :data:`_ACCS`
    accumulators per block, the last vector of the row under a lane mask. NaN rows give
    some value here (not NaN): their exp sum is NaN, which is how they are reported.
    """
    el = _row_args(x, bmax)
    if el is None:
        return None
    compute = types.float64 if el.reg == ir.F64 else types.float32

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        ba = context.make_array(signature.args[1])(context, builder, args[1])
        intp = context.get_value_type(types.intp)
        c = lambda v: llvm_ir.Constant(intp, v)  # noqa: E731
        lanes = ir.LINE_BYTES // el.itemsize
        vty = ir.vec(el.reg, lanes)
        ninf = ir.const(vty, float("-inf"))
        n = builder.extract_value(xa.shape, 0)
        m = cgutils.alloca_once_value(builder, llvm_ir.Constant(el.reg, float("-inf")))

        def finish(b, accs):
            bm = _max_lanes(builder, accs)  # accs hold no NaN: maxnum is their max
            builder.store(bm, builder.gep(ba.data, [b]))
            builder.store(_max_ir(builder, builder.load(m), bm), m)

        nfull = builder.sdiv(n, c(BLOCK))
        with cgutils.for_range(builder, nfull, intp=intp) as loop:
            base = builder.mul(loop.index, c(BLOCK))
            accs = [ninf] * _ACCS
            for i in range(BLOCK // lanes):
                v = el.load(builder, xa.data, builder.add(base, c(i * lanes)), lanes)
                accs[i % _ACCS] = _max_ir(builder, accs[i % _ACCS], v)
            finish(loop.index, accs)
        start = builder.mul(nfull, c(BLOCK))
        with builder.if_then(builder.icmp_signed("<", start, n)):  # the last, shorter block
            acc = cgutils.alloca_once_value(builder, ninf)
            nvec = builder.sdiv(builder.add(builder.sub(n, start), c(lanes - 1)), c(lanes))
            with cgutils.for_range(builder, nvec, intp=intp) as loop:
                j = builder.add(start, builder.mul(loop.index, c(lanes)))
                mask = ir.lane_mask(builder, builder.sub(n, j), lanes)
                v = builder.select(mask, el.load_masked(builder, xa.data, j, mask), ninf)
                builder.store(_max_ir(builder, builder.load(acc), v), acc)
            finish(nfull, [builder.load(acc)])
        return builder.load(m)

    return compute(x, bmax), codegen


@intrinsic
def any_at_least(typingctx, x, j, thr):
    """Whether an element of ``x[j:j + SCAN]`` (within the row) is ``>= thr`` (NaN never
    is): one vector compare, the test of :func:`_select` before it looks at elements."""
    el = half.element(getattr(x, "dtype", None))
    if (el is None or not isinstance(x, types.Array) or x.ndim != 1 or x.layout != "C"
            or not isinstance(j, types.Integer) or not isinstance(thr, types.Float)):
        return None
    compute = types.float64 if el.reg == ir.F64 else types.float32

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        jj = context.cast(builder, args[1], signature.args[1], types.intp)
        t = context.cast(builder, args[2], signature.args[2], compute)
        n = builder.extract_value(xa.shape, 0)
        mask = ir.lane_mask(builder, builder.sub(n, jj), SCAN)
        v = el.load_masked(builder, xa.data, jj, mask)
        hit = builder.and_(mask, builder.fcmp_ordered(">=", v, ir.splat(builder, t, SCAN)))
        bits = builder.bitcast(hit, llvm_ir.IntType(SCAN))
        return builder.icmp_unsigned("!=", bits, llvm_ir.Constant(llvm_ir.IntType(SCAN), 0))

    return types.boolean(x, j, thr), codegen


@kernel
def _block_maxima(x, cap, vals, bmax):
    """Pass 1 of :func:`row_topk_normalizer`: ``bmax[b]`` the maximum of block ``b`` (NaN
    ignored, :func:`block_maxima`), the row maximum, and the ``cap`` largest block maxima
    ranked in ``vals`` (their count is returned)."""
    m = block_maxima(x, bmax)
    nb = 0
    for b in range((x.size + BLOCK - 1) // BLOCK):
        bm = bmax[b]
        if bm > _NEG_INF:
            nb = insert_ranked(vals, None, nb, cap, np.float64(bm), 0)
    return m, nb


@kernel
def _select(x, cap, vals, toks, bmax, lo):
    """Pass 3 of :func:`row_topk_normalizer`: the ``cap`` best logits ``>= lo`` of ``x``
    into ``vals``/``toks``, scanning only the blocks whose maximum can enter, and in them
    only the vectors of :data:`SCAN` elements holding a candidate (:func:`any_at_least`);
    returns their count. Blocks are scanned in order, so an element equal to the current
    ``cap``-th best ranks after it (a higher token) and is skipped."""
    size = x.size
    n = 0
    worst = like(x, -np.inf)  # the cap-th best so far, once the buffer is full
    for b in range(bmax.size):
        bm = bmax[b]
        if bm >= lo and bm > worst:
            start = b * BLOCK
            stop = min(start + BLOCK, size)
            for j0 in range(start, stop, SCAN):
                if not any_at_least(x, j0, max(lo, worst)):
                    continue
                for j in range(j0, min(j0 + SCAN, stop)):
                    v = load_element(x, j)
                    if v >= lo and v > worst:
                        n = insert_ranked(vals, toks, n, cap, np.float64(v), np.int64(j))
                        if n == cap:
                            worst = like(x, vals[cap - 1])
    return n


@kernel
def row_topk_normalizer(x, cap, vals, toks, bmax, eb, nxt=None):
    """One read of a logits row: its normalizer and its ``cap`` best finite logits.

    ``x``: float32/float64 row ``[V]``, or a bfloat16/float16 one (:mod:`.half` views,
    widened in registers: the results of its float32 values); ``bmax``, ``eb``: scratch from
    :func:`row_scratch`; ``nxt`` (optional) the row computed next, prefetched during pass 2.
    ``vals`` (float64) and ``toks`` (int64), each at least ``cap >= 1`` long, receive the
    selected logits and their token ids, ranked by :func:`before`. Returns ``(m, log_s,
    n)``: ``m`` the row maximum (float64), ``log_s`` = ``log(sum(exp(x - m)))`` (float64,
    the sum of :func:`.rows.row_shifted_sumexp`), ``n`` the number of entries written (at
    most ``cap``; fewer only when the row has fewer finite values). ``log_softmax(x)[j]`` is
    ``(x[j] - m) - log_s``. A row with a NaN or ``+inf`` gives ``log_s`` NaN; a row of all
    ``-inf`` (or empty) gives ``m = log_s = -inf``.

    Pass 1 (from memory): block maxima (:data:`BLOCK` elements), vectorized; the row maximum
    and the ``cap``-th largest block maximum ``lo``: ``cap`` blocks hold an element ``>= lo``,
    so every selected logit is ``>= lo``. Pass 2 (row in L2): ``sum(exp(x - m))``, the row
    pass of every normalizer. Pass 3: only a block whose maximum reaches ``lo`` and beats the
    current ``cap``-th best is scanned element by element: about ``cap`` blocks, whatever
    ``V``.
    """
    m, nb = _block_maxima(x, cap, vals, bmax)
    lo = like(x, vals[cap - 1]) if nb == cap else like(x, -np.inf)
    if not abs(m) < np.inf:
        if m == np.inf:
            return np.float64(m), np.nan, 0
        for j in range(x.size):  # all -inf, or NaN hidden from the max
            if load_element(x, j) != load_element(x, j):
                return np.float64(m), np.nan, 0
        return np.float64(m), _NEG_INF, 0
    if nxt is None:
        s = block_sumexp(x, m, eb, x[:0])
    else:
        s = block_sumexp(x, m, eb, nxt)
    n = _select(x, cap, vals, toks, bmax[:(x.size + BLOCK - 1) // BLOCK], lo)
    if s != s:  # a NaN in the row reached the sum
        return np.float64(m), np.nan, n
    return np.float64(m), (np.log(s) if s > 0.0 else _NEG_INF), n


@kernel
def _masked_copy(x, mask, xm):
    """``xm = x`` with ``-inf`` where the bitmask row disallows; True if ``x`` holds a NaN or
    ``+inf`` anywhere (the logits are invalid whatever the mask)."""
    bad = False
    ninf = like(x, -np.inf)
    for j in range(x.size):
        v = load_element(x, j)
        bad = bad or not v < np.inf
        xm[j] = v if allowed(mask, j) else ninf
    return bad


@kernel
def row_topk_masked(x, cap, vals, toks, bmax, eb, mask, xm, renormalize):
    """:func:`row_topk_normalizer` of the tokens the bitmask row ``mask`` allows (:mod:`.bitmask`).

    Only allowed tokens are selected (from the masked copy ``xm``, scratch of ``x``'s size).
    The normalizer is the whole row's (transformers' order: processors after log_softmax;
    the same bits as without a mask), or the allowed tokens' only when ``renormalize``.
    """
    if _masked_copy(x, mask, xm):
        return np.float64(np.nan), np.nan, 0
    m, log_s, n = row_topk_normalizer(xm, cap, vals, toks, bmax, eb)
    if not renormalize:
        top = np.empty(1)
        top_id = np.empty(1, np.int64)
        m, log_s, _ = row_topk_normalizer(x, 1, top, top_id, bmax, eb)
    return m, log_s, n


@kernel
def to_logprobs(vals, toks, n, m, log_s):
    """Turn ``n`` selected logits into log-probs ``(x - m) - log_s`` and re-rank them."""
    for i in range(n):
        vals[i] = (vals[i] - m) - log_s
    sort_ranked(vals, toks, n)


# ============================================================================ beam step


@kernel
def merge_candidates(beam_scores, row_val, row_tok, row_n, vocab, out_score, out_tok,
                     out_beam, out_logp):
    """Top ``C`` candidates of one batch from its ``K`` rows' candidate lists.

    ``beam_scores`` float64 ``[K]``; ``row_val`` float64 ``[K, >=C]`` log-probs and
    ``row_tok`` int64 ``[K, >=C]`` token ids of each row's best candidates (ranked by
    :func:`before`), ``row_n`` int64 ``[K]`` their counts; ``vocab`` the vocabulary size.
    Outputs ``[C]``: ``out_score`` (``beam_scores[k] + logp``, float64), ``out_tok``,
    ``out_beam`` (0..K-1), ``out_logp``. Ranked by score descending, then lower beam, then
    lower token (one ranked list with ids ``beam * V + token``, kept in ``out_tok`` until
    the end). Candidates with score ``-inf`` come only after every finite one, in (beam,
    token) order, with ``out_logp = -inf``.
    """
    nbeams = row_n.shape[0]
    cap = out_score.shape[0]
    ids = out_tok
    n = 0
    for k in range(nbeams):
        bs = beam_scores[k]
        for i in range(row_n[k]):
            s = bs + row_val[k, i]
            t = k * vocab + row_tok[k, i]
            if not s > _NEG_INF or not admits(out_score, ids, n, cap, s, t):
                break  # the rest of this row ranks lower still
            n = insert_ranked(out_score, ids, n, cap, s, t)
    for c in range(n):
        k, t = divmod(ids[c], vocab)
        out_beam[c] = k
        out_tok[c] = t
        i = 0
        while row_tok[k, i] != t:  # the row's entry of this candidate: its log-prob
            i += 1
        out_logp[c] = row_val[k, i]
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


@kernel
def _beam_step_block(x, beam_scores, row_val, row_tok, row_n, r0, r1, mask):
    """Rows ``[r0, r1)`` of :func:`beam_step_rows`, in order, with one scratch."""
    bmax, eb, xm = row_scratch(x.shape[1], x, mask is not None)
    cap = row_val.shape[1]
    for r in range(r0, r1):
        if mask is not None:
            m, log_s, cnt = row_topk_masked(x[r], cap, row_val[r], row_tok[r], bmax, eb,
                                            mask[r], xm, False)
        else:
            m, log_s, cnt = row_topk_normalizer(x[r], cap, row_val[r], row_tok[r], bmax, eb,
                                                x[min(r + 1, x.shape[0] - 1)])
        if log_s != log_s or m == np.inf:
            row_n[r] = -1
            continue
        if not beam_scores[r] > _NEG_INF:
            cnt = 0
        to_logprobs(row_val[r], row_tok[r], cnt, m, log_s)
        row_n[r] = cnt


@kernel(parallel=True)
def beam_step_rows(x, beam_scores, num_beams, row_val, row_tok, row_n, out_score, out_tok,
                   out_beam, out_logp, mask=None):
    """One beam-search step: ``score = beam_scores + log_softmax(x)``, top ``C`` per batch.

    Parameters (all C-contiguous; ``N = B * K`` rows, row ``b * K + k``):
        x:           float32/float64 ``[N, V]`` logits (read once, not modified), or
                     bfloat16/float16 ones as their :mod:`.half` views (the results of
                     their exact float32 values).
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
        mask:        optional int32 ``[N, ceil(V / 32)]`` token bitmask (:mod:`.bitmask`):
                     disallowed tokens are never selected (their log-probs count as
                     ``-inf``; the normalizer stays the whole row's). Every row must allow
                     a token (:func:`.bitmask.first_empty_row`).

    Returns:
        int64: -1 on success, else the first row (``b * K + k``) holding a NaN or ``+inf``
        (outputs are then unspecified).

    Ties are broken toward the lower beam, then the lower token; ``-inf`` candidates are taken
    only when fewer than ``C`` finite ones exist (see :func:`merge_candidates`).
    """
    nrows = x.shape[0]
    nchunk = row_chunks(nrows)
    for c in prange(nchunk):
        r0, r1 = chunk_rows(c, nchunk, nrows)
        _beam_step_block(x, beam_scores, row_val, row_tok, row_n, r0, r1, mask)
    for r in range(nrows):
        if row_n[r] < 0:
            return np.int64(r)
    vocab = x.shape[1]
    for b in range(out_score.shape[0]):
        lo = b * num_beams
        hi = lo + num_beams
        merge_candidates(beam_scores[lo:hi], row_val[lo:hi], row_tok[lo:hi], row_n[lo:hi],
                         vocab, out_score[b], out_tok[b], out_beam[b], out_logp[b])
    return np.int64(-1)
