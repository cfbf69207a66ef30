"""Memory operations: streaming or plain row writes, the store fence, prefetch, page touch.

Nothing here computes a sum or an exponential: this module decides how bytes move.

- **Where streaming pays** (:func:`streams`): a kernel that writes its result with plain
  stores makes the CPU read every output line before overwriting it (read-for-ownership):
  a log_softmax with ``out=`` then moves 3 bytes per byte of input instead of 2, so large
  outputs are written with non-temporal (streaming) stores, whole lines straight to memory.
  An output that fits in cache (a server's per-token rows, read again at once) must stay
  there, and a streaming store costs a fence: outputs below :data:`STREAM_MIN_BYTES` use
  plain stores. The decision depends on the output's size only (never its alignment), and
  never changes a bit of the result.
- **Where row pipelining pays** (:func:`pipelines`): a row kernel that reads logits only
  (logsumexp, cross-entropy, sequence scoring) takes the maximum of its next row inside
  the current row's exp-sum loop when the logits come from memory on CPUs where that pays
  (Intel), a separate max pass over the row when they sit in cache or on other CPUs
  (:data:`PIPELINE_MIN_BYTES`, :data:`PIPELINES_HERE`). The same bits either way.
- :func:`stream_affine` / :func:`stream_divide` write ``(src - a) (* or /) s - b`` with the
  chosen store kind (LLVM does not vectorize a loop of scalar non-temporal stores from
  Numba, so the loop is LLVM IR: a plain-store head up to a 64-byte boundary of ``dst``,
  aligned vectors, a masked tail). Streaming stores are weakly ordered: kernels call
  :func:`store_fence` after their last row.
- :func:`prefetch` (into L2) and :func:`touch_pages` (fault in a fresh output in parallel).

The arithmetic carries no fast-math flags, so ``(src - a) * s - b`` is evaluated exactly in
that order (LLVM may not reassociate ``(x - m) - c`` into ``x - (m + c)``, which loses the
low bits of ``x - m`` for large logits).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._jit import kernel
from . import half, ir

STREAM_MIN_BYTES = 1 << 22
"""Outputs of at least this many bytes (in total, per kernel call) are written with streaming
stores; smaller ones with plain stores and no fence. 4 MiB: twice this machine's 2 MiB L2 per
core; an output this small is cheaper to keep in cache than to stream (a one-row [1, 8]
log_softmax took 0.39 us with a streaming store and its fence, 0.09 us without)."""


@kernel
def streams(nbytes):
    """Whether an output of ``nbytes`` bytes is written with streaming stores: the one
    decision (see :data:`STREAM_MIN_BYTES`)."""
    return nbytes >= STREAM_MIN_BYTES


PIPELINE_MIN_BYTES = 1 << 25
"""On CPUs where row pipelining pays (:data:`PIPELINES_HERE`), row kernels reading at least
this many bytes of logits (in total, per kernel call) pipeline their rows
(:func:`.rows.sumexp_next_max`): each row's exp-sum pass also loads the thread's next row,
for its maximum, with demand loads that the hardware prefetchers follow, so the next row
streams in from memory while this one's exponentials are computed. Otherwise (smaller
problems, other CPUs) a separate max pass runs over the next row, which the sum pass has
prefetched into L2. 32 MiB: an AMD EPYC Zen 3's L3."""

_AMD_CPUS = ("znver", "bdver", "btver", "amdfam", "barcelona", "k8", "athlon", "opteron")
_SEPARATE_PASS_CPUS = (*_AMD_CPUS, "generic", "x86-64")  # AMD, and no CPU named (not measured)


def _pipelining_pays(cpu: str, x86: bool) -> bool:
    """Whether row pipelining pays on the CPU LLVM compiles for (``cpu``: its LLVM name).

    Measured, the two paths forced in one process (float32 logsumexp, cross_entropy,
    sequence_logprobs; ``tests/test_row_pipelines.py``'s forced copies):
    - Intel Xeon (Sapphire Rapids class, AVX-512), 2 threads: pipelining made [4096, 32000]
      and [512, 128256] 1.2x faster (CHANGELOG, round 3);
    - AMD EPYC Zen 3 (AVX2), one thread: the separate pass never slower ([256, 32000]
      3.94 ms separate vs 4.35 pipelined, [1024, 32000] 15.4 vs 16.5, [512, 128256] 32.5 vs
      33.1);
    - AMD EPYC Zen 4 (AVX-512), 2 threads, interleaved rounds: [4096, 32000] logsumexp 20.0
      ms separate vs 28.6 pipelined, cross_entropy 23.5 vs 35.0, sequence_logprobs 33.6 vs
      41.4 (bfloat16 1.07-1.19x); [512, 128256] 0.95-1.07x; cache-resident sizes equal.

    So Intel x86 CPUs pipeline; AMD CPUs, a ``generic`` target and other architectures
    (not measured) take the separate pass.
    """
    cpu = cpu.lower()
    return x86 and not cpu.startswith(_SEPARATE_PASS_CPUS)


