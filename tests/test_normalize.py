"""fastlsm.log_softmax, softmax and logsumexp: values, layouts, ``out=``, errors, special values.

References are the float64 functions of ``tests/naive.py`` (``np.longdouble`` where a test
measures the error of float64 results). PyTorch parity tests request the ``torch_or_skip``
fixture and skip cleanly without PyTorch; every other test runs everywhere.

Special values are asserted as documented in the table of ``fastlsm/normalize.py``.
Thread counts, determinism across threads and concurrent calls: ``tests/test_threads.py``.
"""

from __future__ import annotations

import doctest

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastlsm
import fastlsm.normalize
from fastlsm._jit import SERIAL_WORK
from fastlsm._jit import kernel as kernel_fn
from fastlsm._kernels import normalize as K
from fastlsm._kernels.math import flog, like
from fastlsm._kernels.memory import store_fence, stream_affine, stream_divide
from fastlsm._kernels.rows import exp_store_sum, row_max, row_shifted_sumexp

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

DTYPES = [np.float32, np.float64]
FUNCS = ["log_softmax", "softmax", "logsumexp"]
ELEMENTWISE = ["log_softmax", "softmax"]
inf, nan = np.inf, np.nan

SHAPES = [(7,), (3, 8), (2, 3, 5), (2, 3, 2, 5)]
AXES = [(shape, axis) for shape in SHAPES for axis in range(-len(shape), len(shape))]


def run(name, x, axis=-1, **kw):
    return getattr(fastlsm, name)(x, axis, **kw)


def reference(name, x, axis=-1, dtype=np.float64):
    return getattr(naive, name)(x, axis, dtype=dtype)


def rounded(ref, dtype):
    """The reference rounded to ``dtype`` (overflow to inf is the correct rounding)."""
    with np.errstate(over="ignore"):
        return np.asarray(ref).astype(dtype)


def assert_like_reference(got, x, name, axis, tol):
    """Same dtype and shape as the reference, the same NaN and +-inf positions, and finite
    values within ``tol`` (``rtol``/``atol``: the ``tolerance`` fixture of conftest.py)."""
    x = np.asarray(x)
    want = rounded(reference(name, x, axis), x.dtype)
    assert got.dtype == x.dtype
    assert got.shape == want.shape
    assert_same_nonfinite(got, want)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], **tol)


def assert_same_nonfinite(got, want):
    """NaN at the same positions, +inf and -inf at the same positions."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions")
    np.testing.assert_array_equal(
        np.where(np.isinf(got), got, 0), np.where(np.isinf(want), want, 0), err_msg="infinities"
    )


def same_bits(a, b):
    """Bitwise equality (NaN payloads included), shapes and dtypes equal."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape, axis", AXES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_every_ndim_and_axis(name, shape, axis, dtype, rng, tolerance):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x0 = x.copy()
    got = run(name, x, axis)
    assert isinstance(got, np.ndarray)
    assert_like_reference(got, x, name, axis, tolerance[dtype])
    assert same_bits(x, x0)  # input untouched


