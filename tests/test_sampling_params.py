"""The one check of the sampling parameters (``fastlsm/_kernels/sampling_params.py``), which
``fastlsm.sample`` / ``verify_draft`` and the C entry points share. No float64 reference
(``tests/naive.py``) applies: the results are indices and messages."""

from __future__ import annotations

import numpy as np
import pytest

import fastlsm
from fastlsm._kernels import sampling_params as sp
from fastlsm._kernels.rowstate import NPARAM, P_K, P_P, P_T, P_TYP

GOOD = {P_T: 0.7, P_K: 5, P_P: 0.9, P_TYP: 1.0}


def _table(rows=3):
    t = np.full((rows, NPARAM), sp.NEUTRAL)
    for col, v in GOOD.items():
        t[:, col] = v
    return t


def test_valid_table_passes():
    assert sp.check_params(_table()) == -1
    assert sp.check_params(np.zeros((0, NPARAM))) == -1


@pytest.mark.parametrize(
    ("col", "bad", "good"),
    [(P_T, -0.1, 0.0), (P_T, np.inf, 1e300), (P_K, -1.0, 0.0), (P_P, 0.0, 1.0),
     (P_P, 1.0 + 2**-52, 1e-300), (P_TYP, np.nan, 0.5)],
)
def test_first_bad_entry_is_reported(col, bad, good):
    t = _table(4)
    t[1, col] = good
    assert sp.check_params(t) == -1
    t[2, col] = bad
    t[3, col] = bad
    assert sp.check_params(t) == 2 * NPARAM + col
    assert sp.describe(2 * NPARAM + col)[:2] == (2, col)


def test_parameters_are_checked_in_table_order():
    t = _table(2)
    t[1, P_T] = -1.0  # temperature comes first in PARAMS, whatever the row
    t[0, P_P] = 0.0
    assert sp.check_params(t) == 1 * NPARAM + P_T
    assert [p[0] for p in sp.PARAMS] == list(range(NPARAM))  # every column, once


def test_python_messages(rng):
    x = rng.standard_normal((3, 10))
    with pytest.raises(ValueError, match=r"^top_p must be in \(0, 1\] \(1 = off\), got 0.0$"):
        fastlsm.sample(x, top_p=0.0)
    with pytest.raises(ValueError, match=r"typical_p must be .*, got np.float64\(2.0\) \(row 1\)"):
        fastlsm.sample(x, typical_p=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="temperature must be finite"):  # an empty batch too
        fastlsm.sample(np.zeros((0, 10)), temperature=-1.0)
    assert fastlsm.sample(np.zeros((0, 10)), temperature=np.zeros(0)).tokens.shape == (0,)
