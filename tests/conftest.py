"""Shared fixtures: a seeded ``rng``, the ``tolerance`` table by dtype, ``torch_or_skip``;
:func:`at_threads` (``from conftest import at_threads``).

References live in ``tests/naive.py`` (``from naive import log_softmax``). The C ABI tests
(``tests/test_capi*.py``) run after all others, while their library builds in the background;
the fresh-compile determinism test's processes run in the background too, after that build.
"""

from __future__ import annotations

import numpy as np
import pytest


class _ByDtype(dict):
    """A dict keyed by ``np.dtype`` that also accepts ``np.float32``, ``"float64"``..."""

    def __missing__(self, key):
        if isinstance(key, np.dtype):
            raise KeyError(key)
        return self[np.dtype(key)]


TOLERANCE = _ByDtype(
    {
        np.dtype(np.float32): {"rtol": 2e-6, "atol": 2e-6},
        np.dtype(np.float64): {"rtol": 1e-13, "atol": 1e-13},
    }
)
"""``rtol``/``atol`` for comparing a float32/float64 result with a float64 reference.

For values of order 1 (log-probabilities near the maximum, probabilities, logsumexp of
moderate logits) this is about 16 ulp of float32 and a few hundred ulp of float64: room for
the rounding of ``x - m``, of ``log(s)`` and of exp, never for a wrong formula. Used as
``np.testing.assert_allclose(actual, expected, **tolerance[x.dtype])``.
"""


def pytest_configure(config):
    # When a hypothesis test fails, its pytest plugin imports libcst, which triggers
    # mypy_extensions' DeprecationWarning; under `filterwarnings = error` that turns every
    # hypothesis failure into an INTERNALERROR that hides the counterexample.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


def _is_c_test(item) -> bool:
    return item.path.name.startswith("test_capi")


def _in_background(item) -> bool:
    """Tests whose subprocesses run in a background thread (their module's ``start``)."""
    return item.path.name == "test_determinism.py" and item.name.startswith("test_fresh_compile")


def pytest_collection_modifyitems(session, config, items):
    # The C ABI tests run last: their library build (``capi_support.start_build``, minutes
    # with a cold kernel cache) runs in the background meanwhile, beside the Python tests.
    # The background tests wait for their thread just before them.
    c_tests = [i for i in items if _is_c_test(i)]
    later = [i for i in items if _in_background(i)]
    items[:] = [i for i in items if not (_is_c_test(i) or _in_background(i))] + later + c_tests


def pytest_collection_finish(session):
    # Two cores: the C library's build takes one beside the Python tests; the background
    # tests' processes take it after the build (both are compilers, one core each).
    after = None
    if any(_is_c_test(i) for i in session.items):
        import capi_support

        capi_support.start_build()
        after = capi_support.wait_for_build
    for item in session.items:
        if _in_background(item):
            item.module.start(after)


@pytest.fixture
def rng():
    """A NumPy Generator with a fixed seed: every test sees the same data on every run."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def tolerance():
    """:data:`TOLERANCE`, keyed by ``np.dtype`` (session scope: usable with hypothesis)."""
    return TOLERANCE


@pytest.fixture(scope="session")
def torch_or_skip():
    """The ``torch`` module, or skip the test cleanly when PyTorch is not installed.

    Only PyTorch parity tests use it; core tests never depend on PyTorch. Any ImportError
    skips (a broken install too: ``pytest.importorskip`` would warn, and warnings are errors).
    """
    try:
        import torch
    except ImportError as e:
        pytest.skip(f"PyTorch is not available: {e}")
    return torch


def at_threads(n, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run with ``n`` fastlsm threads (the setting restored after)."""
    import fastlsm

    old = fastlsm.get_num_threads()
    try:
        fastlsm.set_num_threads(n)
        return fn(*args, **kwargs)
    finally:
        fastlsm.set_num_threads(old)
