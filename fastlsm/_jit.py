"""JIT policy and thread control: the one place that decides how kernels are compiled.

Every kernel module imports :func:`kernel` from here, so caching, fastmath flags, the error
model and the threading policy are decided once:

- Entry kernels are cached on disk (``FASTLSM_CACHE_DIR``, else ``~/.cache/fastlsm``), keyed
  on a hash of every package source, so a second process pays no compile time.
- ``fastmath`` is limited to :data:`FASTMATH` (no signed zeros): see there.
- ``error_model="numpy"``: division by zero gives inf/NaN instead of raising.
- No threading setting of Numba is changed at import (the cache locator below serves only
  fastlsm's own files). Numba has one threading layer per process, chosen at the first
  parallel launch by anyone, so it cannot be isolated: fastlsm uses that layer; the
  variable ``FASTLSM_THREADING_LAYER`` (``omp`` or ``tbb``) picks one only if fastlsm's
  launch is the first and the user set no layer of their own (``NUMBA_THREADING_LAYER`` /
  ``numba.config.THREADING_LAYER``). If the layer is ``workqueue`` (not thread-safe),
  fastlsm serializes its own calls. Thread counts: see :func:`use_threads` and :func:`public`.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import sys
import threading
import types

import numba
from numba.core import caching

FASTMATH = frozenset({"nsz"})
"""LLVM fast-math flags of every kernel: signed-zero freedom only.

- Not ``reassoc``: it rewrites ``(x - m) - c`` as ``x - (m + c)``, losing the low bits of
  large logits, and lets the vectorizer pick a summation order per compiled copy of a
  function (bits then depended on the thread and on the cache state). Sums go through
  ``_kernels.rows.block_sum`` and the row pass of ``_kernels.sumexp``, whose order is
  written out in LLVM IR.
- Not ``contract``: fused multiply-adds are written explicitly (``_kernels.math.fma``), so
  no rounding is left to the code generator.
