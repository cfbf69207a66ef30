"""Input checks and layout handling shared by every public function.

Kernels assume valid, C-contiguous inputs; everything a user can get wrong is caught here and
turned into a ``TypeError``/``ValueError`` (or NumPy's ``AxisError``) that says what to do.
Checks use ``if``/``raise``, never ``assert`` (which ``python -O`` removes).
"""

from __future__ import annotations

import math
import operator

import numpy as np

try:  # NumPy >= 2
    from numpy.lib.array_utils import normalize_axis_index
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import normalize_axis_index

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def float_array(x, name: str) -> np.ndarray:
    """``x`` as a float32/float64 ndarray (lists become float64), or a ``TypeError``."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__array__") or isinstance(x, (list, tuple, float, int)):
            x = np.asarray(x)
            if x.dtype.kind in "iub":
                x = x.astype(np.float64)
        else:
            raise TypeError(
                f"{name} must be a NumPy array of float32 or float64, got {type(x).__name__}"
            )
    if x.dtype.kind == "f" and not x.dtype.isnative:  # big-endian data: same values, native
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {x.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float32)"
        )
    return x


def int_array(x, name: str) -> np.ndarray:
    """``x`` as an int32/int64 ndarray, or a ``TypeError`` that says how to convert it."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu" or x.dtype.kind == "b":
        raise TypeError(
            f"{name} must hold integer indices (int32 or int64), got {x.dtype}; "
            f"convert it with {name}.astype(np.int64)"
        )
    if x.dtype not in INT_DTYPES:
        x = x.astype(np.int64)
    return x


def axis_index(axis, ndim: int) -> int:
    """Normalize ``axis`` like NumPy (negative allowed); ``AxisError`` when out of range."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    return normalize_axis_index(axis, ndim)


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


def as_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """A C-contiguous ``[rows, x.shape[axis]]`` array holding the lanes of ``x`` along ``axis``.

    A view when the layout allows it (last axis, C-contiguous), else one copy: every layout
    goes through the same row kernel, so results are bitwise identical to a contiguous copy.
    """
    moved = np.moveaxis(x, axis, -1) if axis != x.ndim - 1 else x
    return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), x.shape[axis])


def rows_out(out: np.ndarray, axis: int) -> tuple[np.ndarray, bool]:
    """The ``[rows, cols]`` array a kernel should write for ``out``, and whether it is a view.

    When ``out`` cannot be viewed as C-contiguous rows, the caller writes a temporary and
    copies it back with :func:`store_rows`.
    """
    moved = np.moveaxis(out, axis, -1) if axis != out.ndim - 1 else out
    shape = (math.prod(moved.shape[:-1]), out.shape[axis])
    if moved.flags.c_contiguous:
        return moved.reshape(shape), True
    return np.empty(shape, out.dtype), False


def store_rows(out: np.ndarray, axis: int, rows: np.ndarray) -> None:
    """Copy ``rows`` (from :func:`rows_out`) back into ``out`` along ``axis``."""
    moved = np.moveaxis(out, axis, -1) if axis != out.ndim - 1 else out
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
