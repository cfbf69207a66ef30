"""Cross-entropy and NLL losses with PyTorch semantics, fused forward and backward.

Semantics are those of ``torch.nn.functional.cross_entropy`` / ``nll_loss`` with the class
axis given by ``axis`` (``axis=1`` is PyTorch's ``[N, C, d1, ..., dK]`` layout), plus three
extras:

- ``z_loss``: adds ``z_loss * lse**2`` to each counted token's loss (PaLM, Liger-Kernel);
  ``lse`` is the log-sum-exp of the token's (softcapped) logits. Class weights do not scale
  it; ``token_weight`` does.
- ``softcap``: logits become ``softcap * tanh(logits / softcap)`` first (Gemma 2); the
  gradient goes through it.
- ``token_weight`` (target-shaped, non-negative): scales each token's loss and its share of
  the mean's denominator.

Per-token loss with class-index target ``t`` (``w`` = ``weight`` or ones, ``W = sum(w)``,
``C`` classes, ``eps`` = ``label_smoothing``, ``lp = log_softmax(logits)``)::

    token_weight * ((1 - eps) * w[t] * -lp[t] + eps / C * sum_c w[c] * -lp[c] + z_loss * lse**2)

and with class probabilities ``q`` (soft targets)::

    token_weight * (-sum_c w[c] * ((1 - eps) * q[c] + eps / C) * lp[c] + z_loss * lse**2)

``reduction="mean"`` divides the sum by ``sum(w[t] * token_weight)`` over non-ignored
tokens (index targets) or by ``sum(token_weight)`` (the number of positions without it) for
probability targets, exactly like PyTorch. When every target is ignored the mean is NaN
(0/0), as in PyTorch; ``"sum"`` is then 0. Class weights may be any real values, as in
PyTorch: a denominator of 0 gives ``±inf`` or NaN.

bfloat16 and float16 logits are computed in float32: losses and ``lse`` are float32, the
gradient is of the logits' dtype (each value rounded once; ``inplace=True`` writes it over
the 16-bit logits).

Scalar results (``"mean"``/``"sum"``) are 0-d arrays of the logits' dtype; ``"none"`` gives
an array shaped like the target (for probability targets: the logits' shape without the
class axis). All sums are accumulated in float64, per row then serially in row order, so
every result is bitwise identical for any thread count.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple

import numpy as np

from . import _jit
from ._dtypes import fast_dtype, fast_view, is_half, kernel_view, logits_array, result_dtype
from ._kernels import cross_entropy as _k
from ._kernels.memory import fresh_output
from ._validate import as_rows, axis_index, class_weights, readable

__all__ = [
    "CrossEntropyResult",
    "InvalidTargetError",
    "cross_entropy",
    "cross_entropy_with_grad",
    "nll_loss",
]

_REDUCTIONS = {"none": _k.NONE, "mean": _k.MEAN, "sum": _k.SUM}
_I64 = np.iinfo(np.int64)


class InvalidTargetError(ValueError, IndexError):
    """A class-index target outside ``[0, C)`` that is not ``ignore_index``.

    A ``ValueError`` (and, for code written against PyTorch, an ``IndexError``).
    """


class CrossEntropyResult(NamedTuple):
    """What :func:`cross_entropy_with_grad` returns (unpacks as ``loss, grad, lse``)."""

    loss: np.ndarray
    """The loss: a 0-d array (``"mean"``/``"sum"``) or target-shaped (``"none"``)."""
    grad: np.ndarray
    """``grad_output * d loss / d logits``: the logits' shape and dtype (``logits`` itself
    when ``inplace=True``)."""
    lse: np.ndarray | None
    """log-sum-exp of each token's (softcapped) logits, target-shaped, when asked."""


# ----------------------------------------------------------------------------- validation


def _reduction(reduction) -> int:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return _REDUCTIONS[reduction]


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a real number, got an array of shape {value.shape}")
    return float(value)


def _label_smoothing(value) -> float:
    eps = _real(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0 and 1, got {eps}")
    return eps


def _z_loss(value) -> float:
    z = _real(value, "z_loss")
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be a finite number >= 0 (0 disables it), got {z}")
    return z


def _softcap(value) -> float:
    if value is None:
        return 0.0
    cap = _real(value, "softcap")
    if not (math.isfinite(cap) and cap > 0.0):
        raise ValueError(f"softcap must be a finite number > 0 (or None to disable it), got {cap}")
    return cap


def _ignore_index(value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("ignore_index must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {type(value).__name__}") from None
    if not _I64.min <= value <= _I64.max:
        raise ValueError(f"ignore_index must fit in int64, got {value}")
    return value


def _nonneg_weights(w, shape: tuple, name: str, what: str) -> np.ndarray:
    w = class_weights(w, shape, name, what)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} must be finite; found {w[~np.isfinite(w)][0]}")
    if np.any(w < 0):
        bad = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"{name} must be non-negative; found {w[bad]} at flat position {bad}")
    return w