@pytest.mark.parametrize("shape, axis", AXES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_keepdims(shape, axis, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    kept = fastlsm.logsumexp(x, axis, keepdims=True)
    flat = fastlsm.logsumexp(x, axis, keepdims=False)
    assert kept.shape == naive.logsumexp(x, axis, keepdims=True).shape
    assert kept.shape[axis] == 1 and kept.ndim == x.ndim
    assert same_bits(kept, np.expand_dims(flat, axis))
    assert fastlsm.logsumexp(x, axis, keepdims=np.True_).shape == kept.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_of_1d_is_a_0d_array(dtype):
    x = np.array([0.0, np.log(3.0)], dtype)
    got = fastlsm.logsumexp(x)
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == dtype
    np.testing.assert_allclose(got, np.log(4.0), rtol=2 * np.finfo(dtype).eps)
    assert fastlsm.logsumexp(x, keepdims=True).shape == (1,)


@pytest.mark.parametrize("name", FUNCS)
def test_lists_are_converted_to_float64(name, tolerance):
    x = [[1, 2, 3], [0, 0, 5]]
    got = run(name, x)
    assert got.dtype == np.float64
    assert_like_reference(got, np.array(x, np.float64), name, -1, tolerance[np.float64])
    assert run(name, [1.5, -2.0]).dtype == np.float64


def test_docstring_examples_except_logsumexp():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(fastlsm.normalize) if t.examples]
    names = {t.name.rsplit(".", 1)[-1] for t in tests}
    assert {"log_softmax", "softmax"} <= names
    for t in tests:
        if not t.name.endswith("logsumexp"):
            runner.run(t)
    assert runner.failures == 0


def test_docstring_example_logsumexp():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for t in finder.find(fastlsm.normalize):
        if t.name.endswith("logsumexp"):
            runner.run(t)
    assert runner.failures == 0


# ----------------------------------------------------------------------------- layouts


def _unaligned(a):
    """A C-contiguous copy of ``a`` at an address that is not a multiple of its itemsize."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    u = np.frombuffer(raw.data, a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned
    return u


def _shifted(a):
    """A C-contiguous copy of ``a`` one element past an aligned address (vectors misaligned)."""
    buf = np.empty(a.size + 1, a.dtype)
    s = buf[1:].reshape(a.shape)
    s[...] = a
    return s


LAYOUTS = {
    "C": lambda a: a,
    "F": np.asfortranarray,
    "transposed": lambda a: a.transpose(2, 0, 1),
    "strided": lambda a: a[::2, 1::3, ::2],
    "sliced": lambda a: a[1:5, 2:7, 3:11],
    "negative_strides": lambda a: a[::-1, :, ::-2],
    "broadcast": lambda a: np.broadcast_to(a[:, :1, :], a.shape),
    "unaligned": _unaligned,
    "shifted_by_one_element": _shifted,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_the_bits_of_a_contiguous_copy(layout, axis, name, dtype, rng, tolerance):
    base = (4 * rng.standard_normal((6, 8, 12))).astype(dtype)
    x = LAYOUTS[layout](base)
    x0 = x.copy()
    got = run(name, x, axis)
    assert same_bits(got, run(name, np.ascontiguousarray(x), axis))
    assert_like_reference(got, x, name, axis, tolerance[dtype])
    assert same_bits(x, x0)


# ----------------------------------------------------------------------------- out=


def _out_shape(name, shape, axis):
    if name != "logsumexp":
        return shape
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1 :]


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_is_filled_and_returned(name, dtype, rng):
    x = rng.standard_normal((5, 9)).astype(dtype)
    out = np.full(_out_shape(name, x.shape, -1), 7.0, dtype)
    got = run(name, x, out=out)
    assert got is out
    assert same_bits(out, run(name, x))


OUT_VIEWS = {
    "strided": lambda shape, dtype: np.full(shape[:-1] + (2 * shape[-1],), 7.0, dtype)[..., ::2],
    "F": lambda shape, dtype: np.asfortranarray(np.full(shape, 7.0, dtype)),
    "transposed": lambda shape, dtype: np.full(shape[::-1], 7.0, dtype).T,
    "negative": lambda shape, dtype: np.full(shape, 7.0, dtype)[::-1],
    "unaligned": lambda shape, dtype: _unaligned(np.full(shape, 7.0, dtype)),
}


@pytest.mark.parametrize("view", OUT_VIEWS)
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize(
    "name, kw", [(n, {}) for n in FUNCS] + [("logsumexp", {"keepdims": True})], ids=str
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_out(view, axis, name, kw, dtype, rng):
    x = rng.standard_normal((6, 4, 10)).astype(dtype)
    want = run(name, x, axis, **kw)
    out = OUT_VIEWS[view](want.shape, dtype)
    owner = out.base if out.base is not None else out
    sentinels = np.count_nonzero(owner == 7.0) - out.size
    got = run(name, x, axis, out=out, **kw)
    assert got is out
    assert same_bits(np.ascontiguousarray(out), want)
    # nothing outside the view was written
    assert np.count_nonzero(owner == 7.0) == sentinels


@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "unaligned"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place(layout, axis, name, dtype, rng):
    x = LAYOUTS[layout]((5 * rng.standard_normal((6, 8, 12))).astype(dtype))
    want = run(name, x.copy(), axis)
    got = run(name, x, axis, out=x)
    assert got is x
    assert same_bits(x, want)


PARTIAL_OVERLAPS = {
    # out starts after x: an in-order kernel would overwrite input it has not read yet
    "out_one_row_ahead": lambda buf: (buf[:-1], buf[1:]),
    "out_one_element_ahead": lambda buf: (buf.reshape(-1)[:-1], buf.reshape(-1)[1:]),
    "out_one_row_behind": lambda buf: (buf[1:], buf[:-1]),
    "out_one_column_ahead": lambda buf: (buf[:, :-1], buf[:, 1:]),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("overlap", PARTIAL_OVERLAPS)
def test_out_partially_overlapping_input(name, overlap, rng):
    buf = rng.standard_normal((9, 17))
    x, out = PARTIAL_OVERLAPS[overlap](buf)
    want = run(name, x.copy())
    assert run(name, x, out=out) is out
    assert same_bits(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_out_overlapping_input(dtype, rng):
    x = rng.standard_normal((16, 16)).astype(dtype)
    want = fastlsm.logsumexp(x.copy())
    got = fastlsm.logsumexp(x, out=x[-1])
    assert same_bits(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_strided_out_overlapping_input(dtype, rng):
    x = rng.standard_normal((16, 16)).astype(dtype)
    want = fastlsm.logsumexp(x.copy())
    assert same_bits(fastlsm.logsumexp(x, out=x[:, 0]), want)


@pytest.mark.parametrize("name", FUNCS)
def test_out_wrong_shape(name):
    x = np.zeros((3, 4), np.float32)
    bad = np.empty((4, 3) if name != "logsumexp" else (3, 1), np.float32)
    with pytest.raises(ValueError, match=r"out has shape .* allocate it with np\.empty"):
        run(name, x, out=bad)


def test_logsumexp_out_shape_follows_keepdims():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"result has shape \(3, 1\)"):
        fastlsm.logsumexp(x, keepdims=True, out=np.empty(3))
    with pytest.raises(ValueError, match=r"result has shape \(3,\)"):
        fastlsm.logsumexp(x, out=np.empty((3, 1)))
    out = np.empty(())
    assert fastlsm.logsumexp(np.zeros(4), out=out) is out
    np.testing.assert_allclose(out, np.log(4.0))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_wrong_dtype(name, dtype):
    x = np.zeros((3, 4), dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    out = np.empty(_out_shape(name, x.shape, -1), other)
    hint = rf"out has dtype .* allocate it with dtype=np\.{np.dtype(dtype).name}"
    with pytest.raises(TypeError, match=hint):
        run(name, x, out=out)


@pytest.mark.parametrize("name", FUNCS)
def test_out_read_only(name):
    x = np.zeros((3, 4))
    out = np.empty(_out_shape(name, x.shape, -1))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only; pass a writeable array"):
        run(name, x, out=out)
    x.flags.writeable = False  # a read-only input is fine
    if name != "logsumexp":
        with pytest.raises(ValueError, match="read-only"):
            run(name, x, out=x)
    assert run(name, x).shape == _out_shape(name, x.shape, -1)


@pytest.mark.parametrize("name", FUNCS)
def test_out_not_an_array(name):
    with pytest.raises(TypeError, match="out must be a NumPy array, got list"):
        run(name, np.zeros(3), out=[0.0, 0.0, 0.0])


@pytest.mark.parametrize("name", FUNCS)
def test_out_and_options_are_keyword_only(name):
    x = np.zeros(3)
    with pytest.raises(TypeError):
        getattr(fastlsm, name)(x, -1, np.empty(3))


# ----------------------------------------------------------------------------- bad input


BAD_DTYPES = [np.complex64, np.complex128, object, np.str_]  # ints: SciPy's float64


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_non_float_arrays_raise_typeerror(name, dtype):
    x = np.ones((2, 3), dtype=dtype)
    with pytest.raises(
        TypeError, match=r"x must be float32, float64, bfloat16 or float16, got \S+; .*astype"
    ):
        run(name, x)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("x", [None, "abc", {"a": 1.0}, object()], ids=lambda v: type(v).__name__)
def test_non_arrays_raise_typeerror(name, x):
    with pytest.raises(
        TypeError, match="x must be a NumPy array of float32, float64, bfloat16 or float16, got"
    ):
        run(name, x)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_native_byte_order_accepted(name, dtype, rng):
    x = rng.standard_normal((2, 5)).astype(dtype)
    swapped = x.astype(np.dtype(dtype).newbyteorder("S"))
    got = run(name, swapped)
    assert got.dtype == dtype and got.dtype.isnative
    assert same_bits(got, run(name, x))
    x16 = x.astype(np.float16)
    assert same_bits(run(name, x16.astype(x16.dtype.newbyteorder("S"))), run(name, x16))


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4)])
def test_axis_out_of_range_raises_axiserror(name, shape):
    x = np.zeros(shape)
    for axis in (len(shape), -len(shape) - 1, 100):
        with pytest.raises(AxisError, match="out of bounds"):
            run(name, x, axis)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("axis", [1.0, "0", (0, 1.5)], ids=repr)  # None, tuples: SciPy's
def test_axis_not_an_integer_raises_typeerror(name, axis):
    with pytest.raises(TypeError, match="axis must be an integer"):
        run(name, np.zeros((2, 3)), axis)


@pytest.mark.parametrize("name", FUNCS)
def test_numpy_integer_axis(name, rng):
    x = rng.standard_normal((3, 4))
    assert same_bits(run(name, x, np.int64(0)), run(name, x, 0))
    assert same_bits(run(name, x, np.int32(-1)), run(name, x, 1))


@pytest.mark.parametrize("name", FUNCS)
def test_zero_dimensional_input_raises_axiserror(name):
    # ndim >= 1 is required: a scalar has no axis to normalize.
    for x in (np.float64(1.0), np.array(1.0, np.float32), 2.5):
        with pytest.raises(AxisError):
            run(name, x)


@pytest.mark.parametrize("keepdims", [1, 0, None, "yes"], ids=repr)
def test_keepdims_must_be_bool(keepdims):
    with pytest.raises(TypeError, match="keepdims must be True or False"):
        fastlsm.logsumexp(np.zeros(3), keepdims=keepdims)


# ----------------------------------------------------------------------------- zero-size, V=1


ZERO_SIZE = [(0,), (0, 5), (5, 0), (0, 0), (2, 0, 3)]


@pytest.mark.parametrize("shape", ZERO_SIZE)
@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_size_elementwise(shape, name, dtype):
    x = np.zeros(shape, dtype)
    for axis in range(-len(shape), len(shape)):
        got = run(name, x, axis)
        assert got.shape == shape and got.dtype == dtype
        out = np.empty(shape, dtype)
        assert run(name, x, axis, out=out) is out


@pytest.mark.parametrize("shape", ZERO_SIZE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_size_logsumexp(shape, dtype):
    x = np.zeros(shape, dtype)
    for axis in range(-len(shape), len(shape)):
        for keepdims in (False, True):
            got = fastlsm.logsumexp(x, axis, keepdims=keepdims)
            want = naive.logsumexp(x, axis, keepdims=keepdims)
            assert got.shape == want.shape and got.dtype == dtype
            # an empty axis sums to 0: logsumexp is -inf (when the batch is not empty)
            assert np.all(got == -inf)
            np.testing.assert_array_equal(got, want)
            out = np.empty(want.shape, dtype)
            assert fastlsm.logsumexp(x, axis, keepdims=keepdims, out=out) is out
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_element_axis(dtype):
    big = np.finfo(dtype).max
    x = np.array([[0.0], [1.5], [-7.0], [1e30], [-1e30], [big], [-big], [1e4]], dtype)
    np.testing.assert_array_equal(fastlsm.log_softmax(x), np.zeros_like(x))
    np.testing.assert_array_equal(fastlsm.softmax(x), np.ones_like(x))
    np.testing.assert_array_equal(fastlsm.logsumexp(x), x[:, 0])
    # along a length-1 axis that is not the last one
    y = np.ascontiguousarray(x.T)
    np.testing.assert_array_equal(fastlsm.log_softmax(y, axis=0), np.zeros_like(y))
    np.testing.assert_array_equal(fastlsm.logsumexp(y, axis=0), x[:, 0])


# ----------------------------------------------------------------------------- special values
#
# The documented table (fastlsm/normalize.py):
#   row contains                 log_softmax              softmax               logsumexp
#   some -inf (masked)           -inf there, rest norm.   0 there, rest sums 1  of finite part
#   only -inf                    NaN                      NaN                   -inf
#   a NaN                        NaN (whole row)          NaN (whole row)       NaN
#   a +inf (no NaN)              NaN (whole row)          NaN (whole row)       +inf
#   one element, finite          0                        1                     the element
#   empty axis (V = 0)           empty                    empty                 -inf

V = 8

SPECIAL_ROWS = {
    # name: (row, expected logsumexp: "finite" (of the unmasked part), "-inf", "inf", "nan")
    "masked": ([0.5, -inf, 2.0, -inf, -1.0, 3.0, -inf, 0.0], "finite"),
    "masked_all_but_one": ([-inf, -inf, 1.0, -inf, -inf, -inf, -inf, -inf], "finite"),
    "only_neginf": ([-inf] * V, "-inf"),
    "nan_first": ([nan, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "nan"),
    "nan_middle": ([0.0, 1.0, 2.0, nan, 4.0, 5.0, 6.0, 7.0], "nan"),
    "nan_last": ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, nan], "nan"),
    "nan_and_neginf": ([nan, -inf, -inf, -inf, -inf, -inf, -inf, -inf], "nan"),
    "only_nan": ([nan] * V, "nan"),
    "posinf": ([0.0, inf, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "inf"),
    "posinf_twice": ([inf, 0.0, inf, 2.0, 3.0, 4.0, 5.0, 6.0], "inf"),
    "posinf_and_neginf": ([inf, -inf, 1.0, -inf, 3.0, 4.0, 5.0, 6.0], "inf"),
    "only_posinf": ([inf] * V, "inf"),
    "posinf_and_nan": ([inf, nan, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "nan"),
}


def _special_batch(dtype):
    names = list(SPECIAL_ROWS)
    x = np.array([SPECIAL_ROWS[n][0] for n in names], dtype)
    return names, x


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_documented_table(dtype):
    names, x = _special_batch(dtype)
    ls, sm, lse = fastlsm.log_softmax(x), fastlsm.softmax(x), fastlsm.logsumexp(x)
    for i, name in enumerate(names):
        row, lse_class = SPECIAL_ROWS[name]
        masked = x[i] == -inf
        if lse_class == "finite":  # some -inf: masked stay -inf / 0, the rest normalized
            rest = x[i][~masked]
            assert np.all(ls[i][masked] == -inf), name
            assert np.all(sm[i][masked] == 0.0), name
            np.testing.assert_allclose(ls[i][~masked], naive.log_softmax(rest), rtol=1e-6)
            np.testing.assert_allclose(sm[i][~masked], naive.softmax(rest), rtol=1e-6)
            np.testing.assert_allclose(sm[i].sum(dtype=np.float64), 1.0, rtol=1e-6)
            np.testing.assert_allclose(lse[i], naive.logsumexp(rest), rtol=1e-6)
        else:  # only -inf, any NaN, any +inf: the whole row is NaN
            assert np.isnan(ls[i]).all(), name
            assert np.isnan(sm[i]).all(), name
            if lse_class == "nan":
                assert np.isnan(lse[i]), name
            else:
                assert lse[i] == float(lse_class), name


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_match_reference(name, dtype, tolerance):
    _, x = _special_batch(dtype)
    assert_like_reference(run(name, x), x, name, -1, tolerance[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_nonfinite_element(dtype):
    x = np.array([[-inf], [inf], [nan]], dtype)
    np.testing.assert_array_equal(fastlsm.log_softmax(x), [[nan], [nan], [nan]])
    np.testing.assert_array_equal(fastlsm.softmax(x), [[nan], [nan], [nan]])
    np.testing.assert_array_equal(fastlsm.logsumexp(x), [-inf, inf, nan])


@pytest.mark.parametrize("n", [37, 130, 2051])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_at_every_position_of_a_long_row(n, dtype, rng):
    # NaN must reach the result wherever it sits: vectorized body, tails, block borders.
    positions = np.unique(
        np.r_[np.arange(min(n, 40)), np.arange(n - 20, n), rng.integers(0, n, 20)]
    )
    x = np.tile(rng.standard_normal(n).astype(dtype), (positions.size, 1))
    x[np.arange(positions.size), positions] = nan
    assert np.isnan(fastlsm.log_softmax(x)).all()
    assert np.isnan(fastlsm.softmax(x)).all()
    assert np.isnan(fastlsm.logsumexp(x)).all()
    y = x.copy()
    y[np.arange(positions.size), positions] = inf
    assert np.isnan(fastlsm.log_softmax(y)).all()
    assert np.isnan(fastlsm.softmax(y)).all()
    assert np.all(fastlsm.logsumexp(y) == inf)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_rows_inside_a_parallel_batch(name, dtype, rng):
    # Large enough to run on several threads; every row gives the bits it gives alone.
    names, special = _special_batch(dtype)
    rows = max(4 * len(names), 2 * SERIAL_WORK // V)
    x = rng.standard_normal((rows, V)).astype(dtype)
    where = rng.choice(rows, size=len(names), replace=False)
    x[where] = special
    got = run(name, x)
    alone = run(name, special)
    assert same_bits(got[where], alone)
    keep = np.setdiff1d(np.arange(rows), where)[:50]
    assert same_bits(got[keep], run(name, x[keep]))


MAGNITUDES = {
    "1e4": [1e4, 1e4 + 1.0, 1e4 - 3.0, 9999.5, 1e4, -1e4, 0.0, 1e4 + 0.25],
    "-1e4": [-1e4, -1e4 + 1.0, -1e4 - 3.0, -9999.5, -1e4, -2e4, -1e4, -1e4 + 0.25],
    "1e30": [1e30, -1e30, 0.0, 1e30, 5e29, 1.0, -inf, 2e30],
    "-1e30": [-1e30, -1e30, -2e30, -1.5e30, -1e30, -inf, -1e30, -3e30],
    "max": ["max", "max", "-max", 0.0, "half", -inf, "max", 1.0],
    "-max": ["-max", "-max", "-max", "-max", "-max", "-max", "-max", "-max"],
    "max_and_small": ["max", 1.0, -1.0, 0.0, 2.0, 3.0, 4.0, 5.0],
}


def _magnitude_batch(dtype):
    big = float(np.finfo(dtype).max)
    sub = {"max": big, "-max": -big, "half": big / 2}
    names = list(MAGNITUDES)
    rows = [[sub[v] if isinstance(v, str) else v for v in MAGNITUDES[n]] for n in names]
    x = np.array(rows, dtype)
    return names, x


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_magnitudes_never_overflow(name, dtype, tolerance):
    names, x = _magnitude_batch(dtype)
    got = run(name, x)
    # compared with the exact result rounded to dtype: -inf only where x - max itself is
    # below -float_max (max and -max in one row), never a NaN, never +inf
    assert_like_reference(got, x, name, -1, tolerance[dtype])
    assert not np.isnan(got).any()
    assert not (got == inf).any()
    if name == "logsumexp":
        assert np.isfinite(got).all()
        assert np.all(got >= x.max(axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_keep_the_low_bits(dtype):
    # (x - m) - log(s), never x - (m + log(s)): near 1e4 the latter loses ulp(1e4) ~ 1e-3
    # (float32), far more than the 1-ulp error of values near 0.
    x = np.array([1e4, 1e4 + 1.0, 1e4 - 0.5], dtype)
    want = naive.log_softmax(np.array([0.0, 1.0, -0.5]))
    np.testing.assert_allclose(fastlsm.log_softmax(x), want, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(
        fastlsm.log_softmax(x - np.array(2e4, dtype)), want, rtol=4 * np.finfo(dtype).eps
    )


# ----------------------------------------------------------------------------- PyTorch parity


def _torch_fn(torch, name):
    return {
        "log_softmax": lambda t: torch.log_softmax(t, dim=-1),
        "softmax": lambda t: torch.softmax(t, dim=-1),
        "logsumexp": lambda t: torch.logsumexp(t, dim=-1),
    }[name]


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_match_torch(name, dtype, torch_or_skip):
    torch = torch_or_skip
    for batch in (_special_batch, _magnitude_batch):
        _, x = batch(dtype)
        got = run(name, x)
        want = _torch_fn(torch, name)(torch.from_numpy(x)).numpy()
        assert_same_nonfinite(got, want)
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=8 * np.finfo(dtype).eps)
    x = np.array([[-inf], [inf], [nan], [2.0]], dtype)
    np.testing.assert_array_equal(run(name, x), _torch_fn(torch, name)(torch.from_numpy(x)).numpy())


DISTRIBUTIONS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "wide": lambda rng, shape: 30 * rng.standard_normal(shape),
    "offset_1e4": lambda rng, shape: 1e4 + rng.standard_normal(shape),
    "offset_-1e4": lambda rng, shape: -1e4 + 3 * rng.standard_normal(shape),
    "uniform_1e4": lambda rng, shape: rng.uniform(-1e4, 1e4, shape),
    "huge": lambda rng, shape: 1e30 * rng.standard_normal(shape),
    "peaked": lambda rng, shape: 20 * (rng.random(shape) < 0.02) + rng.standard_normal(shape),
    "masked": lambda rng, shape: np.where(
        (rng.random(shape) < 0.5) & (np.arange(shape[-1]) > 0), -inf, rng.standard_normal(shape)
    ),
}
SIZES = [(64, 3), (64, 100), (8, 4099), (2, 32000)]


def _errors_vs_exact(name, x, *results):
    """Max abs error of each result against the long-double reference (finite entries),
    and the slack: 1 ulp of the largest finite reference magnitude (for logsumexp, of the
    largest of that and max |x|: the result is m + log(s), rounded at that scale, so near
    a zero crossing 1 ulp of the tiny output would ask more than any float code can give).
    """
    ref = reference(name, x, dtype=np.longdouble)
    fin = np.isfinite(rounded(ref, x.dtype))
    errs = [float(np.abs(y[fin].astype(np.longdouble) - ref[fin]).max(initial=0)) for y in results]
    scale = np.abs(ref[fin]).max(initial=0)
    if name == "logsumexp":
        scale = max(scale, np.abs(x[np.isfinite(x)]).max(initial=0))
    return errs, float(np.spacing(x.dtype.type(scale)))


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_less_exact_than_torch(size, dist, name, dtype, torch_or_skip, rng):
    """Max abs error against an exact reference <= PyTorch's own error + 1 ulp."""
    torch = torch_or_skip
    x = DISTRIBUTIONS[dist](rng, size).astype(dtype)
    got = run(name, x)
    want = _torch_fn(torch, name)(torch.from_numpy(x)).numpy()
    assert_same_nonfinite(got, want)
    (err, err_torch), ulp = _errors_vs_exact(name, x, got, want)
    assert err <= err_torch + ulp, (
        f"{name} {np.dtype(dtype).name} {dist} {size}: error {err:.3e} > torch {err_torch:.3e}"
        f" + 1 ulp ({ulp:.3e})"
    )


def test_float64_softmax_no_less_exact_than_torch_on_every_row(torch_or_skip, rng):
    torch = torch_or_skip
    rows = []
    for v in (3, 8, 100, 1000):
        rows += [3 * rng.standard_normal(v) for _ in range(100)]
    worst = (0.0, None)
    for row in rows:
        x = row[None, :]
        t = torch.softmax(torch.from_numpy(x), -1).numpy()
        (err, err_torch), ulp = _errors_vs_exact("softmax", x, fastlsm.softmax(x), t)
        excess = (err - err_torch) / ulp
        if excess > worst[0]:
            worst = (excess, row)
    assert worst[0] <= 1.0, f"{worst[0]:.2f} ulp worse than torch on a row of {worst[1].size}"


# ----------------------------------------------------------------------------- properties


def _float_arrays(dtype, lo, hi, min_side=1, max_side=6, max_dims=3):
    lo, hi = float(dtype(lo)), float(dtype(hi))  # bounds exactly representable in dtype
    return hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=min_side, max_side=max_side),
        elements=st.floats(lo, hi, width=np.dtype(dtype).itemsize * 8, allow_subnormal=False),
    )


