"""fastlsm.cross_entropy / cross_entropy_with_grad / nll_loss against float64 NumPy references.

PyTorch parity lives in tests/test_torch_dropin.py; these tests never need PyTorch.
"""

from __future__ import annotations

import tracemalloc

import naive
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlsm
from fastlsm._kernels import cross_entropy as K

# ----------------------------------------------------------------------------- references

ref_cross_entropy = naive.cross_entropy  # test_torch_dropin imports it from here
ref_nll = naive.nll_loss

TOL = {np.float32: dict(rtol=3e-5, atol=3e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def make_case(rng, shape=(7, 11), axis=-1, dtype=np.float64, ignore_frac=0.2, ignore_index=-100):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    ax = axis % len(shape)
    c = shape[ax]
    outer = shape[:ax] + shape[ax + 1 :]
    t = rng.integers(0, c, outer)
    t = np.where(rng.random(outer) < ignore_frac, ignore_index, t)
    return x, t


OPTION_SETS = [
    {},
    {"label_smoothing": 0.1},
    {"weight": "w"},
    {"weight": "w", "label_smoothing": 0.25},
    {"z_loss": 1e-3},
    {"softcap": 5.0},
    {"token_weight": "tw"},
    {"weight": "w", "label_smoothing": 0.3, "z_loss": 1e-2, "softcap": 4.0, "token_weight": "tw"},
]


def materialize(opts, rng, c, outer):
    out = dict(opts)
    if out.get("weight") == "w":
        out["weight"] = rng.random(c) + 0.1
    if out.get("token_weight") == "tw":
        out["token_weight"] = rng.random(outer) * 2
    return out


def same_bits(a, b):
    """Bitwise equality (NaN payloads included), shapes and dtypes equal."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTION_SETS)
def test_loss_and_grad_match_reference(dtype, reduction, opts):
    rng = np.random.default_rng(0)
    x, t = make_case(rng, dtype=dtype)
    kw = materialize(opts, rng, x.shape[-1], t.shape)
    loss, g, lse = ref_cross_entropy(x, t, reduction=reduction, **kw)
    got = fastlsm.cross_entropy(x, t, reduction=reduction, **kw)
    assert got.dtype == dtype and got.shape == np.shape(loss)
    assert_close(got, loss, dtype)
    r = fastlsm.cross_entropy_with_grad(x, t, reduction=reduction, return_lse=True, **kw)
    assert r.grad.dtype == dtype and r.grad.shape == x.shape
    assert_close(r.loss, loss, dtype)
    assert_close(r.grad, g, dtype, scale=np.abs(g).max())
    assert_close(r.lse, lse, dtype, scale=10)
    # forward alone and with the gradient: one row pass, the same bits
    assert same_bits(r.loss, got)


def _wide_logits(rng, shape, dtype):
    """Logits whose rows span more than exp's clamps (terms below exp(-87) / exp(-708) of
    the maximum, -inf masks) and cross the row pass's vector and chunk boundaries."""
    x = rng.standard_normal(shape) * 3
    x[..., 1::7] = -np.inf
    x[..., 2::9] -= 900.0 if dtype == np.float64 else 110.0
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTION_SETS + [{"z_loss": 1e-3, "label_smoothing": 0.2}])
def test_forward_and_with_grad_give_the_same_bits(dtype, reduction, opts):
    """cross_entropy and cross_entropy_with_grad(...).loss are the same loss (one row pass:
    storing the exponentials for the gradient sums exactly what the forward sums), for
    index and probability targets, with a separate and an in-place gradient; without a
    softcap the lse is logsumexp's, bit for bit."""
    rng = np.random.default_rng(7)
    for cols in (1, 17, 300, 1000):
        x = _wide_logits(rng, (9, cols), dtype)
        t = rng.integers(0, cols, 9)
        t[::4] = -100
        t[1] = 1 % cols if cols > 7 else 0  # a target at a -inf mask when there is one
        q = rng.random(x.shape)
        q /= q.sum(-1, keepdims=True)
        kw = materialize(opts, rng, cols, (9,))
        for target in (t, q):
            want = fastlsm.cross_entropy(x, target, reduction=reduction, **kw)
            r = fastlsm.cross_entropy_with_grad(
                x, target, reduction=reduction, return_lse=True, **kw
            )
            assert same_bits(r.loss, want), (cols, target.dtype)
            inplace = x.copy()
            ri = fastlsm.cross_entropy_with_grad(
                inplace, target, reduction=reduction, inplace=True, return_lse=True, **kw
            )
            assert same_bits(ri.loss, want) and same_bits(ri.grad, r.grad)
            assert same_bits(ri.lse, r.lse)
            if kw.get("softcap") is None:
                assert same_bits(r.lse, fastlsm.logsumexp(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTION_SETS)
def test_axis1_k_dimensional_matches_reference(dtype, opts):
    rng = np.random.default_rng(1)
    x, t = make_case(rng, shape=(3, 6, 4, 5), axis=1, dtype=dtype)
    kw = materialize(opts, rng, 6, t.shape)
    for reduction in ("mean", "none"):
        loss, g, lse = ref_cross_entropy(x, t, axis=1, reduction=reduction, **kw)
        r = fastlsm.cross_entropy_with_grad(
            x, t, axis=1, reduction=reduction, return_lse=True, **kw
        )
        assert r.loss.shape == np.shape(loss) and r.lse.shape == t.shape
        assert_close(r.loss, loss, dtype)
        assert_close(r.grad, g, dtype, scale=np.abs(g).max())
        assert_close(r.lse, lse, dtype, scale=10)
        # the class axis last on a transposed copy gives the same bits
        r_last = fastlsm.cross_entropy_with_grad(
            np.moveaxis(x, 1, -1).copy(), t, reduction=reduction, **kw
        )
        assert np.array_equal(r.loss, r_last.loss)
        assert np.array_equal(r.grad, np.moveaxis(r_last.grad, -1, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTION_SETS)
def test_probability_targets_match_reference(dtype, opts):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 3, 7)) * 2).astype(dtype)
    q = rng.random(x.shape)
    q /= q.sum(1, keepdims=True)
    kw = materialize(opts, rng, 3, (5, 7))
    for reduction in ("mean", "sum", "none"):
        loss, g, lse = ref_cross_entropy(x, q, axis=1, reduction=reduction, **kw)
        r = fastlsm.cross_entropy_with_grad(
            x, q, axis=1, reduction=reduction, return_lse=True, **kw
        )
        assert_close(r.loss, loss, dtype)
        assert_close(r.grad, g, dtype, scale=np.abs(g).max())
        assert_close(r.lse, lse, dtype, scale=10)
        assert same_bits(fastlsm.cross_entropy(x, q, axis=1, reduction=reduction, **kw), r.loss)