class _Setup(NamedTuple):
    x: np.ndarray  # the logits as given (float ndarray)
    ax: int
    rows: np.ndarray  # [N, C] C-contiguous
    outer: tuple  # target shape (logits' shape without the class axis)
    target: np.ndarray  # int64 [N] or logits-dtype [N, C]
    soft: bool
    weight: np.ndarray
    token_weight: np.ndarray
    ignore_index: int
    reduction: int


_EMPTY = np.empty(0, np.float64)


def _setup(logits, target, axis, weight, ignore_index, reduction, token_weight, name, soft_ok):
    red = _reduction(reduction)
    ignore = _ignore_index(ignore_index)
    x = logits_array(logits, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the classes), got a scalar")
    ax = axis_index(axis, x.ndim)
    c = x.shape[ax]
    outer = x.shape[:ax] + x.shape[ax + 1 :]
    if isinstance(target, np.ndarray):
        t = target
    elif hasattr(target, "__array__") or isinstance(target, (list, tuple, int, float, np.generic)):
        t = np.asarray(target)
    else:
        raise TypeError(f"target must be a NumPy array, got {type(target).__name__}")
    if t.dtype.kind == "f" or is_half(t.dtype):
        if not soft_ok:
            raise TypeError(
                f"target must hold class indices (int32 or int64) for nll_loss, got {t.dtype}; "
                f"convert it with target.astype(np.int64)"
            )
        if t.shape != x.shape:
            raise ValueError(
                f"a float target holds class probabilities and must have the {name}' shape "
                f"{x.shape}, got {t.shape}; for class indices pass an integer array of shape "
                f"{outer}"
            )
        soft = True
        tgt = as_rows(np.asarray(t, dtype=result_dtype(x.dtype)), ax)
    elif t.dtype.kind in "iu":
        if t.shape != outer:
            raise ValueError(
                f"target must have shape {outer} ({name}' shape {x.shape} without axis {ax}), "
                f"got {t.shape}"
            )
        soft = False
        tgt = np.array(t, dtype=np.int64, order="C").reshape(-1)  # private: N elements
        if t.dtype.kind == "u" and t.dtype.itemsize == 8 and t.size and t.max() > _I64.max:
            tgt = np.where(t.reshape(-1) > _I64.max, _I64.max, tgt)  # out of range anyway
    else:
        raise TypeError(
            f"target must hold class indices (int32 or int64) or class probabilities "
            f"(float), got {t.dtype}; convert it with target.astype(np.int64)"
        )
    w = _EMPTY if weight is None else class_weights(weight, (c,), "weight", "one per class")
    tw = (
        _EMPTY
        if token_weight is None
        else _nonneg_weights(token_weight, outer, "token_weight", "the target's shape")
    )
    rows = as_rows(x, ax)
    return _Setup(x, ax, rows, outer, tgt, soft, w, tw, ignore, red)


def _raise_bad_target(s: _Setup, bad: int) -> None:
    value = int(s.target[bad])
    pos = np.unravel_index(bad, s.outer) if s.outer else ()
    where = f"target[{', '.join(str(int(p)) for p in pos)}]" if pos else "target"
    c = s.rows.shape[1]
    raise InvalidTargetError(
        f"{where} = {value} is out of range for {c} classes: class indices must be in "
        f"[0, {c - 1}] or equal ignore_index={s.ignore_index}"
    )


def _grad_output(grad_output, s: _Setup) -> tuple[float, np.ndarray]:
    if isinstance(grad_output, (numbers.Real, np.generic)) and not isinstance(
        grad_output, (bool, np.bool_)
    ):
        return float(grad_output), _EMPTY
    g = logits_array(grad_output, "grad_output")
    if g.ndim == 0:
        return float(g), _EMPTY
    if s.reduction != _k.NONE:
        raise ValueError(
            f"grad_output must be a scalar with reduction="
            f"{'mean' if s.reduction == _k.MEAN else 'sum'!r}, got shape {g.shape}"
        )
    if g.shape != s.outer:
        raise ValueError(
            f"grad_output must be a scalar or have the target's shape {s.outer}, got {g.shape}"
        )
    return 1.0, np.array(g, dtype=np.float64, order="C").reshape(-1)  # private: one signature