@st.composite
def array_and_axis(draw, lo=-1e3, hi=1e3):
    dtype = draw(st.sampled_from(DTYPES))
    x = draw(_float_arrays(dtype, lo, hi))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


PROPS = settings(max_examples=60, deadline=None)


@PROPS
@given(xa=array_and_axis(lo=-1e5, hi=1e5), name=st.sampled_from(FUNCS))
def test_property_agrees_with_reference(xa, name, tolerance):
    x, axis = xa
    assert_like_reference(run(name, x, axis), x, name, axis, tolerance[x.dtype])


@st.composite
def array_with_specials(draw):
    dtype = draw(st.sampled_from(DTYPES))
    finite = st.floats(-1e3, 1e3, width=np.dtype(dtype).itemsize * 8)
    special = st.sampled_from([-inf, -inf, -inf, inf, nan])
    x = draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
            elements=st.one_of(finite, finite, finite, special),
        )
    )
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


@PROPS
@given(xa=array_with_specials(), name=st.sampled_from(FUNCS))
def test_property_special_values_agree_with_reference(xa, name, tolerance):
    # -inf masks, +inf and NaN anywhere: exactly the reference's NaN and inf positions.
    x, axis = xa
    assert_like_reference(run(name, x, axis), x, name, axis, tolerance[x.dtype])


