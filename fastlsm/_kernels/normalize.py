"""Row kernels for log_softmax, softmax and logsumexp.

Layout contract (shared by every kernel family): ``x`` is a C-contiguous ``[rows, cols]``
float32 or float64 array, outputs are caller-allocated and C-contiguous, ``out`` may be ``x``
itself. Each row is computed by one thread with the same code whatever the thread count, so
results are bitwise identical for any number of threads. Kernels never raise and never
allocate anything of the input's size.

Each row costs two passes over data that sits in L2 (a 32k-float row is 128 KiB):
1. ``m = max(x)`` (``llvm.maxnum``, vectorized);
2. ``d = x - m`` stored to ``out`` while ``s = sum(exp(d))`` accumulates in float64;
then a cheap fix-up of ``out`` (``d - log(s)`` or ``exp(d) / s``) while the row is still in
cache. The subtraction ``x - m`` comes first, so values near the maximum keep every bit
even for logits like 1e4 or 1e30 (``(x - m) - log(s)``, never ``x - (m + log(s))``).

Special values follow PyTorch and need no branches: ``-inf`` entries give ``exp(-inf) = 0``;
a NaN anywhere makes its row NaN (it reaches the sum); a ``+inf`` makes ``m = inf`` and
``inf - inf = NaN``; an all ``-inf`` row gives NaN for log_softmax/softmax and ``-inf`` for
logsumexp (which, like PyTorch and SciPy, shifts by 0 when the maximum is infinite).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._jit import kernel
from .math import acc_zero, fexp, fmax, like


@kernel
def row_max(x):
    """Maximum of a 1-D row ignoring NaN (NaN reaches the result through the exp sum)."""
    m = like(x, -np.inf)
    for j in range(x.size):
        m = fmax(m, x[j])
    return m


@kernel
def row_shifted_sumexp(x, m):
    """``sum(exp(x - m))`` accumulated in float64, without storing anything."""
    s = acc_zero(m)
    for j in range(x.size):
        s += fexp(x[j] - m)
    return s


@kernel
def row_lse(x):
    """log-sum-exp of one row as float64 (``-inf`` for an empty or all ``-inf`` row)."""
    m = row_max(x)
    shift = m if abs(m) < np.inf else like(m, 0.0)
    return math.log(row_shifted_sumexp(x, shift)) + shift


@kernel
def row_log_softmax(x, out):
    """``out = log_softmax(x)`` for one row; ``out`` may be ``x``. Returns log-sum-exp."""
    m = row_max(x)
    s = acc_zero(m)
    for j in range(x.size):
        d = x[j] - m
        out[j] = d
        s += fexp(d)
    log_s = math.log(s)
    c = like(m, log_s)
    for j in range(x.size):
        out[j] = out[j] - c
    return log_s + m


@kernel
def row_softmax(x, out):
    """``out = softmax(x)`` for one row; ``out`` may be ``x``."""
    m = row_max(x)
    s = acc_zero(m)
    for j in range(x.size):
        e = fexp(x[j] - m)
        out[j] = e
        s += e
    inv = like(m, 1.0 / s)
    for j in range(x.size):
        out[j] = out[j] * inv


@kernel(parallel=True)
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    for i in prange(x.shape[0]):
        row_log_softmax(x[i], out[i])


@kernel(parallel=True)
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])`` for every row of a C-contiguous 2-D array."""
    for i in prange(x.shape[0]):
        row_softmax(x[i], out[i])


@kernel(parallel=True)
def logsumexp_rows(x, out):
    """``out[i] = logsumexp(x[i])``; ``out`` is 1-D with one value per row."""
    for i in prange(x.shape[0]):
        out[i] = row_lse(x[i])