def _run(
    s: _Setup, grad_mode, grad_output, *, loss_kind="ce", eps=0.0, z=0.0, cap=0.0, return_lse=False
):
    """Allocate the outputs, call the kernel, translate its status: the one path of every loss.

    ``loss_kind``: "ce" (cross-entropy; index or probability targets, from ``s``) or "nll".
    ``grad_mode``: None (no gradient), "new" or "inplace" (over the logits). Returns
    ``(loss, grad or None, lse or None)``.
    """
    x, rows = s.x, s.rows
    n, c = rows.shape
    dt = result_dtype(x.dtype)  # of the loss and lse; the gradient is of x's dtype
    loss = np.empty(n if s.reduction == _k.NONE else 1, dt)
    work = np.empty(n) if s.reduction != _k.NONE else _EMPTY
    lse = np.empty(n, dt) if return_lse else np.empty(0, dt)
    grad_arr = None
    run = _jit.launch(_k.nll_loss_rows if loss_kind == "nll" else _k.cross_entropy_rows,
                      rows.size, n)  # before fresh_output: its page faulting runs on these threads
    if grad_mode is None:
        grad = np.empty((0, c), x.dtype)
        scale, per_token = 1.0, _EMPTY
    else:
        scale, per_token = _grad_output(grad_output, s)
        if grad_mode == "inplace":
            grad = rows  # a view of x, or the private copy stored back below
            grad_arr = x
        else:
            moved = fresh_output(s.outer + (c,), x.dtype)
            grad = moved.reshape(n, c)
            grad_arr = moved if s.ax == x.ndim - 1 else np.moveaxis(moved, -1, s.ax)
    kx, kg = kernel_view(rows), kernel_view(grad)  # 16-bit data: the kernels' views
    w, tw, red = s.weight, s.token_weight, s.reduction
    if loss_kind == "nll":
        status = run(
            kx, s.target, w, tw, s.ignore_index, red, scale, per_token, loss, kg, work
        )
    else:  # index or probability targets: the target array's kind
        status = run(
            kx, s.target, w, tw, s.ignore_index, eps, z, cap, red, scale, per_token,
            loss, lse, kg, work,
        )  # fmt: skip
    if status >= 0:
        _raise_bad_target(s, int(status))
    if grad_mode == "inplace" and not np.shares_memory(rows, x):
        np.moveaxis(x, s.ax, -1)[...] = rows.reshape(s.outer + (c,))
    loss = loss.reshape(s.outer if red == _k.NONE else ())
    lse = lse.reshape(s.outer) if return_lse else None
    return loss, grad_arr, lse


def _check_inplace(logits, s: _Setup) -> None:
    if not isinstance(logits, np.ndarray) or logits is not s.x:
        raise TypeError(
            "inplace=True needs logits as a native-byte-order float32, float64, bfloat16 or "
            "float16 NumPy array (the gradient is written over it); pass inplace=False otherwise"
        )
    if not logits.flags.writeable:
        raise ValueError("inplace=True needs writeable logits; pass inplace=False or a copy")
    if s.soft and np.shares_memory(logits, s.target):
        raise ValueError("inplace=True: target shares memory with logits; pass a copy")