@PROPS
@given(
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    data=st.data(),
    c=st.integers(-(2**20), 2**20),
)
def test_property_exact_shift_invariance(dtype, shape, data, c):
    # x on a grid of 1/4 and an integer shift: x + c is exact in float32, so is every
    # x - max, and the normalized results are exactly (bitwise) the same.
    q = data.draw(hnp.arrays(np.int32, shape, elements=st.integers(-256, 256)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = (q / 4).astype(dtype)
    xc = x + dtype(c)
    np.testing.assert_array_equal(xc - dtype(c), x)  # the shift is exact
    assert same_bits(fastlsm.log_softmax(xc, axis), fastlsm.log_softmax(x, axis))
    assert same_bits(fastlsm.softmax(xc, axis), fastlsm.softmax(x, axis))
    lse, lse_c = fastlsm.logsumexp(x, axis), fastlsm.logsumexp(xc, axis)
    np.testing.assert_allclose(
        lse_c, lse + np.float64(c), rtol=0, atol=2 * float(np.spacing(dtype(abs(c) + 300)))
    )


@PROPS
@given(xa=array_and_axis(lo=-100, hi=100), c=st.floats(-1e3, 1e3))
def test_property_shift_invariance(xa, c, tolerance):
    x, axis = xa
    xc = x + x.dtype.type(c)
    # tolerance: the rounding of x + c itself (half an ulp of |x| + |c|) on top of the table
    slack = float(np.spacing(x.dtype.type(abs(c) + 100)))
    np.testing.assert_allclose(
        fastlsm.log_softmax(xc, axis),
        fastlsm.log_softmax(x, axis),
        rtol=1e-5,
        atol=4 * slack + tolerance[x.dtype]["atol"],
    )


@PROPS
@given(xa=array_and_axis(lo=-100, hi=100))
def test_property_probabilities_sum_to_one(xa, tolerance):
    x, axis = xa
    v = x.shape[axis]
    tol = 4 * v * np.finfo(x.dtype).eps
    sum_exp = np.exp(fastlsm.log_softmax(x, axis).astype(np.float64)).sum(axis)
    np.testing.assert_allclose(sum_exp, 1.0, rtol=0, atol=tol)
    sum_sm = fastlsm.softmax(x, axis).astype(np.float64).sum(axis)
    np.testing.assert_allclose(sum_sm, 1.0, rtol=0, atol=tol)
    # softmax == exp(log_softmax)
    np.testing.assert_allclose(
        fastlsm.softmax(x, axis), np.exp(fastlsm.log_softmax(x, axis)), **tolerance[x.dtype]
    )


@PROPS
@given(xa=array_and_axis(lo=-1e30, hi=1e30))
def test_property_logsumexp_bounds(xa):
    x, axis = xa
    lse = fastlsm.logsumexp(x, axis)
    m = x.max(axis)
    # m <= lse <= m + log(V), exactly: lse is m + log(s) with 1 <= s <= V, rounded once
    assert np.all(lse >= m)
    bound = (m.astype(np.float64) + np.log(x.shape[axis])).astype(x.dtype)
    assert np.all(lse <= np.nextafter(bound, x.dtype.type(inf)))


@PROPS
@given(xa=array_and_axis(lo=-50, hi=50))
def test_property_log_softmax_is_x_minus_logsumexp(xa, tolerance):
    x, axis = xa
    lse = fastlsm.logsumexp(x, axis, keepdims=True)
    np.testing.assert_allclose(
        fastlsm.log_softmax(x, axis), x.astype(np.float64) - lse, rtol=1e-5, atol=1e-5
    )
    assert np.all(fastlsm.log_softmax(x, axis) <= 0)


# ----------------------------------------------------------------------------- kernel entries
# The C ABI calls these directly: C-contiguous [rows, cols] in, caller-allocated out.


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_entries_in_place_and_empty(dtype, rng):
    x = rng.standard_normal((5, 33)).astype(dtype)
    for kernel, name in ((K.log_softmax_rows, "log_softmax"), (K.softmax_rows, "softmax")):
        y = x.copy()
        kernel(y, y)
        assert same_bits(y, run(name, x))
        for shape in ((0, 7), (3, 0)):
            e = np.empty(shape, dtype)
            kernel(e, e)
    out = np.empty(5, dtype)
    K.logsumexp_rows(x, out)
    assert same_bits(out, fastlsm.logsumexp(x))
    out = np.empty(3, dtype)
    K.logsumexp_rows(np.empty((3, 0), dtype), out)
    np.testing.assert_array_equal(out, [-inf] * 3)


@kernel_fn
def _per_row_reference(x, out, soft):
    """The same passes one row at a time, no pipeline: the arithmetic the kernels must keep."""
    buf = np.empty(x.shape[1], x.dtype)
    zero = like(x, 0.0)
    for i in range(x.shape[0]):
        m = row_max(x[i])
        if soft:
            s = exp_store_sum(x[i], m, buf, x[i][:0])
            stream_divide(buf, out[i], zero, s, zero, True)
        else:
            log_s = like(m, flog(row_shifted_sumexp(x[i], m, x[i][:0])))
            stream_affine(x[i], out[i], m, like(m, 1.0), log_s, True)
    store_fence()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5), (3, 1000), (70, 257), (130, 33), (9, 4099)], ids=str)