def test_probability_targets_ignore_ignore_index_and_mean_divides_by_positions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    q = np.eye(5)[[0, 1, 2, 3]]
    w = rng.random(5) + 0.5
    soft = fastlsm.cross_entropy(x, q, weight=w, ignore_index=0)
    per = fastlsm.cross_entropy(x, np.arange(4), weight=w, reduction="none")
    assert soft == pytest.approx(per.sum() / 4, rel=1e-13)


@pytest.mark.parametrize("ignore_index", [-100, -1, 0, 3, 7, 2**40])
def test_ignore_index_any_integer(ignore_index):
    rng = np.random.default_rng(4)
    x, t = make_case(rng, shape=(9, 5), ignore_index=ignore_index, ignore_frac=0.4)
    w = rng.random(5) + 0.1
    loss, g, _ = ref_cross_entropy(x, t, weight=w, ignore_index=ignore_index, label_smoothing=0.2)
    r = fastlsm.cross_entropy_with_grad(
        x, t, weight=w, ignore_index=ignore_index, label_smoothing=0.2
    )
    assert_close(r.loss, loss, np.float64)
    assert_close(r.grad, g, np.float64)
    ignored = t == ignore_index
    assert np.all(r.grad[ignored] == 0)


def test_all_targets_ignored_follows_pytorch():
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    t = np.full(3, -100)
    assert np.isnan(fastlsm.cross_entropy(x, t))
    assert np.isnan(fastlsm.cross_entropy(x, t, label_smoothing=0.1, weight=np.ones(4)))
    assert fastlsm.cross_entropy(x, t, reduction="sum") == 0
    assert np.array_equal(fastlsm.cross_entropy(x, t, reduction="none"), np.zeros(3))
    r = fastlsm.cross_entropy_with_grad(x, t)
    assert np.isnan(r.loss) and np.array_equal(r.grad, np.zeros_like(x))


