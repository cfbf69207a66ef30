"""Every public function, driven with generated argument kinds: a result or a clean error.

Each example starts from a valid call and replaces some arguments by another *kind* of the
same data: another dtype (narrow, unsigned, bool, float16, complex, object), the other byte
order, read-only, strided, 0-d, empty, a list, a scalar, a wrong shape, a non-array. The
function must return, or raise ``TypeError``/``ValueError`` (``AxisError`` and
``InvalidTargetError`` are ValueErrors); any other exception (a Numba ``TypingError``,
``LoweringError``, ``IndexError``, ``AttributeError``, ...) fails the test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba.core.errors import NumbaError

import fastlsm

SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.uint16,
          np.int32, np.uint32, np.int64, np.uint64, np.bool_, np.complex64, object]


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _strided(a):
    """The same values in a non-contiguous array (every other element of a bigger one)."""
    a = np.asarray(a)
    big = np.repeat(a[..., None], 2, axis=-1) if a.ndim else np.array([a, a])
    return big[..., 0] if a.ndim else big[0]


def _swapped(a):
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("S")) if a.dtype.byteorder != "|" else a


def _unaligned(a):
    a = np.ascontiguousarray(a)
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
    return buf.view(a.dtype).reshape(a.shape) if a.dtype.itemsize > 1 and a.nbytes else a


TRANSFORMS = {
    "same": lambda a: a,
    "read_only": _read_only,
    "strided": _strided,
    "swapped": _swapped,
    "unaligned": lambda a: _unaligned(a) if np.asarray(a).dtype != object else a,
    "list": lambda a: np.asarray(a).tolist(),
    "scalar": lambda a: np.asarray(a).reshape(-1)[0] if np.size(a) else 0.0,
    "zero_d": lambda a: np.asarray(np.asarray(a).reshape(-1)[0] if np.size(a) else 0.0),
    "empty": lambda a: np.asarray(a).reshape(-1)[:0] if np.ndim(a) == 0 else np.asarray(a)[:0],
    "transposed": lambda a: np.asarray(a).T,
    "flat": lambda a: np.asarray(a).reshape(-1),
    "none": lambda a: None,
    "string": lambda a: "abc",
    "object": lambda a: object(),
}


BENIGN = ["same", "read_only", "strided", "swapped", "unaligned", "list"]


@st.composite
def kind_of(draw, base):
    """``base`` as another kind of argument (see the module docstring): mostly kinds that
    hold the same data (read-only, strided, swapped, unaligned, a list), else anything."""
    a = np.asarray(base)
    if draw(st.floats(0, 1)) < 0.3:
        dtype = draw(st.sampled_from(DTYPES))
        with np.errstate(all="ignore"):
            a = a.astype(dtype) if dtype is not object else a.astype(object)
    names = BENIGN if draw(st.floats(0, 1)) < 0.7 else sorted(TRANSFORMS)
    name = draw(st.sampled_from(names))
    with np.errstate(all="ignore"):
        return TRANSFORMS[name](a)


def maybe(draw, base, p_change=0.5):
    """``base`` unchanged, or (with probability ``p_change``) another kind of it."""
    if draw(st.floats(0, 1)) < p_change:
        return draw(kind_of(base))
    return base


def option(draw, valid, invalid):
    """Mostly one of the ``valid`` values, sometimes an ``invalid`` one."""
    return draw(st.sampled_from(valid if draw(st.floats(0, 1)) < 0.85 else invalid))


OK = (TypeError, ValueError)


def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OK as e:
        assert not isinstance(e, NumbaError), e  # whatever Numba's class hierarchy becomes
        return None


def logits(draw, shape):
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape) * 3
    if draw(st.booleans()):
        x = x.astype(np.float32)
    if x.size and draw(st.booleans()):
        x.reshape(-1)[0] = draw(st.sampled_from([-np.inf, np.inf, np.nan, 1e30, -1e4]))
    return x


shapes = st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 3))
AXES = [-1, 0, 1, 2, 3, None, (0,), (0, 2), (1, 1), (), 1.5, "a", np.int64(1)]  # last 3: bad


# ----------------------------------------------------------------------------- normalizers


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
@SETTINGS
@given(data=st.data(), shape=shapes)
def test_normalizers_accept_or_raise_cleanly(name, data, shape):
    draw = data.draw
    x = maybe(draw, logits(draw, shape), 0.6)
    kw = {}
    if draw(st.booleans()):
        kw["axis"] = option(draw, AXES[:-3] + [np.int64(1)], AXES[-3:-1])
    if name == "logsumexp" and draw(st.booleans()):
        kw["keepdims"] = option(draw, [True, False], [1, None])
    if draw(st.booleans()):
        ref = call(getattr(fastlsm, name), x, **kw)
        if ref is not None:
            kw["out"] = maybe(draw, np.zeros_like(ref), 0.5)
    call(getattr(fastlsm, name), x, **kw)


# ----------------------------------------------------------------------------- losses


@st.composite
def loss_args(draw, soft_ok=True):
    shape = draw(st.tuples(st.integers(0, 3), st.integers(1, 4)))
    n, c = shape
    x = logits(draw, shape)
    if soft_ok and draw(st.booleans()):
        t = np.abs(np.random.default_rng(1).standard_normal(shape))
    else:
        t = np.random.default_rng(2).integers(0, c + (n % 2), n)  # sometimes c: invalid
        if n:
            t[0] = -100
    kw = {}
    if draw(st.booleans()):
        kw["weight"] = maybe(draw, np.linspace(-1, 2, c), 0.4)
    if draw(st.booleans()):
        kw["token_weight"] = maybe(draw, np.ones(n), 0.4)
    if draw(st.booleans()):
        kw["ignore_index"] = option(draw, [-100, -1, 0, 2**40], [2**70, 1.5, True, None])
    if draw(st.booleans()):
        kw["reduction"] = option(draw, ["mean", "sum", "none"], ["avg", None])
    if draw(st.booleans()):
        kw["axis"] = option(draw, [-1, 0, 1], [2, None])
    if soft_ok and draw(st.booleans()):
        kw["label_smoothing"] = option(draw, [0.0, 0.1, 1.0, np.float32(0.5)], [2.0, "x"])
    if soft_ok and draw(st.booleans()):
        kw["z_loss"] = option(draw, [0.0, 1e-3], [-1.0, np.inf])
    if soft_ok and draw(st.booleans()):
        kw["softcap"] = option(draw, [None, 3.0], [0.0, -1.0, np.nan])
    return maybe(draw, x, 0.5), maybe(draw, t, 0.4), kw


@SETTINGS
@given(args=loss_args(), data=st.data())
def test_cross_entropy_accepts_or_raises_cleanly(args, data):
    x, t, kw = args
    call(fastlsm.cross_entropy, x, t, **kw)


@SETTINGS
@given(args=loss_args(), data=st.data())
def test_cross_entropy_with_grad_accepts_or_raises_cleanly(args, data):
    x, t, kw = args
    draw = data.draw
    if draw(st.booleans()):
        kw["grad_output"] = maybe(draw, np.float64(2.0), 0.5)
    if draw(st.booleans()):
        kw["inplace"] = option(draw, [True, False], [1])
    if draw(st.booleans()):
        kw["return_lse"] = option(draw, [True, False], ["yes"])
    call(fastlsm.cross_entropy_with_grad, x, t, **kw)


@SETTINGS
@given(args=loss_args(soft_ok=False))
def test_nll_loss_accepts_or_raises_cleanly(args):
    x, t, kw = args
    call(fastlsm.nll_loss, x, t, **kw)


# ----------------------------------------------------------------------------- sequences, beams


@pytest.mark.parametrize("name", ["sequence_logprobs", "beam_step"])
@SETTINGS
@given(data=st.data(), shape=shapes)
def test_sequence_logprobs_and_beam_step_accept_or_raise_cleanly(name, data, shape):
    draw = data.draw
    b, t, v = shape
    x = maybe(draw, logits(draw, shape), 0.5)
    if name == "sequence_logprobs":  # tokens [B, T], mask
        second = np.random.default_rng(3).integers(0, v, (b, t))
        key, value = "mask", maybe(draw, np.random.default_rng(4).random((b, t)) < 0.7, 0.5)
    else:  # beam scores [B, K], num_candidates
        second = np.zeros((b, t))
        key, value = "num_candidates", option(draw, [None, 1, 2], [0, 10**6, 1.5, True])
    kw = {key: value} if draw(st.booleans()) else {}
    call(getattr(fastlsm, name), x, maybe(draw, second, 0.5), **kw)


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_beam_search_accepts_or_raises_cleanly(data):
    draw = data.draw
    vocab = 4
    kind = draw(kind_of(np.zeros((2, vocab)))) if draw(st.booleans()) else None

    def step(ids, parents):
        logp = np.log(np.full((len(ids), vocab), 1.0 / vocab))
        logp[:, 0] -= 1.0
        if kind is None:
            return logp
        return kind if not isinstance(kind, np.ndarray) or kind.shape != (2, vocab) else \
            logp.astype(kind.dtype) if kind.dtype.kind == "f" else kind

    ids = maybe(draw, np.array([[1, 2]]), 0.5)
    kw = {
        "num_beams": option(draw, [1, 2], [0, 2.5]),
        "max_new_tokens": option(draw, [1, 3], [0]),
        "eos_token_id": option(draw, [0, [0, 3], None], [-1, "x", 1.5]),
    }
    call(fastlsm.beam_search, step, ids, **kw)