def test_pipelined_rows_give_the_bits_of_the_row_functions(shape, dtype, rng):
    """log_softmax_rows / softmax_rows write row i - 1 inside row i's exp loop, with a
    misaligned output (numpy's usual 16-byte offset) and in place; every row must still be
    exactly what the same passes give one row at a time."""
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    x[:, ::7] = -inf
    for kernel, soft in ((K.log_softmax_rows, False), (K.softmax_rows, True)):
        want = np.empty_like(x)
        _per_row_reference(x, want, soft)
        got = np.empty_like(x)
        kernel(x, got)
        assert same_bits(got, want)
        inplace = x.copy()
        kernel(inplace, inplace)
        assert same_bits(inplace, want)


def _adversarial_divisors(dtype, rng):
    """Divisors where a division built from a reciprocal goes wrong first: 1 and its
    neighbours, mantissas of all ones and of a single low bit, powers of two, 2**20 and
    just past it, softmax row sums (1 .. V), random."""
    f = np.finfo(dtype)
    one = dtype(1)
    edges = [one, np.nextafter(one, dtype(2)), np.nextafter(one, dtype(0)), dtype(2.0**20),
             np.nextafter(dtype(2.0**20), dtype(np.inf)), dtype(0.5), dtype(3.0)]
    ones = [dtype(2.0**k) * (2 - f.eps) for k in range(0, 21)]  # 1.111...1 * 2**k
    low = [dtype(2.0**k) * (1 + f.eps) for k in range(0, 21)]
    pow2 = [dtype(2.0**k) for k in range(0, 21)]
    sums = (1 + rng.random(200) * 128256).astype(dtype)
    wide = np.exp2(rng.uniform(0, 20, 200)).astype(dtype)
    return np.concatenate([edges, ones, low, pow2, sums, wide]).astype(dtype)