def test_empty_inputs():
    x = np.zeros((0, 5), np.float32)
    t = np.zeros(0, np.int64)
    assert np.isnan(fastlsm.cross_entropy(x, t))
    assert fastlsm.cross_entropy(x, t, reduction="sum") == 0
    assert fastlsm.cross_entropy(x, t, reduction="none").shape == (0,)
    r = fastlsm.cross_entropy_with_grad(x, t, reduction="sum", return_lse=True)
    assert r.grad.shape == (0, 5) and r.lse.shape == (0,)


def test_one_dimensional_logits_take_a_scalar_target():
    x = np.array([1.0, 2.0, 0.5])
    loss, g, _ = ref_cross_entropy(x, np.array(1))
    r = fastlsm.cross_entropy_with_grad(x, np.array(1))
    assert r.loss.shape == () and r.grad.shape == (3,)
    assert_close(r.loss, loss, np.float64)
    assert_close(r.grad, g, np.float64)
    assert fastlsm.cross_entropy(x, 1) == pytest.approx(float(loss), rel=1e-14)


def test_nonlast_axis_with_lists_and_int32_targets():
    x = [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]  # classes along axis 0
    t = np.array([2, 0], np.int32)
    loss, _, _ = ref_cross_entropy(np.array(x), t, axis=0)
    assert fastlsm.cross_entropy(x, t, axis=0) == pytest.approx(float(loss), rel=1e-14)


# ----------------------------------------------------------------------------- special values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_and_masked_classes_stay_exact(dtype):
    x = np.array([[1e4, 1e4 - 1, -np.inf, 1e4 - 3], [-1e4, -np.inf, -1e4 + 2, -np.inf]], dtype)
    t = np.array([1, 2])
    loss, g, lse = ref_cross_entropy(x, t, reduction="none")
    r = fastlsm.cross_entropy_with_grad(x, t, reduction="none", return_lse=True)
    assert np.all(np.isfinite(r.loss)) and np.all(np.isfinite(r.grad))
    assert_close(r.loss, loss, dtype)
    assert_close(r.grad, g, dtype)
    assert_close(r.lse, lse, dtype, scale=1e4)
    assert np.all(r.grad[np.isinf(x)] == 0)


def test_masked_classes_with_label_smoothing_give_inf_loss_finite_grad_like_pytorch():
    x = np.array([[0.0, -np.inf, 1.0]])
    r = fastlsm.cross_entropy_with_grad(x, np.array([0]), label_smoothing=0.1)
    assert r.loss == np.inf
    _, g, _ = ref_cross_entropy(x, np.array([0]), label_smoothing=0.1)
    assert_close(r.grad, g, np.float64)


def test_nan_logits_poison_only_their_row():
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], np.float32)
    r = fastlsm.cross_entropy_with_grad(x, np.array([0, 1]), reduction="none")
    assert np.isnan(r.loss[0]) and np.isfinite(r.loss[1])
    assert np.all(np.isnan(r.grad[0])) and np.all(np.isfinite(r.grad[1]))


def test_softcap_saturates_infinite_logits():
    x = np.array([[np.inf, 0.0, -np.inf]])
    loss, g, _ = ref_cross_entropy(x, np.array([1]), softcap=2.0)
    r = fastlsm.cross_entropy_with_grad(x, np.array([1]), softcap=2.0)
    assert_close(r.loss, loss, np.float64)
    np.testing.assert_allclose(r.grad, np.nan_to_num(g), atol=1e-15)


# ----------------------------------------------------------------------------- gradient details


