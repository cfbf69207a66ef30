"""The sampling parameters' ranges, checked once: a compiled check and its messages.

Python (:func:`fastlsm.sample`, :func:`fastlsm.verify_draft`) and C (``fastlsm_sample_*``,
``fastlsm_verify_draft_*``) both describe a batch's parameters as the float64 table
``[rows, NPARAM]`` the sampling kernels read (columns ``P_*`` of :mod:`.rowstate`), and both
validate it with :func:`check_params`: a compiled pure function returning ``-1`` or the first
bad entry as ``row * NPARAM + column``, never raising. :data:`PARAMS` holds, per column (in
the order the checks run), the parameter's name, the name of its per-row array in C's
``fastlsm_sample_params`` and what its values must be; Python raises
``ValueError(f"{name} must be {what}, got ...")``, C returns ``FASTLSM_ERR_INVALID_ARGUMENT``
with the same words (generated from this table by ``fastlsm/capi/_entries.py``).

A table with no rows checks nothing: callers with an empty batch check a one-row table of the
scalar values (:data:`NEUTRAL` fills the columns given per row, as it is valid for every
parameter).
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .rowstate import NPARAM, P_FREQ, P_K, P_MINP, P_P, P_PRES, P_REP, P_T, P_TYP

PARAMS = (
    (P_T, "temperature", "temperatures", "finite and >= 0 (0 = greedy)"),
    (P_K, "top_k", "top_ks", ">= 0 (0 = off)"),
    (P_P, "top_p", "top_ps", "in (0, 1] (1 = off)"),
    (P_MINP, "min_p", "min_ps", "in [0, 1] (0 = off)"),
    (P_TYP, "typical_p", "typical_ps", "in (0, 1] (1 = off)"),
    (P_REP, "repetition_penalty", "repetition_penalties", "finite and > 0 (1 = off)"),
    (P_FREQ, "frequency_penalty", "frequency_penalties", "finite (0 = off)"),
    (P_PRES, "presence_penalty", "presence_penalties", "finite (0 = off)"),
)
"""``(column, name, C per-row array, what its values must be)``, in the order checked."""

NEUTRAL = 1.0
"""A value every parameter accepts (see the module docstring)."""

_ORDER = np.array([p[0] for p in PARAMS], np.int64)


@kernel
def valid(col, v):
    """Whether ``v`` is an allowed value of the parameter in column ``col`` (NaN never is)."""
    if col == P_T:
        return v >= 0.0 and v < np.inf
    if col == P_K:
        return v >= 0.0
    if col == P_P or col == P_TYP:
        return v > 0.0 and v <= 1.0
    if col == P_MINP:
        return v >= 0.0 and v <= 1.0
    if col == P_REP:
        return v > 0.0 and v < np.inf
    return abs(v) < np.inf  # the penalties


@kernel(entry=True)
def check_params(table):
    """``-1`` if every value of the float64 table ``[rows, NPARAM]`` is allowed, else the
    first bad entry as ``row * NPARAM + column``: the first parameter in :data:`PARAMS`
    order with a bad value, at its first bad row."""
    for c in range(_ORDER.size):
        col = _ORDER[c]
        for i in range(table.shape[0]):
            if not valid(col, table[i, col]):
                return np.int64(i * NPARAM + col)
    return np.int64(-1)


def describe(code: int) -> tuple[int, int, str, str, str]:
    """``(row, column, name, C per-row array, what)`` of a :func:`check_params` result."""
    row, col = divmod(int(code), NPARAM)
    _, name, array, what = next(p for p in PARAMS if p[0] == col)
    return row, col, name, array, what
