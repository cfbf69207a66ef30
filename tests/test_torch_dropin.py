"""fastlsm.torch against torch.nn.functional: values, gradients, modules, fallbacks."""

from __future__ import annotations

import subprocess
import sys
import warnings

import naive
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
ft = pytest.importorskip("fastlsm.torch")


def test_importing_fastlsm_does_not_import_torch():
    code = "import sys, fastlsm; fastlsm.cross_entropy; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert out.stdout.strip() == "False"


def _case(seed, shape, dtype, ignore=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    tshape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, c, tshape, generator=g)
    if ignore and t.dim():
        t[torch.rand(tshape, generator=g) < 0.2] = -100
    w = torch.rand(c, generator=g, dtype=torch.float64).to(dtype) + 0.1
    return x, t, w


def _run(fn, x, *args, upstream=None, **kw):
    xi = x.detach().clone().requires_grad_(True)
    loss = fn(xi, *args, **kw)
    (loss * upstream if upstream is not None else loss).sum().backward()
    return loss.detach(), xi.grad


TORCH_OPTS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.2},
    {"weight": True, "label_smoothing": 0.3},
    {"ignore_index": 1},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", TORCH_OPTS)
@pytest.mark.parametrize("shape", [(6, 7), (3, 5, 4, 2), (9,)])
def test_cross_entropy_matches_pytorch(dtype, reduction, opts, shape):
    x, t, w = _case(0, shape, dtype)
    kw = dict(opts, reduction=reduction)
    if "ignore_index" in kw:
        t = torch.where(t == -100, kw["ignore_index"], t)
    if kw.pop("weight", False):
        kw["weight"] = w
    up = None
    if reduction == "none" and t.dim():
        up = torch.rand(t.shape, dtype=dtype)
    a, ga = _run(ft.cross_entropy, x, t, upstream=up, **kw)
    b, gb = _run(F.cross_entropy, x, t, upstream=up, **kw)
    assert a.dtype == b.dtype and a.shape == b.shape
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a, b, equal_nan=True, **tol)
    torch.testing.assert_close(ga, gb, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_probability_targets_match_pytorch_including_target_grad(dtype, label_smoothing):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=g, dtype=dtype)
    q = torch.softmax(torch.randn(4, 6, 3, generator=g, dtype=dtype), 1)
    w = torch.rand(6, generator=g, dtype=dtype)
    for reduction in ("mean", "sum", "none"):
        res = []
        for fn in (ft.cross_entropy, F.cross_entropy):
            xi = x.clone().requires_grad_(True)
            qi = q.clone().requires_grad_(True)
            loss = fn(xi, qi, weight=w, reduction=reduction, label_smoothing=label_smoothing)
            loss.sum().backward()
            res.append((loss.detach(), xi.grad, qi.grad))
        tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12,
                                                                             atol=1e-14)
        for a, b in zip(*res, strict=True):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_and_log_softmax_match_pytorch(reduction):
    x, t, w = _case(2, (5, 6, 3), torch.float32)
    for fn_lsm, fn_nll in ((ft.log_softmax, ft.nll_loss), (F.log_softmax, F.nll_loss)):
        xi = x.clone().requires_grad_(True)
        loss = fn_nll(fn_lsm(xi, dim=1), t, weight=w, reduction=reduction)
        loss.sum().backward()
        if fn_nll is ft.nll_loss:
            a, ga = loss.detach(), xi.grad
    torch.testing.assert_close(a, loss.detach(), rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(ga, xi.grad, rtol=2e-5, atol=2e-6)


def test_gradcheck_float64_with_extras():
    x, t, w = _case(3, (4, 5, 3), torch.float64)
    tw = torch.rand(4, 3, dtype=torch.float64)
    for reduction in ("mean", "none"):
        def f(z, reduction=reduction):
            return ft.cross_entropy(z, t, weight=w, label_smoothing=0.1, z_loss=1e-2,
                                    softcap=4.0, token_weight=tw, reduction=reduction)

        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),))
    q = torch.softmax(torch.randn(4, 5, 3, dtype=torch.float64), 1).requires_grad_(True)

    def g(z, p):
        return ft.cross_entropy(z, p, weight=w, label_smoothing=0.2, softcap=3.0,
                                token_weight=tw)

    assert torch.autograd.gradcheck(g, (x.clone().requires_grad_(True), q))
    assert torch.autograd.gradcheck(
        lambda z: ft.nll_loss(z, t, weight=w, token_weight=tw), (x.clone().requires_grad_(True),)
    )
    assert torch.autograd.gradcheck(
        lambda z: ft.log_softmax(z, dim=1), (x.clone().requires_grad_(True),)
    )


