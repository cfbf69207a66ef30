"""Element dtypes of the public API and how kernels see them: the one place for 16-bit facts.

Kernels compute in float32 for float32, bfloat16 and float16 data and in float64 for float64.
16-bit arrays reach them as integer views of their bits (no copy), whose dtype names the
element kind (``fastlsm/_kernels/half.py`` loads and stores them):

============================  ===============  ==========================================
array dtype                   kernel view      float results (lse, losses, scores)
============================  ===============  ==========================================
``ml_dtypes.bfloat16``        ``uint16``       float32
``np.float16``                ``int16``        float32
``np.float32``                itself           float32
``np.float64``                itself           float64
============================  ===============  ==========================================

Elementwise results (log_softmax, softmax, the cross-entropy gradient) are of the input's
dtype by default: a 16-bit output holds each float32 result rounded once to nearest, ties to
even.

ml_dtypes is not imported here: its import takes about a second of CPU (measured: 0.8-1.3 s
with ml_dtypes 0.7, NumPy 2.4, more than the rest of ``import fastlsm`` and most of a C host's
cold start). A bfloat16 array or dtype can only exist once the caller has imported it, so
bfloat16 is recognised through ``sys.modules`` (:func:`_bfloat16`); the one place that
turns a name into a dtype (``dtype="bfloat16"``) imports it on demand.
"""

from __future__ import annotations

import sys

import numpy as np

from ._kernels import half as _half
from ._validate import float_array, readable

FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
_NAMES = {FLOAT16: "np.float16", FLOAT32: "np.float32", FLOAT64: "np.float64"}
_F16_VIEW, _BF16_VIEW = np.dtype(np.int16), np.dtype(np.uint16)


def _bfloat16() -> np.dtype | None:
    """``ml_dtypes.bfloat16``'s dtype if ml_dtypes is imported, else None."""
    ml = sys.modules.get("ml_dtypes")
    return None if ml is None else np.dtype(ml.bfloat16)


_VIEWS: dict = {id(FLOAT16): (FLOAT16, _F16_VIEW)}  # id -> (the dtype, kept alive; its view)


def _half_view(dtype: np.dtype) -> np.dtype | None:
    """The kernel view of a 16-bit ``dtype`` (``int16`` for float16, ``uint16`` for
    bfloat16), None for any other dtype. The dtypes seen are looked up by identity first
    (NumPy's and ml_dtypes' dtypes are singletons): a one-row call asks several times."""
    seen = _VIEWS.get(id(dtype))
    if seen is not None:
        return seen[1]
    if dtype == FLOAT16:
        return _F16_VIEW
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype == _bfloat16():
        _VIEWS[id(dtype)] = (dtype, _BF16_VIEW)
        return _BF16_VIEW
    return None


def is_half(dtype) -> bool:
    """Whether ``dtype`` is bfloat16 or float16."""
    return _half_view(np.dtype(dtype)) is not None


def result_dtype(dtype) -> np.dtype:
    """The dtype of float results computed from data of ``dtype``: float32 for the 16-bit
    dtypes (their math is float32), else ``dtype`` itself."""
    dtype = np.dtype(dtype)
    return FLOAT32 if is_half(dtype) else dtype


def kernel_view(a: np.ndarray) -> np.ndarray:
    """``a`` as a kernel takes it: a 16-bit array as a view of its bits (``uint16`` for
    bfloat16, ``int16`` for float16), any other array unchanged; a read-only array as a
    writeable alias (:func:`fastlsm._validate.readable`: for arrays the kernel only reads)."""
    a = readable(a)
    view = _half_view(a.dtype)
    if view is None:
        return a
    if a.dtype == FLOAT16 and not _half.float16_native():
        raise TypeError(
            "float16 data needs a CPU with float16 conversions (x86 F16C), and Numba's "
            "target CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) has none; convert with "
            "x.astype(np.float32), or unset NUMBA_CPU_NAME"
        )
    return a.view(view)


FLOAT_IDS = frozenset((id(FLOAT32), id(FLOAT64)))
"""Identities of the dtypes kernels take as they are (no view)."""


def fast_dtype(dtype: np.dtype) -> bool:
    """Whether the per-token fast paths take arrays of ``dtype`` (a ``np.dtype``) as they
    are: float32, float64, or bfloat16/float16 (handed over by :func:`fast_view`). Identity
    tests first: a one-row call asks on every call."""
    return id(dtype) in FLOAT_IDS or (dtype.itemsize == 2 and _half_view(dtype) is not None)


FAST_VIEWS: dict = {}
"""id of a 16-bit dtype the fast paths have taken -> (the dtype, kept alive; its kernel
view): filled by :func:`fast_view_dtype`, which a per-token path reads directly (a call
less) before calling it on a miss."""


