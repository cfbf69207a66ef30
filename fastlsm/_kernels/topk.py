"""Ranked top-k: the one sorted insertion every bounded best-first list uses.

Every bounded best-first list in fastlsm (a row's candidates, a batch's candidates, a block
maximum list, the decoder's finished hypotheses) is a pair of arrays ``vals`` (float64) and
``ids`` (int64) kept sorted by :func:`before` (value descending, then id ascending) with
:func:`insert_ranked`. Ties therefore always go to the lower id; a caller that wants another
tie order encodes it in the id (a batch candidate's id is ``beam * V + token``: lower beam,
then lower token; a hypothesis's id grows with its arrival: first come, first ranked).

The fused normalizer + top-k row pass and the beam step built on these lists are in
:mod:`.beam_rows`.
"""

from __future__ import annotations

from .._jit import kernel

# ============================================================================ ranked lists


@kernel
def before(v1, t1, v2, t2):
    """The rank order of every list: higher value first, then lower id."""
    return v1 > v2 or (v1 == v2 and t1 < t2)


@kernel
def admits(vals, ids, n, cap, v, t):
    """Whether ``(v, t)`` enters the list ``vals/ids[:n]`` of capacity ``cap`` (by value
    alone when ``ids`` is None)."""
    if n < cap:
        return True
    if cap == 0:
        return False
    if ids is None:
        return v > vals[cap - 1]
    return before(v, t, vals[cap - 1], ids[cap - 1])


@kernel
def insert_ranked(vals, ids, n, cap, v, t):
    """Insert ``(v, t)`` into ``vals/ids[:n]``, kept sorted by :func:`before`; returns the new n.

    With ``n == cap`` the last entry drops out, or ``(v, t)`` is ignored when it would rank
    last (see :func:`admits`). ``ids`` None: a list of values alone (``t`` unused; equal
    values keep their order).

    Hot (every candidate of every row): written without calls that take the arrays, and
    small enough that LLVM inlines it into its callers. A call that is not inlined updates
    the reference counts of both arrays (atomic operations): about ten times the insertion
    itself on short lists (32 x 16 insertions into lists of 8: 25 us called, 2 us inlined;
    storing ``ids[i]`` before ``vals[i]`` at the end was enough to lose the inlining).
    """
    if n < cap:
        i = n
        n += 1
    elif cap == 0:
        return n
    else:
        i = n - 1
        if ids is None:
            if not v > vals[i]:
                return n
        elif not before(v, t, vals[i], ids[i]):
            return n
    if ids is None:
        while i > 0 and v > vals[i - 1]:
            vals[i] = vals[i - 1]
            i -= 1
        vals[i] = v
    else:
        while i > 0 and before(v, t, vals[i - 1], ids[i - 1]):
            vals[i] = vals[i - 1]
            ids[i] = ids[i - 1]
            i -= 1
        vals[i] = v
        ids[i] = t
    return n


@kernel
def sort_ranked(vals, ids, n):
    """Sort ``vals/ids[:n]`` by :func:`before` in place (insertion: linear when nearly sorted)."""
    for i in range(1, n):
        insert_ranked(vals, ids, i, n, vals[i], ids[i])