def test_float32_is_at_least_as_close_to_float64_as_pytorch():
    x, t, w = _case(4, (64, 1000), torch.float32)
    x = x * 5
    exact, gexact, _ = naive.cross_entropy(x.double().numpy(), t.numpy(),
                                           weight=w.double().numpy(), label_smoothing=0.1)
    a, ga = _run(ft.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    b, gb = _run(F.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    err_ours = abs(float(a) - exact)
    err_torch = abs(float(b) - exact)
    assert err_ours <= max(err_torch, 4 * np.finfo(np.float32).eps * abs(exact))
    gerr_ours = np.abs(ga.double().numpy() - gexact).max()
    gerr_torch = np.abs(gb.double().numpy() - gexact).max()
    assert gerr_ours <= max(gerr_torch, 4 * np.finfo(np.float32).eps * np.abs(gexact).max())


def test_extras_match_their_definitions():
    x, t, w = _case(5, (6, 7), torch.float64)
    tw = torch.rand(6, dtype=torch.float64)
    mask = t != -100
    lse = torch.logsumexp(x, 1)
    per = F.cross_entropy(x, t, reduction="none")
    expected = ((per + 0.01 * lse**2 * mask) * tw).sum() / (tw * mask).sum()
    got = ft.cross_entropy(x, t, z_loss=0.01, token_weight=tw)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
    capped = F.cross_entropy(3.0 * torch.tanh(x / 3.0), t)
    torch.testing.assert_close(ft.cross_entropy(x, t, softcap=3.0), capped, rtol=1e-13, atol=0)


def test_backward_scales_by_upstream_and_survives_retain_graph():
    x, t, _ = _case(6, (5, 4), torch.float32)
    xi = x.clone().requires_grad_(True)
    loss = ft.cross_entropy(xi, t)
    (loss * 3).backward(retain_graph=True)
    first = xi.grad.clone()
    xi.grad = None
    loss.backward()
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(xr, t).backward()
    torch.testing.assert_close(first, 3 * xr.grad)
    torch.testing.assert_close(xi.grad, xr.grad)


def test_module_matches_pytorch_and_has_the_same_state():
    x, t, w = _case(7, (8, 5), torch.float32)
    t = torch.where(t == -100, 2, t)
    ours = ft.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=2)
    theirs = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, ignore_index=2)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    a, ga = _run(ours, x, t)
    b, gb = _run(theirs, x, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)
    assert "z_loss=0.0" in repr(ft.CrossEntropyLoss())
    zl = ft.CrossEntropyLoss(z_loss=1e-3, softcap=10.0)
    expected = ft.cross_entropy(x, t, z_loss=1e-3, softcap=10.0)
    torch.testing.assert_close(zl(x, t), expected, rtol=0, atol=0)


def test_legacy_reduction_arguments():
    x, t, _ = _case(8, (4, 3), torch.float32, ignore=False)
    with pytest.warns(UserWarning):
        a = ft.cross_entropy(x, t, size_average=False)
    torch.testing.assert_close(a, F.cross_entropy(x, t, reduction="sum"))


