"""PyTorch drop-in: fastlsm's fused kernels as ``torch.library`` custom ops for CPU tensors.

Import it explicitly (``import fastlsm.torch``); ``import fastlsm`` never imports PyTorch.

- :func:`cross_entropy`, :func:`nll_loss`, :func:`log_softmax`, :func:`softmax`,
  :func:`logsumexp`: the signatures of ``torch.nn.functional`` / ``torch.logsumexp`` (legacy
  ``size_average``/``reduce`` included), plus the loss extras ``z_loss``, ``softcap`` and
  ``token_weight`` as keyword-only arguments.
- Modules :class:`CrossEntropyLoss`, :class:`NLLLoss`, :class:`LogSoftmax`, :class:`Softmax`:
  subclasses of PyTorch's (same constructor, buffers and state dict) whose forward uses them.

The work is done by the ops ``torch.ops.fastlsm.*`` (registered with
``torch.library.custom_op``, with fake kernels and autograd formulas), so ``torch.compile``
(``fullgraph=True`` included) traces them without graph breaks and
``torch.library.opcheck`` passes. CPU tensors of the dtypes in :data:`FASTLSM_DTYPES` are
computed by fastlsm, sharing memory with the tensors (``Tensor.numpy()`` /
``torch.from_numpy``: no copies in or out). Anything else (CUDA, other dtypes, sparse, ...)
falls back to ``torch.nn.functional`` when no extra is used, and raises ``TypeError`` when
one is (the extras exist only in fastlsm).

Gradients: with ``reduction="mean"``/``"sum"``, :func:`cross_entropy` computes the gradient
in the forward pass, in the same visit of the logits (one read, one write), and backward
only scales it by the upstream gradient (in eager mode, nothing at all when that is 1). With
``"none"`` the gradient is computed in backward, with the per-token upstream gradients folded
in. Gradients with respect to probability targets are supported. Double backward works for
:func:`log_softmax`, :func:`softmax` and :func:`logsumexp` (their backward is made of
PyTorch ops) and raises ``RuntimeError`` for the losses.

Deliberate differences from PyTorch (everything else gives PyTorch's results, NaN and inf
included):

- index targets may be of any integer dtype and weights of any real dtype (PyTorch wants
  int64 and the input's dtype);
- a non-finite class weight combined with ``label_smoothing > 0`` gives a NaN loss where
  PyTorch's may be ``inf`` (fastlsm's one-pass form ``W * log(s) - sum(w * d)`` has
  ``inf - inf``), and leaves ignored tokens' gradient 0 where PyTorch's is NaN (its
  ``0 * weight``);
- a weighted mean whose denominator is 0 gives PyTorch's loss (``inf``, ``-inf`` or NaN)
  and a gradient that is inf/NaN everywhere, as PyTorch's, but which entries are inf and
  which NaN may differ;
- out-of-range targets raise :class:`fastlsm.InvalidTargetError`, an ``IndexError`` and
  ``ValueError`` naming the position (PyTorch: ``IndexError``).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F

from . import _jit
from . import losses as _losses
from . import normalize as _normalize

__all__ = [
    "FASTLSM_DTYPES",
    "CrossEntropyLoss",
    "LogSoftmax",
    "NLLLoss",
    "Softmax",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "softmax",
]

FASTLSM_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
"""Tensor dtypes fastlsm computes; others fall back to PyTorch. Adding a dtype means adding
it here and its conversion in :func:`_to_numpy` / :func:`_from_numpy` (nothing else).
bfloat16 and float16 are computed in float32 (see ``fastlsm/_dtypes.py``); results come back
in the input's dtype, as PyTorch's do."""

_BF16 = np.dtype(ml_dtypes.bfloat16)


# ----------------------------------------------------------------------------- dispatch


def _handled(*tensors) -> bool:
    """True when every given tensor (None skipped) is one fastlsm computes."""
    return all(
        t is None
        or (
            isinstance(t, torch.Tensor)
            and t.device.type == "cpu"
            and t.dtype in FASTLSM_DTYPES
            and t.layout == torch.strided
        )
        for t in tensors
    )


def _to_numpy(t):
    """A NumPy view of a CPU tensor (no copy unless it carries a lazy neg/conj bit);
    bfloat16 tensors become ``ml_dtypes.bfloat16`` arrays over the same memory."""
    if t is None:
        return None
    t = t.detach().resolve_neg().resolve_conj()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16)
    return t.numpy()


def _from_numpy(a, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor sharing memory with a fresh NumPy result of fastlsm; with ``like``, in
    ``like``'s dtype (fastlsm's float32 losses of 16-bit logits: PyTorch returns the
    input's dtype)."""
    a = np.asarray(a)
    t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype == _BF16 else (
        torch.from_numpy(a)
    )
    return t if like is None or t.dtype == like.dtype else t.to(like.dtype)