@pytest.mark.parametrize("opts", OPTION_SETS)
@pytest.mark.parametrize("soft", [False, True])
def test_central_differences_float64(opts, soft):
    rng = np.random.default_rng(6)
    x, t = make_case(rng, shape=(4, 6, 3), axis=1, ignore_frac=0.25)
    if soft:
        t = rng.random(x.shape)
        t /= t.sum(1, keepdims=True)
    kw = materialize(opts, rng, 6, (4, 3))
    r = fastlsm.cross_entropy_with_grad(x, t, axis=1, **kw)
    v = rng.standard_normal(x.shape)
    h = 1e-5

    def f(z):
        return float(fastlsm.cross_entropy(z, t, axis=1, **kw))

    numeric = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert float((r.grad * v).sum()) == pytest.approx(numeric, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_output_scalar_and_per_token(dtype):
    rng = np.random.default_rng(7)
    x, t = make_case(rng, shape=(6, 5), dtype=dtype)
    go = rng.standard_normal(6)
    for reduction, g_out in [("mean", 2.5), ("sum", -0.5), ("none", 3.0), ("none", go)]:
        _, g, _ = ref_cross_entropy(x, t, reduction=reduction, grad_output=g_out, z_loss=1e-2)
        r = fastlsm.cross_entropy_with_grad(
            x, t, reduction=reduction, grad_output=g_out, z_loss=1e-2
        )
        assert_close(r.grad, g, dtype, scale=np.abs(g).max())
    r0 = fastlsm.cross_entropy_with_grad(x, t, reduction="mean", grad_output=np.array(2.0))
    r1 = fastlsm.cross_entropy_with_grad(x, t, reduction="mean", grad_output=2)
    assert np.array_equal(r0.grad, r1.grad)


def test_grad_rows_sum_to_zero_without_smoothing_weights():
    rng = np.random.default_rng(8)
    x, t = make_case(rng, shape=(20, 50), ignore_frac=0.0)
    r = fastlsm.cross_entropy_with_grad(x, t, reduction="sum", label_smoothing=0.3)
    np.testing.assert_allclose(r.grad.sum(-1), 0.0, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTION_SETS)
def test_inplace_equals_out_of_place(dtype, opts):
    rng = np.random.default_rng(9)
    x, t = make_case(rng, shape=(16, 40), dtype=dtype, ignore_frac=0.3)
    kw = materialize(opts, rng, 40, t.shape)
    ref = fastlsm.cross_entropy_with_grad(x, t, return_lse=True, **kw)
    x2 = x.copy()
    r = fastlsm.cross_entropy_with_grad(x2, t, inplace=True, return_lse=True, **kw)
    assert r.grad is x2
    assert np.array_equal(r.loss, ref.loss)
    assert np.array_equal(x2, ref.grad)
    assert np.array_equal(r.lse, ref.lse)  # ignored rows' lse read before zeroing


def test_inplace_other_axis_and_strided_views_write_back():
    rng = np.random.default_rng(10)
    x, t = make_case(rng, shape=(3, 5, 4), axis=1)
    ref = fastlsm.cross_entropy_with_grad(x, t, axis=1)
    x2 = x.copy()
    r = fastlsm.cross_entropy_with_grad(x2, t, axis=1, inplace=True)
    assert r.grad is x2 and np.array_equal(x2, ref.grad)
    big = np.zeros((3, 10))
    view = big[:, ::2]
    view[...] = rng.standard_normal((3, 5))
    tt = np.array([0, 4, 2])
    ref = fastlsm.cross_entropy_with_grad(view.copy(), tt)
    fastlsm.cross_entropy_with_grad(view, tt, inplace=True)
    assert np.array_equal(big[:, ::2], ref.grad) and np.all(big[:, 1::2] == 0)


def test_inplace_allocates_nothing_of_the_logits_size():
    rng = np.random.default_rng(11)
    x, t = make_case(rng, shape=(256, 4096), dtype=np.float32)
    w = rng.random(4096).astype(np.float32)
    kw = dict(weight=w, label_smoothing=0.1, z_loss=1e-4)
    fastlsm.cross_entropy_with_grad(x.copy(), t, inplace=True, **kw)  # compile, warm caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = fastlsm.cross_entropy_with_grad(x, t, inplace=True, return_lse=True, **kw)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert r.grad is x
    assert peak < 0.01 * x.nbytes, peak


def test_results_identical_for_any_thread_count():
    rng = np.random.default_rng(12)
    x, t = make_case(rng, shape=(96, 1000), dtype=np.float32)
    kw = dict(weight=rng.random(1000) + 0.1, label_smoothing=0.1, z_loss=1e-3)
    before = fastlsm.get_num_threads()
    try:
        fastlsm.set_num_threads(1)
        a = fastlsm.cross_entropy_with_grad(x, t, **kw)
        fastlsm.set_num_threads(2 if before >= 2 else before)
        b = fastlsm.cross_entropy_with_grad(x, t, **kw)
    finally:
        fastlsm.set_num_threads(before)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.grad, b.grad)


