"""What the NumPy API accepts (issue 10): read-only inputs, any real class weights, SciPy's
conventions for the normalizers, any integer kind of targets; results equal the references.
"""

from __future__ import annotations

import naive
import numpy as np
import pytest

import fastlsm

try:
    import scipy.special as sp
except ImportError:  # pragma: no cover - scipy is in the [test] extra
    sp = None

needs_scipy = pytest.mark.skipif(sp is None, reason="scipy is not installed")


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def from_bytes(a):
    """``a`` as a server gets it: ``np.frombuffer`` over immutable bytes (read-only)."""
    return np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)


# ----------------------------------------------------------------------------- read-only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.2}, {"softcap": 3.0},
                                  {"weight": True, "z_loss": 1e-3}], ids=str)
@pytest.mark.parametrize("soft", [False, True])
def test_losses_accept_read_only_arguments(rng, dtype, opts, soft):
    x = (3 * rng.standard_normal((5, 7))).astype(dtype)
    t = rng.random((5, 7)).astype(dtype) if soft else rng.integers(0, 7, 5)
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = np.linspace(-1.0, 2.0, 7)
    ro = {k: read_only(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    xr, tr = from_bytes(x), read_only(t)
    assert not xr.flags.writeable
    assert same_bits(fastlsm.cross_entropy(xr, tr, **ro), fastlsm.cross_entropy(x, t, **kw))
    for reduction in ("mean", "none"):
        got = fastlsm.cross_entropy_with_grad(xr, tr, reduction=reduction, return_lse=True, **ro)
        want = fastlsm.cross_entropy_with_grad(x, t, reduction=reduction, return_lse=True, **kw)
        for a, b in zip(got, want, strict=True):
            assert same_bits(a, b)
    if not soft:
        w = ro.get("weight")
        assert same_bits(fastlsm.nll_loss(xr, tr, weight=w), fastlsm.nll_loss(x, t, weight=w))


def test_only_out_and_inplace_targets_must_be_writeable(rng):
    x = from_bytes(rng.standard_normal((3, 4)))
    t = np.array([0, 1, 3])
    with pytest.raises(ValueError, match="inplace=True needs writeable logits"):
        fastlsm.cross_entropy_with_grad(x, t, inplace=True)
    out = read_only(np.empty((3, 4)))
    with pytest.raises(ValueError, match="out is read-only; pass a writeable array"):
        fastlsm.log_softmax(x, out=out)
    assert same_bits(fastlsm.log_softmax(x), fastlsm.log_softmax(np.array(x)))


def test_sequences_and_beams_accept_read_only_arguments(rng):
    x = rng.standard_normal((2, 3, 5))
    tok = rng.integers(0, 5, (2, 3))
    mask = rng.random((2, 3)) < 0.7
    got = fastlsm.sequence_logprobs(from_bytes(x), read_only(tok), mask=read_only(mask))
    for a, b in zip(got, fastlsm.sequence_logprobs(x, tok, mask=mask), strict=True):
        assert same_bits(a, b)
    scores = rng.standard_normal((2, 3))
    got = fastlsm.beam_step(from_bytes(x), read_only(scores))
    for a, b in zip(got, fastlsm.beam_step(x, scores), strict=True):
        assert same_bits(a, b)


def _read_only_signatures():
    """``module.kernel(types)`` for every kernel compiled in this process for a read-only
    array (every Numba dispatcher of ``fastlsm._kernels``, serial copies included)."""
    import importlib
    import pkgutil

    import numba
    from numba.core.dispatcher import Dispatcher

    import fastlsm._kernels as kernels

    found = []
    for info in pkgutil.walk_packages(kernels.__path__, kernels.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            for d in (obj, getattr(obj, "serial", None)):
                if isinstance(d, Dispatcher):
                    for sig in d.signatures:
                        if any(isinstance(t, numba.types.Array) and not t.mutable for t in sig):
                            found.append(f"{info.name}.{name}{sig}")
    return found


def test_no_kernel_is_compiled_again_for_read_only_arrays(rng):
    # Numba types a read-only array apart from a writeable one: every kernel would compile a
    # second time (tens of seconds for the sampler) for a server's np.frombuffer logits. The
    # API hands read-only inputs over as writeable aliases (fastlsm._validate.readable).
    import ml_dtypes

    x = rng.standard_normal((2, 3, 40))
    tok = rng.integers(0, 40, (2, 3))
    for dt in (np.float32, np.float64, ml_dtypes.bfloat16, np.float16):
        xr = from_bytes(x.astype(dt))
        rows = xr.reshape(6, 40)
        want = fastlsm.log_softmax(np.array(rows))
        assert same_bits(fastlsm.log_softmax(rows), want)  # the per-token fast path
        assert same_bits(fastlsm.log_softmax(xr, axis=1), fastlsm.log_softmax(np.array(xr), 1))
        fastlsm.softmax(rows)
        fastlsm.logsumexp(rows)
        fastlsm.logsumexp(xr, axis=0)
        t = read_only(tok.reshape(-1))
        fastlsm.cross_entropy(rows, t)
        fastlsm.cross_entropy_with_grad(rows, t)
        want = fastlsm.sample(np.array(rows), top_p=0.9, seed=3)
        assert same_bits(fastlsm.sample(rows, top_p=0.9, seed=3).tokens, want.tokens)
        if dt is not np.float32:
            continue  # the other arguments: float32 (each dtype compiles its own kernels)
        fastlsm.cross_entropy(rows, read_only(fastlsm.softmax(np.array(rows))))
        fastlsm.cross_entropy(rows, t, weight=read_only(np.ones(40)))
        fastlsm.nll_loss(rows, t)
        fastlsm.sequence_logprobs(xr, read_only(tok), mask=read_only(tok > 3))
        fastlsm.sequence_logprobs(xr, read_only(tok), top_logprobs=2)
        fastlsm.beam_step(xr, read_only(np.zeros((2, 3))))
        fastlsm.beam_step(xr, np.zeros((2, 3)), token_bitmask=read_only(np.full(2, -1, np.int32)))
        fastlsm.sample(rows, logit_bias=read_only(np.zeros(40)), seed=3,
                       token_bitmask=read_only(np.full((6, 2), -1, np.int32)),
                       history=read_only(tok.reshape(6, 1)))
        fastlsm.verify_draft(xr, read_only(tok[:, :2]), draft_logits=xr[:, :2])
    assert _read_only_signatures() == []


# ----------------------------------------------------------------------------- class weights


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_negative_class_weights_match_the_reference(rng, reduction, label_smoothing):
    x = 3 * rng.standard_normal((9, 6))
    t = rng.integers(0, 6, 9)
    t[2] = -100
    w = np.array([1.0, -2.0, 0.5, -0.25, 0.0, 3.0])
    loss, grad, _ = naive.cross_entropy(x, t, weight=w, reduction=reduction,
                                        label_smoothing=label_smoothing)
    r = fastlsm.cross_entropy_with_grad(x, t, weight=w, reduction=reduction,
                                        label_smoothing=label_smoothing)
    np.testing.assert_allclose(r.loss, loss, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(r.grad, grad, rtol=1e-12, atol=1e-13)
    lp = naive.log_softmax(x)
    nll = naive.nll_loss(lp, t, weight=w, reduction=reduction)
    np.testing.assert_allclose(fastlsm.nll_loss(lp, t, weight=w, reduction=reduction), nll,
                               rtol=1e-12, atol=1e-13)


def test_weighted_mean_with_zero_denominator_is_inf_or_nan_like_pytorch():
    x = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    t = np.array([0, 1])
    w = np.array([1.0, -1.0, 0.5])  # w[t] sums to 0 while the weighted sum does not
    want, _, _ = naive.cross_entropy(x, t, weight=w)
    got = fastlsm.cross_entropy(x, t, weight=w)
    assert np.isinf(want) and got == want
    assert np.isnan(fastlsm.cross_entropy(x, t, weight=np.zeros(3)))  # 0 / 0
    assert np.isnan(fastlsm.nll_loss(naive.log_softmax(x), t, weight=np.zeros(3)))


def test_weights_of_any_real_dtype_and_layout(rng):
    x = rng.standard_normal((4, 5))
    t = rng.integers(0, 5, 4)
    w = np.array([1, -2, 3, 0, 1])
    want = fastlsm.cross_entropy(x, t, weight=w.astype(np.float64))
    for kind in (w, w.astype(np.int8), w.astype(">f8"), np.repeat(w, 2)[::2], w.tolist(),
                 read_only(w.astype(np.float32))):
        assert same_bits(fastlsm.cross_entropy(x, t, weight=kind), want)
    assert same_bits(fastlsm.cross_entropy(x, t, weight=np.ones(5, bool)),
                     fastlsm.cross_entropy(x, t, weight=np.ones(5)))
    with pytest.raises(TypeError, match="weight must be float32 or float64, got complex"):
        fastlsm.cross_entropy(x, t, weight=w.astype(np.complex64))


def test_token_weight_stays_non_negative_and_finite():
    # token_weight is a fastlsm extra (no PyTorch counterpart), defined as a scaling factor.
    x, t = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="token_weight must be non-negative"):
        fastlsm.cross_entropy(x, t, token_weight=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="token_weight must be finite"):
        fastlsm.cross_entropy(x, t, token_weight=np.array([1.0, np.inf]))


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.uint64, ">i8", "<i4"])
def test_targets_and_tokens_of_any_integer_kind(rng, dtype):
    x = rng.standard_normal((2, 3, 5))
    t = rng.integers(0, 5, (2, 3))
    want = fastlsm.cross_entropy(x, t)
    for kind in (t.astype(dtype), read_only(t.astype(dtype)), t.astype(dtype).T.copy().T):
        assert same_bits(fastlsm.cross_entropy(x, kind), want)
        assert same_bits(fastlsm.nll_loss(x, kind), fastlsm.nll_loss(x, t))
        got = fastlsm.sequence_logprobs(x, kind)
        assert same_bits(got[0], fastlsm.sequence_logprobs(x, t)[0])


def test_huge_unsigned_targets_are_out_of_range_not_wrapped():
    x = np.zeros((1, 3))
    t = np.array([2**64 - 1], np.uint64)  # must not wrap to -1 (a common ignore_index)
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        fastlsm.cross_entropy(x, t, ignore_index=-1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fastlsm.sequence_logprobs(x[None], t[None])


def test_bool_targets_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="class indices"):
        fastlsm.cross_entropy(np.zeros((2, 3)), np.array([True, False]))
    with pytest.raises(TypeError, match="tokens must hold integer indices"):
        fastlsm.sequence_logprobs(np.zeros((1, 2, 3)), np.array([[True, False]]))


# ----------------------------------------------------------------------------- SciPy


NORMALIZERS = ["log_softmax", "softmax", "logsumexp"]


@needs_scipy
@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_])
def test_integer_and_bool_arrays_are_float64_like_scipy(name, dtype):
    # SciPy promotes with NumPy's rules (int8, uint8, bool -> float16, int16 -> float32);
    # fastlsm always computes them in float64 (documented): the values agree, more exactly.
    x = np.arange(12).reshape(3, 4).astype(dtype)
    got = getattr(fastlsm, name)(x)
    want = getattr(sp, name)(x.astype(np.float64), axis=-1)
    if np.dtype(dtype).kind == "i" and np.dtype(dtype).itemsize >= 4:
        assert getattr(sp, name)(x, axis=-1).dtype == np.float64
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@needs_scipy
@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("axis", [None, (0,), (0, 2), (2, 0), (-1, 1), (0, 1, 2), ()], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axis_none_and_tuples_like_scipy(name, axis, dtype, rng, tolerance):
    x = (3 * rng.standard_normal((3, 4, 5))).astype(dtype)
    x[0, 0, 0] = -np.inf
    got = getattr(fastlsm, name)(x, axis=axis)
    with np.errstate(invalid="ignore"):  # scipy: -inf - -inf for a lane of one -inf
        want = getattr(sp, name)(x.astype(np.float64), axis=axis)
    assert got.dtype == dtype and got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, **tolerance[dtype])
    if name == "logsumexp":
        kept = fastlsm.logsumexp(x, axis=axis, keepdims=True)
        assert kept.shape == sp.logsumexp(x, axis=axis, keepdims=True).shape
        np.testing.assert_allclose(kept, sp.logsumexp(x.astype(np.float64), axis=axis,
                                                      keepdims=True), **tolerance[dtype])
        out = np.empty(np.shape(want), dtype)
        assert fastlsm.logsumexp(x, axis=axis, out=out) is out
        np.testing.assert_allclose(out, want, **tolerance[dtype])
    else:
        out = np.empty((5, 4, 3), dtype).transpose(2, 1, 0)  # a strided out
        assert getattr(fastlsm, name)(x, axis=axis, out=out) is out
        np.testing.assert_allclose(out, want, **tolerance[dtype])


@needs_scipy
@pytest.mark.parametrize("name", NORMALIZERS)
def test_scalars_and_empty_arrays_with_axis_none_like_scipy(name):
    for x in (2.5, np.float32(-1.0), np.array(3.0), [1, 2, 3], [[0.5], [-np.inf]]):
        got = getattr(fastlsm, name)(x, axis=None)
        want = getattr(sp, name)(np.asarray(x, np.float64), axis=None)
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    # empty: SciPy raises (no maximum of nothing); fastlsm gives an empty result / -inf
    got = getattr(fastlsm, name)(np.zeros((2, 0)), axis=None)
    assert got.shape == (() if name == "logsumexp" else (2, 0))
    if name == "logsumexp":
        assert got == -np.inf


@pytest.mark.parametrize("name", NORMALIZERS)
def test_repeated_axes_are_a_value_error(name):
    with pytest.raises(ValueError, match=r"axis \(1, -1\) repeats an axis"):
        getattr(fastlsm, name)(np.zeros((2, 3)), axis=(1, -1))
    with pytest.raises(np.exceptions.AxisError):
        getattr(fastlsm, name)(np.zeros((2, 3)), axis=(0, 2))