def _target_cpu() -> str:
    """The CPU name Numba compiles for (``NUMBA_CPU_NAME``, else the host's), which is also
    part of the key of every cached kernel: a decision taken from it is cached with it."""
    import llvmlite.binding as llvm
    import numba

    name = numba.config.CPU_NAME
    return llvm.get_host_cpu_name() if not name or name == "host" else name


PIPELINES_HERE = _pipelining_pays(_target_cpu(), ir.X86)
"""Whether row pipelining pays on this CPU (:func:`_pipelining_pays`)."""


@kernel
def pipelines(nbytes):
    """Whether a row kernel over ``nbytes`` bytes of logits pipelines its rows: the one
    decision (see :data:`PIPELINE_MIN_BYTES` and :data:`PIPELINES_HERE`); it never changes
    a bit of the result."""
    return PIPELINES_HERE and nbytes >= PIPELINE_MIN_BYTES


def affine_ir(builder, v, a, s, b, divide: bool):
    """``(v - a) / s - b`` (``divide``) or ``(v - a) * s - b``; ``s`` None: ``(v - a) - b``.
    Each operation rounds once, in the order written."""
    v = builder.fsub(v, a)
    if s is not None:
        v = builder.fdiv(v, s) if divide else builder.fmul(v, s)
    return builder.fsub(v, b)


def write_affine_ir(builder, src, dst, first, stop, consts, divide, nontemporal, intp):
    """Emit ``dst[j] = affine(src[j])`` for ``first <= j < stop``, where ``first`` is on a
    64-byte boundary of ``dst`` (or ``first == stop``): whole vectors (streaming when
    ``nontemporal``), then one masked vector. ``src`` and ``dst`` are ``(Element, data
    pointer)`` pairs (:class:`.ir.Element`: how each dtype is loaded and stored);
    ``consts``: ``(a, s, b)`` as vectors of the arithmetic type (``s`` may be None)."""
    (src_el, src_p), (dst_el, dst_p) = src, dst
    width = ir.width_of(consts[0].type)
    step = llvm_ir.Constant(intp, width)
    nvec = builder.sdiv(builder.sub(stop, first), step)
    with cgutils.for_range(builder, nvec, intp=intp) as loop:
        j = builder.add(first, builder.mul(loop.index, step))
        v = affine_ir(builder, src_el.load(builder, src_p, j, width), *consts, divide)
        dst_el.store(builder, v, dst_p, j, aligned=True, nontemporal=nontemporal)
    j = builder.add(first, builder.mul(nvec, step))
    with builder.if_then(builder.icmp_signed("<", j, stop)):
        mask = ir.lane_mask(builder, builder.sub(stop, j), width)
        v = affine_ir(builder, src_el.load_masked(builder, src_p, j, mask), *consts, divide)
        dst_el.store_masked(builder, v, dst_p, j, mask)


def write_scalar_ir(builder, src, dst, first, stop, consts, divide, intp):
    """``dst[j] = affine(src[j])`` one element at a time with plain stores (the unaligned
    head); arguments as :func:`write_affine_ir`, ``consts`` scalars."""
    (src_el, src_p), (dst_el, dst_p) = src, dst
    with cgutils.for_range(builder, builder.sub(stop, first), intp=intp) as loop:
        j = builder.add(first, loop.index)
        v = affine_ir(builder, src_el.load(builder, src_p, j, 1), *consts, divide)
        dst_el.store(builder, v, dst_p, j)


def _stream(divide):
    """Typer of ``dst[j] = (src[j] - a) (* or /) s - b``, streaming when ``nontemporal``."""

    def typer(typingctx, src, dst, a, s, b, nontemporal):
        ok = (
            isinstance(src, types.Array)
            and isinstance(dst, types.Array)
            and src.ndim == dst.ndim == 1
            and src.layout == dst.layout == "C"
            and isinstance(nontemporal, types.Boolean)
            and half.element(src.dtype) is not None
            and half.element(dst.dtype) is not None
            and half.element(src.dtype).reg == half.element(dst.dtype).reg
        )
        if not ok:
            return None
        elems = (half.element(src.dtype), half.element(dst.dtype))
        dtype = types.float32 if elems[0].reg == ir.F32 else types.float64

        def codegen(context, builder, signature, args):
            src_v, dst_v, a_v, s_v, b_v, nt = args
            scal = [
                context.cast(builder, v, t, dtype)
                for v, t in zip((a_v, s_v, b_v), signature.args[2:5], strict=True)
            ]
            src_a = context.make_array(signature.args[0])(context, builder, src_v)
            dst_a = context.make_array(signature.args[1])(context, builder, dst_v)
            intp = context.get_value_type(types.intp)
            n = builder.extract_value(dst_a.shape, 0)
            width = ir.LINE_BYTES // (dtype.bitwidth // 8)
            vec = [ir.splat(builder, v, width) for v in scal]
            head = ir.head_to_line(builder, dst_a.data, n, elems[1].itemsize, intp)
            src_p, dst_p = (elems[0], src_a.data), (elems[1], dst_a.data)
            zero = llvm_ir.Constant(intp, 0)
            write_scalar_ir(builder, src_p, dst_p, zero, head, scal, divide, intp)
            with builder.if_else(nt) as (streaming, plain):
                with streaming:
                    write_affine_ir(builder, src_p, dst_p, head, n, vec, divide, True, intp)
                with plain:
                    write_affine_ir(builder, src_p, dst_p, head, n, vec, divide, False, intp)
            return context.get_dummy_value()

        return types.none(src, dst, a, s, b, nontemporal), codegen

    return typer


