"""The processed row of a sampler and the state that describes its kept set.

A row's processed logits ``r`` are the logits themselves, or (bitmask, bias, penalties) a
row buffer written by :func:`materialize`. The kept set after every filter is a few float64
numbers, the row state (fields ``S_*``): ``max``, argmax, a value threshold with a tie rule
(top-k, top-p), the min-p ratio, the typical-p band, and the kept mass ``Z``. One predicate
(:func:`kept_e`) and one mass (:func:`token_mass` of :func:`shifted`) serve every pass, so the
sums that find a threshold and those that pick a token see the same numbers.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._jit import kernel
from . import ir
from .half import load_element
from .math import fexp_sum, like, neumaier_add, neumaier_result
from .rows import block_sum
from .select import NB, SCALE, bucket

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
    """The one place that reads a logit: element ``j`` of ``row`` as float64 (16-bit rows
    widened exactly, :func:`.half.load_element`)."""
    return np.float64(load_element(row, j))


BLOCK = 64
"""Tokens per block of a search: one vectorized range test per block (:func:`block_bits`),
a scalar look at only the tokens it hits."""


_SCAN_ACCS = 4  # independent maxnum accumulators of max_and_nan


@intrinsic
def max_and_nan(typingctx, r):
    """``(m, nan)``: the maximum of a float32/float64 row ignoring NaN (``llvm.maxnum``,
    ``-inf`` for an empty row) and whether it holds a NaN (an ``or`` of unordered compares),
    in one pass: one 64-byte line per vector, four maximum accumulators, a masked tail.
    (As one Numba loop the two reductions do not vectorize; as two loops the row is read
    twice: 3.7 -> 1.9 us for 32000 float32 from L2 on AMD Zen 4.)"""
    if not (isinstance(r, types.Array) and r.ndim == 1 and r.layout == "C"
            and r.dtype in (types.float32, types.float64)):
        return None
    el = ir.ELEMENTS[r.dtype]
    rty = types.Tuple((r.dtype, types.boolean))

    def codegen(context, builder, signature, args):
        ra = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        lanes = ir.LINE_BYTES // el.itemsize
        vty = ir.vec(el.reg, lanes)
        bty = ir.vec(llvm_ir.IntType(1), lanes)
        ninf = ir.const(vty, float("-inf"))
        n = builder.extract_value(ra.shape, 0)
        c = lambda v: llvm_ir.Constant(intp, v)  # noqa: E731
        accs = [cgutils.alloca_once_value(builder, ninf) for _ in range(_SCAN_ACCS)]
        nans = cgutils.alloca_once_value(builder, ir.const(bty, 0))

        def take(acc, v):
            builder.store(ir.call(builder, "maxnum", [builder.load(acc), v]), acc)
            builder.store(builder.or_(builder.load(nans), builder.fcmp_unordered("uno", v, v)),
                          nans)

        group = lanes * _SCAN_ACCS
        ngroup = builder.sdiv(n, c(group))
        with cgutils.for_range(builder, ngroup, intp=intp) as loop:
            base = builder.mul(loop.index, c(group))
            for g in range(_SCAN_ACCS):
                take(accs[g], el.load(builder, ra.data, builder.add(base, c(g * lanes)), lanes))
        start = builder.mul(ngroup, c(group))
        nvec = builder.sdiv(builder.sub(n, start), c(lanes))
        with cgutils.for_range(builder, nvec, intp=intp) as loop:
            j = builder.add(start, builder.mul(loop.index, c(lanes)))
            take(accs[0], el.load(builder, ra.data, j, lanes))
        j = builder.add(start, builder.mul(nvec, c(lanes)))
        with builder.if_then(builder.icmp_signed("<", j, n)):
            mask = ir.lane_mask(builder, builder.sub(n, j), lanes)
            take(accs[1], builder.select(mask, el.load_masked(builder, ra.data, j, mask), ninf))
        m = ir.max_across(builder, [builder.load(a) for a in accs])
        flags = builder.bitcast(builder.load(nans), llvm_ir.IntType(lanes))
        any_nan = builder.icmp_unsigned("!=", flags, llvm_ir.Constant(llvm_ir.IntType(lanes), 0))
        return context.make_tuple(builder, rty, [m, any_nan])

    return rty(r), codegen


@kernel
def scan(r):
    """``(max, bad)``: the maximum of row ``r`` ignoring NaN and ``bad`` nonzero when it holds
    a NaN or ``+inf`` (one pass, :func:`max_and_nan`; ``+inf`` is the maximum then)."""
    m, nan = max_and_nan(r)
    return m, np.int32(nan) + np.int32(m == np.inf)


SPLIT_MIN = 1 << 16
"""Rows of at least this many tokens are passed over in two fixed parts (:func:`part_bounds`) by the
passes whose results would otherwise depend on where a row is cut (the histogram's bucket
sums): a single row sampled on several threads gives each part its own thread
(``split``), and every other row runs the same parts one after the other, so the bits are
the same whatever the batch or the thread count."""


@kernel
def parts(n):
    """How many parts a row of ``n`` tokens is passed over in: 2 from ``SPLIT_MIN`` on."""
    return 2 if n >= SPLIT_MIN else 1


@kernel
def part_bounds(n, c):
    """Tokens ``[lo, hi)`` of part ``c`` of a row of ``n`` (:func:`parts`): the whole row,
    or its halves cut at the chunk boundary nearest the middle."""
    mid = (n // CHUNK + 1) // 2 * CHUNK if parts(n) == 2 else n
    return (0, mid) if c == 0 else (mid, n)


@kernel(parallel=True, entry=False)
def scan_halves(r):
    """:func:`scan_row` over each half of ``r`` on its own thread, combined: the same
    ``(max, bad, argmax)`` (the maximum of a row without NaN is that of its halves, and its
    first occurrence is in the first half that holds it)."""
    ms = np.empty(2, r.dtype)
    bads = np.zeros(2, np.int64)
    args = np.zeros(2, np.int64)
    for c in prange(2):
        lo, hi = part_bounds(r.size, c)
        seg = r[lo:hi]
        m, b = scan(seg)
        ms[c] = m
        bads[c] = b
        args[c] = first_equal(seg, m) + lo
    if ms[0] >= ms[1]:
        return ms[0], bads[0] + bads[1], args[0]
    return ms[1], bads[0] + bads[1], args[1]


@kernel
def scan_row(r, split):
    """``(max, bad, argmax)``: :func:`scan` and the first index of the maximum (meaningful
    only for a row without NaN or ``+inf``), over both halves at once when ``split``."""
    if split is not None and parts(r.size) == 2:
        return scan_halves(r)
    m, bad = scan(r)
    return m, np.int64(bad), np.int64(first_equal(r, m) if bad == 0 else 0)


@intrinsic
def block_bits(typingctx, r, c0, lo, hi):
    """uint64: bit ``k`` set when ``lo <= r[c0 + k] <= hi`` (ordered: NaN never), for the
    :data:`BLOCK` tokens from ``c0 < r.size`` (values of ``r``'s dtype); a block that is not
    full gets a bit for each of its tokens, tested or not (callers test each visited token).
    One vector compare of the whole block (a mask register on AVX-512), so a search visits
    only the tokens it hits
    (:func:`lowest_bit`, :func:`drop_lowest`) instead of every token of a block with a hit:
    the same tokens in the same order, fewer branches."""
    if not (isinstance(r, types.Array) and r.ndim == 1 and r.layout == "C"
            and r.dtype in (types.float32, types.float64) and lo == r.dtype
            and hi == r.dtype and isinstance(c0, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        i64 = llvm_ir.IntType(64)
        n = builder.extract_value(ary.shape, 0)
        j = context.cast(builder, args[1], signature.args[1], types.intp)
        rem = builder.sub(n, j)
        out = cgutils.alloca_once(builder, i64)
        full = builder.icmp_signed(">=", rem, llvm_ir.Constant(intp, BLOCK))
        with builder.if_else(full) as (then, otherwise):
            with then:
                ety = context.get_value_type(signature.args[0].dtype)
                ptr = ir.elem_ptr(builder, ary.data, j, ir.vec(ety, BLOCK))
                v = builder.load(ptr, align=signature.args[0].dtype.bitwidth // 8)
                inside = builder.and_(
                    builder.fcmp_ordered(">=", v, ir.splat(builder, args[2], BLOCK)),
                    builder.fcmp_ordered("<=", v, ir.splat(builder, args[3], BLOCK)),
                )
                builder.store(builder.bitcast(inside, i64), out)
            with otherwise:  # 0 < rem < BLOCK: the low rem bits
                shift = builder.sext(rem, i64) if intp.width < 64 else rem
                one = llvm_ir.Constant(i64, 1)
                builder.store(builder.sub(builder.shl(one, shift), one), out)
        return builder.load(out)

    return types.uint64(r, c0, lo, hi), codegen


@intrinsic
def lowest_bit(typingctx, bits):
    """The index of the lowest set bit of a nonzero uint64 (``cttz``)."""
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return ir.call(builder, "cttz", [args[0], llvm_ir.Constant(llvm_ir.IntType(1), 1)])

    return types.int64(bits), codegen


@intrinsic
def drop_lowest(typingctx, bits):
    """``bits`` with its lowest set bit cleared (``bits & (bits - 1)``, uint64)."""
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        one = llvm_ir.Constant(llvm_ir.IntType(64), 1)
        return builder.and_(args[0], builder.sub(args[0], one))

    return types.uint64(bits), codegen


@kernel
def first_equal(r, m):
    """The first ``j`` with ``r[j] == m`` (``r.size`` if none), testing a block at a time."""
    for c0 in range(0, r.size, BLOCK):
        bits = block_bits(r, c0, m, m)
        while bits != np.uint64(0):
            j = c0 + lowest_bit(bits)
            if r[j] == m:
                return j
            bits = drop_lowest(bits)
    return r.size


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
def materialize(x, out, bias, mask, hist, extra, nextra, p, ids):
    """``out`` = the processed logits of row ``x`` (steps 1-4 of the order, in float64, stored
    in ``out``'s dtype: the logits' for sampling, float64 for verification): masked tokens
    ``-inf`` (``mask`` of size 0: none), ``bias`` added (a float64 row; size 0: none), then
    the penalties for every token of ``hist`` (ids ``< 0`` are padding) and of
    ``extra[:nextra]`` (:func:`penalize`; ``ids`` an int64 scratch of their size)."""
    for j in range(x.size):
        out[j] = load(x, j)
    if bias.size > 0:
        for j in range(x.size):
            out[j] = out[j] + bias[j]
    if mask.size > 0:
        for j in range(x.size):
            if not allowed(mask, j):
                out[j] = -np.inf
    if p[P_REP] != 1.0 or p[P_FREQ] != 0.0 or p[P_PRES] != 0.0:
        penalize(out, hist, extra, nextra, p, ids)


@kernel
def penalize(out, hist, extra, nextra, p, ids):
    """Apply :func:`penalized` once to each distinct token of ``hist`` (ids ``< 0``:
    padding) and ``extra[:nextra]``, with its number of occurrences: the ids are copied into
    the int64 scratch ``ids`` and sorted there, so the cost is ``O(L log L)`` for ``L`` ids,
    nothing of the vocabulary's size."""
    n = 0
    for h in hist:
        if h >= 0:
            ids[n] = h
            n += 1
    for i in range(nextra):
        ids[n] = extra[i]
        n += 1
    seen = ids[:n]
    seen.sort()
    i = 0
    while i < n:
        h = seen[i]
        j = i + 1
        while j < n and seen[j] == h:
            j += 1
        out[h] = penalized(out[h], j - i, p)
        i = j


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
def fill_masses(r, st, er):
    """``er[j]`` = ``exp(d)`` of every token (:func:`token_mass`, in the row's dtype: exact,
    the mass is formed in that precision), the one exp pass of a row: every later pass
    (filters, the mass, the pick) loads the masses from ``er``. One vectorizable loop."""
    s = frozen(st)
    proto = r[0]
    for j in range(r.size):
        er[j] = token_mass(shifted(load(r, j), s, proto), proto)


@kernel(parallel=True, entry=False)
def fill_halves(r, st, er):
    """:func:`fill_masses` of each half of ``r`` on its own thread (the same values)."""
    for c in prange(2):
        lo, hi = part_bounds(r.size, c)
        fill_masses(r[lo:hi], st, er[lo:hi])


@kernel
def fill(r, st, er, split):
    """:func:`fill_masses`, over both halves at once when ``split`` (the same values)."""
    if split is not None and parts(r.size) == 2:
        fill_halves(r, st, er)
    else:
        fill_masses(r, st, er)


@kernel
def above(v, j, lo, tie, ninf):
    """The threshold alone (no min-p, no typical band), in the row's precision: ``v`` above
    ``lo`` (equal to it: chunk-local ids from ``tie`` on) and not ``-inf``."""
    return ((v > lo) | ((v == lo) & (np.int32(j) >= tie))) & (v > ninf)


@kernel
def chunk_pass(r, er, c0, st, typical, eb, kb):
    """For tokens ``c0 + j`` of a chunk (``j < eb.size``): ``eb[j]`` = the kept mass
    ``exp(d)`` (from ``er``, :func:`fill_masses`; 0 if not kept) and ``kb[j]`` = the bucket
    of the key (-1 if not kept). One vectorizable loop (``st`` a tuple from :func:`frozen`,
    ``T > 0``); without min-p and typical-p, a loop that tests the threshold alone in the
    row's precision (its values are row values: the same decisions, 3x faster)."""
    rc = r[c0 : c0 + eb.size]  # views indexed from 0: plain vector loads
    ec = er[c0 : c0 + eb.size]
    proto = rc[0]
    if not typical and st[S_MINP] == 0.0 and st[S_BAND] == np.inf:
        lo = like(proto, st[S_LO])  # -inf or a value of the row: exact
        tie = np.int32(min(max(st[S_TIE] - c0, -1.0), eb.size))  # the tie rule, chunk-local
        ninf = like(proto, -np.inf)
        for j in range(eb.size):
            v = rc[j]
            ok = above(v, j, lo, tie, ninf)
            key = min(-shifted(v, st, proto), like(proto, (NB - 1) / SCALE))
            eb[j] = ec[j] if ok else like(proto, 0.0)
            kb[j] = np.int32(key * like(proto, SCALE)) if ok else np.int32(-1)
        return
    for j in range(eb.size):
        v = load(rc, j)
        d = shifted(v, st, proto)
        e = np.float64(ec[j])
        ok = kept_e(v, c0 + j, d, e, st)
        key = min(typical_key(d, st) if typical else -d, NB)
        eb[j] = e if ok else 0.0
        kb[j] = np.int32(bucket(key)) if ok else np.int32(-1)


@kernel
def chunk_masses(r, er, c0, st, eb):
    """The ``eb`` of :func:`chunk_pass` (``typical`` False) alone, without the bucket keys:
    what the sums of :func:`kept_mass` and :func:`pick` read (the same values, the key's
    arithmetic and stores left out: kept_mass 39 -> 31 us, pick 20 -> 16.5 us at u = 0.5, a
    row of 128256 float32 on AMD Zen 4)."""
    rc = r[c0 : c0 + eb.size]
    ec = er[c0 : c0 + eb.size]
    proto = rc[0]
    if st[S_MINP] == 0.0 and st[S_BAND] == np.inf:
        lo = like(proto, st[S_LO])
        tie = np.int32(min(max(st[S_TIE] - c0, -1.0), eb.size))
        ninf = like(proto, -np.inf)
        for j in range(eb.size):
            eb[j] = ec[j] if above(rc[j], j, lo, tie, ninf) else like(proto, 0.0)
        return
    for j in range(eb.size):
        v = load(rc, j)
        e = np.float64(ec[j])
        eb[j] = e if kept_e(v, c0 + j, shifted(v, st, proto), e, st) else 0.0


@kernel
def total_mass(er):
    """``sum(er)``: chunk sums (``block_sum``) added with Neumaier's compensation."""
    z = 0.0
    comp = 0.0
    for c0 in range(0, er.size, CHUNK):
        z, comp = neumaier_add(z, comp, block_sum(er[c0 : c0 + CHUNK]))
    return neumaier_result(z, comp)


@kernel
def kept_mass(r, er, st, eb):
    """``sum(exp(d))`` over the kept tokens: chunk sums (``block_sum``, fixed order) added
    with Neumaier's compensation, in id order (the order of :func:`pick`)."""
    s = frozen(st)
    z = 0.0
    comp = 0.0
    for c0 in range(0, r.size, CHUNK):
        n = min(CHUNK, r.size - c0)
        chunk_masses(r, er, c0, s, eb[:n])
        z, comp = neumaier_add(z, comp, block_sum(eb[:n]))
    return neumaier_result(z, comp)


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
def pick(r, er, st, u, eb, kb):
    """Inverse CDF: the first kept token (id order) whose cumulative mass exceeds ``u * Z``.

    Whole chunks are skipped by their sums, accumulated exactly as :func:`kept_mass` forms
    ``Z`` (from the masses alone); the chunk where the target falls is walked token by token.
    Where rounding leaves the target unreached, the last kept token of the last chunk with
    mass (or walked) is returned; that chunk's keys are computed only then."""
    if st[S_T] == 0.0:
        return np.int64(st[S_ARG])
    s = frozen(st)
    target = u * st[S_Z]
    z = 0.0
    comp = 0.0
    last = np.int64(st[S_ARG])
    pending = -1  # a chunk with mass whose last kept token is the latest fallback
    for c0 in range(0, r.size, CHUNK):
        n = min(CHUNK, r.size - c0)
        chunk_masses(r, er, c0, s, eb[:n])
        cs = block_sum(eb[:n])
        base = neumaier_result(z, comp)
        if base + cs > target:
            chunk_pass(r, er, c0, s, False, eb[:n], kb[:n])  # the same masses, and the keys
            acc = base
            for j in range(n):
                if kb[j] >= 0:
                    acc += eb[j]
                    last = c0 + j
                    pending = -1
                    if acc > target:
                        return np.int64(last)
        elif cs > 0.0:
            pending = c0
        z, comp = neumaier_add(z, comp, cs)
    if pending >= 0:
        n = min(CHUNK, r.size - pending)
        chunk_pass(r, er, pending, s, False, eb[:n], kb[:n])
        for j in range(n - 1, -1, -1):
            if kb[j] >= 0:
                return np.int64(pending + j)
    return last