# ----------------------------------------------------------------------------- semantics of extras


def test_token_weight_scales_loss_and_denominator():
    rng = np.random.default_rng(13)
    x, t = make_case(rng, shape=(8, 6), ignore_frac=0.0)
    tw = rng.random(8)
    per = fastlsm.cross_entropy(x, t, reduction="none")
    got = fastlsm.cross_entropy(x, t, token_weight=tw)
    assert got == pytest.approx((per * tw).sum() / tw.sum(), rel=1e-14)
    # integer token weights = repeating the tokens
    reps = np.array([1, 0, 2, 1, 3, 1, 1, 2])
    rep = fastlsm.cross_entropy(np.repeat(x, reps, 0), np.repeat(t, reps))
    assert fastlsm.cross_entropy(x, t, token_weight=reps) == pytest.approx(float(rep), rel=1e-13)


def test_z_loss_adds_lse_squared_per_counted_token():
    rng = np.random.default_rng(14)
    x, t = make_case(rng, shape=(8, 6), ignore_frac=0.3)
    lse = np.log(np.exp(x).sum(-1))
    base = fastlsm.cross_entropy(x, t, reduction="none")
    with_z = fastlsm.cross_entropy(x, t, reduction="none", z_loss=0.01)
    np.testing.assert_allclose(with_z - base, np.where(t != -100, 0.01 * lse**2, 0), rtol=1e-12)


def test_softcap_equals_capping_the_logits_first():
    rng = np.random.default_rng(15)
    x, t = make_case(rng, shape=(8, 6))
    capped = 3.0 * np.tanh(x / 3.0)
    assert fastlsm.cross_entropy(x, t, softcap=3.0) == pytest.approx(
        float(fastlsm.cross_entropy(capped, t)), rel=1e-14
    )


# ----------------------------------------------------------------------------- nll_loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_reference(dtype, reduction):
    rng = np.random.default_rng(16)
    x, t = make_case(rng, shape=(4, 5, 3), axis=1, dtype=dtype)
    lp = fastlsm.log_softmax(x, axis=1)
    w = rng.random(5) + 0.1
    tw = rng.random((4, 3))
    for kw in ({}, {"weight": w}, {"weight": w, "token_weight": tw}):
        expected = ref_nll(lp, t, axis=1, reduction=reduction, **kw)
        got = fastlsm.nll_loss(lp, t, axis=1, reduction=reduction, **kw)
        assert got.dtype == dtype
        assert_close(got, expected, dtype)
    ce = fastlsm.cross_entropy(x, t, axis=1, reduction=reduction, weight=w)
    assert_close(fastlsm.nll_loss(lp, t, axis=1, reduction=reduction, weight=w), ce, dtype)


def test_nll_loss_gradient_kernel():
    from fastlsm import losses

    rng = np.random.default_rng(17)
    lp = rng.standard_normal((5, 4))
    t = np.array([0, -100, 3, 1, 1])
    w = rng.random(4)
    s = losses._setup(lp, t, -1, w, -100, "mean", None, "log_probs", False)
    loss, g = losses._nll(s, "new", 2.0)
    expected = np.zeros((5, 4))
    den = w[[0, 3, 1, 1]].sum()
    for i, c in enumerate(t):
        if c != -100:
            expected[i, c] = -2.0 * w[c] / den
    np.testing.assert_allclose(g, expected, rtol=1e-15)


