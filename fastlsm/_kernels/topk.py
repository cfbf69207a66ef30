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
def _ahead(v, t, vals, ids, i):
    """Whether ``(v, t)`` ranks before entry ``i`` (by value alone when ``ids`` is None)."""
    if ids is None:
        return v > vals[i]
    return before(v, t, vals[i], ids[i])


@kernel
def admits(vals, ids, n, cap, v, t):
    """Whether ``(v, t)`` enters the list ``vals/ids[:n]`` of capacity ``cap``."""
    return n < cap or (cap > 0 and _ahead(v, t, vals, ids, cap - 1))


@kernel
def insert_ranked(vals, ids, n, cap, v, t):
    """Insert ``(v, t)`` into ``vals/ids[:n]``, kept sorted by :func:`before`; returns the new n.

    With ``n == cap`` the last entry drops out, or ``(v, t)`` is ignored when it would rank
    last (see :func:`admits`). ``ids`` None: a list of values alone (``t`` unused; equal
    values keep their order).
    """
    if not admits(vals, ids, n, cap, v, t):
        return n
    if n < cap:
        i = n
        n += 1
    else:
        i = n - 1
    while i > 0 and _ahead(v, t, vals, ids, i - 1):
        vals[i] = vals[i - 1]
        if ids is not None:
            ids[i] = ids[i - 1]
        i -= 1
    vals[i] = v
    if ids is not None:
        ids[i] = t
    return n


@kernel
def sort_ranked(vals, ids, n):
    """Sort ``vals/ids[:n]`` by :func:`before` in place (insertion: linear when nearly sorted)."""
    for i in range(1, n):
        insert_ranked(vals, ids, i, n, vals[i], ids[i])
