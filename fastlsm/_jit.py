"""JIT policy and thread control: the one place that decides how kernels are compiled.

Every kernel module imports :func:`kernel` from here, so caching, fastmath flags, the error
model and the threading layer are set once:

- Entry kernels are cached on disk (``FASTLSM_CACHE_DIR``, else ``~/.cache/fastlsm``), keyed
  on a hash of every package source, so a second process pays no compile time.
- ``fastmath`` is limited to :data:`FASTMATH` (no signed zeros): see there.
- ``error_model="numpy"``: division by zero gives inf/NaN instead of raising.
- The threading layer is a thread-safe one (TBB or OpenMP, whichever Numba finds; the
  variable ``FASTLSM_THREADING_LAYER`` picks one); never ``workqueue``, which
  aborts the process when two host threads launch parallel kernels at the same time.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys

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


def _configure_threading() -> None:
    requested = os.environ.get("FASTLSM_THREADING_LAYER", "").strip().lower()
    if requested and requested not in THREADING_LAYERS:
        raise ValueError(
            f"FASTLSM_THREADING_LAYER={requested!r} is not supported; use one of "
            f"{', '.join(THREADING_LAYERS)} (workqueue is not thread-safe)"
        )
    if requested == "tbb" or not requested:
        _preload_tbb()
    order = [requested] if requested else []
    order += [x for x in THREADING_LAYERS if x not in order]
    # Numba wants a permutation of all three; "threadsafe" below never picks workqueue.
    numba.config.THREADING_LAYER_PRIORITY = order + ["workqueue"]
    numba.config.THREADING_LAYER = requested or "threadsafe"


_configure_threading()


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


def kernel(fn=None, *, parallel: bool = False, entry: bool | None = None):
    """Compile ``fn`` with the project's policy (see module docstring).

    - ``@kernel``: a helper, called only from other kernels. It is never cached on its own:
      it is always compiled from source into the kernel that calls it. (Numba links a
      *cached* helper as opaque object code, an uncached one is inlined and optimized in
      context; the two can vectorize a reduction differently and round differently, so a
      kernel's bits would depend on what happened to be in the cache.)
    - ``@kernel(parallel=True)``: a row-parallel entry kernel, cached.
    - ``@kernel(entry=True)``: a serial entry kernel (called from Python or C), cached.

    Entry kernels are never called from other kernels.
    """
    cache = parallel if entry is None else bool(entry)

    def wrap(f):
        return numba.njit(cache=cache, nogil=True, parallel=parallel, **JIT_OPTIONS)(f)

    return wrap(fn) if fn is not None else wrap


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


def use_threads(work: int) -> None:
    """Apply the configured thread count to the calling host thread before a kernel launch.

    Numba's thread count is per host thread; this makes :func:`set_num_threads` global.
    Problems smaller than ``SERIAL_WORK`` elements run on one thread: on a shared VM a
    preempted worker stalls the whole parallel region for longer than the work takes.
    """
    n = 1 if work < SERIAL_WORK else get_num_threads()
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


SERIAL_WORK = 1 << 15
