"""NumPy baselines: the idioms a user writes, timed beside fastlsm (not references).

Each takes the logits in their own dtype and computes in it (float32 in, float32 out), as
user code does; :func:`widened` runs one on 16-bit logits the way NumPy users must (NumPy
has no fast 16-bit math: convert to float32 first, inside the timing). The float64
references that tests compare against are in ``tests/naive.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def lse(x: np.ndarray) -> np.ndarray:
    """``logsumexp`` over the last axis, keepdims."""
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def log_softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.subtract(x, lse(x), out=out)


def softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True), out=out)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def cross_entropy(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    r = np.arange(x.shape[0])
    return (lse(x)[:, 0] - x[r, t]).mean()


def cross_entropy_with_grad(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(x.shape[0])
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=-1, keepdims=True)
    loss = (m[:, 0] + np.log(s[:, 0]) - x[r, t]).mean()
    grad = e / s
    grad[r, t] -= 1
    grad /= x.shape[0]
    return loss, grad


def beam_step(x: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``2K`` of ``log_softmax(x) + scores`` per batch: (values, tokens, beams)."""
    b, k, v = x.shape
    n = 2 * k
    cand = (log_softmax(x) + scores[..., None]).reshape(b, k * v)
    top = np.argpartition(-cand, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(cand, top, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(vals, order, axis=1), top % v, top // v


def sequence_logprobs(x: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tok = np.take_along_axis(log_softmax(x), tokens[..., None], axis=-1)[..., 0]
    return tok, tok.sum(axis=-1)


def widened(fn: Callable, x: np.ndarray, *args) -> Callable[[], object]:
    """``fn(x, *args)`` as a call; 16-bit ``x`` is converted to float32 inside the call."""
    if x.dtype.itemsize == 2:
        return lambda: fn(x.astype(np.float32), *args)
    return lambda: fn(x, *args)