def fast_view_dtype(dtype: np.dtype) -> np.dtype | None:
    """The kernel view dtype of a 16-bit :func:`fast_dtype` (``uint16`` for bfloat16,
    ``int16`` for float16), None for any other dtype; remembered in :data:`FAST_VIEWS`.
    Raises :func:`kernel_view`'s TypeError for float16 on a target without float16
    conversions, as every path does (so that dtype is never remembered)."""
    seen = FAST_VIEWS.get(id(dtype))
    if seen is not None:
        return seen[1]
    if dtype.itemsize != 2 or _half_view(dtype) is None:
        return None
    view = kernel_view(np.empty(0, dtype)).dtype
    FAST_VIEWS[id(dtype)] = (dtype, view)
    return view


def fast_view(a: np.ndarray) -> np.ndarray:
    """:func:`kernel_view` of an array of a :func:`fast_dtype`: its item size alone tells
    the 16-bit ones, so float32/float64 arrays pay no dtype lookup."""
    return kernel_view(a) if a.itemsize == 2 else a


def dtype_name(dtype) -> str:
    """How to spell ``dtype`` in an error message (``np.float32``, ``ml_dtypes.bfloat16``)."""
    dtype = np.dtype(dtype)
    if dtype == _bfloat16():
        return "ml_dtypes.bfloat16"
    return _NAMES.get(dtype, f"np.{dtype.name}")


def logits_array(x, name: str, *, integers: bool = False) -> np.ndarray:
    """``x`` as a float64, float32, bfloat16 or float16 ndarray (native byte order, aligned),
    else the ``TypeError`` of :func:`fastlsm._validate.float_array` (``integers`` as there)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f" and not x.dtype.isnative and x.dtype.itemsize == 2:
            x = x.astype(FLOAT16)
        if is_half(x.dtype):
            return x if x.flags.aligned else x.copy()
    try:
        return float_array(x, name, integers=integers)
    except TypeError as e:
        raise TypeError(
            str(e).replace("float32 or float64", "float32, float64, bfloat16 or float16", 1)
        ) from None


def output_dtype(x_dtype, dtype, out) -> np.dtype:
    """The dtype of an elementwise result (log_softmax, softmax) of ``x_dtype`` data:
    ``dtype`` if given, else ``out``'s dtype if given, else ``x_dtype``.

    A 16-bit input gives either its own dtype or float32 (computed from the same input);
    other combinations are computed from ``x`` converted to the result dtype first (PyTorch's
    ``dtype=``). ``TypeError`` for a non-float ``dtype`` or a ``dtype``/``out`` mismatch.
    """
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            dtype = _named_dtype(dtype)
        if dtype not in (FLOAT64, FLOAT32) and not is_half(dtype):
            raise TypeError(
                f"dtype must be np.float32, np.float64, ml_dtypes.bfloat16 or np.float16, "
                f"got {dtype}"
            )
        if isinstance(out, np.ndarray) and out.dtype != dtype:
            raise TypeError(
                f"out has dtype {out.dtype} but dtype={dtype_name(dtype)} was asked; "
                f"pass one of them"
            )
        return dtype
    if isinstance(out, np.ndarray) and direct(x_dtype, out.dtype):
        return out.dtype
    return np.dtype(x_dtype)


def _named_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)`` for a name NumPy learns from ml_dtypes (``"bfloat16"``): imports
    ml_dtypes, as the caller asked for one of its dtypes; else ``TypeError``."""
    if isinstance(dtype, str):
        import ml_dtypes  # noqa: F401 (registers its dtype names with NumPy)

        try:
            return np.dtype(dtype)
        except TypeError:
            pass
    raise TypeError(f"dtype must be a NumPy float dtype, got {dtype!r}") from None


def direct(x_dtype, out_dtype) -> bool:
    """Whether a kernel reads ``x_dtype`` data and writes ``out_dtype`` results directly
    (same dtype, or 16-bit in and float32 out); otherwise ``x`` is converted first."""
    x_dtype, out_dtype = np.dtype(x_dtype), np.dtype(out_dtype)
    return x_dtype == out_dtype or (is_half(x_dtype) and out_dtype == FLOAT32)


def float_logits(x, name: str) -> np.ndarray:
    """:func:`logits_array` where 16-bit data must become float32 (``verify_draft`` with
    target and draft logits of different dtypes): float32/float64 as they are,
    bfloat16/float16 as an exact float32 copy."""
    x = logits_array(x, name)
    if not is_half(x.dtype):
        return x
    return widened(np.ascontiguousarray(x).reshape(-1, x.shape[-1] if x.ndim else 1)).reshape(
        x.shape
    )


def widened(rows: np.ndarray) -> np.ndarray:
    """A float32 copy of C-contiguous ``[N, C]`` 16-bit ``rows`` (exact): the input of a
    float32 kernel for a family without 16-bit loads."""
    out = np.empty(rows.shape, FLOAT32)
    if out.size:
        _half.convert_rows(kernel_view(rows), out)
    return out

