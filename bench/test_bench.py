"""pytest-benchmark view of the `fastlsm bench` registry: every kernel x shape x provider.

pytest's ``testpaths`` is ``tests``, so this file runs only when named, and the project's
``addopts`` disable timing (each case then runs once, as a smoke test). To time::

    python -m pytest bench/test_bench.py --benchmark-enable               # quick shapes
    FASTLSM_BENCH_FULL=1 python -m pytest bench/test_bench.py --benchmark-enable \\
        -k "log_softmax and 4096" --benchmark-columns=median,iqr,rounds
    python -m pytest bench/test_bench.py --benchmark-enable --benchmark-json=out.json

``FASTLSM_BENCH_DTYPES=float32,bfloat16`` adds dtypes (16-bit cases fastlsm does not
support yet are skipped). Groups are "kernel shape dtype", so pytest-benchmark compares
fastlsm, numpy and torch side by side. Each case's ``extra_info`` holds the bytes it moves and
which ceiling applies; the ceilings themselves are measured by ``fastlsm bench`` (a pytest
run times cases in isolation).
"""

from __future__ import annotations

import math
import os

import pytest

import fastlsm
from fastlsm import bench
from fastlsm.bench.registry import Inputs, spec_shapes

try:
    import torch
except ImportError:
    torch = None

FULL = bool(os.environ.get("FASTLSM_BENCH_FULL"))
DTYPES = os.environ.get("FASTLSM_BENCH_DTYPES", "float32").split(",")
CASES = [
    (spec, shape, dtype)
    for spec in bench.KERNELS
    for dtype in DTYPES
    for shape in spec_shapes(spec, bench.SHAPES, quick=not FULL)
]
ROUNDS = 5 if FULL else 20


@pytest.fixture(scope="module")
def pool():
    bench.set_threads(None, torch)
    return bench.Pool(
        max(math.prod(shape) for _, shape, _ in CASES),
        max(bench.DTYPES[d].itemsize for d in DTYPES),
    )


@pytest.mark.parametrize("provider", bench.PROVIDERS)
@pytest.mark.parametrize(
    "spec,shape,dtype",
    CASES,
    ids=[f"{s.name}-{'x'.join(map(str, sh))}-{d}" for s, sh, d in CASES],
)
def test_kernel(benchmark, pool, spec, shape, dtype, provider):
    missing = [name for name in spec.requires if not hasattr(fastlsm, name)]
    if missing:
        pytest.skip(f"fastlsm.{missing[0]} is not available in this build")
    if provider in ("torch", "hf") and torch is None:
        pytest.skip("PyTorch is not installed")
    providers = spec.setup(Inputs(pool, shape, bench.DTYPES[dtype], torch))
    if provider not in providers:
        pytest.skip(f"no {provider} provider for {spec.name} {dtype}")
    p = providers[provider]

    def setup():
        if p.prepare is not None:
            p.prepare()

    setup()
    try:
        p.fn()  # JIT compile and fault pages outside the timing
    except TypeError as e:
        if provider == "fastlsm" and bench.DTYPES[dtype].itemsize == 2:
            pytest.skip(f"not supported yet: {e}")
        raise
    benchmark.group = f"{spec.name} {list(shape)} {dtype}"
    benchmark.extra_info.update(
        bytes=spec.nbytes(shape, bench.DTYPES[dtype].itemsize), ceiling=spec.ceiling
    )
    result = benchmark.pedantic(p.fn, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert result is not None or spec.name == "cross_entropy_grad"