def _class_dim(input: torch.Tensor) -> int:
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes), got a scalar")
    return 1 if input.dim() >= 2 else 0


def _outer(input: torch.Tensor, dim: int) -> list[int]:
    return [n for i, n in enumerate(input.shape) if i != dim]


def _grad_like(input: torch.Tensor, dim: int) -> torch.Tensor:
    """An empty tensor laid out like fastlsm's gradients: the class axis stored last."""
    shape = _outer(input, dim) + [input.shape[dim]]
    return input.new_empty(shape).movedim(-1, dim)


def _loss_like(input: torch.Tensor, dim: int, reduction: str) -> torch.Tensor:
    return input.new_empty(_outer(input, dim) if reduction == "none" else [])


def _eager(t: torch.Tensor) -> bool:
    """True for a real tensor outside any tracing (its value may be read)."""
    return type(t) is torch.Tensor and not torch.compiler.is_compiling()


def _no_double_backward(name: str) -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"fastlsm.torch.{name}: double backward (create_graph=True) is not supported; "
            f"use torch.nn.functional.{name} for higher-order gradients"
        )


# ----------------------------------------------------------------------------- normalizers


@torch.library.custom_op(
    "fastlsm::log_softmax", mutates_args=(), device_types="cpu",
    schema="(Tensor input, int dim) -> Tensor",
)
def _log_softmax_op(input, dim):
    return _from_numpy(_normalize.log_softmax(_to_numpy(input), axis=dim))


@torch.library.custom_op(
    "fastlsm::softmax", mutates_args=(), device_types="cpu",
    schema="(Tensor input, int dim) -> Tensor",
)
def _softmax_op(input, dim):
    return _from_numpy(_normalize.softmax(_to_numpy(input), axis=dim))


@_log_softmax_op.register_fake
@_softmax_op.register_fake
def _(input, dim):
    return input.new_empty(input.shape)


def _save_output(ctx, inputs, output):
    ctx.dim = inputs[1]
    ctx.save_for_backward(output)


def _log_softmax_backward(ctx, grad):
    (out,) = ctx.saved_tensors
    return grad - out.exp() * grad.sum(ctx.dim, keepdim=True), None


def _softmax_backward(ctx, grad):
    (out,) = ctx.saved_tensors
    return out * (grad - (grad * out).sum(ctx.dim, keepdim=True)), None


_log_softmax_op.register_autograd(_log_softmax_backward, setup_context=_save_output)
_softmax_op.register_autograd(_softmax_backward, setup_context=_save_output)


@torch.library.custom_op(
    "fastlsm::logsumexp", mutates_args=(), device_types="cpu",
    schema="(Tensor input, int[] dim, bool keepdim) -> Tensor",
)
def _logsumexp_op(input, dim, keepdim):
    return _from_numpy(
        _normalize.logsumexp(_to_numpy(input), axis=tuple(dim), keepdims=keepdim), input
    )


@_logsumexp_op.register_fake
def _(input, dim, keepdim):
    dims = {d % input.dim() for d in dim}
    shape = [1 if i in dims else n for i, n in enumerate(input.shape) if keepdim or i not in dims]
    return input.new_empty(shape)


def _logsumexp_setup(ctx, inputs, output):
    input, dim, keepdim = inputs
    ctx.dims = sorted(d % input.dim() for d in dim)
    ctx.keepdim = keepdim
    ctx.save_for_backward(input, output)


