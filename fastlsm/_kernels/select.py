"""Exact thresholds over one row without sorting it: a bucket histogram, then a sort of one
bucket.

The filters of a sampler ask for the first position, in some order of the tokens, where a
running count or probability mass reaches a target: the k-th largest logit (top-k), the
smallest prefix of the descending order holding mass ``p`` (top-p), the smallest set of
tokens closest to the entropy holding mass ``tau`` (typical-p). Instead of sorting V values,
one pass drops each candidate token into one of :data:`NB` buckets of its sort key (buckets
of width ``1 / SCALE`` in log-probability units, the last one open-ended) and adds its count
and mass there; the buckets are then scanned in key order to find the one where the running
total crosses the target, and only that bucket's tokens are gathered and sorted to find the
exact position. A bucket holds few tokens for any real distribution; when one holds many
(flat logits), its sort is still the only sort.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel

NB = 2048
"""Buckets per histogram."""
SCALE = 64.0
"""Buckets per unit of the key: keys below ``NB / SCALE = 32`` (log-probability units) get
their own buckets, the rest share the last one."""


@kernel
def bucket(key):
    """The bucket of a key ``>= 0`` (``+inf`` and huge keys go to the last one), as int32
    (float64 -> int32 is one AVX instruction, -> int64 needs AVX-512)."""
    return np.int32(min(key, (NB - 1) / SCALE) * SCALE)


@kernel
def crossing(weights, target):
    """``(b, before)``: the first bucket ``b`` where the running sum of ``weights`` (in bucket
    order, float64) reaches ``target``, and the sum of the buckets before it. ``b = -1`` when
    the total stays below ``target`` (then ``before`` is the total)."""
    acc = 0.0
    for b in range(weights.size):
        nxt = acc + weights[b]
        if nxt >= target:
            return np.int64(b), acc
        acc = nxt
    return np.int64(-1), acc


@kernel
def sort_desc(vals, ids, n, order):
    """Write into ``order[:n]`` the indices of ``vals[:n]`` by decreasing value, equal values by
    decreasing id (``ids[:n]`` must be increasing: tokens gathered in id order)."""
    idx = np.argsort(vals[:n], kind="mergesort")  # stable: equal values in increasing id
    for i in range(n):
        order[i] = idx[n - 1 - i]


@kernel
def sort_asc(vals, n, order):
    """Write into ``order[:n]`` the indices of ``vals[:n]`` by increasing value (stable)."""
    idx = np.argsort(vals[:n], kind="mergesort")
    for i in range(n):
        order[i] = idx[i]


@kernel
def push_top(vals, ids, count, v, j):
    """Insert ``(v, j)`` into the best-first list ``vals/ids[:count]`` of capacity
    ``vals.size`` if it belongs there; returns the new count. Called in increasing ``j``: a
    value equal to one already held ranks after it (ties go to the lower id)."""
    n = vals.size
    if count == n and not v > vals[n - 1]:
        return count
    pos = count if count < n else n - 1
    while pos > 0 and v > vals[pos - 1]:
        if pos < n:
            vals[pos] = vals[pos - 1]
            ids[pos] = ids[pos - 1]
        pos -= 1
    vals[pos] = v
    ids[pos] = j
    return min(count + 1, n)