# ----------------------------------------------------------------------------- kernel entry (C ABI)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_entry_in_place_with_absent_options(dtype):
    """The call the C ABI makes: absent arrays as size-0, grad aliasing logits, status codes."""
    rng = np.random.default_rng(18)
    x, t = make_case(rng, shape=(12, 9), dtype=dtype)
    w = rng.random(9) + 0.1
    none = np.empty(0)
    loss = np.empty(1, dtype)
    expected, g, _ = ref_cross_entropy(x, t, weight=w, label_smoothing=0.1)
    xi = x.copy()
    status = K.cross_entropy_rows(
        xi,
        t,
        w,
        none,
        -100,
        0.1,
        0.0,
        0.0,
        K.MEAN,
        1.0,
        none,
        loss,
        np.empty(0, dtype),
        xi,
        none,  # no work buffer: the kernel allocates its own
    )
    assert status == -1
    assert_close(loss[0], expected, dtype)
    assert_close(xi, g, dtype, scale=np.abs(g).max())
    bad = t.copy()
    bad[7] = 9
    bad[9] = -3
    xb = x.copy()
    status = K.cross_entropy_rows(
        xb,
        bad,
        none,
        none,
        -100,
        0.0,
        0.0,
        0.0,
        K.SUM,
        1.0,
        none,
        loss,
        np.empty(0, dtype),
        xb,
        np.empty(12),
    )
    assert status == 7
    assert np.array_equal(xb, x)  # nothing written before the targets were checked


# ----------------------------------------------------------------------------- hypothesis


@st.composite
def ce_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * draw(st.sampled_from([0.1, 3.0, 30.0]))).astype(dtype)
    c = shape[axis]
    outer = shape[: axis % ndim] + shape[axis % ndim + 1 :]
    soft = draw(st.booleans())
    ignore_index = draw(st.sampled_from([-100, -1, 0, c]))
    if soft:
        t = rng.random(shape)
        t /= t.sum(axis, keepdims=True)
    else:
        t = rng.integers(0, c, outer)
        t = np.where(rng.random(outer) < 0.2, ignore_index, t)
        if draw(st.booleans()):
            t = t.astype(np.int32)
    kw = dict(
        axis=axis,
        ignore_index=ignore_index,
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.1, 1.0])),
        z_loss=draw(st.sampled_from([0.0, 1e-3])),
        softcap=draw(st.sampled_from([None, 2.0, 50.0])),
    )
    if draw(st.booleans()):
        kw["weight"] = rng.random(c) + 0.05
    if draw(st.booleans()):
        kw["token_weight"] = rng.random(outer)
    return dtype, x, t, kw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ce_cases())
def test_hypothesis_option_combinations(case):
    dtype, x, t, kw = case
    loss, g, lse, mag = ref_cross_entropy(x, t, return_magnitude=True, **kw)
    r = fastlsm.cross_entropy_with_grad(x, t, return_lse=True, **kw)
    scale = max(1.0, float(np.abs(loss).max())) if np.size(loss) else 1.0
    if kw["reduction"] == "mean" and not np.isfinite(loss):
        assert np.isnan(r.loss)
    else:
        assert_close(r.loss, loss, dtype, scale=scale)
    gscale = float(np.abs(g).max()) if g.size else 1.0
    assert_close(r.grad, g, dtype, scale=max(gscale, mag, 1e-30))
    assert_close(r.lse, lse, dtype, scale=10)
    assert same_bits(fastlsm.cross_entropy(x, t, **kw), r.loss)
    if kw.get("softcap") is None:
        assert same_bits(r.lse, fastlsm.logsumexp(x, axis=kw.get("axis", -1)))


# ----------------------------------------------------------------------------- errors