def test_fallback_for_other_devices_and_extras_error():
    x, t, _ = _case(9, (4, 6), torch.float32, ignore=False)
    xm, tm = x.to("meta"), t.to("meta")  # not a CPU tensor: PyTorch computes it
    for got, want in [
        (ft.cross_entropy(xm, tm), F.cross_entropy(xm, tm)),
        (ft.log_softmax(xm, dim=1), F.log_softmax(xm, dim=1)),
        (ft.nll_loss(xm, tm), F.nll_loss(xm, tm)),
    ]:
        assert got.device.type == "meta"
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
    with pytest.raises(TypeError, match="z_loss need CPU tensors of float32, float64, .*no such"):
        ft.cross_entropy(xm, tm, z_loss=1e-3)
    with pytest.raises(TypeError, match="token_weight need CPU tensors of float32"):
        ft.nll_loss(xm, tm, token_weight=torch.ones(4))


def _ulps(got, exact, dtype):
    """Distance in ulps of ``dtype`` between 16-bit ``got`` and float64 ``exact``."""
    np_dtype = {torch.float16: np.float16}.get(dtype)
    if np_dtype is None:
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    g = got.detach().float().numpy().astype(np_dtype)
    return naive.ulp_error(g, np.asarray(exact, np.float64))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1}, {"reduction": "none"}])
def test_16bit_tensors_go_through_fastlsm_within_one_ulp(dtype, opts):
    x, t, w = _case(11, (32, 500), dtype)
    exact, gexact, _ = naive.cross_entropy(x.double().numpy(), t.numpy(), **opts)
    a, ga = _run(ft.cross_entropy, x, t, **opts)
    b, gb = _run(F.cross_entropy, x, t, **opts)
    assert a.dtype == dtype and ga.dtype == dtype and ga.shape == x.shape
    assert _ulps(a, exact, dtype).max() <= 1  # the float32 loss, rounded once to the dtype
    err_ours = np.abs(a.double().numpy() - exact).max()
    assert err_ours <= np.abs(b.double().numpy() - exact).max()  # at least as close as PyTorch
    assert _ulps(ga, gexact, dtype).max() <= 1
    lp = ft.log_softmax(x, dim=1)
    assert lp.dtype == dtype
    ref_lp = torch.log_softmax(x.double(), dim=1).numpy()
    assert _ulps(lp, ref_lp, dtype).max() <= 1
    assert ft.logsumexp(x, dim=1).dtype == dtype  # PyTorch returns the input's dtype


def test_log_softmax_dim_none_and_dtype_follow_pytorch():
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        a = ft.log_softmax(x)
    torch.testing.assert_close(a, F.log_softmax(x, dim=1))
    b = ft.log_softmax(x, dim=-1, dtype=torch.float64)
    assert b.dtype == torch.float64
    torch.testing.assert_close(b, F.log_softmax(x, dim=-1, dtype=torch.float64))


def test_out_of_range_target_raises_index_error_like_pytorch():
    x = torch.randn(3, 4)
    with pytest.raises(IndexError, match=r"target\[1\] = 4 is out of range for 4 classes"):
        ft.cross_entropy(x, torch.tensor([0, 4, 1]))
    with pytest.raises(IndexError, match=r"target\[0\] = -1"):
        ft.nll_loss(x, torch.tensor([-1, 0, 0]))


def test_inputs_are_not_modified_and_noncontiguous_inputs_work():
    x, t, _ = _case(10, (6, 9), torch.float32)
    before = x.clone()
    xi = x.clone().requires_grad_(True)
    ft.cross_entropy(xi, t, label_smoothing=0.1, softcap=5.0).backward()
    assert torch.equal(xi.detach(), before)
    xt = x.t().contiguous().t()  # column-major storage
    a, ga = _run(ft.cross_entropy, xt, t)
    b, gb = _run(F.cross_entropy, x, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)


# ----------------------------------------------------------------------------- issue 10


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)


