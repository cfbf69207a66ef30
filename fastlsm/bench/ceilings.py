"""Physical ceilings: the fastest a kernel of a given size can read, and read + write, memory.

Two compiled passes, run by the harness as two more providers of every case (same rounds,
same machine load, same process), on arrays of the case's byte size:

- **read**: a vectorized sum over the array's 64-bit words. Integer adds are associative,
  so LLVM vectorizes the loop and interleaves several vector accumulators (no float
  reassociation needed, no denormal slow paths whatever the bytes): on one core it reads an
  L2-resident row faster than NumPy's own ``sum`` of the same words (measured 78 vs 68 GB/s
  on 513 KB). It is the ceiling of the kernels that only read the logits (logsumexp,
  cross_entropy, sequence_logprobs, beam_step).
- **copy**: ``dst = src`` with the stores the kernels use for an output of that size
  (``stream_affine`` with ``a = 0, s = 1, b = 0``, exact): streaming (non-temporal) stores
  and one fence per thread where ``memory.streams`` says the kernels stream (large outputs),
  plain stores for outputs that stay in cache. It is the ceiling of the kernels that write
  an output of the logits' size (log_softmax, softmax, cross_entropy_with_grad); bytes
  counted are read + written.

Both split the array into one contiguous block per thread, with the thread count the kernels
use for that problem (:func:`ceiling_threads`: one thread below ``_jit.SERIAL_WORK``
elements or for a single row, else ``min(threads, rows)``). A cache-resident size stays in
cache: each provider runs a block of consecutive calls over the same buffer, as the kernels do.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .. import _jit
from .._jit import kernel

# The one import of the kernels' store helpers: the ceiling writes as the kernels write.
from .._kernels.memory import store_fence, stream_affine, streams
from .registry import Provider

CEILINGS = ("read", "copy")
"""Ceiling names, as used by :attr:`KernelSpec.ceiling` and in the report."""


def _read_pass(words, threads, partial):
    """``partial[t] = sum(words[block t])`` (wrapping uint64 adds), one block per thread."""
    n = words.size
    for t in prange(threads):
        block = words[t * n // threads : (t + 1) * n // threads]
        s = np.uint64(0)
        for j in range(block.size):  # from 0: no negative-index wraparound, so it vectorizes
            s += block[j]
        partial[t] = s


def _copy_pass(src, dst, threads):
    """``dst = src`` in one contiguous block per thread, streaming (and one fence per
    thread) when the kernels would stream an output of ``dst``'s size."""
    n = src.size
    nontemporal = streams(dst.size * dst.itemsize)
    for t in prange(threads):
        lo = t * n // threads
        hi = (t + 1) * n // threads
        stream_affine(src[lo:hi], dst[lo:hi], 0.0, 1.0, 0.0, nontemporal)
        if nontemporal:
            store_fence()


# Compiled twice: a one-thread problem pays no parallel launch (the kernels' serial paths).
read_pass = kernel(parallel=True)(_read_pass)
copy_pass = kernel(parallel=True)(_copy_pass)
read_pass_serial = kernel(entry=True)(_read_pass)
copy_pass_serial = kernel(entry=True)(_copy_pass)


def ceiling_threads(elements: int, rows: int) -> int:
    """Threads fastlsm's row kernels use for ``rows`` rows of ``elements`` in all."""
    if elements < _jit.SERIAL_WORK:
        return 1
    return max(1, min(_jit.get_num_threads(), rows))


def ceiling_providers(src: np.ndarray, dst: np.ndarray, threads: int) -> dict[str, Provider]:
    """The two ceiling passes over ``src`` (float32, 1-D; ``dst`` alike) as providers.

    ``"ceiling_read"`` sums ``src``'s words, ``"ceiling_copy"`` streams ``src`` into ``dst``;
    both on ``threads`` threads (set, untimed, before every call).
    """
    raw = src.view(np.uint8)
    words = raw[: raw.size // 8 * 8].view(np.uint64)  # at most 7 bytes left out
    partial = np.zeros(threads, np.uint64)

    read, copy = (read_pass, copy_pass) if threads > 1 else (read_pass_serial, copy_pass_serial)

    def prepare() -> None:
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)

    return {
        "ceiling_read": Provider(lambda: read(words, threads, partial), prepare=prepare),
        "ceiling_copy": Provider(lambda: copy(src, dst, threads), prepare=prepare),
    }


def ceiling_figures(nbytes: int, read: dict, copy: dict, threads: int) -> dict:
    """GB/s of the two passes over ``nbytes`` (``copy_gbs`` counts bytes read + written)."""
    return {
        "bytes": nbytes,
        "threads": threads,
        "read_gbs": nbytes / read["median_ms"] / 1e6,
        "copy_gbs": 2 * nbytes / copy["median_ms"] / 1e6,
        "read_ms": read["median_ms"],
        "copy_ms": copy["median_ms"],
    }