def _logsumexp_backward(ctx, grad):
    input, out = ctx.saved_tensors
    if not ctx.keepdim:  # PyTorch's logsumexp_backward: grad * exp(input - result)
        for d in ctx.dims:
            grad, out = grad.unsqueeze(d), out.unsqueeze(d)
    return grad * (input - out).exp(), None, None


_logsumexp_op.register_autograd(_logsumexp_backward, setup_context=_logsumexp_setup)


# ----------------------------------------------------------------------------- losses


def _ce_kwargs(dim, weight, token_weight, ignore_index, reduction, label_smoothing, z_loss,
               softcap):
    return dict(
        axis=dim, weight=_to_numpy(weight), ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        token_weight=_to_numpy(token_weight),
    )


_CE_ARGS = (
    "Tensor input, Tensor target, Tensor? weight, Tensor? token_weight, int dim, "
    "int ignore_index, str reduction, float label_smoothing, float z_loss, float? softcap"
)


@torch.library.custom_op(
    "fastlsm::cross_entropy", mutates_args=(), device_types="cpu",
    schema=f"({_CE_ARGS}, bool with_grad) -> (Tensor, Tensor)",
)
def _cross_entropy_op(input, target, weight, token_weight, dim, ignore_index, reduction,
                      label_smoothing, z_loss, softcap, with_grad):
    """Loss, and (``with_grad``) ``d loss / d input`` computed in the same pass (else empty)."""
    kw = _ce_kwargs(dim, weight, token_weight, ignore_index, reduction, label_smoothing,
                    z_loss, softcap)
    x, t = _to_numpy(input), _to_numpy(target)
    if with_grad:
        r = _losses.cross_entropy_with_grad(x, t, **kw)
        return _from_numpy(r.loss, input), _from_numpy(r.grad)
    return _from_numpy(_losses.cross_entropy(x, t, **kw), input), input.new_empty(0)


@_cross_entropy_op.register_fake
def _(input, target, weight, token_weight, dim, ignore_index, reduction, label_smoothing,
      z_loss, softcap, with_grad):
    grad = _grad_like(input, dim) if with_grad else input.new_empty(0)
    return _loss_like(input, dim, reduction), grad


@torch.library.custom_op(
    "fastlsm::cross_entropy_backward", mutates_args=(), device_types="cpu",
    schema=f"(Tensor grad_output, {_CE_ARGS}) -> Tensor",
)
def _cross_entropy_backward_op(grad_output, input, target, weight, token_weight, dim,
                               ignore_index, reduction, label_smoothing, z_loss, softcap):
    """``grad_output * d loss / d input`` (per-token ``grad_output`` for ``"none"``)."""
    kw = _ce_kwargs(dim, weight, token_weight, ignore_index, reduction, label_smoothing,
                    z_loss, softcap)
    g = _to_numpy(grad_output.contiguous())
    return _from_numpy(
        _losses.cross_entropy_with_grad(_to_numpy(input), _to_numpy(target), grad_output=g,
                                        **kw).grad
    )


@_cross_entropy_backward_op.register_fake
def _(grad_output, input, target, weight, token_weight, dim, *_):
    return _grad_like(input, dim)


def _cross_entropy_setup(ctx, inputs, output):
    ctx.args = inputs[4:10]  # dim ... softcap
    ctx.with_grad = inputs[10]
    ctx.soft = inputs[1].is_floating_point()
    ctx.mark_non_differentiable(output[1])
    keep = not ctx.with_grad or ctx.needs_input_grad[1]  # else the logits need not stay alive
    ctx.save_for_backward(inputs[0] if keep else None, *inputs[1:4], output[1])


def _cross_entropy_backward(ctx, grad_loss, _grad_grad):
    if _eager(grad_loss):
        _no_double_backward("cross_entropy")
    input, target, weight, token_weight, grad = ctx.saved_tensors
    grad_input = grad_target = None
    if ctx.needs_input_grad[0]:
        if ctx.with_grad:  # computed in forward: scale by the (scalar) upstream gradient
            if _eager(grad_loss) and grad_loss.item() == 1.0:
                grad_input = grad
            else:
                grad_input = grad * grad_loss
        else:
            grad_input = torch.ops.fastlsm.cross_entropy_backward(
                grad_loss, input, target, weight, token_weight, *ctx.args
            )
    if ctx.needs_input_grad[1]:
        grad_target = _soft_target_grad(ctx, grad_loss, input, target, weight, token_weight)
    return (grad_input, grad_target) + (None,) * 9


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)


