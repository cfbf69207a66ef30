"""The per-token fast paths: the bits, results and errors of the general path.

``log_softmax`` / ``softmax`` / ``logsumexp`` / ``cross_entropy`` on a native C-contiguous
float32/float64/bfloat16/float16 array that gets one thread call the kernel's serial copy
directly (``fastlsm._jit.serial_entry``), skipping validation, the thread bookkeeping and
Numba's dispatch. Everything else takes the general path. The general path is reached here
with arguments the fast path does not take but that mean the same (an explicit ``dtype=``,
``keepdims=True``, an int32 target), so the two results must agree bit for bit; both are
checked against the float64 references of ``tests/naive.py``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import naive
import numba
import numpy as np
import pytest

import fastlsm
from fastlsm import _jit
from fastlsm import losses as _losses
from fastlsm import normalize as _normalize
from fastlsm._kernels import cross_entropy as _ce_kernels
from fastlsm._kernels import normalize as _kernels

SHAPES = [(1, 8), (1, 1), (3, 5), (1, 40000), (8,), (1, 2, 7)]
DTYPES = [np.float32, np.float64]
KERNELS = {"log_softmax": "log_softmax_rows", "softmax": "softmax_rows"}


@pytest.fixture(autouse=True)
def layer_ready():
    _jit._ensure_layer()  # before it, serial_entry sends the first call to the general path


@pytest.fixture
def no_general_path(monkeypatch):
    """Fails a test whose call reaches the general path of a normalizer or cross_entropy."""

    def fail(*args, **kwargs):
        raise AssertionError("the general path was taken")

    for module, name in ((_normalize, "_elementwise"), (_normalize, "_logsumexp"),
                         (_losses, "_cross_entropy")):
        monkeypatch.setattr(module, name, fail)


def logits(rng, shape, dtype):
    x = (6 * rng.standard_normal(shape)).astype(dtype)
    flat = x.reshape(-1)
    if flat.size > 2:
        flat[1] = -np.inf  # a masked token
        flat[-1] = 1e4  # a large logit: (x - m) first keeps its bits
    return x


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_values(name, x, got, tol):
    np.testing.assert_allclose(got, getattr(naive, name)(x), **tol)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_elementwise_fast_path_gives_the_general_paths_bits(name, dtype, shape, rng, tolerance,
                                                            monkeypatch):
    f = getattr(fastlsm, name)
    x = logits(rng, shape, dtype)
    general = f(x, dtype=dtype)  # dtype= takes the general path
    check_values(name, x, general, tolerance[dtype])
    monkeypatch.setattr(_normalize, "_elementwise", None)  # the fast path only from here
    assert same_bits(f(x), general)
    out = np.full_like(x, np.nan)
    assert f(x, out=out) is out and same_bits(out, general)
    inplace = x.copy()
    assert f(inplace, out=inplace) is inplace and same_bits(inplace, general)
    x.setflags(write=False)  # through an alias: the same entry point
    assert same_bits(f(x), general) and same_bits(f(x, out=out), general)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_logsumexp_fast_path_gives_the_general_paths_bits(dtype, shape, rng, tolerance,
                                                          monkeypatch):
    x = logits(rng, shape, dtype)
    general = fastlsm.logsumexp(x, keepdims=True)[..., 0]  # keepdims: the general path
    check_values("logsumexp", x, general, tolerance[dtype])
    monkeypatch.setattr(_normalize, "_logsumexp", None)
    assert same_bits(fastlsm.logsumexp(x), general)
    x.setflags(write=False)
    assert same_bits(fastlsm.logsumexp(x), general)


HALVES = [pytest.param("bfloat16", id="bfloat16"), pytest.param(np.float16, id="float16")]


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_16_bit_fast_paths_give_the_general_paths_bits(dtype, shape, rng, monkeypatch):
    """bfloat16/float16 rows take the fast paths too (their bits handed to the kernel), with
    the general path's results: the input's dtype for log_softmax / softmax, float32 for
    logsumexp, the same bits."""
    import ml_dtypes

    dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    x = logits(rng, shape, np.float32).astype(dtype)
    general = {name: getattr(fastlsm, name)(x, dtype=dtype) for name in KERNELS}
    general["logsumexp"] = fastlsm.logsumexp(x, keepdims=True)[..., 0]
    assert general["logsumexp"].dtype == np.float32
    np.testing.assert_allclose(general["log_softmax"].astype(np.float64),
                               naive.log_softmax(x.astype(np.float64)), rtol=1e-2, atol=1e-2)
    for module, name in ((_normalize, "_elementwise"), (_normalize, "_logsumexp")):
        monkeypatch.setattr(module, name, None)  # the fast paths only from here
    assert same_bits(fastlsm.logsumexp(x), general["logsumexp"])
    for name in KERNELS:
        f = getattr(fastlsm, name)
        assert same_bits(f(x), general[name])
        out = np.full_like(x, np.nan)
        assert f(x, out=out) is out and same_bits(out, general[name])
        inplace = x.copy()
        assert f(inplace, out=inplace) is inplace and same_bits(inplace, general[name])
    x.setflags(write=False)
    assert same_bits(fastlsm.log_softmax(x), general["log_softmax"])
    assert same_bits(fastlsm.logsumexp(x), general["logsumexp"])


def test_fast_paths_are_taken_for_the_per_token_calls(rng, no_general_path):
    x = logits(rng, (1, 4000), np.float32)
    out = np.empty_like(x)
    fastlsm.log_softmax(x, out=out)
    fastlsm.softmax(x, out=out)
    fastlsm.logsumexp(x)
    fastlsm.cross_entropy(x, np.array([3]), reduction="sum")


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="a one-thread pool")
@pytest.mark.parametrize("shape", [(64, 1024), (2, 20000)], ids=str)
def test_problems_for_two_threads_take_the_public_path(shape):
    n = fastlsm.get_num_threads()
    fastlsm.set_num_threads(2)
    try:
        x = np.zeros(shape, np.float32)
        assert _normalize._one_thread(_kernels.log_softmax_rows, x, -1, None, False) is None
        assert _losses._one_thread(x, np.zeros(shape[0], np.int64), -1, -100, "mean", 0.0,
                                   0.0) is None
    finally:
        fastlsm.set_num_threads(n)


def test_entry_points_are_keyed_on_the_numba_types(rng):
    # A read-only array is handed over as a writeable alias (fastlsm._validate.readable):
    # the entry point of the writeable type, no second compilation.
    x = logits(rng, (1, 16), np.float32)
    ro = x.copy()
    ro.setflags(write=False)
    k = _kernels.log_softmax_rows
    for a in (x, ro):
        out = fastlsm.log_softmax(a)
        sig = (numba.typeof(x), numba.typeof(out))
        assert _jit.serial_entries[k, id(a.dtype)] is k.serial.overloads[sig].entry_point
    assert not [s for s in k.serial.signatures if not s[0].mutable]


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
def test_other_arguments_take_the_general_path_with_its_errors(name, rng):
    f = getattr(fastlsm, name)
    x = logits(rng, (1, 8), np.float32)
    kw = {} if name == "logsumexp" else {"out": np.empty((1, 8), np.float64)}
    if kw:
        with pytest.raises(TypeError, match="out has dtype float64, but the result is float32"):
            f(x, **kw)
        with pytest.raises(ValueError, match="out is read-only"):
            ro = np.empty_like(x)
            ro.setflags(write=False)
            f(x, out=ro)
    with pytest.raises(np.exceptions.AxisError):
        f(x, axis=2)
    with pytest.raises(TypeError, match="complex"):
        f(x.astype(np.complex64))
    np.testing.assert_array_equal(f(x[:, ::2]), f(np.ascontiguousarray(x[:, ::2])))  # strided


# ----------------------------------------------------------------------------- cross_entropy

CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1, "z_loss": 1e-3},
    {"ignore_index": 2},
]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 8), (5, 100), (1, 40000)], ids=str)
def test_cross_entropy_fast_path_gives_the_general_paths_bits(options, dtype, shape, rng,
                                                              tolerance):
    x = logits(rng, shape, dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[-1] = 2 if shape[0] > 1 else t[-1]
    general = fastlsm.cross_entropy(x, t.astype(np.int32), **options)  # int32: general path
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_losses, "_cross_entropy", None)
        fast = fastlsm.cross_entropy(x, t, **options)
        x.setflags(write=False)
        t.setflags(write=False)
        assert same_bits(fastlsm.cross_entropy(x, t, **options), fast)
    assert same_bits(fast, general)
    ref = naive.cross_entropy(x, t, **options)[0]
    np.testing.assert_allclose(fast, ref, **tolerance[dtype])


@pytest.mark.parametrize("options", CE_OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("shape", [(1, 8), (5, 100), (1, 40000)], ids=str)
def test_16_bit_cross_entropy_fast_path_gives_the_general_paths_bits(options, dtype, shape,
                                                                     rng):
    """bfloat16/float16 logits take the cross_entropy fast path too: a float32 loss, the
    general path's bits, which are the float32 kernel's on the same values."""
    import ml_dtypes

    dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    x = logits(rng, shape, np.float32).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    general = fastlsm.cross_entropy(x, t.astype(np.int32), **options)  # int32: general path
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_losses, "_cross_entropy", None)
        fast = fastlsm.cross_entropy(x, t, **options)
        x.setflags(write=False)
        assert same_bits(fastlsm.cross_entropy(x, t, **options), fast)
    assert fast.dtype == np.float32 and same_bits(fast, general)
    assert same_bits(fast, fastlsm.cross_entropy(x.astype(np.float32), t, **options))


def test_cross_entropy_fast_path_raises_the_general_paths_errors(rng):
    x = logits(rng, (2, 8), np.float32)
    with pytest.raises(fastlsm.InvalidTargetError) as fast:
        fastlsm.cross_entropy(x, np.array([1, 8]))
    with pytest.raises(fastlsm.InvalidTargetError) as general:
        fastlsm.cross_entropy(x, np.array([1, 8], np.int32))
    assert str(fast.value) == str(general.value) and "target[1] = 8" in str(fast.value)
    for bad, error in (({"reduction": "avg"}, ValueError), ({"label_smoothing": 2.0}, ValueError),
                       ({"z_loss": float("nan")}, ValueError), ({"ignore_index": 1.5}, TypeError),
                       ({"axis": 2}, np.exceptions.AxisError)):
        with pytest.raises(error):
            fastlsm.cross_entropy(x, np.array([1, 2]), **bad)
    with pytest.raises(ValueError, match="target must have shape"):
        fastlsm.cross_entropy(x, np.array([1]))


def test_cross_entropy_fast_path_is_not_taken_with_options_it_does_not_handle(rng, monkeypatch):
    x = logits(rng, (1, 8), np.float32)
    t = np.array([3])
    seen = []
    real = _losses._cross_entropy
    monkeypatch.setattr(_losses, "_cross_entropy", lambda *a: seen.append(1) or real(*a))
    for options in ({"weight": np.ones(8)}, {"softcap": 30.0}, {"token_weight": np.ones(1)},
                    {"label_smoothing": 0}, {"axis": 0}):
        seen.clear()
        fastlsm.cross_entropy(x if "axis" not in options else x.T, t, **options)
        assert seen == [1], options


# ----------------------------------------------------------------------------- threads


def test_fast_paths_leave_the_callers_numba_thread_count(rng):
    x = logits(rng, (1, 4000), np.float64)
    out = np.empty_like(x)
    before = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            fastlsm.log_softmax(x, out=out)
            fastlsm.softmax(x)
            fastlsm.logsumexp(x)
            fastlsm.cross_entropy(x, np.array([5]))
            assert numba.get_num_threads() == n
    finally:
        numba.set_num_threads(before)


def test_fast_paths_from_8_threads_at_once_match_serial_calls(rng):
    xs = [logits(rng, (1, 3000 + 17 * i), DTYPES[i % 2]) for i in range(8)]
    ts = [np.array([i]) for i in range(8)]
    want = [(fastlsm.log_softmax(x), fastlsm.softmax(x), fastlsm.logsumexp(x),
             fastlsm.cross_entropy(x, t)) for x, t in zip(xs, ts, strict=True)]
    barrier = threading.Barrier(8)

    def work(i):
        x, out = xs[i], np.empty_like(xs[i])
        barrier.wait()
        for _ in range(20):
            got = (fastlsm.log_softmax(x, out=out).copy(), fastlsm.softmax(x),
                   fastlsm.logsumexp(x), fastlsm.cross_entropy(x, ts[i]))
            if not all(same_bits(g, w) for g, w in zip(got, want[i], strict=True)):
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(8)))


def test_the_fast_kernels_are_the_serial_copies(rng):
    x = logits(rng, (2, 50), np.float32)
    fastlsm.log_softmax(x), fastlsm.softmax(x), fastlsm.logsumexp(x)
    fastlsm.cross_entropy(x, np.array([1, 2]))
    kernels = [getattr(_kernels, n) for n in ("log_softmax_rows", "softmax_rows",
                                              "logsumexp_rows")] + [_ce_kernels.cross_entropy_rows]
    for kernel in kernels:
        entries = [e for (k, _), e in list(_jit.serial_entries.items()) if k is kernel]
        assert entries
        for entry in entries:
            assert entry in [o.entry_point for o in kernel.serial.overloads.values()]


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_an_unaligned_out_takes_the_general_path(name, rng):
    # The entry points are compiled for aligned arrays: an unaligned out (another Numba type)
    # must never reach them.
    x = logits(rng, (1, 8), np.float32)
    out = np.frombuffer(bytearray(4 * 8 + 1), np.float32, count=8, offset=1).reshape(1, 8)
    assert not out.flags.aligned and out.flags.writeable
    want = getattr(fastlsm, name)(x)
    assert getattr(fastlsm, name)(x, out=out) is out and same_bits(out, want)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_out_overlapping_or_read_only_takes_the_general_path(name, rng):
    f = getattr(fastlsm, name)
    x = logits(rng, (1, 16), np.float64)
    ro = x.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out is read-only"):
        f(ro, out=ro)  # in place needs a writeable x
    buf = np.concatenate([x.reshape(-1), x.reshape(-1)[:4]])
    want = f(buf[:16].reshape(1, 16))
    out = buf[4:].reshape(1, 16)  # overlaps x = buf[:16] partially: read from a copy
    assert not out.flags.owndata and f(buf[:16].reshape(1, 16), out=out) is out
    assert same_bits(out, want)