WEIGHTS = {
    "negative": lambda c: torch.linspace(-1.5, 2.0, c),
    "zero_sum": lambda c: torch.tensor([1.0, -1.0] * (c // 2) + [0.0] * (c % 2)),
    "zeros": lambda c: torch.zeros(c),
    "inf": lambda c: torch.tensor([1.0, np.inf] + [0.5] * (c - 2)),
    "nan": lambda c: torch.tensor([np.nan] + [0.5] * (c - 1)),
}


def _read_only(t):
    """``t`` backed by a read-only NumPy array (as from np.frombuffer or an mmap)."""
    a = t.detach().numpy().copy()
    a.flags.writeable = False
    with warnings.catch_warnings():  # PyTorch warns (once) that the tensor is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "kind, label_smoothing",
    # non-finite weights with smoothing differ as documented: see the next tests
    [(k, eps) for k in WEIGHTS for eps in (0.0, 0.3) if eps == 0.0 or k not in ("inf", "nan")],
)
def test_any_real_class_weights_match_pytorch(kind, label_smoothing, reduction, dtype):
    x, t, _ = _case(11, (7, 6, 2), dtype)
    w = WEIGHTS[kind](6).to(dtype)
    up = torch.rand(t.shape, dtype=dtype) if reduction == "none" else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
    a, ga = _run(ft.cross_entropy, x, t, upstream=up, **kw)
    b, gb = _run(F.cross_entropy, x, t, upstream=up, **kw)
    torch.testing.assert_close(a, b, equal_nan=True, **_tol(dtype))
    torch.testing.assert_close(ga, gb, equal_nan=True, **_tol(dtype))
    if kind == "zeros" and reduction == "mean":
        assert torch.isnan(a)  # 0/0
    lp = F.log_softmax(x, 1)
    kw.pop("label_smoothing")
    a, ga = _run(ft.nll_loss, lp, t, upstream=up, **kw)
    b, gb = _run(F.nll_loss, lp, t, upstream=up, **kw)
    torch.testing.assert_close(a, b, equal_nan=True, **_tol(dtype))
    torch.testing.assert_close(ga, gb, equal_nan=True, **_tol(dtype))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_weighted_mean_with_denominator_zero_is_inf_like_pytorch(label_smoothing):
    x = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([0, 1])
    w = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)  # w[t] sums to 0, the loss not
    kw = dict(weight=w, label_smoothing=label_smoothing)
    a, ga = _run(ft.cross_entropy, x, t, **kw)
    b, gb = _run(F.cross_entropy, x, t, **kw)
    assert torch.isinf(b) and torch.equal(a, b)
    # every gradient entry is inf/NaN in both (which is which depends on the order of ops)
    assert not torch.isfinite(ga).any() and not torch.isfinite(gb).any()