X = np.zeros((2, 3), np.float32)
T = np.array([0, 1])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: fastlsm.cross_entropy(X.astype(np.int64), T), TypeError, "float32, float64, bfloat16 or float16"),
        (lambda: fastlsm.cross_entropy(np.float32(1.0), T), ValueError, "at least one dim"),
        (
            lambda: fastlsm.cross_entropy(X, np.array([0, 3])),
            ValueError,
            r"target\[1\] = 3 is out of range for 3 classes",
        ),
        (
            lambda: fastlsm.cross_entropy(X, np.array([-2, 0])),
            ValueError,
            r"target\[0\] = -2 is out of range",
        ),
        (
            lambda: fastlsm.cross_entropy(np.zeros((2, 3, 4)), np.full((2, 4), 5), axis=1),
            ValueError,
            r"target\[0, 0\] = 5",
        ),
        (
            lambda: fastlsm.cross_entropy(X, np.array([0, 1, 2])),
            ValueError,
            r"target must have shape \(2,\)",
        ),
        (
            lambda: fastlsm.cross_entropy(X, np.zeros((2, 4))),
            ValueError,
            "class probabilities and must have the logits' shape",
        ),
        (lambda: fastlsm.cross_entropy(X, np.array([True, False])), TypeError, "class indices"),
        (lambda: fastlsm.cross_entropy(X, np.array(["a", "b"])), TypeError, "class indices"),
        (lambda: fastlsm.cross_entropy(X, object()), TypeError, "target must be a NumPy array"),
        (
            lambda: fastlsm.cross_entropy(X, T, reduction="avg"),
            ValueError,
            "reduction must be 'mean', 'sum' or 'none'",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, label_smoothing=1.5),
            ValueError,
            "label_smoothing must be between 0 and 1",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, label_smoothing=-0.1),
            ValueError,
            "label_smoothing must be between 0 and 1",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, label_smoothing="0.1"),
            TypeError,
            "label_smoothing must be a real number",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, weight=np.ones(4)),
            ValueError,
            r"weight must have shape \(3,\)",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, weight=np.ones(3, np.complex64)),
            TypeError,
            "weight must be float32 or float64",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, weight="abc"),
            TypeError,
            "weight must be a NumPy array",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, token_weight=np.ones(3)),
            ValueError,
            r"token_weight must have shape \(2,\)",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, token_weight=np.array([1.0, -2.0])),
            ValueError,
            "token_weight must be non-negative",
        ),
        (lambda: fastlsm.cross_entropy(X, T, z_loss=-1.0), ValueError, "z_loss must be"),
        (lambda: fastlsm.cross_entropy(X, T, softcap=0.0), ValueError, "softcap must be"),
        (lambda: fastlsm.cross_entropy(X, T, softcap=np.inf), ValueError, "softcap must be"),
        (
            lambda: fastlsm.cross_entropy(X, T, ignore_index=1.5),
            TypeError,
            "ignore_index must be an integer",
        ),
        (
            lambda: fastlsm.cross_entropy(X, T, ignore_index=True),
            TypeError,
            "ignore_index must be an integer",
        ),
        (lambda: fastlsm.cross_entropy(X, T, ignore_index=2**70), ValueError, "fit in int64"),
        (lambda: fastlsm.cross_entropy(X, T, axis=2), np.exceptions.AxisError, "axis"),
        (
            lambda: fastlsm.cross_entropy_with_grad(X, T, grad_output=np.ones(2)),
            ValueError,
            "grad_output must be a scalar with reduction='mean'",
        ),
        (
            lambda: fastlsm.cross_entropy_with_grad(X, T, reduction="none", grad_output=np.ones(3)),
            ValueError,
            r"grad_output must be a scalar or have the target's shape \(2,\)",
        ),
        (
            lambda: fastlsm.cross_entropy_with_grad(X, T, inplace=1),
            TypeError,
            "inplace must be True or False",
        ),
        (
            lambda: fastlsm.cross_entropy_with_grad(X, T, return_lse="yes"),
            TypeError,
            "return_lse must be True or False",
        ),
        (
            lambda: fastlsm.cross_entropy_with_grad(X.tolist(), T, inplace=True),
            TypeError,
            "inplace=True needs logits as a native-byte-order",
        ),
        (lambda: fastlsm.nll_loss(X, np.zeros((2, 3))), TypeError, "class indices .* for nll_loss"),
        (lambda: fastlsm.nll_loss(X, np.array([0, 5])), ValueError, r"target\[1\] = 5"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inplace_read_only_and_aliased_target_errors():
    x = np.zeros((2, 3))
    x.flags.writeable = False
    with pytest.raises(ValueError, match="inplace=True needs writeable logits"):
        fastlsm.cross_entropy_with_grad(x, T, inplace=True)
    y = np.zeros((2, 3))
    with pytest.raises(ValueError, match="target shares memory with logits"):
        fastlsm.cross_entropy_with_grad(y, y, inplace=True)


def test_bad_target_error_is_also_an_index_error_and_leaves_logits_untouched():
    x = np.random.default_rng(19).standard_normal((4, 3))
    before = x.copy()
    with pytest.raises(IndexError, match=r"target\[2\] = 3"):
        fastlsm.cross_entropy_with_grad(x, np.array([0, 1, 3, 0]), inplace=True)
    assert np.array_equal(x, before)
    assert issubclass(fastlsm.InvalidTargetError, ValueError)


def test_docstring_examples_run():
    import doctest

    from fastlsm import losses

    result = doctest.testmod(losses, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