- Not ``nnan``/``ninf``: masks are ``-inf`` and NaN must propagate.
- Not ``arcp``/``afn``: no approximate division or library functions.
"""

THREADING_LAYERS = ("omp", "tbb")


def _preload_tbb() -> None:
    """Make a pip-installed TBB visible to Numba.

    The ``tbb`` wheel puts ``libtbb.so.12`` in ``<prefix>/lib``, which the dynamic loader does
    not search; Numba then silently drops the tbb layer. Loading it by full path first fixes it.
    """
    for prefix in {sys.prefix, sys.base_prefix}:
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


def _user_chose_layer() -> bool:
    """True when the process's Numba threading layer was chosen by someone else: launched
    already, or set through ``NUMBA_THREADING_LAYER`` / ``numba.config.THREADING_LAYER``."""
    from numba.np.ufunc import parallel

    return (
        parallel._is_initialized
        or "NUMBA_THREADING_LAYER" in os.environ
        or str(numba.config.THREADING_LAYER).lower() != "default"
    )


def _choose_layer() -> None:
    """Apply ``FASTLSM_THREADING_LAYER`` just before fastlsm's first launch, if still possible.

    Numba loads one threading layer per process, at the first parallel launch of anyone.
    fastlsm therefore sets nothing at import, and sets the layer only when the variable asks
    for one and neither the user nor a launch has chosen it (their choice always wins).
    """
    requested = os.environ.get("FASTLSM_THREADING_LAYER", "").strip().lower()
    if requested and requested not in THREADING_LAYERS:
        raise ValueError(
            f"FASTLSM_THREADING_LAYER={requested!r} is not supported; use one of "
            f"{', '.join(THREADING_LAYERS)} (or leave it unset for Numba's choice)"
        )
    if requested and not _user_chose_layer():
        if requested == "tbb":
            _preload_tbb()
        numba.config.THREADING_LAYER = requested


_state_lock = threading.Lock()
_serialize: threading.RLock | None = None
_layer_ready = False
_get_count = None  # the layer's own get/set of the calling thread's count (C functions), bound
_set_count = None  # by _ensure_layer: numba.get/set_num_threads take two locks on every call


def _ensure_layer() -> None:
    """Launch Numba's threads (once), and serialize fastlsm's calls under ``workqueue``.

    ``workqueue`` (Numba's fallback when neither TBB nor OpenMP loads) aborts the process
    when two host threads launch parallel kernels at the same time; fastlsm's own calls then
    take a process-wide lock (the user's own parallel Numba code cannot be protected).
    """
    global _serialize, _layer_ready, _get_count, _set_count
    with _state_lock:
        if _layer_ready:
            return
        _choose_layer()
        numba.get_num_threads()  # launches the layer
        from numba.np.ufunc import parallel

        # What numba.get/set_num_threads call once the layer is up (after their range check,
        # which use_threads' counts always pass): the same per-thread count, ~5x cheaper.
        _get_count, _set_count = parallel._get_num_threads, parallel._set_num_threads
        if numba.threading_layer() == "workqueue":
            _serialize = threading.RLock()
        _layer_ready = True


def public(fn):
    """Decorate a public function: it leaves the calling thread's Numba state as it was.

    fastlsm's thread count (:func:`set_num_threads`) is applied per launch by
    :func:`use_threads`, which, the first time it changes the calling thread's
    ``numba.get_num_threads()`` during a call, records the count it found; this restores
    that count on return (also on error), so a user's Numba code never sees fastlsm's
    setting. Nothing is cached between calls: the count is read afresh at every launch, so
    a change the user makes between two calls is seen. A call that changes nothing costs no
    Numba call at all here.
    """

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not _layer_ready:
            _ensure_layer()
        stack = _frames()
        stack.append(0)  # the caller's count, once this call changes it (counts are >= 1)
        try:
            if _serialize is None:
                return fn(*args, **kwargs)
            with _serialize:
                return fn(*args, **kwargs)
        finally:
            saved = stack.pop()
            if saved and _get_count() != saved:
                _set_count(saved)

    return call


_callers = threading.local()  # per host thread: the counts public() calls will restore


def _frames() -> list:
    """The calling host thread's stack of :func:`public` calls (see there)."""
    try:
        return _callers.stack
    except AttributeError:
        _callers.stack = []
        return _callers.stack


def caller_threads() -> None:
    """Give the calling thread back its own Numba thread count before running user code
    (e.g. ``beam_search``'s ``step_fn``); the next launch applies fastlsm's count again."""
    stack = _frames()
    if not stack:
        return
    if not stack[-1]:  # unchanged so far: restore on return whatever the user code sets
        stack[-1] = _get_count()
    elif _get_count() != stack[-1]:
        _set_count(stack[-1])


# --------------------------------------------------------------------------- compile cache

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def cache_dir() -> str:
    """Where compiled kernels are stored: ``FASTLSM_CACHE_DIR``, else ``~/.cache/fastlsm``."""
    root = os.environ.get("FASTLSM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastlsm",
    )
    return os.path.join(root, f"numba-{numba.__version__}")


def _package_stamp() -> bytes:
    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(PACKAGE_DIR)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, PACKAGE_DIR).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.digest()


class _PackageCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Cache locator for fastlsm's kernels.

    Numba keys a cached function on its own file only, so a kernel cached in one module keeps
    calling the old version of a helper changed in another. The stamp here hashes every source
    file of the package: any change recompiles everything, never a stale mix.
    """

    _stamp = _package_stamp()  # at import: the sources this process actually runs

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        rel = os.path.relpath(os.path.dirname(os.path.abspath(py_file)), PACKAGE_DIR)
        self._cache_path = os.path.join(cache_dir(), rel)

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return self._stamp

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(PACKAGE_DIR + os.sep):
            return None
        return super().from_function(py_func, py_file)


if _PackageCacheLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _PackageCacheLocator)


def kernel(fn=None, *, parallel: bool = False, entry: bool | None = None, inline: str = "never"):
    """Compile ``fn`` with the project's policy (see module docstring).

    - ``@kernel``: a helper, called only from other kernels. It is never cached on its own:
      it is always compiled from source into the kernel that calls it. (Numba links a
      *cached* helper as opaque object code, an uncached one is inlined and optimized in
      context; the two can vectorize a reduction differently and round differently, so a
      kernel's bits would depend on what happened to be in the cache.)
    - ``@kernel(parallel=True)``: a row-parallel entry kernel, cached. Its ``serial``
      attribute is the same function compiled without ``parallel`` (cached, compiled on
      first use): what :func:`launch` runs for a one-thread problem, which then pays no
      parallel launch (about 0.6 us) and no thread-count change.
    - ``@kernel(entry=True)``: a serial entry kernel (called from Python or C), cached.
    - ``@kernel(parallel=True, entry=False)``: a parallel helper (a ``prange`` over the parts
      of one row, :mod:`._kernels.rowstate`), compiled into its caller like any helper and
      launched only from outside a ``prange`` (never nested).
    - ``@kernel(inline="always")``: a helper whose Numba IR is spliced into each caller
      (Numba's ``inline="always"``) instead of becoming a library of its own. For thin
      layers over a large call tree: Numba optimizes and compiles to machine code every
      library together with everything it links, so each layer repeats the work of the whole
      tree below it (measured: inlining the two layers between ``sample_rows`` and
      ``row_state`` cut the float32 ``sample`` compile from 47 to 39 s, and the split
      float64 one from 83 to 56 s). Not for a helper with several call sites of one type:
      each site gets its own copy (``row_state`` inlined made ``verify_draft`` 30 -> 42 s).

    Entry kernels are never called from other kernels.
    """
    cache = parallel if entry is None else bool(entry)

    def wrap(f):
        compiled = numba.njit(cache=cache, nogil=True, parallel=parallel, inline=inline,
                              **JIT_OPTIONS)(f)
        if parallel and cache:
            compiled.serial = numba.njit(cache=True, nogil=True, **JIT_OPTIONS)(_serial_copy(f))
        return compiled

    return wrap(fn) if fn is not None else wrap


def _serial_copy(f):
    """``f`` as a new function object named ``<qualname>__serial`` (its own cache entry)."""
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__module__ = f.__module__
    g.__qualname__ = f.__qualname__ + "__serial"
    g.__doc__ = f"Serial copy of :func:`{f.__qualname__}` (see fastlsm._jit.kernel)."
    return g


JIT_OPTIONS = {"fastmath": set(FASTMATH), "error_model": "numpy"}
"""Options for ``numba.extending.overload(..., jit_options=JIT_OPTIONS)`` and
``register_jitable(**JIT_OPTIONS)``: without them Numba compiles those functions with its
defaults (no fast-math flags), so whether LLVM fuses their multiply-adds into FMAs would be
left to the code generator, and could differ between a fresh compile and a cached one."""


# --------------------------------------------------------------------------- threads

_num_threads: int | None = None


def _default_threads() -> int:
    env = os.environ.get("FASTLSM_NUM_THREADS", "").strip()
    limit = numba.config.NUMBA_NUM_THREADS
    if not env:
        return limit
    try:
        n = int(env)
    except ValueError:
        raise ValueError(
            f"FASTLSM_NUM_THREADS={env!r} is not an integer; set it to a thread count "
            f"between 1 and {limit}"
        ) from None
    return max(1, min(n, limit))


def set_num_threads(n: int) -> None:
    """Set the number of threads every fastlsm kernel uses, in every host thread.

    ``n`` must be between 1 and the size of Numba's pool (``NUMBA_NUM_THREADS``, by default
    the number of cores). The environment variable ``FASTLSM_NUM_THREADS`` sets the initial
    value. Results are bitwise identical for every thread count.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads() takes an integer, got {type(n).__name__}")
    n = int(n)
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(
            f"set_num_threads({n}): the thread count must be between 1 and {limit} "
            f"(set NUMBA_NUM_THREADS before importing fastlsm to raise the limit)"
        )
    _num_threads = n


def get_num_threads() -> int:
    """The number of threads fastlsm kernels use (see :func:`set_num_threads`)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def _threads_for(work: int, rows: int) -> int:
    """The one thread decision: one thread for problems smaller than ``SERIAL_WORK``
    elements (on a shared VM a preempted worker stalls the whole parallel region for longer
    than the work takes) and for a single row (``rows``: the row kernels give each row to
    one thread, so a second thread would only wait), else :func:`get_num_threads`."""
    return 1 if work < SERIAL_WORK or rows < 2 else get_num_threads()


def workers_spin() -> bool:
    """Whether the worker threads wait for the next parallel region spinning, not asleep:
    false under ``OMP_WAIT_POLICY=passive``. Only then may one row be split over threads
    (the sampler): waking sleeping workers for each pass of one row costs more than the pass
    (measured: 330 us a call against 140 spinning and 210 serial, [1, 128256] top-p)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().lower() != "passive"


def use_threads(work: int, rows: int) -> None:
    """Apply the thread count for ``work`` elements in ``rows`` rows (:func:`_threads_for`)
    to the calling host thread before a launch of a parallel kernel.

    Numba's thread count is per host thread; this makes :func:`set_num_threads` global.
    Only called inside a :func:`public` function, which restores the caller's count.
    """
    _apply(_threads_for(work, rows))


def launch(compiled, work: int, rows: int):
    """The kernel to call for ``work`` elements in ``rows`` rows: the serial copy of a
    parallel kernel (:func:`kernel`) when the problem gets one thread, else ``compiled``,
    with the thread count applied (:func:`use_threads`). Same bits either way."""
    n = _threads_for(work, rows)
    serial = getattr(compiled, "serial", None)
    if n == 1 and serial is not None:
        return serial
    _apply(n)
    return compiled


def one_thread(work: int, rows: int) -> bool:
    """Whether a problem of ``work`` elements in ``rows`` rows runs on one thread
    (:func:`_threads_for`): then :func:`launch` gives the serial copy of a parallel kernel,
    and :func:`serial_entry` may call it directly."""
    return _threads_for(work, rows) == 1


serial_entries: dict = {}
"""(parallel kernel, caller's type key) -> its compiled serial entry point (:func:`serial_entry`;
the per-token fast paths look an entry up here directly, a call less)."""


def serial_entry(compiled, key, args):
    """The serial copy of the parallel kernel ``compiled`` (:func:`kernel`), compiled for
    ``args``, as a function of the same arguments that skips Numba's dispatch; None when
    ``compiled`` has no serial copy or the threading layer is not set up yet.

    On every call Numba's dispatcher computes the type of each argument and looks the
    overload up: on a one-row call that is a large share of the time (see the README's
    per-call figures). A caller whose checks already fix the Numba type of every argument
    (e.g. float32 arrays that are C-contiguous and aligned; Numba's array type is the
    dtype, the number of dimensions, the layout, alignment and writeability) passes a
    hashable ``key`` that determines those types, and gets the entry point the dispatcher
    itself would call, cached per ``(compiled, key)``: the same machine code, the same
    bits, no Numba setting touched. A key that does not determine the types is a bug:
    the entry point would read the arguments as the first caller's types.

    Only for problems that get one thread (:func:`one_thread`): the serial copy starts no
    thread, so a caller may skip :func:`public` (there is no thread count to restore and
    no parallel launch to serialize). Before the first :func:`public` call has set up the
    threading layer this returns None, so that the first call takes the general path and
    reports a bad ``FASTLSM_THREADING_LAYER`` as every call does.
    """
    entry = serial_entries.get((compiled, key))
    if entry is None:
        serial = getattr(compiled, "serial", None)
        if serial is None or not _layer_ready:
            return None
        entry = serial.compile(tuple(numba.typeof(a) for a in args))
        serial_entries[compiled, key] = entry
    return entry


def _apply(n: int) -> None:
    if _get_count is None:  # outside any public() call (e.g. a benchmark harness)
        _ensure_layer()
    cur = _get_count()
    if cur != n:
        stack = _frames()
        if stack and not stack[-1]:
            stack[-1] = cur  # what the enclosing public() call gives back
        _set_count(n)


SERIAL_WORK = 1 << 15