def test_non_finite_weight_with_label_smoothing_differs_as_documented():
    x, t, _ = _case(12, (5, 4), torch.float64, ignore=False)
    w = WEIGHTS["inf"](4).double()
    a = ft.cross_entropy(x, t, weight=w, label_smoothing=0.1, reduction="sum")
    assert torch.isinf(F.cross_entropy(x, t, weight=w, label_smoothing=0.1, reduction="sum"))
    assert torch.isnan(a)  # NaN where PyTorch's sum is inf
    t[1] = -100
    w = WEIGHTS["nan"](4).double()
    _, ga = _run(ft.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    _, gb = _run(F.cross_entropy, x, t, weight=w, label_smoothing=0.1)
    assert torch.isnan(gb[1]).all() and torch.equal(ga[1], torch.zeros(4, dtype=torch.float64))
    assert torch.isnan(ga[0]).all()  # counted tokens are NaN in both


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("soft", [False, True])
def test_read_only_inputs_match_pytorch(reduction, soft):
    x, t, w = _case(13, (6, 5, 3), torch.float32)
    if soft:
        t = torch.softmax(torch.randn(6, 5, 3), 1)
    xr, tr, wr = _read_only(x), _read_only(t), _read_only(w)
    up = torch.rand(6, 3) if reduction == "none" else None
    for opts in ({}, {"label_smoothing": 0.2}):
        a, ga = _run(ft.cross_entropy, xr, tr, weight=wr, reduction=reduction, upstream=up,
                     **opts)
        b, gb = _run(F.cross_entropy, x, t, weight=w, reduction=reduction, upstream=up, **opts)
        torch.testing.assert_close(a, b, **_tol(torch.float32))
        torch.testing.assert_close(ga, gb, **_tol(torch.float32))
    if not soft:
        a, ga = _run(ft.nll_loss, xr, tr, weight=wr, reduction=reduction, upstream=up)
        b, gb = _run(F.nll_loss, x, t, weight=w, reduction=reduction, upstream=up)
        torch.testing.assert_close(ga, gb, **_tol(torch.float32))
    for fn, ref in ((ft.log_softmax, F.log_softmax), (ft.softmax, F.softmax)):
        torch.testing.assert_close(fn(xr, 1), ref(x, 1), **_tol(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax_match_pytorch_with_gradients(dtype, dim):
    x, _, _ = _case(14, (4, 6, 5), dtype)
    x[0, 0, 0] = -np.inf
    up = torch.randn(4, 6, 5, dtype=dtype)
    for ours, theirs in ((ft.softmax, F.softmax), (ft.log_softmax, F.log_softmax)):
        a, ga = _run(ours, x, dim, upstream=up)
        b, gb = _run(theirs, x, dim, upstream=up)
        torch.testing.assert_close(a, b, **_tol(dtype))
        torch.testing.assert_close(ga, gb, **_tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim, keepdim", [(1, False), (-1, True), ((0, 2), False), ((2, 0), True)])
def test_logsumexp_matches_pytorch_with_gradients(dtype, dim, keepdim):
    x, _, _ = _case(15, (3, 4, 5), dtype)
    x[1, 1, :] = -np.inf  # an all -inf lane: -inf, and a NaN gradient as in PyTorch
    up = torch.rand(torch.logsumexp(x, dim, keepdim).shape, dtype=dtype)
    a, ga = _run(ft.logsumexp, x, dim, keepdim=keepdim, upstream=up)
    b, gb = _run(torch.logsumexp, x, dim, keepdim=keepdim, upstream=up)
    torch.testing.assert_close(a, b, **_tol(dtype))
    torch.testing.assert_close(ga, gb, equal_nan=True, **_tol(dtype))


def test_modules_match_pytorch():
    x, t, w = _case(16, (5, 4, 3), torch.float64)
    pairs = [
        (ft.NLLLoss(weight=-w, reduction="sum"), torch.nn.NLLLoss(weight=-w, reduction="sum")),
        (ft.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)),
        (ft.Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
    ]
    for ours, theirs in pairs:
        assert isinstance(ours, type(theirs))
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        args = (x, t) if isinstance(ours, torch.nn.NLLLoss) else (x,)
        up = torch.rand(theirs(*args).shape, dtype=torch.float64)
        a, ga = _run(ours, *args, upstream=up)
        b, gb = _run(theirs, *args, upstream=up)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-13)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        ft.Softmax()(x)


def test_double_backward_normalizers_work_and_losses_refuse():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    for fn in (lambda z: ft.log_softmax(z, 1), lambda z: ft.softmax(z, 0),
               lambda z: ft.logsumexp(z, 1)):
        assert torch.autograd.gradgradcheck(fn, (x,))
    t = torch.tensor([0, 4, 2])
    for fn in (ft.cross_entropy, ft.nll_loss):
        (g,) = torch.autograd.grad(fn(x, t, reduction="none").sum() * 2, x)  # first order ok
        loss = fn(x, t)
        with pytest.raises(RuntimeError, match="double backward .* is not supported"):
            torch.autograd.grad(loss, x, create_graph=True)
