"""Token bitmasks as grammar engines produce them (xgrammar, llguidance).

A row of an int32 bitmask ``[rows, ceil(V / 32)]`` allows token ``j`` when bit ``j % 32`` of
word ``j // 32`` is set; bits past ``V`` in the last word are ignored.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel


@kernel
def allowed(mask, t):
    """Whether the bitmask row ``mask`` allows token ``t``."""
    return (mask[t >> 5] >> (t & 31)) & 1 != 0


@kernel
def empty_row(mask, vocab):
    """The first row of ``mask`` (int32 ``[rows, ceil(vocab / 32)]``) that allows no token
    below ``vocab``, or -1."""
    full = vocab >> 5
    rest = vocab & 31
    for r in range(mask.shape[0]):
        empty = True
        for w in range(full):
            if mask[r, w] != 0:
                empty = False
                break
        if empty and rest > 0 and (mask[r, full] & ((1 << rest) - 1)) != 0:
            empty = False
        if empty:
            return np.int64(r)
    return np.int64(-1)


@kernel(entry=True)
def first_empty_row(mask, vocab):
    """:func:`empty_row`, as an entry point for Python and C."""
    return empty_row(mask, vocab)
