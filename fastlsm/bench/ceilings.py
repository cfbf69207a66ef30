"""Physical ceilings: the fastest a kernel of a given size can read, and read + write, memory.

Two compiled passes, run by the harness as two more providers of every case (same rounds,
same machine load, same process), on arrays of the case's byte size:

- **read**: a sum over the array's 64-bit words with :data:`ACCUMULATORS` independent
  64-byte vector accumulators, written in LLVM IR (:func:`sum_words`; integer adds: no
  float reassociation, no denormal slow paths whatever the bytes). It is the ceiling of the
  kernels that only read the logits (logsumexp, cross_entropy, sequence_logprobs,
  beam_step).
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
from llvmlite import ir as llvm_ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import _jit
from .._jit import kernel

# The one import of the kernels' store helpers: the ceiling writes as the kernels write.
from .._kernels import ir
from .._kernels.memory import store_fence, stream_affine, streams
from .registry import Provider

CEILINGS = ("read", "copy")
"""Ceiling names, as used by :attr:`KernelSpec.ceiling` and in the report."""


ACCUMULATORS = 4
"""Independent vector accumulators of the read pass (each a 64-byte vector of uint64)."""

_LANES = 8  # uint64 lanes of a 64-byte vector


@intrinsic
def sum_words(typingctx, words):
    """Wrapping sum of a 1-D C-contiguous uint64 array, written out as a read loop.

    Each step loads :data:`ACCUMULATORS` 64-byte vectors into as many independent
    accumulators (no dependency chain between consecutive loads), then the words past the
    last whole step one at a time. Written in IR rather than left to LLVM's vectorizer,
    which picks 32-byte vectors on this CPU (``prefer-vector-width=256``): one thread then
    read an L2-resident 513 KB array at 79 GB/s against 102 GB/s here and 83 for a C loop
    (AVX-512 intrinsics, gcc -O3). Where 64-byte vectors do not exist (AVX2) LLVM splits
    each into two.
    """
    if not (
        isinstance(words, types.Array)
        and words.ndim == 1
        and words.layout == "C"
        and words.dtype == types.uint64
    ):
        return None

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        i64 = llvm_ir.IntType(64)
        vty = llvm_ir.VectorType(i64, _LANES)
        n = builder.extract_value(a.shape, 0)
        step = llvm_ir.Constant(intp, ACCUMULATORS * _LANES)
        steps = builder.sdiv(n, step)
        accs = [cgutils.alloca_once_value(builder, ir.const(vty, 0)) for _ in range(ACCUMULATORS)]
        with cgutils.for_range(builder, steps, intp=intp) as loop:
            base = builder.mul(loop.index, step)
            for k, acc in enumerate(accs):
                j = builder.add(base, llvm_ir.Constant(intp, k * _LANES))
                v = builder.load(ir.elem_ptr(builder, a.data, j, vty), align=8)
                builder.store(builder.add(builder.load(acc), v), acc)
        total = builder.load(accs[0])
        for acc in accs[1:]:
            total = builder.add(total, builder.load(acc))
        reduce = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(i64, [vty]), "llvm.vector.reduce.add.v8i64"
        )
        s = cgutils.alloca_once_value(builder, builder.call(reduce, [total]))
        first = builder.mul(steps, step)
        with cgutils.for_range(builder, builder.sub(n, first), intp=intp) as loop:
            v = builder.load(builder.gep(a.data, [builder.add(first, loop.index)]))
            builder.store(builder.add(builder.load(s), v), s)
        return builder.load(s)

    return types.uint64(words), codegen


def _read_pass(words, threads, partial):
    """``partial[t] = sum(words[block t])`` (wrapping uint64 adds), one block per thread."""
    n = words.size
    for t in prange(threads):
        partial[t] = sum_words(words[t * n // threads : (t + 1) * n // threads])


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


# A one-thread problem runs the serial copies (``.serial``: the kernels' serial paths, no
# parallel launch). They must be those copies, with their own names: compiling the same
# function a second time without ``parallel`` gave it the same on-disk cache entry as the
# parallel one, so whichever was compiled first ran for both (the parallel passes ran
# the serial code on one thread: ceilings at one core's bandwidth, kernels over 100%).
read_pass = kernel(parallel=True)(_read_pass)
copy_pass = kernel(parallel=True)(_copy_pass)


def ceiling_threads(elements: int, rows: int) -> int:
    """Threads fastlsm's row kernels use for ``rows`` rows of ``elements`` in all."""
    if elements < _jit.SERIAL_WORK:
        return 1
    return max(1, min(_jit.get_num_threads(), rows))


@kernel(entry=True)
def call_floor(src, dst):
    """Nothing, given two arrays: the floor of any call into compiled code from Python."""
    return 0


CEILING_PROVIDERS = ("ceiling_read", "ceiling_copy", "ceiling_call")
"""Provider names of the ceiling passes, as they appear among a case's providers."""

CEILING_KEYS = ("read_gbs", "copy_gbs", "read_ms", "copy_ms", "call_ms")
"""Figures a ceiling entry may hold (a call-bound size has ``call_ms`` only)."""


def ceiling_providers(
    src: np.ndarray, dst: np.ndarray, threads: int, call: bool = False
) -> dict[str, Provider]:
    """The two ceiling passes over ``src`` (float32, 1-D; ``dst`` alike) as providers.

    ``"ceiling_read"`` sums ``src``'s words, ``"ceiling_copy"`` streams ``src`` into ``dst``;
    both on ``threads`` threads (set, untimed, before every call). ``call=True`` (a
    call-bound size): ``"ceiling_call"`` only, :func:`call_floor` of the two arrays.
    """
    if call:
        return {"ceiling_call": Provider(lambda: call_floor(src, dst))}
    raw = src.view(np.uint8)
    words = raw[: raw.size // 8 * 8].view(np.uint64)  # at most 7 bytes left out
    partial = np.zeros(threads, np.uint64)

    read, copy = (read_pass, copy_pass) if threads > 1 else (read_pass.serial, copy_pass.serial)

    def prepare() -> None:
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)

    return {
        "ceiling_read": Provider(lambda: read(words, threads, partial), prepare=prepare),
        "ceiling_copy": Provider(lambda: copy(src, dst, threads), prepare=prepare),
    }


def ceiling_figures(nbytes: int, timings: dict, threads: int) -> dict:
    """Figures of the ceiling passes over ``nbytes`` from their timings (keyed by provider
    name): GB/s and ms of each pass (``copy_gbs`` counts bytes read + written), or the
    ``call_ms`` of a call-bound size."""
    fig = {"bytes": nbytes, "threads": threads}
    if "ceiling_call" in timings:
        fig["call_ms"] = timings["ceiling_call"]["median_ms"]
        return fig
    read, copy = timings["ceiling_read"]["median_ms"], timings["ceiling_copy"]["median_ms"]
    fig.update(read_gbs=nbytes / read / 1e6, copy_gbs=2 * nbytes / copy / 1e6)
    fig.update(read_ms=read, copy_ms=copy)
    return fig
