"""PyTorch drop-in: fastlsm's fused kernels as autograd functions for CPU tensors.

Import it explicitly (``import fastlsm.torch``); ``import fastlsm`` never imports PyTorch.

- :func:`cross_entropy`, :func:`nll_loss`, :func:`log_softmax`: the signatures of
  ``torch.nn.functional`` (legacy ``size_average``/``reduce`` included), plus the extras
  ``z_loss``, ``softcap`` and ``token_weight`` as keyword-only arguments.
- :class:`CrossEntropyLoss`: a ``torch.nn.CrossEntropyLoss`` whose forward uses them.

CPU float32/float64 tensors are handled by fastlsm, sharing memory with the tensors
(``Tensor.numpy()`` / ``torch.from_numpy``: no copies in or out). Anything else (CUDA, half
precision, ...) falls back to ``torch.nn.functional`` when no extra is used, and raises
``TypeError`` when one is.

Gradients: with ``reduction="mean"``/``"sum"``, :func:`cross_entropy` computes the gradient
in the forward pass, in the same visit of the logits (one read, one write), and backward
only scales it by the upstream gradient (nothing at all when that is 1). With ``"none"``
the gradient is computed in backward, with the per-token upstream gradients folded in.
Gradients with respect to probability targets are supported; double backward is not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import losses as _losses
from . import normalize as _normalize

__all__ = ["CrossEntropyLoss", "cross_entropy", "log_softmax", "nll_loss"]

_DTYPES = (torch.float32, torch.float64)


def _native(t: torch.Tensor) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.device.type == "cpu"
        and t.dtype in _DTYPES
        and t.layout == torch.strided
    )


def _np(t):
    """A NumPy view of a CPU tensor (no copy unless it carries a lazy neg/conj bit)."""
    if t is None:
        return None
    return t.detach().resolve_neg().resolve_conj().numpy()


def _reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction as _Reduction

        return _Reduction.legacy_get_string(size_average, reduce)
    return reduction


def _class_dim(input: torch.Tensor) -> int:
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes), got a scalar")
    return 1 if input.dim() >= 2 else 0


def _expand_at(v: torch.Tensor, dim: int) -> torch.Tensor:
    return v.unsqueeze(dim) if v.dim() else v


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, token_weight, ignore_index, reduction,
                label_smoothing, z_loss, softcap):
        dim = _class_dim(input)
        kw = dict(
            axis=dim, weight=_np(weight), ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
            token_weight=_np(token_weight),
        )
        x, t = _np(input), _np(target)
        ctx.kw = kw
        ctx.soft = target.is_floating_point()
        ctx.grad = None
        need_input = ctx.needs_input_grad[0]
        if need_input and reduction != "none":
            r = _losses.cross_entropy_with_grad(x, t, **kw)
            ctx.grad = torch.from_numpy(r.grad)
            loss = r.loss
        else:
            loss = _losses.cross_entropy(x, t, **kw)
        if (need_input and reduction == "none") or ctx.needs_input_grad[1]:
            ctx.save_for_backward(input, target, weight, token_weight)
        return torch.from_numpy(np.asarray(loss))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        kw = ctx.kw
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            if ctx.grad is not None:
                g = float(grad_out)
                grad_input = ctx.grad if g == 1.0 else ctx.grad * g
            else:
                input, target, _, _ = ctx.saved_tensors
                r = _losses.cross_entropy_with_grad(
                    _np(input), _np(target), grad_output=_np(grad_out.contiguous()), **kw
                )
                grad_input = torch.from_numpy(r.grad)
        if ctx.needs_input_grad[1]:
            grad_target = _soft_target_grad(ctx, grad_out)
        return grad_input, grad_target, None, None, None, None, None, None, None


def _soft_target_grad(ctx, grad_out):
    """``d loss / d q[c] = -token_weight * (1 - eps) * w[c] * log_softmax(y)[c]`` (scaled)."""
    input, target, weight, token_weight = ctx.saved_tensors
    kw = ctx.kw
    dim = kw["axis"]
    y = input.detach()
    if kw["softcap"] is not None:
        y = kw["softcap"] * torch.tanh(y / kw["softcap"])
    coef = -(1.0 - kw["label_smoothing"]) * torch.log_softmax(y, dim)
    if weight is not None:
        shape = [1] * input.dim()
        shape[dim] = -1
        coef = coef * weight.detach().reshape(shape)
    scale = grad_out.detach()
    if kw["reduction"] == "mean":
        n = input.numel() // max(input.shape[dim], 1)
        den = token_weight.detach().sum() if token_weight is not None else n
        scale = scale / den
    if token_weight is not None:
        scale = scale * token_weight.detach()
    return (coef * _expand_at(scale, dim)).to(target.dtype)


class _NLLLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, token_weight, ignore_index, reduction):
        dim = _class_dim(input)
        ctx.args = (dim, ignore_index, reduction)
        x, t, w, tw = _np(input), _np(target), _np(weight), _np(token_weight)
        loss = _losses.nll_loss(
            x, t, axis=dim, weight=w, ignore_index=ignore_index, reduction=reduction,
            token_weight=tw,
        )
        ctx.save_for_backward(input, target, weight, token_weight)
        return torch.from_numpy(np.asarray(loss))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        input, target, weight, token_weight = ctx.saved_tensors
        dim, ignore_index, reduction = ctx.args
        s = _losses._setup(
            _np(input), _np(target), dim, _np(weight), ignore_index, reduction,
            _np(token_weight), "log_probs", False,
        )
        g = _np(grad_out.contiguous())
        _, grad = _losses._nll(s, "new", g if g.ndim else float(g))
        return torch.from_numpy(grad), None, None, None, None, None


class _LogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, dim):
        out = torch.from_numpy(_normalize.log_softmax(_np(input), axis=dim))
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        return grad_out - out.exp() * grad_out.sum(ctx.dim, keepdim=True), None


def _check_extras(name, input, target, **extras):
    used = [
        k for k, v in extras.items()
        if v is not None and (isinstance(v, torch.Tensor) or float(v) != 0.0)
    ]
    if used:
        raise TypeError(
            f"fastlsm.torch.{name}: {', '.join(used)} need CPU float32/float64 tensors, got "
            f"{input.dtype} on {input.device}; move them with .cpu().float()"
        )


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
    *,
    z_loss=0.0,
    softcap=None,
    token_weight=None,
):
    """``torch.nn.functional.cross_entropy`` computed by fastlsm, plus extras.

    Same arguments and results as PyTorch (class dimension 1, or 0 for 1-D input; class
    indices or class probabilities as target). Extras (keyword-only): ``z_loss`` adds
    ``z_loss * logsumexp**2`` per counted token, ``softcap`` applies
    ``softcap * tanh(input / softcap)`` first, ``token_weight`` (target-shaped for indices,
    input's shape without the class dim for probabilities) scales each token's loss and its
    share of the mean's denominator. See :func:`fastlsm.cross_entropy`.

    Examples
    --------
    >>> import torch, fastlsm.torch as ft
    >>> x = torch.randn(4, 10, requires_grad=True)
    >>> loss = ft.cross_entropy(x, torch.tensor([1, 0, 9, -100]), label_smoothing=0.1)
    >>> loss.backward()
    """
    reduction = _reduction(size_average, reduce, reduction)
    tensors = [input, target] + [t for t in (weight, token_weight) if t is not None]
    if not (all(_native(t) or (t is target and t.device.type == "cpu") for t in tensors)):
        _check_extras("cross_entropy", input, target, z_loss=z_loss, softcap=softcap,
                      token_weight=token_weight)
        return F.cross_entropy(
            input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing,
        )
    return _CrossEntropy.apply(
        input, target, weight, token_weight, ignore_index, reduction, label_smoothing,
        z_loss, softcap,
    )


def nll_loss(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    *,
    token_weight=None,
):
    """``torch.nn.functional.nll_loss`` computed by fastlsm, plus ``token_weight``."""
    reduction = _reduction(size_average, reduce, reduction)
    tensors = [input] + [t for t in (weight, token_weight) if t is not None]
    if not (all(_native(t) for t in tensors) and target.device.type == "cpu"):
        _check_extras("nll_loss", input, target, token_weight=token_weight)
        return F.nll_loss(
            input, target, weight=weight, ignore_index=ignore_index, reduction=reduction
        )
    return _NLLLoss.apply(input, target, weight, token_weight, ignore_index, reduction)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.log_softmax`` computed by fastlsm (exact for large logits)."""
    if dim is None:
        dim = F._get_softmax_dim("log_softmax", input.dim(), _stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    if not _native(input) or input.dim() == 0:
        return F.log_softmax(input, dim)
    return _LogSoftmax.apply(input, dim % input.dim())


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by fastlsm, plus ``z_loss`` and ``softcap``.

    Same constructor, buffers and state dict as PyTorch's module; ``forward`` also takes an
    optional ``token_weight``.
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
        *,
        z_loss=0.0,
        softcap=None,
    ):
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input, target, token_weight=None):
        return cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing,
            z_loss=self.z_loss, softcap=self.softcap, token_weight=token_weight,
        )

    def extra_repr(self) -> str:
        return f"z_loss={self.z_loss}, softcap={self.softcap}"
