"""The block search of the sampler's passes: ``rowstate.block_bits`` and its bit iteration.

``block_bits`` is one vector compare of a 64-token block (LLVM IR), and ``first_equal``, the
bucket gather of top-p / top-k and the candidate scan of small top-k visit only its set bits
(``lowest_bit``, ``drop_lowest``). These tests hold the mask to the NumPy comparison it
stands for, lane by lane, for both row dtypes, NaN, infinities, blocks that are not full and
offsets that are not a multiple of the block, and the iteration to the exact index list.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastlsm._jit import kernel
from fastlsm._kernels.rowstate import (
    BLOCK,
    block_bits,
    drop_lowest,
    first_equal,
    lowest_bit,
    scan,
)


@kernel(entry=True)
def _bits(r, c0, lo, hi):
    return block_bits(r, c0, lo, hi)


@kernel(entry=True)
def _indices(r, lo, hi, out):
    """Every ``j`` whose bit is set, block by block: what the searches visit."""
    n = 0
    for c0 in range(0, r.size, BLOCK):
        bits = block_bits(r, c0, lo, hi)
        while bits != np.uint64(0):
            out[n] = c0 + lowest_bit(bits)
            n += 1
            bits = drop_lowest(bits)
    return n


@kernel(entry=True)
def _first_equal(r, m):
    return first_equal(r, m)


def _expected(seg, lo, hi):
    with np.errstate(invalid="ignore"):
        return (seg >= lo) & (seg <= hi)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_bits_is_the_lane_comparison_and_partial_blocks_get_every_lane(dtype):
    rng = np.random.default_rng(3)
    r = rng.standard_normal(3 * BLOCK + 17).astype(dtype)
    r[[5, 70, 140]] = np.nan
    r[[6, 71]] = np.inf
    r[[7, 72]] = -np.inf
    lo, hi = dtype(-0.5), dtype(0.75)
    for c0 in (0, 1, BLOCK, 2 * BLOCK + 3):
        bits = int(_bits(r, c0, lo, hi))
        want = _expected(r[c0 : c0 + BLOCK], lo, hi)
        assert [(bits >> k) & 1 for k in range(BLOCK)] == [int(w) for w in want], c0
    tail = 3 * BLOCK  # 17 tokens left: their 17 bits, tested or not
    assert int(_bits(r, tail, lo, hi)) == (1 << 17) - 1
    assert int(_bits(r, tail + 16, lo, hi)) == 1
    everything = int(_bits(r, 0, dtype(-np.inf), dtype(np.inf)))
    assert everything == sum(1 << k for k in range(BLOCK) if k not in (5,))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_bit_iteration_visits_the_hits_in_order(dtype, n):
    rng = np.random.default_rng(n)
    r = rng.standard_normal(n).astype(dtype)
    lo, hi = dtype(0.25), dtype(1.5)
    out = np.full(n + BLOCK, -1, np.int64)
    count = _indices(r, lo, hi, out)
    full = n // BLOCK * BLOCK  # the tail's every token is visited, then re-tested by callers
    want = np.flatnonzero(_expected(r[:full], lo, hi)).tolist() + list(range(full, n))
    assert out[:count].tolist() == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_equal_finds_the_first_occurrence_in_any_block(dtype):
    r = np.zeros(1000, dtype)
    assert _first_equal(r, dtype(1.0)) == 1000
    for j in (0, 63, 64, 500, 999):
        r[:] = 0
        r[j] = 2.0
        r[min(j + 3, 999)] = 2.0
        assert _first_equal(r, dtype(2.0)) == j
    r[:] = np.nan
    r[900] = -1.0
    assert _first_equal(r, dtype(-1.0)) == 900


@kernel(entry=True)
def _scan(r):
    return scan(r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 63, 64, 65, 1000])
def test_scan_finds_the_maximum_and_flags_nan_and_plus_inf_anywhere(dtype, n):
    rng = np.random.default_rng(n)
    r = rng.standard_normal(n).astype(dtype)
    m, bad = _scan(r)
    assert m == (r.max() if n else -np.inf) and bad == 0
    for j in {0, n // 2, n - 1} if n else ():
        for special in (np.nan, np.inf):
            s = r.copy()
            s[j] = special
            m, bad = _scan(s)
            assert bad != 0, (j, special)
            rest = s[~np.isnan(s)]
            assert m == (rest.max() if rest.size else -np.inf)
        s = r.copy()
        s[j] = -np.inf
        assert _scan(s) == (np.max(s), 0)
    if n:
        assert _scan(np.full(n, -np.inf, dtype)) == (-np.inf, 0)
        m, bad = _scan(np.full(n, np.nan, dtype))
        assert m == -np.inf and bad != 0