@kernel_fn
def _divide(src, dst, s, nontemporal):
    zero = like(s, 0.0)
    stream_divide(src, dst, zero, s, zero, nontemporal)
    store_fence()


@pytest.mark.parametrize("dtype", DTYPES)
def test_divide_is_correctly_rounded_like_fdiv(dtype, rng):
    """softmax divides, never multiplies by ``1 / s`` (two roundings): ``stream_divide``
    gives the bits of IEEE division for every dividend (tiny, denormal, near 1, exact
    quotients, zeros, infinities, NaN) on adversarial divisors, in both store kinds and at an
    odd alignment. A pin for any faster division: a reciprocal refined by two FMA residual
    steps (Markstein) passed it, but measured slower than ``vdivps`` in the softmax loop."""
    n = 4099
    f = np.finfo(dtype)
    lo = -80 if dtype == np.float32 else -950
    w = np.concatenate([
        np.exp2(rng.uniform(lo - 3, 1, n)),  # down to where a residual would underflow
        rng.random(n),
        np.exp2(rng.uniform(-1, 0, n)),  # near 1, where ulp steps are largest
        [0.0, -0.0, f.tiny, f.tiny / 4, f.smallest_subnormal, 2.0**lo, 2.0**(lo - 1), 1.0,
         np.inf, -np.inf, np.nan, -0.75, 2.0**60, 2.0**61],
    ]).astype(dtype)
    buf = np.empty(w.size + 1, dtype)
    for s in _adversarial_divisors(dtype, rng):
        exact = w * s  # dividends whose quotient is a float exactly
        for src in (w, exact[np.isfinite(exact)]):
            want = src / s
            for nt in (True, False):
                got = buf[1 : src.size + 1]
                _divide(src, got, s, nt)
                bad = np.flatnonzero(got.view(f"u{f.bits // 8}") != want.view(f"u{f.bits // 8}"))
                assert bad.size == 0, (s, src[bad[:3]], got[bad[:3]], want[bad[:3]])