# ----------------------------------------------------------------------------- public API


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    token_weight=None,
):
    """Cross-entropy between logits and targets (PyTorch's ``F.cross_entropy``, any axis).

    Parameters
    ----------
    logits : array_like, float32, float64, bfloat16 (``ml_dtypes``) or float16
        Unnormalized scores, any shape with the classes along ``axis``; any byte order and
        layout, read-only arrays included. Integer logits: ``TypeError`` (as in PyTorch).
    target : array_like
        Class indices (any integer dtype, the logits' shape without ``axis``; bool is
        refused) or class probabilities (float, the logits' shape; cast to the logits'
        dtype, float32 for 16-bit logits). Read-only is fine.
    axis : int, optional
        The class axis. Default -1; ``axis=1`` is PyTorch's ``[N, C, d1, ..., dK]`` layout.
    weight : array_like, optional
        Weight per class, shape ``[C]``: any real values (negative, zero, inf, NaN) of any
        real dtype, as PyTorch. A ``"mean"`` whose denominator ``sum(weight[t])`` is 0 is
        ``±inf`` or NaN, as in PyTorch.
    ignore_index : int, optional
        Index targets equal to it add nothing to the loss, gradient or mean's denominator.
        Any integer (negative or >= C). Ignored for probability targets, as in PyTorch.
    reduction : {"mean", "sum", "none"}, optional
        See the module docstring for the exact mean denominator.
    label_smoothing : float in [0, 1], optional
        PyTorch's formula, for index and probability targets.
    z_loss : float >= 0, optional
        Adds ``z_loss * lse**2`` per counted token.
    softcap : float > 0, optional
        Applies ``softcap * tanh(logits / softcap)`` first.
    token_weight : array_like, optional
        Non-negative, target-shaped (logits' shape without ``axis``): scales each token's loss
        and its share of the mean's denominator.

    Returns
    -------
    ndarray
        0-d array of the logits' dtype (float32 for bfloat16/float16 logits) for
        ``"mean"``/``"sum"``; target-shaped for ``"none"``.

    Raises
    ------
    InvalidTargetError
        (a ``ValueError``) for a class index outside ``[0, C)`` that is not ``ignore_index``;
        the message names the first bad position and value.
    TypeError, ValueError
        For non-float logits, shape mismatches, bad options or weights.

    Notes
    -----
    One read of the logits: each row is visited once (max, then exp-sum while in cache).
    Sums are accumulated in float64 and reduced in row order (bitwise deterministic).

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> float(fastlsm.cross_entropy(logits, np.array([0, 2])))  # doctest: +ELLIPSIS
    0.6699...
    >>> fastlsm.cross_entropy(logits, np.array([0, -100]), reduction="none")  # doctest: +ELLIPSIS
    array([0.2413..., 0.  ...])
    """
    if weight is None and token_weight is None and softcap is None:
        loss = _one_thread(logits, target, axis, ignore_index, reduction, label_smoothing, z_loss)
        if loss is not None:
            return loss
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                          z_loss, softcap, token_weight)


@_jit.public
def _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing,
                   z_loss, softcap, token_weight):
    """:func:`cross_entropy` for every argument :func:`_one_thread` does not take."""
    s = _setup(logits, target, axis, weight, ignore_index, reduction, token_weight, "logits", True)
    eps, z, cap = _label_smoothing(label_smoothing), _z_loss(z_loss), _softcap(softcap)
    loss, _, _ = _run(s, None, 1.0, eps=eps, z=z, cap=cap)
    return loss


_INT64 = np.dtype(np.int64)
# Per logits dtype (by identity; kept alive here): the float result dtype, and the size-0 lse
# and gradient the fast path hands the kernel (never written).
_FAST = {id(np.dtype(d)): (np.dtype(d), np.dtype(d), np.empty(0, d), np.empty((0, 0), d))
         for d in (np.float32, np.float64)}


def _fast_dtype(dt: np.dtype):
    """The :data:`_FAST` entry of logits dtype ``dt`` (bfloat16/float16 entries made on first
    sight), None for a dtype the fast path does not take."""
    entry = _FAST.get(id(dt))
    if entry is None and fast_dtype(dt):
        f32 = result_dtype(dt)
        entry = _FAST[id(dt)] = (dt, f32, np.empty(0, f32), kernel_view(np.empty((0, 0), dt)))
    return entry


def _one_thread(logits, target, axis, ignore_index, reduction, eps, z):
    """The per-token :func:`cross_entropy` (no weights, no softcap), before any bookkeeping:
    the loss when ``logits`` is a native, aligned, C-contiguous float32/float64/bfloat16/
    float16 ``[N, C]`` ndarray (class axis last), ``target`` a C-contiguous int64 ``[N]``
    ndarray (read-only ones: ``_validate.readable``), the options plain valid values
    (``str``, ``int``, ``float``) and the problem gets one thread (:func:`_jit.one_thread`);
    computed by the kernel's serial copy called directly (:func:`_jit.serial_entry`). Else
    None, also for an invalid target (the general path then raises its error): the same
    bits and errors as the general path."""
    if type(logits) is not np.ndarray or type(target) is not np.ndarray:
        return None
    dt = logits.dtype
    fast = _fast_dtype(dt)
    if fast is None or logits.ndim != 2 or type(axis) is not int or axis not in (-1, 1):
        return None
    n, c = logits.shape
    xf, tf = logits.flags, target.flags
    if not (n and c and xf.c_contiguous and xf.aligned and target.dtype is _INT64
            and target.shape == (n,) and tf.c_contiguous and tf.aligned):
        return None
    red = _REDUCTIONS.get(reduction) if type(reduction) is str else None
    if red is None or type(ignore_index) is not int or not _I64.min <= ignore_index <= _I64.max:
        return None
    if type(eps) is not float or type(z) is not float or not (0.0 <= eps <= 1.0 and 0.0 <= z
                                                                < math.inf):
        return None
    if not _jit.one_thread(logits.size, n):
        return None
    _, rdt, lse, grad = fast  # lse, grad: size 0, never written
    loss = np.empty(n if red == _k.NONE else 1, rdt)
    if not xf.writeable:  # read-only: an alias (one kernel signature)
        logits = readable(logits)
    if not tf.writeable:
        target = readable(target)
    args = (fast_view(logits), target, _EMPTY, _EMPTY, ignore_index, eps, z, 0.0, red, 1.0,
            _EMPTY, loss, lse, grad, _EMPTY)  # work: the kernel allocates its own for mean/sum
    run = _jit.serial_entry(_k.cross_entropy_rows, id(dt), args)
    if run is None or run(*args) >= 0:
        return None
    return loss.reshape((n,) if red == _k.NONE else ())