stream_affine = intrinsic(_stream(divide=False))
stream_affine.__doc__ = """``dst[j] = (src[j] - a) * s - b`` for every j.

``src`` and ``dst`` are 1-D C-contiguous arrays of the same float dtype and length (``dst``
may be ``src``); ``a``, ``s``, ``b`` are converted to that dtype. ``nontemporal`` (a bool,
normally :func:`streams` of the kernel's output size): streaming stores on the 64-byte
aligned part of ``dst``. Rounding: each operation rounds once, in the order written
(``s = 1`` and ``b = 0`` are exact no-ops); the bits never depend on the store kind or the
alignment.
"""

stream_divide = intrinsic(_stream(divide=True))
stream_divide.__doc__ = """``dst[j] = (src[j] - a) / s - b``: as :func:`stream_affine`, dividing.

A division rounds once where a multiplication by ``1 / s`` rounds twice: softmax uses it.
"""


@intrinsic
def store_fence(typingctx):
    """Order every streaming store issued so far before any later store (``sfence``).

    Streaming stores are weakly ordered: a kernel that streamed calls this once after its
    last row (per thread, before the parallel region ends), not after every row: a fence per
    row cost ~1 ms on [8192, 1000]. A no-op off x86.
    """

    def codegen(context, builder, signature, args):
        ir.sfence(builder)
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line holding ``arr[idx]`` into L2 (no effect on
    results; see :func:`.ir.prefetch_l2`).

    Used to pull the next row into cache while the current one is being computed, so that
    memory transfers overlap the exp-bound arithmetic instead of alternating with it.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ir.prefetch_l2(builder, builder.gep(ary.data, [args[1]]))
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


HUGE_PAGE = 1 << 21  # bytes in a transparent huge page (x86-64, aarch64 with 4 KiB pages)


@kernel(parallel=True)
def touch_pages(buf):
    """Fault in a fresh buffer (1-D uint8 view) in parallel: a zero every 2 MiB from its start.

    A fresh output faults each page on its first write and the OS zeroes it there (2 MiB at
    a time with transparent huge pages, which ``np.empty`` asks for on large arrays).
    Inside a kernel that zeroing runs in the middle of the streaming writes; done first,
    by every thread, it costs less. Same-process A/B, log_softmax with a fresh output:
    [4096, 32000] 57.5 -> 50.5 ms, [512, 128256] 30.5 -> 27.2 ms. Variants measured slower:
    a write per 4 KiB page (57.0 vs 54.8 ms: it reads back lines the OS zeroed past the
    caches), and writes at the 2 MiB boundaries plus the first and last byte (56.7 vs
    54.7 ms; not understood). Without huge pages this faults one 4 KiB page in 512.
    """
    n = buf.size
    for k in prange((n + HUGE_PAGE - 1) // HUGE_PAGE):
        buf[k * HUGE_PAGE] = 0


PREFAULT_BYTES = 1 << 24
"""Fresh outputs from this size up are faulted in by all threads before the kernel runs."""


def fresh_output(shape, dtype):
    """``np.empty(shape, dtype)`` for a kernel to fill; large ones are faulted in first.

    ``np.empty`` of a large array gets transparent huge pages but touches none of them;
    :func:`touch_pages` faults them in, one write per huge page, with every thread (the
    calling thread's kernel thread count: call ``_jit.use_threads`` first), so that the OS
    zeroes them before the kernel instead of during its writes. Called from Python only.

    What a fresh output costs is the operating system's zeroing, and nothing here can
    overlap it (measured 2026-12-02, [4096, 32000] float32, 524 MB, Xeon KVM guest, 2
    threads, THP ``madvise`` with every huge page granted: 250 THP faults per output):
    faulting in the output took 61-66 ms whether by :func:`touch_pages` on 2 threads, on 1
    thread, or one ``madvise(MADV_POPULATE_WRITE)`` call (the zeroing does not scale with
    threads here: about 8 GB/s), against 70-75 ms for the kernel itself in the same run; the
    kernel runs as fast on a just-faulted output as on a reused one, so a fresh call costs
    the sum (137-142 ms, 1.9x). Faulting inside the kernel instead cost 170-176 ms. This
    guest also reports free 2 MiB pages to its host (virtio-balloon free page reporting,
    ``/sys/module/page_reporting``): an output freed 2 s before the next call had 288 MiB
    reported, and faulting the next output took 458 ms instead of 66. Only reusing memory
    that is already faulted in (``out=``) avoids the zeroing.
    """
    out = np.empty(shape, dtype)
    if out.nbytes >= PREFAULT_BYTES:
        touch_pages(out.reshape(-1).view(np.uint8))
    return out
