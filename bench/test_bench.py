"""pytest-benchmark view of the `fastlsm bench` registry: every kernel x shape x provider.

pytest's ``testpaths`` is ``tests``, so this file runs only when named, and the project's
``addopts`` disable timing (each case then runs once, as a smoke test). To time::

    python -m pytest bench/test_bench.py --benchmark-enable               # quick shapes
    FASTLSM_BENCH_FULL=1 python -m pytest bench/test_bench.py --benchmark-enable \\
        -k "log_softmax and 4096" --benchmark-columns=median,iqr,rounds
    python -m pytest bench/test_bench.py --benchmark-enable --benchmark-json=out.json

Groups are "kernel shape", so pytest-benchmark compares fastlsm, numpy and torch side by
side. Each case's ``extra_info`` holds the bytes it moves and which roofline applies; the
roofline itself is measured by ``fastlsm bench`` (a pytest run times cases in isolation).
"""

from __future__ import annotations

import math
import os

import pytest

import fastlsm
from fastlsm import bench

try:
    import torch
except ImportError:
    torch = None

FULL = bool(os.environ.get("FASTLSM_BENCH_FULL"))
SHAPES = bench.DEFAULT_SHAPES if FULL else bench.QUICK_SHAPES
CASES = [(spec, tuple(shape)) for spec in bench.KERNELS for shape in SHAPES[spec.family]]
ROUNDS = 5 if FULL else 20


@pytest.fixture(scope="module")
def pool():
    bench.set_threads(None, torch)
    return bench.Pool(max(math.prod(shape) for _, shape in CASES))


@pytest.mark.parametrize("provider", bench.PROVIDERS)
@pytest.mark.parametrize(
    "spec,shape", CASES, ids=[f"{s.name}-{'x'.join(map(str, sh))}" for s, sh in CASES]
)
def test_kernel(benchmark, pool, spec, shape, provider):
    missing = [name for name in spec.requires if not hasattr(fastlsm, name)]
    if missing:
        pytest.skip(f"fastlsm.{missing[0]} is not available in this build")
    if provider == "torch" and torch is None:
        pytest.skip("PyTorch is not installed")
    p = spec.setup(pool, shape, torch)[provider]

    def setup():
        if p.prepare is not None:
            p.prepare()

    setup()
    p.fn()  # JIT compile and fault pages outside the timing
    benchmark.group = f"{spec.name} {list(shape)}"
    benchmark.extra_info.update(bytes=spec.nbytes(shape), roofline=spec.roofline)
    result = benchmark.pedantic(p.fn, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert result is not None or spec.name == "cross_entropy_grad"
