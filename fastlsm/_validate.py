"""Input checks and layout handling shared by every public function.

Kernels assume valid, C-contiguous inputs; everything a user can get wrong is caught here and
turned into a ``TypeError``/``ValueError`` (or NumPy's ``AxisError``) that says what to do.
Checks use ``if``/``raise``, never ``assert`` (which ``python -O`` removes).
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

try:  # NumPy >= 2
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import normalize_axis_index

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def float_array(x, name: str, *, integers: bool = False) -> np.ndarray:
    """``x`` as a native, aligned float32/float64 ndarray, or a ``TypeError`` saying why not.

    Accepted: ndarrays, NumPy scalars, Python numbers, (nested) lists and anything with
    ``__array__``. Lists and Python numbers of integers or bools become float64; so do integer
    and bool *arrays* when ``integers`` (SciPy's convention, used by the normalizers; the
    losses keep PyTorch's, which rejects integer logits). Other byte orders are converted
    to native; unaligned data is copied; read-only and strided arrays are kept as they are
    (every argument that is only read accepts them). float16 and complex are refused.
    """
    if not isinstance(x, np.ndarray):
        if not (hasattr(x, "__array__") or isinstance(x, (list, tuple, numbers.Number))):
            raise TypeError(
                f"{name} must be a NumPy array of float32 or float64, got {type(x).__name__}"
            )
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:  # ragged lists, objects NumPy cannot convert
            raise ValueError(f"{name} could not be converted to an array: {e}") from None
        integers = True
    if x.dtype.kind in "iub" and integers:
        x = x.astype(np.float64)
    if x.dtype.kind == "f" and not x.dtype.isnative:  # big-endian data: same values, native
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {x.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float32)"
        )
    if not x.flags.aligned:  # e.g. np.frombuffer at an odd offset: kernels need alignment
        x = x.copy()
    return x


def int_array(x, name: str) -> np.ndarray:
    """``x`` as a private C-contiguous int64 copy, or a ``TypeError`` saying how to convert it.

    Any signed or unsigned integer dtype, byte order, layout and read-only array is accepted
    (uint64 values above the int64 range become its maximum, out of range anyway); bool,
    float and anything else are refused. Index arrays are small next to the logits they
    index, and one copy gives the kernels a single compiled signature.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} could not be converted to an array: {e}") from None
    if x.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer indices (int32 or int64), got {x.dtype}; "
            f"convert it with {name}.astype(np.int64)"
        )
    if x.dtype.kind == "u" and x.dtype.itemsize == 8 and x.size and x.max() > _I64_MAX:
        x = np.minimum(x, np.uint64(_I64_MAX))
    return np.array(x, dtype=np.int64, order="C")


_I64_MAX = np.iinfo(np.int64).max


def int_array_of_shape(x, name: str, shape: tuple, context: str) -> np.ndarray:
    """:func:`int_array` of exactly ``shape``, else a ``ValueError`` naming both shapes
    (``context``: what the shape follows from, e.g. "logits of shape [2, 3, 5]")."""
    a = int_array(x, name)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, but {context} need {name} of shape {shape}")
    return a


def class_weights(w, shape: tuple, name: str, what: str) -> np.ndarray:
    """A private, flat, C-contiguous float64 copy of real-valued weights of ``shape``.

    Any real values are accepted (negative, zero, inf, NaN: PyTorch's class weights), as
    floats, integers or bools of any byte order and layout. The copy is small, writeable, and
    never aliases logits that are overwritten in place.
    """
    w = float_array(w, name, integers=True)  # integer weights (counts) are fine
    if w.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got {w.shape}")
    return np.array(w, dtype=np.float64, order="C", copy=True).reshape(-1)