@_jit.public
def cross_entropy_with_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    token_weight=None,
    grad_output=1.0,
    inplace=False,
    return_lse=False,
):
    """Cross-entropy and its gradient with respect to the logits, in one pass.

    Same parameters and semantics as :func:`cross_entropy`, plus:

    Parameters
    ----------
    grad_output : float or array_like, optional
        Upstream gradient ``d out / d loss``: the gradient returned is
        ``grad_output * d loss / d logits``. A scalar, or with ``reduction="none"`` an array
        shaped like the target (per-token upstream gradients). A scalar with ``"none"`` gives
        the gradient of ``grad_output * sum(per-token losses)``.
    inplace : bool, optional
        Write the gradient over ``logits`` (which must then be a writeable float32/float64
        ndarray). Nothing of the logits' size is allocated when the class axis is the last
        axis of a C-contiguous array; other layouts go through one temporary copy.
    return_lse : bool, optional
        Also return the log-sum-exp of each token's (softcapped) logits.

    Returns
    -------
    CrossEntropyResult
        ``(loss, grad, lse)``: ``grad`` has the logits' shape and dtype (``logits`` itself
        when ``inplace``; a view with the class axis stored last when ``axis`` is not last);
        ``lse`` is target-shaped, or None unless ``return_lse``.

    Notes
    -----
    Ignored tokens get zero gradient rows. With ``"mean"`` the gradient is divided by the
    same denominator as the loss. The gradient of each row is written while the row is
    still in cache: one read and one write of the logits in total.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> r = fastlsm.cross_entropy_with_grad(logits, np.array([0, 2]), return_lse=True)
    >>> r.grad.sum(axis=-1)  # each gradient row sums to 0  # doctest: +SKIP
    array([0., 0.])
    >>> r.grad[1]  # (softmax - onehot) / 2  # doctest: +ELLIPSIS
    array([ 0.1666...,  0.1666..., -0.3333...])
    """
    s = _setup(logits, target, axis, weight, ignore_index, reduction, token_weight, "logits", True)
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    if not isinstance(return_lse, (bool, np.bool_)):
        raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
    if inplace:
        _check_inplace(logits, s)
    eps, z, cap = _label_smoothing(label_smoothing), _z_loss(z_loss), _softcap(softcap)
    mode = "inplace" if inplace else "new"
    loss, grad, lse = _run(s, mode, grad_output, eps=eps, z=z, cap=cap, return_lse=bool(return_lse))
    return CrossEntropyResult(loss, grad, lse)


@_jit.public
def nll_loss(
    log_probs,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    token_weight=None,
):
    """Negative log-likelihood of class-index targets (PyTorch's ``F.nll_loss``, any axis).

    ``loss_i = -token_weight[i] * weight[t_i] * log_probs[i, t_i]`` for non-ignored tokens;
    ``"mean"`` divides by ``sum(weight[t_i] * token_weight[i])`` over non-ignored tokens.
    Parameters, returns and errors as :func:`cross_entropy` (index targets only).

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> lp = fastlsm.log_softmax(np.array([[2.0, 0.5, -1.0]]))
    >>> float(fastlsm.nll_loss(lp, np.array([0])))  # doctest: +ELLIPSIS
    0.2413...
    """
    s = _setup(
        log_probs, target, axis, weight, ignore_index, reduction, token_weight, "log_probs", False
    )
    loss, _, _ = _run(s, None, 1.0, loss_kind="nll")
    return loss


def _nll(s: _Setup, grad_mode, grad_output):
    """NLL loss and, when ``grad_mode == "new"``, ``grad_output * d loss / d log_probs``."""
    loss, grad, _ = _run(s, grad_mode, grad_output, loss_kind="nll")
    return loss, grad
