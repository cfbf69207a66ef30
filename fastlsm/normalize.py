"""log_softmax, softmax and logsumexp along any axis of float32/float64/bfloat16/float16 arrays.

bfloat16 and float16 inputs are computed in float32 (see ``fastlsm/_dtypes.py``):
log_softmax and softmax return the input's dtype (each value rounded once) unless
``dtype=np.float32`` or a float32 ``out`` is given; logsumexp returns float32.

Special values (identical to PyTorch; see tests/test_normalize.py):

====================================  ===================  ==================  ===========
row contains                          log_softmax          softmax             logsumexp
====================================  ===================  ==================  ===========
some ``-inf`` (masked vocabulary)     ``-inf`` there,      0 there, the rest   of the
                                      rest normalized      sums to 1           finite part
only ``-inf``                         NaN                  NaN                 ``-inf``
a NaN                                 NaN (whole row)      NaN (whole row)     NaN
a ``+inf`` (no NaN)                   NaN (whole row)      NaN (whole row)     ``+inf``
one element (V = 1), finite           0                    1                   the element
empty axis (V = 0)                    empty                empty               ``-inf``
====================================  ===================  ==================  ===========

Large magnitudes (±1e4, ±1e30, up to the float maximum) never overflow: the row maximum is
subtracted first, and ``(x - max) - log(sum)`` keeps every bit of ``x - max``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _jit
from ._dtypes import (
    FAST_VIEWS,
    FLOAT32,
    FLOAT_IDS,
    direct,
    fast_dtype,
    fast_view,
    fast_view_dtype,
    kernel_view,
    logits_array,
    output_dtype,
    result_dtype,
)
from ._kernels import normalize as _k
from ._kernels.memory import PREFAULT_BYTES, fresh_output
from ._validate import (
    as_rows,
    axes_index,
    check_out,
    overlaps,
    readable,
    reduced_shape,
    rows_out,
    store_rows,
)


@_jit.public
def _elementwise(kernel, x, axis, out, dtype):
    """log_softmax / softmax (``kernel``) for every argument :func:`_one_thread` does not take."""
    if dtype is None and type(x) is np.ndarray and (out is None or type(out) is np.ndarray):
        fast = _fast_rows(x, axis, out)
        if fast is not None:  # skips the general layout handling below
            run = _jit.launch(kernel, x.size, fast[0])
            if out is None:
                out = fresh_output(x.shape, x.dtype)
            rows = readable(fast_view(x if x.ndim == 2 else x.reshape(fast)))
            run(rows, fast_view(out if x.ndim == 2 else out.reshape(fast)))
            return out
    x = logits_array(x, "x", integers=True)
    ax = axes_index(axis, x.ndim)
    odt = output_dtype(x.dtype, dtype, out)
    if not direct(x.dtype, odt):  # PyTorch's dtype=: the input is converted first
        x = x.astype(odt)
    lanes = math.prod(x.shape[a] for a in ((ax,) if isinstance(ax, int) else ax))
    run = _jit.launch(kernel, x.size, x.size // lanes if lanes else 0)
    if out is None:
        out = fresh_output(x.shape, odt)
    else:
        check_out(out, x.shape, odt)
        if overlaps(x, out):  # partial overlap: read from a private copy
            x = x.copy()
    if x.size == 0:
        return out
    rows = as_rows(x, ax)
    target, is_view = rows_out(out, ax)
    run(kernel_view(rows), kernel_view(target))
    if not is_view:
        store_rows(out, ax, target)
    return out


def _fast_rows(x: np.ndarray, axis, out) -> tuple[int, int] | None:
    """``(rows, cols)`` when ``x`` and ``out`` (None or an ndarray) need nothing of the general
    path (native, aligned, C-contiguous float32/float64/bfloat16/float16 (the 16-bit ones
    handed to the kernel by ``_dtypes.fast_view``, read-only ones by ``_validate.readable``),
    not empty, the last axis, ``out`` of the same dtype and shape, aligned, writeable and
    C-contiguous, ``x`` itself or disjoint from it), else None: the general path then
    handles (or rejects) the call. :func:`_one_thread` applies the same conditions, written
    out in its own body."""
    nd = x.ndim
    if not fast_dtype(x.dtype):
        return None
    if type(axis) is not int or not nd or (axis != -1 and axis != nd - 1):
        return None
    flags = x.flags
    if not (flags.carray or flags.c_contiguous and flags.aligned):  # carray: also writeable
        return None
    n = x.size
    if not n:
        return None
    if out is x:
        if not flags.writeable:
            return None
    elif out is not None:
        out_flags = out.flags
        if out.dtype is not x.dtype or not out_flags.carray or out.shape != x.shape:
            return None
        # Arrays that allocated their own memory are disjoint; else compare the bounds (exact
        # for contiguous arrays).
        if not (flags.owndata and out_flags.owndata) and np.may_share_memory(x, out):
            return None
    cols = x.shape[-1]
    return n // cols, cols


def _one_thread(kernel, x, axis, out, reduce: bool):
    """The per-token call, before any bookkeeping: the result when ``x``/``out`` take the
    fast path (the conditions of :func:`_fast_rows`) and the problem gets one thread
    (:func:`_jit.one_thread`), computed by the kernel's serial copy called directly
    (:func:`_jit.serial_entry`), else None (the caller then takes the :func:`_jit.public`
    path). ``reduce``: ``kernel`` writes one value per row (logsumexp), into a fresh array.
    Same bits and the same results as the general path (a serial copy starts no thread:
    nothing to restore).

    Written out flat, with no call but the kernel's on the common path (a float32 or
    float64 row, writeable, C-contiguous, ``out`` a disjoint array or None): each Python
    call costs about 0.1 us, and this is the whole of a one-row call's overhead. Measured
    (AMD EPYC Zen 4, [1, 8] float32, ``log_softmax(x, out=o)``): 2.0-2.1 us through the
    helper functions, 1.0-1.2 us written out; PyTorch's ``torch.log_softmax(x, -1,
    out=o)`` 1.3 us.
    """
    if type(x) is not np.ndarray:
        return None
    nd = x.ndim
    if type(axis) is not int or not nd or (axis != -1 and axis != nd - 1):
        return None
    dt = x.dtype
    half = id(dt) not in FLOAT_IDS
    if half:
        seen = FAST_VIEWS.get(id(dt))
        view = seen[1] if seen is not None else fast_view_dtype(dt)
        if view is None:
            return None
    flags = x.flags
    if flags.carray:  # C-contiguous, aligned and writeable
        writeable = True
    elif flags.c_contiguous and flags.aligned:
        writeable = False
    else:
        return None
    n = x.size
    if not n:
        return None
    shape = x.shape
    cols = shape[-1]
    rows = n // cols
    if n >= _jit.SERIAL_WORK and not _jit.one_thread(n, rows):
        return None
    if out is None:
        if n * dt.itemsize >= PREFAULT_BYTES:
            return None  # a fresh output this large is faulted in by a parallel kernel
    elif out is x:
        if not writeable:
            return None
    else:
        if type(out) is not np.ndarray:
            return None
        out_flags = out.flags
        if out.dtype is not dt or not out_flags.carray or out.shape != shape:
            return None
        # Arrays that allocated their own memory are disjoint; else compare the bounds
        # (exact for contiguous arrays).
        if not (flags.owndata and out_flags.owndata) and np.may_share_memory(x, out):
            return None
    xr = x if nd == 2 else x.reshape(rows, cols)
    if not writeable:
        xr = readable(xr)
    if half:
        xr = xr.view(view)
    if reduce:  # float results: float32 for 16-bit rows
        if nd == 2:  # the result is the row vector itself
            out = outr = np.empty(rows, FLOAT32 if half else dt)
        else:
            out = np.empty(shape[:-1], FLOAT32 if half else dt)
            outr = out.reshape(-1)
    else:
        if out is None:
            out = np.empty(shape, dt)
        outr = out if nd == 2 else out.reshape(rows, cols)
        if half:
            outr = outr.view(view)
    run = _jit.serial_entries.get((kernel, id(dt)))
    if run is None:  # the first call of this kernel and dtype: compiles or declines
        run = _jit.serial_entry(kernel, id(dt), (xr, outr))
        if run is None:
            return None
    run(xr, outr)
    return out


def log_softmax(x, axis=-1, *, out=None, dtype=None):
    """Logarithm of softmax along ``axis``: ``x - logsumexp(x, axis, keepdims=True)``.

    Parameters
    ----------
    x : array_like, float32, float64, bfloat16 (``ml_dtypes``) or float16
        Logits, any shape, byte order and layout; read-only arrays are fine. Integer and
        bool arrays, lists and scalars are computed in float64 (SciPy's convention; SciPy
        itself gives float16 for int8/uint8/bool). Complex: ``TypeError``.
    axis : int, tuple of ints or None, optional
        Axis to normalize (negative counts from the end), as ``scipy.special`` reads it: a
        tuple normalizes over every element those axes span, ``None`` over the whole array
        (0-d input included). Default: the last axis (SciPy's default is ``None``).
    out : ndarray, optional
        Where to write the result: same shape as ``x``, any memory layout; ``x``'s dtype,
        or float32 for bfloat16/float16 ``x``. May be ``x`` itself (in place). The only
        argument that must be writeable.
    dtype : dtype, optional
        The result's dtype (PyTorch's ``dtype=``). ``np.float32`` for bfloat16/float16 ``x``
        is computed from the 16-bit values directly; any other dtype than ``x``'s converts
        ``x`` to it first. Default: ``out``'s dtype, else ``x``'s.

    Returns
    -------
    ndarray
        Same shape as ``x``, of ``dtype`` (``out`` if given).

    Raises
    ------
    TypeError
        Non-numeric or complex ``x``; ``out`` not an ndarray or of another dtype;
        an axis that is not an integer.
    ValueError
        ``out`` of another shape or read-only; a repeated axis; ``numpy.exceptions.AxisError``
        (a ValueError) for an axis out of range.

    Notes
    -----
    One read of ``x`` and one write of the result; each row is normalized in two passes
    over cache-resident data. The last axis of a C-contiguous array is the fast path; other
    axes and strided views are copied into rows first (same bits as a contiguous copy).
    Special values: see the module docstring.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> fastlsm.log_softmax(np.array([1000.0, 1.0]))  # log(softmax(x)) gives [0, -inf]
    array([   0., -999.])
    >>> fastlsm.log_softmax(np.array([0.0, -np.inf], dtype=np.float32))
    array([  0., -inf], dtype=float32)
    """
    if dtype is None:
        done = _one_thread(_k.log_softmax_rows, x, axis, out, False)
        if done is not None:
            return done
    return _elementwise(_k.log_softmax_rows, x, axis, out, dtype)


def softmax(x, axis=-1, *, out=None, dtype=None):
    """Softmax along ``axis``: ``exp(x - logsumexp(x, axis, keepdims=True))``.

    Same parameters, dtypes, layouts and special values as :func:`log_softmax`; ``out`` may
    be ``x``.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> fastlsm.softmax(np.array([1e30, 0.0, -np.inf]))
    array([1., 0., 0.])
    """
    if dtype is None:
        done = _one_thread(_k.softmax_rows, x, axis, out, False)
        if done is not None:
            return done
    return _elementwise(_k.softmax_rows, x, axis, out, dtype)


def logsumexp(x, axis=-1, *, keepdims=False, out=None):
    """``log(sum(exp(x), axis))``, computed without overflow.

    Parameters
    ----------
    x : array_like, float32, float64, bfloat16 (``ml_dtypes``) or float16
        Input, any shape; accepted kinds as :func:`log_softmax` (integers: float64).
    axis : int, tuple of ints or None, optional
        Axes to reduce, as ``scipy.special.logsumexp`` (``None``: all). Default: the last.
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    out : ndarray, optional
        Where to write the result: the reduced shape and the result's dtype.

    Returns
    -------
    ndarray
        ``x.shape`` without ``axis`` (or with 1 there when ``keepdims``): ``x``'s dtype,
        float32 for bfloat16/float16 ``x``. A 0-d array when every axis is reduced (SciPy
        returns a NumPy scalar). Errors as :func:`log_softmax`.

    Notes
    -----
    Like PyTorch and SciPy, an infinite maximum shifts by 0: a row of ``-inf`` gives
    ``-inf``, a row with ``+inf`` (and no NaN) gives ``+inf``, an empty row gives ``-inf``.
    The sum of exponentials is accumulated in float64 for both dtypes.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> float(fastlsm.logsumexp(np.array([1e4, 1e4])))  # 1e4 + log(2)
    10000.69314718056
    """
    if out is None and keepdims is False:
        done = _one_thread(_k.logsumexp_rows, x, axis, None, True)
        if done is not None:
            return done
    return _logsumexp(x, axis, keepdims, out)


@_jit.public
def _logsumexp(x, axis, keepdims, out):
    """logsumexp for every argument :func:`_one_thread` does not take."""
    if type(x) is np.ndarray and out is None and keepdims is False:
        fast = _fast_rows(x, axis, None)
        if fast is not None:  # a contiguous problem on more than one thread
            out = np.empty(x.shape[:-1], result_dtype(x.dtype))
            rows = readable(fast_view(x.reshape(fast)))
            _jit.launch(_k.logsumexp_rows, x.size, fast[0])(rows, out.reshape(-1))
            return out
    x = logits_array(x, "x", integers=True)
    ax = axes_index(axis, x.ndim)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be True or False, got {keepdims!r}")
    shape = reduced_shape(x.shape, ax, keepdims)
    rdt = result_dtype(x.dtype)
    if out is None:
        out = np.empty(shape, rdt)
    else:
        check_out(out, shape, rdt)
        if np.shares_memory(x, out):  # results would overwrite rows not yet read
            x = x.copy()
    if out.size == 0:
        return out
    rows = kernel_view(as_rows(x, ax))
    is_view = out.flags.c_contiguous
    flat = out.reshape(-1) if is_view else np.empty(out.size, rdt)
    _jit.launch(_k.logsumexp_rows, x.size, rows.shape[0])(rows, flat)
    if not is_view:
        out[...] = flat.reshape(shape)
    return out