def axis_index(axis, ndim: int) -> int:
    """Normalize ``axis`` like NumPy (negative allowed); ``AxisError`` when out of range."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    return normalize_axis_index(axis, ndim)


def axes_index(axis, ndim: int) -> int | tuple[int, ...]:
    """``axis`` as ``scipy.special`` reads it: an int (kept an int), ``None`` (every axis) or
    a tuple of ints (sorted; repeats are a ``ValueError``, out of range an ``AxisError``)."""
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, (tuple, list)):
        return axis_index(axis, ndim)
    axes = tuple(sorted(axis_index(a, ndim) for a in axis))
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {tuple(axis)} repeats an axis; give each axis once")
    return axes


def _axes(axis) -> tuple[int, ...]:
    return (axis,) if isinstance(axis, int) else axis


def reduced_shape(shape: tuple, axis, keepdims: bool) -> tuple:
    """``shape`` without the (normalized) ``axis``, or with 1 there when ``keepdims``."""
    axes = _axes(axis)
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _lanes_last(a: np.ndarray, axis) -> tuple[np.ndarray, int]:
    """``a`` with the (normalized) ``axis`` moved to the end, and how many axes that is."""
    axes = _axes(axis)
    k = len(axes)
    dest = tuple(range(a.ndim - k, a.ndim))
    return (a if axes == dest else np.moveaxis(a, axes, dest)), k


def _rows_shape(moved: np.ndarray, k: int) -> tuple[int, int]:
    split = moved.ndim - k
    return math.prod(moved.shape[:split]), math.prod(moved.shape[split:])


def check_out(out, shape: tuple, dtype: np.dtype, name: str = "out") -> np.ndarray:
    """Validate a caller-provided output array: ndarray, exact shape and dtype, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {out.shape}, but the result has shape {tuple(shape)}; "
            f"allocate it with np.empty({tuple(shape)}, dtype=np.{dtype.name})"
        )
    if out.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {out.dtype}, but the result is {dtype}; "
            f"allocate it with dtype=np.{dtype.name}"
        )
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    return out


class _WriteableFace:
    """An array interface over a read-only array's memory without its read-only flag; holds
    the array (the alias's ``base``), so the memory lives as long as the alias."""

    __slots__ = ("__array_interface__", "base")

    def __init__(self, a: np.ndarray):
        face = a.__array_interface__
        face["data"] = (face["data"][0], False)
        face["strides"] = a.strides
        self.__array_interface__ = face
        self.base = a


def readable(a: np.ndarray) -> np.ndarray:
    """``a``, or when ``a`` is read-only, a writeable alias of the same memory (a view: no copy).

    For arrays a kernel only reads. Numba types a read-only array apart from a writeable one
    and compiles every kernel a second time for it (tens of seconds for the sampler): a server
    that reads logits with ``np.frombuffer`` would pay that on its first request. The kernels
    never write an input, and every array they do write is checked writeable before (``out``
    by :func:`check_out`, ``inplace=True`` logits by the losses), so an alias passed to them
    is only read.
    """
    if a.flags.writeable:
        return a
    alias = np.asarray(_WriteableFace(a))
    return alias if alias.dtype == a.dtype else alias.view(a.dtype)  # e.g. bfloat16 is "|V2"


def as_rows(x: np.ndarray, axis) -> np.ndarray:
    """A C-contiguous ``[rows, x.shape[axis]]`` array holding the lanes of ``x`` along ``axis``.

    A view when the layout allows it (last axis, C-contiguous), else one copy: every layout
    goes through the same row kernel, so results are bitwise identical to a contiguous copy.
    ``axis`` may also be a tuple of axes (from :func:`axes_index`): a row is then every
    element those axes span (SciPy's reduction over several axes).
    """
    moved, k = _lanes_last(x, axis)
    return readable(np.ascontiguousarray(moved).reshape(_rows_shape(moved, k)))


def rows_out(out: np.ndarray, axis) -> tuple[np.ndarray, bool]:
    """The ``[rows, cols]`` array a kernel should write for ``out``, and whether it is a view.

    When ``out`` cannot be viewed as C-contiguous rows, the caller writes a temporary and
    copies it back with :func:`store_rows`.
    """
    moved, k = _lanes_last(out, axis)
    shape = _rows_shape(moved, k)
    if moved.flags.c_contiguous:
        return moved.reshape(shape), True
    return np.empty(shape, out.dtype), False


def store_rows(out: np.ndarray, axis, rows: np.ndarray) -> None:
    """Copy ``rows`` (from :func:`rows_out`) back into ``out`` along ``axis``."""
    moved, _ = _lanes_last(out, axis)
    moved[...] = rows.reshape(moved.shape)


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` share memory but are not the same elements in the same order."""
    if not np.shares_memory(a, b):
        return False
    same = (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
    )
    return not same
