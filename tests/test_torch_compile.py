"""fastlsm.torch under torch.compile and torch.library.opcheck.

Most compiled training steps use ``backend="aot_eager"``: AOT autograd traces forward and
backward through the ops' fake kernels and autograd formulas (what inductor sees too),
without inductor's C++ compilation; one step goes through the default inductor backend
(about 30 s cold on a shared 2-core machine, 10 s with its cache). ``fullgraph=True`` makes
any graph break an error.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
ft = pytest.importorskip("fastlsm.torch")

OPS = ["log_softmax", "softmax", "logsumexp", "cross_entropy", "cross_entropy_backward",
       "nll_loss", "nll_loss_backward"]


def _data(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, 3, generator=g, dtype=dtype)
    t = torch.randint(0, 5, (6, 3), generator=g)
    t[0, 0] = -100
    w = torch.linspace(-0.5, 2.0, 5, dtype=dtype)
    tw = torch.rand(6, 3, generator=g, dtype=dtype)
    return x, t, w, tw


def _samples(name):
    """Argument tuples for ``torch.ops.fastlsm.<name>`` covering its options."""
    out = []
    for dtype in (torch.float32, torch.float64):
        x, t, w, tw = _data(dtype)
        xg = x.clone().requires_grad_(True)
        q = torch.softmax(torch.randn(6, 5, 3, dtype=dtype), 1).requires_grad_(True)
        if name in ("log_softmax", "softmax"):
            out += [(xg, 1), (xg, 2), (x[:, 0], 0)]
        elif name == "logsumexp":
            out += [(xg, [1], False), (xg, [0, 2], True), (xg, [-1], False)]
        elif name == "cross_entropy":
            for red in ("mean", "sum", "none"):
                out += [
                    (xg, t, w, None, 1, -100, red, 0.1, 0.0, None, red != "none"),
                    (xg, t.clamp(min=0), None, tw, 1, 2, red, 0.0, 1e-3, 3.0, False),
                    (xg, q, w, tw, 1, -100, red, 0.2, 0.0, None, red != "none"),
                ]
        elif name == "cross_entropy_backward":
            out += [
                (torch.rand(6, 3, dtype=dtype), x, t, w, tw, 1, -100, "none", 0.1, 1e-3, 2.0),
                (torch.tensor(2.0, dtype=dtype), x, q.detach(), None, None, 1, -100, "mean",
                 0.0, 0.0, None),
            ]
        elif name == "nll_loss":
            out += [(xg, t, w, tw, 1, -100, red) for red in ("mean", "sum", "none")]
        elif name == "nll_loss_backward":
            out += [(torch.rand(6, 3, dtype=dtype), x, t, w, None, 1, -100, "none"),
                    (torch.tensor(0.5, dtype=dtype), x, t.clamp(min=0), None, tw, 1, 0, "mean")]
    return out


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name):
    op = getattr(torch.ops.fastlsm, name)
    for args in _samples(name):
        torch.library.opcheck(op, args)  # raises on any failure


class _Model(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 5, dtype=torch.float64)
        self.loss = loss

    def forward(self, h, t):
        return self.loss(self.proj(h), t)


def _ce(lib):
    w = torch.linspace(-0.5, 2.0, 5, dtype=torch.float64)
    return lambda y, t: lib.cross_entropy(y, t, weight=w, label_smoothing=0.1)


def _ce_none(lib):
    return lambda y, t: (lib.cross_entropy(y, t, reduction="none") * torch.arange(7.0)).sum()


def _nll(lib):
    return lambda y, t: lib.nll_loss(lib.log_softmax(y, dim=1), t, reduction="sum")


def _normalizers(lib):
    lse = torch.logsumexp if lib is F else ft.logsumexp
    return lambda y, t: (lib.softmax(y, dim=1)[:, 0] * lse(y, 1)).sum()


@pytest.mark.parametrize(
    "loss, backend",
    [(_ce, "aot_eager"), (_ce_none, "aot_eager"), (_nll, "aot_eager"),
     (_normalizers, "aot_eager"), (_ce, "inductor")],
)
def test_compiled_training_step_matches_eager_pytorch(loss, backend):
    torch._dynamo.reset()
    h = torch.randn(7, 8, dtype=torch.float64)
    t = torch.tensor([0, 4, 2, -100, 1, 3, 3])
    results = []
    for lib, compiled in ((F, False), (ft, True)):
        model = _Model(loss(lib))
        step = torch.compile(model, backend=backend, fullgraph=True) if compiled else model
        for _ in range(2):  # the second call runs the cached graph
            model.zero_grad()
            value = step(h, t)
            value.backward()
        results.append((value.detach(), model.proj.weight.grad, model.proj.bias.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compiled_module_losses_have_no_graph_break():
    torch._dynamo.reset()
    x, t, w, _ = _data(torch.float64)
    modules = [ft.CrossEntropyLoss(weight=w, z_loss=1e-3), ft.NLLLoss(weight=w),
               ft.LogSoftmax(dim=1), ft.Softmax(dim=1)]
    for m in modules:
        args = (x, t) if isinstance(m, torch.nn.modules.loss._Loss) else (x,)
        expected = m(*args)
        got = torch.compile(m, backend="aot_eager", fullgraph=True)(*args)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
