"""The two row paths of the read-only row kernels give the same bits.

logsumexp, cross-entropy and sequence scoring take the next row's maximum inside the
current row's exp-sum loop when the logits come from memory, and in a separate max pass
when they fit in cache; :func:`fastlsm._kernels.memory.pipelines` is the one decision. Here
each entry kernel is recompiled with that decision forced either way (a copy of its Python
function whose ``pipelines`` global returns a constant) and the outputs are compared bit
for bit on many shapes and special rows (``-inf``, NaN, ``+inf``, 1e30, one column).
"""

from __future__ import annotations

import types

import ml_dtypes
import numba
import numpy as np
import pytest

from fastlsm._dtypes import kernel_view
from fastlsm._jit import JIT_OPTIONS
from fastlsm._kernels import cross_entropy, memory, normalize, sequence

# More rows than row blocks (rows.MAX_CHUNKS = 64): a block's rows run in sequence, the
# only place where a row's pass can take its next row's maximum.
SHAPES = [(1, 1), (3, 7), (70, 1), (130, 2), (100, 17), (140, 255), (66, 256), (90, 257),
          (70, 1000), (67, 4099)]
DTYPES = [np.float32, np.float64, ml_dtypes.bfloat16]


def test_the_decision_is_by_size_on_cpus_where_it_pays():
    assert not memory.pipelines(0) and not memory.pipelines(memory.PIPELINE_MIN_BYTES - 1)
    big = memory.pipelines(memory.PIPELINE_MIN_BYTES), memory.pipelines(1 << 40)
    assert big == (memory.PIPELINES_HERE,) * 2


@pytest.mark.parametrize(
    "cpu, x86, pays",
    [("sapphirerapids", True, True), ("icelake-server", True, True),
     ("skylake-avx512", True, True), ("znver4", True, False), ("znver3", True, False),
     ("ZNVER5", True, False), ("bdver2", True, False), ("generic", True, False),
     ("x86-64-v4", True, False), ("neoverse-v2", False, False), ("apple-m2", False, False)],
)
def test_the_cpu_policy(cpu, x86, pays):
    assert memory._pipelining_pays(cpu, x86) is pays


def test_the_policy_reads_the_cpu_numba_compiles_for(monkeypatch):
    import llvmlite.binding as llvm

    monkeypatch.setattr(numba.config, "CPU_NAME", "znver4", raising=False)
    assert memory._target_cpu() == "znver4"
    for unset in (None, "host"):
        monkeypatch.setattr(numba.config, "CPU_NAME", unset, raising=False)
        assert memory._target_cpu() == llvm.get_host_cpu_name()


_forced: dict = {}


def forced(entry, value: bool):
    """A serial, uncached copy of ``entry`` whose ``pipelines(nbytes)`` returns ``value``."""
    key = (entry, value)
    if key not in _forced:
        f = entry.py_func
        g = dict(f.__globals__)
        assert "pipelines" in g, f"{f.__qualname__} does not take the decision"
        g["pipelines"] = numba.njit(lambda nbytes: value)
        h = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)
        _forced[key] = numba.njit(nogil=True, **JIT_OPTIONS)(h)
    return _forced[key]


def both(entry, make_args):
    """Run the forced copies of ``entry`` on fresh arguments; returns both outputs."""
    outs = []
    for value in (False, True):
        args = make_args()
        status = forced(entry, value)(*args)
        outs.append((status, args))
    return outs


def logits(rng, shape, dtype):
    """Normal rows, and special ones next to normal and special ones (every kind of
    neighbour in a block): all -inf, a NaN, 1e30 (1e300), a +inf, every third -inf."""
    rows, cols = shape
    x = rng.standard_normal(shape) * 4
    kind = rng.integers(0, 10, rows)
    x[kind == 1] = -np.inf
    x[kind == 2, cols // 2] = np.nan
    x[kind == 3] = 1e30 if dtype != np.float64 else 1e300
    x[kind == 3, cols - 1] = -1e30
    x[kind == 4, 0] = np.inf
    x[kind == 5, ::3] = -np.inf
    return x.astype(dtype)


def assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), np.flatnonzero(a.view(np.uint8) != b.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES)
def test_logsumexp_rows(shape, dtype, rng):
    x = kernel_view(logits(rng, shape, dtype))
    out_dtype = np.float64 if dtype == np.float64 else np.float32
    (_, (_, a)), (_, (_, b)) = both(
        normalize.logsumexp_rows, lambda: (x, np.full(shape[0], 7.0, out_dtype))
    )
    assert_same_bits(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES)
def test_sequence_logprobs_rows(shape, dtype, rng):
    x = kernel_view(logits(rng, shape, dtype))
    rows, cols = shape
    tok = rng.integers(0, cols, rows)
    mask = (rng.random(rows) < 0.8).astype(np.uint8)  # padding inside the row blocks
    mask[0] = 1
    outs = both(
        sequence.sequence_logprobs_rows,
        lambda: (x, tok, mask, rows, np.full(rows, 7.0), np.full(1, 7.0)),
    )
    (sa, a), (sb, b) = outs
    assert sa == sb == -1
    assert_same_bits(a[4], b[4])
    assert_same_bits(a[5], b[5])


CE_MODES = {
    "loss": dict(grad=False, lse=False),
    "lse+grad": dict(grad=True, lse=True),
    "smooth+z+ignored": dict(grad=True, lse=True, eps=0.1, z=1e-4, ignore=True),
    "softcap": dict(grad=False, lse=True, cap=30.0),
    "probs": dict(grad=True, lse=True, probs=True),
}


@pytest.mark.parametrize("mode", list(CE_MODES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_rows(shape, dtype, mode, rng):
    opt = CE_MODES[mode]
    rows, cols = shape
    x16 = logits(rng, shape, dtype)
    x = kernel_view(x16)
    f32 = np.float64 if dtype == np.float64 else np.float32
    if opt.get("probs"):
        if dtype == ml_dtypes.bfloat16:
            pytest.skip("probability targets are float32/float64 here")
        target = rng.random(shape).astype(dtype)
    else:
        target = rng.integers(0, cols, rows)
        if opt.get("ignore") and rows > 1:
            target[rows // 2] = -100
    e = np.empty(0, f32)

    def make_args():
        grad = np.full(x.shape if opt["grad"] else (0, cols), 7, x.dtype)
        lse = np.full(rows if opt["lse"] else 0, 7.0, f32)
        loss = np.full(rows, 7.0, f32)
        return (x, target, e, e, -100, opt.get("eps", 0.0), opt.get("z", 0.0),
                opt.get("cap", 0.0), cross_entropy.NONE, 1.0, e, loss, lse, grad,
                np.empty(0))

    (sa, a), (sb, b) = both(cross_entropy.cross_entropy_rows, make_args)
    assert sa == sb == -1
    for k in (11, 12, 13):  # loss, lse, grad
        assert_same_bits(a[k], b[k])