def _soft_target_grad(ctx, grad_out, input, target, weight, token_weight):
    """``d loss / d q[c] = -token_weight * (1 - eps) * w[c] * log_softmax(y)[c]`` (scaled)."""
    dim, _ignore, reduction, eps, _z, cap = ctx.args
    y = input.detach()
    if cap is not None:
        y = cap * torch.tanh(y / cap)
    coef = -(1.0 - eps) * torch.log_softmax(y, dim)
    if weight is not None:
        shape = [1] * input.dim()
        shape[dim] = -1
        coef = coef * weight.detach().reshape(shape)
    scale = grad_out.detach()
    if reduction == "mean":
        n = input.numel() // max(input.shape[dim], 1)
        den = token_weight.detach().sum() if token_weight is not None else n
        scale = scale / den
    if token_weight is not None:
        scale = scale * token_weight.detach()
    if scale.dim():
        scale = scale.unsqueeze(dim)
    return (coef * scale).to(target.dtype)


_NLL_ARGS = (
    "Tensor input, Tensor target, Tensor? weight, Tensor? token_weight, int dim, "
    "int ignore_index, str reduction"
)


@torch.library.custom_op(
    "fastlsm::nll_loss", mutates_args=(), device_types="cpu", schema=f"({_NLL_ARGS}) -> Tensor"
)
def _nll_loss_op(input, target, weight, token_weight, dim, ignore_index, reduction):
    return _from_numpy(
        _losses.nll_loss(
            _to_numpy(input), _to_numpy(target), axis=dim, weight=_to_numpy(weight),
            ignore_index=ignore_index, reduction=reduction, token_weight=_to_numpy(token_weight),
        ),
        input,
    )


@_nll_loss_op.register_fake
def _(input, target, weight, token_weight, dim, ignore_index, reduction):
    return _loss_like(input, dim, reduction)


@torch.library.custom_op(
    "fastlsm::nll_loss_backward", mutates_args=(), device_types="cpu",
    schema=f"(Tensor grad_output, {_NLL_ARGS}) -> Tensor",
)
@_jit.public
def _nll_loss_backward_op(grad_output, input, target, weight, token_weight, dim, ignore_index,
                          reduction):
    s = _losses._setup(
        _to_numpy(input), _to_numpy(target), dim, _to_numpy(weight), ignore_index, reduction,
        _to_numpy(token_weight), "log_probs", False,
    )
    g = _to_numpy(grad_output.contiguous())
    _, grad = _losses._nll(s, "new", g if g.ndim else float(g))
    return _from_numpy(grad)


@_nll_loss_backward_op.register_fake
def _(grad_output, input, target, weight, token_weight, dim, ignore_index, reduction):
    return _grad_like(input, dim)


def _nll_setup(ctx, inputs, output):
    ctx.args = inputs[4:]
    ctx.save_for_backward(*inputs[:4])


def _nll_backward(ctx, grad_loss):
    if _eager(grad_loss):
        _no_double_backward("nll_loss")
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.fastlsm.nll_loss_backward(grad_loss, *ctx.saved_tensors,
                                                         *ctx.args)
    return (grad_input,) + (None,) * 6


_nll_loss_op.register_autograd(_nll_backward, setup_context=_nll_setup)


# ----------------------------------------------------------------------------- functions


def _reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction as _Reduction

        return _Reduction.legacy_get_string(size_average, reduce)
    return reduction