def test_touch_pages_writes_one_zero_per_2mib_and_nothing_else():
    from fastlsm._kernels.memory import HUGE_PAGE, touch_pages

    for n in (0, 1, HUGE_PAGE - 1, HUGE_PAGE, HUGE_PAGE + 1, 5 * HUGE_PAGE // 2):
        buf = np.full(n + 64, 7, np.uint8)  # 64 guard bytes past the end
        touch_pages(buf[:n])
        zeros = np.flatnonzero(buf == 0)
        np.testing.assert_array_equal(zeros, np.arange(0, n, HUGE_PAGE))


def test_large_fresh_outputs_are_prefaulted_and_exact(rng):
    from fastlsm._kernels.memory import PREFAULT_BYTES

    x = rng.standard_normal((9, PREFAULT_BYTES // 4 // 9 + 5)).astype(np.float32)
    assert x.nbytes >= PREFAULT_BYTES
    for name in ("log_softmax", "softmax"):
        fn = getattr(fastlsm, name)
        want = np.empty_like(x)
        fn(x, out=want)
        assert same_bits(fn(x), want)


# ----------------------------------------------------------------------------- store kinds
# Outputs below memory.STREAM_MIN_BYTES are written with plain stores, larger ones with
# streaming stores (issue 14: an aligned one-row output used to take the streaming path and
# its fence). The choice depends on the size only and never changes a bit.


def test_store_kind_is_decided_by_the_output_size_only():
    from fastlsm._kernels.memory import STREAM_MIN_BYTES, streams

    assert not streams(0) and not streams(STREAM_MIN_BYTES - 1)
    assert streams(STREAM_MIN_BYTES) and streams(1 << 40)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_same_bits_for_every_output_alignment_and_both_store_kinds(name, dtype, rng):
    from fastlsm._kernels.memory import STREAM_MIN_BYTES

    fn = getattr(fastlsm, name)
    itemsize = np.dtype(dtype).itemsize
    cols = STREAM_MIN_BYTES // itemsize // 3 + 37  # 3 rows stream, one row does not
    x = (4 * rng.standard_normal((3, cols))).astype(dtype)
    x[:, ::11] = -inf
    streamed = fn(x)  # >= STREAM_MIN_BYTES: streaming stores
    assert streamed.nbytes >= STREAM_MIN_BYTES
    small = (4 * rng.standard_normal((2, 40))).astype(dtype)
    want_small = fn(small)
    for offset in range(0, 64 // itemsize + 1):  # every alignment of the output, in elements
        buf = np.empty(cols + offset, dtype)
        out = buf[offset:].reshape(1, cols)  # one row: plain stores
        for i in (0, 2):
            assert same_bits(fn(x[i : i + 1], out=out), streamed[i : i + 1]), (i, offset)
        sbuf = np.empty(small.size + offset, dtype)
        sout = sbuf[offset:].reshape(small.shape)
        assert same_bits(fn(small, out=sout), want_small), offset
        for cols_small in (1, 8, 16, 17):
            o = np.empty(cols_small + offset, dtype)[offset:].reshape(1, cols_small)
            assert same_bits(fn(small[:1, :cols_small], out=o), fn(small[:1, :cols_small]))