def _check_extras(name, input, **extras):
    used = [
        k for k, v in extras.items()
        if v is not None and (isinstance(v, torch.Tensor) or float(v) != 0.0)
    ]
    if used:
        raise TypeError(
            f"fastlsm.torch.{name}: {', '.join(used)} need CPU tensors of "
            f"{', '.join(str(d).replace('torch.', '') for d in FASTLSM_DTYPES)} (other "
            f"tensors go to PyTorch, which has no such option), got {input.dtype} on "
            f"{input.device}; move them with .cpu().float()"
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
    indices or class probabilities as target; class weights of any real value, negative
    included; NaN for a mean whose weight sum is 0, like PyTorch). Extras (keyword-only):
    ``z_loss`` adds ``z_loss * logsumexp**2`` per counted token, ``softcap`` applies
    ``softcap * tanh(input / softcap)`` first, ``token_weight`` (non-negative, target-shaped
    for indices, input's shape without the class dim for probabilities) scales each token's
    loss and its share of the mean's denominator. See :func:`fastlsm.cross_entropy` and the
    module docstring for the deliberate differences. Errors: ``ValueError`` /
    ``TypeError`` from :func:`fastlsm.cross_entropy` (an ``IndexError`` too for a bad
    target).

    Examples
    --------
    >>> import torch, fastlsm.torch as ft
    >>> x = torch.randn(4, 10, requires_grad=True)
    >>> loss = ft.cross_entropy(x, torch.tensor([1, 0, 9, -100]), label_smoothing=0.1)
    >>> loss.backward()
    """
    reduction = _reduction(size_average, reduce, reduction)
    soft = isinstance(target, torch.Tensor) and target.is_floating_point()
    target_ok = isinstance(target, torch.Tensor) and target.device.type == "cpu" and (
        not soft or _handled(target)
    )
    if not (target_ok and _handled(input, weight, token_weight)):
        _check_extras("cross_entropy", input, z_loss=z_loss, softcap=softcap,
                      token_weight=token_weight)
        return F.cross_entropy(
            input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing,
        )
    dim = _class_dim(input)
    with_grad = input.requires_grad and torch.is_grad_enabled() and reduction != "none"
    loss, _ = torch.ops.fastlsm.cross_entropy(
        input, target, weight, token_weight, dim, ignore_index, reduction,
        float(label_smoothing), float(z_loss), None if softcap is None else float(softcap),
        with_grad,
    )
    return loss


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
    """``torch.nn.functional.nll_loss`` computed by fastlsm, plus ``token_weight``.

    Class weights of any real value; a mean whose weight sum is 0 is NaN (or ``inf``), as in
    PyTorch. Errors as :func:`fastlsm.nll_loss`.
    """
    reduction = _reduction(size_average, reduce, reduction)
    target_ok = isinstance(target, torch.Tensor) and target.device.type == "cpu"
    if not (target_ok and _handled(input, weight, token_weight)):
        _check_extras("nll_loss", input, token_weight=token_weight)
        return F.nll_loss(
            input, target, weight=weight, ignore_index=ignore_index, reduction=reduction
        )
    return torch.ops.fastlsm.nll_loss(
        input, target, weight, token_weight, _class_dim(input), ignore_index, reduction
    )


def _softmax_dim(name, input, dim, stacklevel, dtype):
    if dim is None:
        dim = F._get_softmax_dim(name, input.dim(), stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    return input, dim


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.log_softmax`` computed by fastlsm (exact for large logits)."""
    input, dim = _softmax_dim("log_softmax", input, dim, _stacklevel + 1, dtype)
    if not _handled(input) or input.dim() == 0:
        return F.log_softmax(input, dim)
    return torch.ops.fastlsm.log_softmax(input, dim % input.dim())


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.softmax`` computed by fastlsm."""
    input, dim = _softmax_dim("softmax", input, dim, _stacklevel + 1, dtype)
    if not _handled(input) or input.dim() == 0:
        return F.softmax(input, dim)
    return torch.ops.fastlsm.softmax(input, dim % input.dim())


def logsumexp(input, dim, keepdim=False):
    """``torch.logsumexp`` computed by fastlsm (``dim``: an int or a tuple of ints)."""
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not _handled(input) or input.dim() == 0 or not dims:
        return torch.logsumexp(input, dim, keepdim)
    return torch.ops.fastlsm.logsumexp(input, dims, keepdim)


# ----------------------------------------------------------------------------- modules

from ._torch_nn import CrossEntropyLoss, LogSoftmax, NLLLoss, Softmax  # noqa: E402
