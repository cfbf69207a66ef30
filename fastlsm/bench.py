"""Benchmark library behind ``fastlsm bench``, ``bench/*.py`` and the README table.

Everything a benchmark needs lives here, declared once:

- :data:`KERNELS`: the registry. Each :class:`KernelSpec` names a kernel, its family, the
  roofline that bounds it (``"read"`` for reductions that only read the logits, ``"rw"`` for
  kernels that read the logits and write something of their size), the bytes it moves, the
  fastlsm functions it needs (rows whose functions are missing are skipped, not failed), and
  a ``setup`` that builds one :class:`Provider` per implementation (``fastlsm``, ``numpy``,
  ``torch`` when importable). Baselines are the idioms users write.
- :data:`DEFAULT_SHAPES` / :data:`QUICK_SHAPES`: float32 shapes per family.
- :class:`Pool`: inputs shared by every case (one logits buffer of the largest size, viewed
  in each shape; one output buffer), so a full run holds about two logits-sized arrays.
- :func:`roofline_providers`: two compiled parallel passes over an array the size of the
  logits, with the same thread count as the kernels: a read-only sum and a read+write
  ``out = x - c`` with plain stores. ``run`` times them as two more providers of every case
  (same rounds, same machine load); their GB/s are the denominators of "% of roofline".
- :func:`run_case`: warm-up (JIT compile) then whole rounds: in each round every provider
  runs its own block of consecutive calls, about 0.1 s of them (0.02 s with ``--quick``),
  provider order rotating between rounds. PyTorch and Numba bring two OpenMP runtimes:
  alternating them call by call would slow both, and the first call after another
  provider's block pays its after-effects (measured 20-25% on 10-15 ms kernels with 0.02 s
  blocks). Each call is timed alone; we report the median and the 20th/80th percentiles.
- :func:`run` ties it together and returns a JSON-ready report; :func:`format_table`
  renders it as plain text or markdown.
"""

from __future__ import annotations

import datetime
import fnmatch
import gc
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numba import prange

import fastlsm

from . import _jit
from ._jit import kernel
from ._kernels.rows import block_sum

PROVIDERS = ("fastlsm", "numpy", "torch")

# --------------------------------------------------------------------------- roofline kernels

_CHUNK = 1 << 16  # elements per parallel work item (256 KiB of float32: one L2's worth)


@kernel(parallel=True)
def _read_pass(flat, partial):
    """Read-only roofline: ``partial[c] = sum(flat[chunk c])``; the caller sums ``partial``."""
    n = flat.size
    for c in prange(partial.size):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        partial[c] = block_sum(flat[lo:hi])  # vectorized, fixed order (as the kernels sum)


@kernel(parallel=True)
def _rw_pass(flat, out, shift):
    """Read+write roofline: ``out = flat - shift`` with plain stores, chunked like the read."""
    n = flat.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n)
        src, dst = flat[lo:hi], out[lo:hi]
        for j in range(src.size):
            dst[j] = src[j] - shift


def roofline_providers(x: np.ndarray, out: np.ndarray) -> dict:
    """The two roofline passes over ``x`` (``out``: same size and dtype) as providers.

    ``"roofline_read"`` sums ``x``; ``"roofline_rw"`` writes ``out = x - 0.5``. Both run with
    the thread count fastlsm uses for an array of this size.
    """
    flat = x.reshape(-1)
    dst = out.reshape(-1)
    partial = np.empty((flat.size + _CHUNK - 1) // _CHUNK, flat.dtype)
    shift = flat.dtype.type(0.5)

    def threads():
        _jit.use_threads(flat.size)

    return {
        "roofline_read": Provider(lambda: _read_pass(flat, partial), prepare=threads),
        "roofline_rw": Provider(lambda: _rw_pass(flat, dst, shift), prepare=threads),
    }


def roofline_figures(nbytes: int, read: dict, rw: dict) -> dict:
    """GB/s from the timings of the two passes (``rw_gbs`` counts bytes read + written)."""
    return {
        "bytes": nbytes,
        "read_gbs": nbytes / read["median_ms"] / 1e6,
        "rw_gbs": 2 * nbytes / rw["median_ms"] / 1e6,
        "read_ms": read["median_ms"],
        "rw_ms": rw["median_ms"],
    }


def measure_roofline(x: np.ndarray, out: np.ndarray, rounds: int = 7) -> dict:
    """Memory bandwidth over ``x``: ``{"bytes", "read_gbs", "rw_gbs", "read_ms", "rw_ms"}``.

    Medians timed like the kernels (:func:`run_case`). ``fastlsm bench`` does not call this:
    it interleaves the same two passes with every case's providers, so that the roofline and
    the kernel see the same machine load.
    """
    t = run_case(roofline_providers(x, out), rounds)
    return roofline_figures(x.nbytes, t["roofline_read"], t["roofline_rw"])


# --------------------------------------------------------------------------- machine, versions


def _torch():
    """The ``torch`` module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> dict:
    """``{"total", "available"}`` in bytes from /proc/meminfo (empty elsewhere)."""
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    info["total" if key == "MemTotal" else "available"] = (
                        int(rest.split()[0]) * 1024
                    )
    except OSError:
        pass
    return info


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory": memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(torch_module=None) -> dict:
    """Versions of fastlsm and of what it runs on (``None`` for what is not installed).

    PyTorch's version comes from the module when given, else from the installed package's
    metadata: asking never imports PyTorch (``--no-torch`` keeps its OpenMP runtime out).
    """
    import importlib.metadata

    import cffi
    import llvmlite
    import numba

    torch_version = getattr(torch_module, "__version__", None)
    if torch_version is None:
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "fastlsm": fastlsm.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": np.__version__,
        "cffi": cffi.__version__,
        "torch": torch_version,
    }


# --------------------------------------------------------------------------- inputs


class Pool:
    """Shared inputs: one float32 logits buffer and one output buffer of the largest size.

    ``logits(shape)`` is a C-contiguous view of the first ``prod(shape)`` elements of the
    buffer (standard normal values times 2, fixed seed), so every kernel and shape reuses the
    same memory; ``out(shape)`` likewise for outputs. Small arrays (targets, scores) are cached
    by shape.
    """

    def __init__(self, max_elements: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.max_elements = max_elements
        self._x = None
        self._out = None
        self._small = {}

    def logits(self, shape) -> np.ndarray:
        if self._x is None:
            self._x = self.rng.standard_normal(self.max_elements, dtype=np.float32)
            self._x *= np.float32(2.0)
        return self._x[: int(np.prod(shape))].reshape(shape)

    def out(self, shape) -> np.ndarray:
        if self._out is None:
            self._out = np.empty(self.max_elements, np.float32)
            self._out.fill(0.0)  # fault the pages in once, outside any timing
        return self._out[: int(np.prod(shape))].reshape(shape)

    def integers(self, shape, high: int) -> np.ndarray:
        key = ("int", tuple(shape), high)
        if key not in self._small:
            self._small[key] = self.rng.integers(0, high, size=shape, dtype=np.int64)
        return self._small[key]

    def scores(self, shape) -> np.ndarray:
        """Beam scores: sorted, negative, like a decoder's running log-probabilities."""
        key = ("scores", tuple(shape))
        if key not in self._small:
            s = -np.sort(self.rng.exponential(2.0, size=shape), axis=-1)
            self._small[key] = np.ascontiguousarray(s, dtype=np.float32)
        return self._small[key]


# --------------------------------------------------------------------------- registry


@dataclass
class Provider:
    """One implementation of a case: ``fn()`` is timed; ``prepare()`` (untimed) runs first."""

    fn: Callable[[], object]
    prepare: Callable[[], object] | None = None


@dataclass
class KernelSpec:
    name: str  # id used by --only and in JSON
    family: str  # key of DEFAULT_SHAPES
    label: str  # shown in the table
    roofline: str  # "read" or "rw"
    nbytes: Callable[[tuple], int]  # bytes moved for a float32 input of this shape
    setup: Callable[[Pool, tuple, object], dict]  # (pool, shape, torch or None) -> providers
    requires: tuple = ()  # fastlsm attributes the fastlsm provider needs


@dataclass
class Case:
    spec: KernelSpec
    shape: tuple

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


DEFAULT_SHAPES = {
    "normalize": [(64, 32000), (4096, 32000), (512, 128256), (8192, 1000)],
    "cross_entropy": [(4096, 32000), (512, 128256)],
    "beam_step": [(8, 4, 32000), (1, 8, 128256)],
    "sequence_logprobs": [(8, 512, 32000)],
}
"""Float32 shapes of the default run: [rows, vocab], [B, K, V] for beam_step, [B, T, V]."""

QUICK_SHAPES = {
    "normalize": [(64, 1000), (128, 4096)],
    "cross_entropy": [(128, 4096)],
    "beam_step": [(2, 4, 1000)],
    "sequence_logprobs": [(2, 64, 1000)],
}
"""Small shapes for ``--quick`` (tests, CI): seconds, not minutes."""

F32 = 4


def _rows(shape):
    return int(np.prod(shape[:-1]))


# ---- NumPy idioms (float32 in, float32 out, like the user's data)


def _np_lse(x):
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _np_log_softmax(x, out=None):
    return np.subtract(x, _np_lse(x), out=out)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _np_cross_entropy(x, t):
    r = np.arange(x.shape[0])
    return (_np_lse(x)[:, 0] - x[r, t]).mean()


def _np_cross_entropy_with_grad(x, t):
    r = np.arange(x.shape[0])
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=-1, keepdims=True)
    loss = (m[:, 0] + np.log(s[:, 0]) - x[r, t]).mean()
    grad = e / s
    grad[r, t] -= 1
    grad /= x.shape[0]
    return loss, grad


def _np_beam_step(x, scores):
    b, k, v = x.shape
    n = 2 * k
    cand = (_np_log_softmax(x) + scores[..., None]).reshape(b, k * v)
    top = np.argpartition(-cand, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(cand, top, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(vals, order, axis=1), top % v, top // v


def _np_sequence_logprobs(x, tokens):
    tok = np.take_along_axis(_np_log_softmax(x), tokens[..., None], axis=-1)[..., 0]
    return tok, tok.sum(axis=-1)


# ---- setups: one per kernel; each returns {provider: Provider}


def _setup_log_softmax(pool, shape, torch):
    x = pool.logits(shape)
    p = {
        "fastlsm": Provider(lambda: fastlsm.log_softmax(x)),
        "numpy": Provider(lambda: _np_log_softmax(x)),
    }
    if torch is not None:
        xt = torch.from_numpy(x)
        p["torch"] = Provider(lambda: torch.log_softmax(xt, -1))
    return p


def _setup_log_softmax_out(pool, shape, torch):
    x, out = pool.logits(shape), pool.out(shape)
    p = {
        "fastlsm": Provider(lambda: fastlsm.log_softmax(x, out=out)),
        "numpy": Provider(lambda: _np_log_softmax(x, out=out)),
    }
    if torch is not None:
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        p["torch"] = Provider(lambda: torch.log_softmax(xt, -1, out=ot))
    return p


def _setup_softmax(pool, shape, torch):
    x = pool.logits(shape)
    p = {
        "fastlsm": Provider(lambda: fastlsm.softmax(x)),
        "numpy": Provider(lambda: _np_softmax(x)),
    }
    if torch is not None:
        xt = torch.from_numpy(x)
        p["torch"] = Provider(lambda: torch.softmax(xt, -1))
    return p


def _setup_logsumexp(pool, shape, torch):
    x = pool.logits(shape)
    p = {
        "fastlsm": Provider(lambda: fastlsm.logsumexp(x)),
        "numpy": Provider(lambda: _np_lse(x)[..., 0]),
    }
    if torch is not None:
        xt = torch.from_numpy(x)
        p["torch"] = Provider(lambda: torch.logsumexp(xt, -1))
    return p


def _setup_cross_entropy(pool, shape, torch):
    x = pool.logits(shape)
    t = pool.integers(shape[:-1], shape[-1])
    p = {
        "fastlsm": Provider(lambda: fastlsm.cross_entropy(x, t)),
        "numpy": Provider(lambda: _np_cross_entropy(x, t)),
    }
    if torch is not None:
        import torch.nn.functional as F

        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        p["torch"] = Provider(lambda: F.cross_entropy(xt, tt))
    return p


def _setup_cross_entropy_grad(pool, shape, torch):
    x = pool.logits(shape)
    t = pool.integers(shape[:-1], shape[-1])
    buf = pool.out(shape)  # the in-place call overwrites it: refill before every call

    p = {
        "fastlsm": Provider(
            lambda: fastlsm.cross_entropy_with_grad(buf, t, inplace=True),
            prepare=lambda: np.copyto(buf, x),
        ),
        "numpy": Provider(lambda: _np_cross_entropy_with_grad(x, t)),
    }
    if torch is not None:
        import torch.nn.functional as F

        xt, tt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(t)

        def clear():
            xt.grad = None

        p["torch"] = Provider(lambda: F.cross_entropy(xt, tt).backward(), prepare=clear)
    return p


def _setup_beam_step(pool, shape, torch):
    x = pool.logits(shape)
    s = pool.scores(shape[:2])
    b, k, v = shape
    p = {
        "fastlsm": Provider(lambda: fastlsm.beam_step(x, s)),
        "numpy": Provider(lambda: _np_beam_step(x, s)),
    }
    if torch is not None:
        xt, st = torch.from_numpy(x), torch.from_numpy(s)

        def torch_beam():
            cand = torch.log_softmax(xt, -1) + st[..., None]
            vals, idx = cand.view(b, k * v).topk(2 * k, dim=1)
            return vals, idx % v, idx // v

        p["torch"] = Provider(torch_beam)
    return p


def _setup_sequence_logprobs(pool, shape, torch):
    x = pool.logits(shape)
    tok = pool.integers(shape[:-1], shape[-1])
    p = {
        "fastlsm": Provider(lambda: fastlsm.sequence_logprobs(x, tok)),
        "numpy": Provider(lambda: _np_sequence_logprobs(x, tok)),
    }
    if torch is not None:
        xt, tt = torch.from_numpy(x), torch.from_numpy(tok)

        def torch_seq():
            lp = torch.log_softmax(xt, -1).gather(-1, tt[..., None])[..., 0]
            return lp, lp.sum(-1)

        p["torch"] = Provider(torch_seq)
    return p


def _read_bytes(shape):  # logits read once, one value per row written
    return int(np.prod(shape)) * F32 + _rows(shape) * F32


def _rw_bytes(shape):  # logits read once, same-size output written once
    return 2 * int(np.prod(shape)) * F32


KERNELS = [
    KernelSpec("log_softmax", "normalize", "log_softmax", "rw", _rw_bytes, _setup_log_softmax),
    KernelSpec(
        "log_softmax_out", "normalize", "log_softmax(out=)", "rw", _rw_bytes,
        _setup_log_softmax_out,
    ),
    KernelSpec("softmax", "normalize", "softmax", "rw", _rw_bytes, _setup_softmax),
    KernelSpec("logsumexp", "normalize", "logsumexp", "read", _read_bytes, _setup_logsumexp),
    KernelSpec(
        "cross_entropy", "cross_entropy", "cross_entropy", "read",
        lambda s: int(np.prod(s)) * F32 + _rows(s) * 8,  # logits + int64 targets
        _setup_cross_entropy, requires=("cross_entropy",),
    ),
    KernelSpec(
        "cross_entropy_grad", "cross_entropy", "cross_entropy_with_grad(inplace)", "rw",
        lambda s: 2 * int(np.prod(s)) * F32 + _rows(s) * 8,  # logits in, grad over them
        _setup_cross_entropy_grad, requires=("cross_entropy_with_grad",),
    ),
    KernelSpec(
        "beam_step", "beam_step", "beam_step", "read",
        lambda s: int(np.prod(s)) * F32 + s[0] * s[1] * F32,  # logits + beam scores
        _setup_beam_step, requires=("beam_step",),
    ),
    KernelSpec(
        "sequence_logprobs", "sequence_logprobs", "sequence_logprobs", "read",
        lambda s: int(np.prod(s)) * F32 + _rows(s) * (8 + F32),  # logits, tokens, logprobs
        _setup_sequence_logprobs, requires=("sequence_logprobs",),
    ),
]
"""Every benchmarked kernel, in table order. Add a family here and in the shape tables."""


def _matches(spec: KernelSpec, patterns) -> bool:
    if not patterns:
        return True
    return any(
        fnmatch.fnmatchcase(spec.name, p) or fnmatch.fnmatchcase(spec.family, p)
        for p in patterns
    )


def select_cases(only=None, quick: bool = False) -> tuple[list[Case], list[dict]]:
    """Cases to run (registry order, then shape order) and the ones skipped, with why.

    ``only`` is a list of shell-style patterns matched against kernel names and families
    (``log_softmax*``, ``cross_entropy``, ``beam_step``).
    """
    shapes = QUICK_SHAPES if quick else DEFAULT_SHAPES
    cases, skipped = [], []
    for spec in KERNELS:
        if not _matches(spec, only):
            continue
        missing = [name for name in spec.requires if not hasattr(fastlsm, name)]
        for shape in shapes[spec.family]:
            if missing:
                skipped.append(
                    {
                        "kernel": spec.name,
                        "shape": list(shape),
                        "reason": f"fastlsm.{missing[0]} is not available in this build",
                    }
                )
            else:
                cases.append(Case(spec, tuple(shape)))
    return cases, skipped


# --------------------------------------------------------------------------- timing


class Progress:
    """A one-line progress bar on stderr (a line per update when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None, enabled: bool = True, width: int = 28):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._label = ""

    def label(self, text: str) -> None:
        self._label = text
        if self.enabled and not self.tty:
            print(f"[{self.done:>3}/{self.total}] {text}", file=self.stream, flush=True)
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._draw()

    def _draw(self) -> None:
        if not (self.enabled and self.tty):
            return
        frac = self.done / self.total
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"\r[{bar}] {100 * frac:5.1f}% {elapsed:6.1f}s  {self._label}"
        self.stream.write(line[:120].ljust(120))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()


def _timed(p: Provider) -> float:
    if p.prepare is not None:
        p.prepare()
    t0 = time.perf_counter()
    p.fn()
    return time.perf_counter() - t0


def summarize(samples) -> dict:
    """Median and 20/80 percentiles in milliseconds, plus the sample count."""
    a = np.asarray(samples, dtype=np.float64) * 1e3
    p20, med, p80 = np.percentile(a, [20, 50, 80])
    return {"median_ms": float(med), "p20_ms": float(p20), "p80_ms": float(p80), "samples": a.size}


def run_case(
    providers: dict,
    rounds: int,
    *,
    block_seconds: float = 0.1,
    max_block: int = 64,
    min_rounds: int = 3,
    budget_seconds: float = 6.0,
    settle_seconds: float = 0.005,
    on_round: Callable[[], None] | None = None,
) -> dict:
    """Time every provider of one case; returns ``{provider: summarize(...)}``.

    Each provider is called twice first (JIT compile, page faults, a time estimate). Then
    ``rounds`` rounds: in each, every provider in turn (order rotating) sleeps
    ``settle_seconds`` (lets the other runtime's spinning threads park) and runs a block of
    individually timed calls, as many as fit in ``block_seconds`` (at least 1). A provider
    that already has ``min_rounds`` rounds and has spent ``budget_seconds`` sits out the
    remaining rounds (slow baselines on big shapes).
    """
    names = list(providers)
    block, spent, samples = {}, {}, {}
    for name in names:
        _timed(providers[name])
        est = _timed(providers[name])
        block[name] = int(max(1, min(max_block, block_seconds // max(est, 1e-9))))
        spent[name], samples[name] = 0.0, []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if r >= min_rounds and spent[name] > budget_seconds:
                    continue
                time.sleep(settle_seconds)
                for _ in range(block[name]):
                    t = _timed(providers[name])
                    samples[name].append(t)
                    spent[name] += t
            if on_round is not None:
                on_round()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: summarize(samples[name]) for name in names}


# --------------------------------------------------------------------------- the whole run


def set_threads(threads: int | None, torch=None) -> int:
    """Apply one thread count to fastlsm (and PyTorch); returns it."""
    if threads is not None:
        fastlsm.set_num_threads(threads)
    n = fastlsm.get_num_threads()
    if torch is not None:
        torch.set_num_threads(n)
    return n


def run(
    *,
    repeat: int = 10,
    threads: int | None = None,
    only=None,
    quick: bool = False,
    use_torch: bool = True,
    progress: bool = True,
    stream=None,
    command: str = "fastlsm bench",
) -> dict:
    """Run the benchmark and return the report (the structure ``--json`` writes)."""
    import numba

    torch = _torch() if use_torch else None
    n_threads = set_threads(threads, torch)
    cases, skipped = select_cases(only, quick)
    max_elements = max((c.elements for c in cases), default=1)
    pool = Pool(max_elements)

    bar = Progress(len(cases) * repeat, stream=stream, enabled=progress)
    results = []
    for case in cases:
        spec = case.spec
        bar.label(f"{spec.label} {list(case.shape)}")
        providers = spec.setup(pool, case.shape, torch)
        providers.update(roofline_providers(pool.logits(case.shape), pool.out(case.shape)))
        timings = run_case(providers, repeat, on_round=bar.advance,
                           block_seconds=0.02 if quick else 0.1)
        del providers
        roof = roofline_figures(
            case.elements * F32, timings.pop("roofline_read"), timings.pop("roofline_rw")
        )
        roof["elements"] = case.elements
        nbytes = spec.nbytes(case.shape)
        fast = timings["fastlsm"]
        for t in timings.values():
            t["gbs"] = nbytes / (t["median_ms"] * 1e-3) / 1e9
        row = {
            "kernel": spec.name,
            "label": spec.label,
            "family": spec.family,
            "shape": list(case.shape),
            "dtype": "float32",
            "bytes": nbytes,
            "roofline": spec.roofline,
            "roofline_gbs": roof[f"{spec.roofline}_gbs"],
            "roofline_measured": roof,
            "gbs": fast["gbs"],
            "pct_roofline": 100.0 * fast["gbs"] / roof[f"{spec.roofline}_gbs"],
            "providers": timings,
        }
        for base in ("numpy", "torch"):
            row[f"speedup_{base}"] = (
                timings[base]["median_ms"] / fast["median_ms"] if base in timings else None
            )
        results.append(row)
    bar.close()

    _jit.use_threads(1 << 30)
    return {
        "format": "fastlsm-bench/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "threads": n_threads,
        "threading_layer": _threading_layer(numba),
        "versions": versions(torch),
        "config": {"repeat": repeat, "quick": quick, "only": list(only or []),
                   "torch": torch is not None},
        "roofline": _roofline_summary(results),
        "results": results,
        "skipped": skipped,
    }


def _roofline_summary(results) -> list[dict]:
    """One entry per logits size: the median over that size's cases of each roofline."""
    by_size = {}
    for r in results:
        by_size.setdefault(r["roofline_measured"]["elements"], []).append(r)
    out = []
    for n in sorted(by_size):
        rows = by_size[n]
        out.append({
            "elements": n,
            "bytes": rows[0]["roofline_measured"]["bytes"],
            "shapes": sorted({tuple(r["shape"]) for r in rows}),
            "cases": len(rows),
            **{
                key: float(np.median([r["roofline_measured"][key] for r in rows]))
                for key in ("read_gbs", "rw_gbs", "read_ms", "rw_ms")
            },
        })
    return out


def _threading_layer(numba) -> str | None:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None


# --------------------------------------------------------------------------- output


def _shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _ms(v: float) -> str:
    """Milliseconds with 3-4 significant digits, never in exponent notation."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def _speedup(v) -> str:
    return "-" if v is None else f"{v:.1f}x"


COLUMNS = ("kernel", "shape", "median ms", "p20-p80 ms", "GB/s", "% roofline",
           "vs NumPy", "vs PyTorch")


def table_rows(report: dict) -> list[list[str]]:
    rows = []
    for r in report["results"]:
        f = r["providers"]["fastlsm"]
        rows.append([
            r["label"],
            _shape(r["shape"]),
            _ms(f["median_ms"]),
            f"{_ms(f['p20_ms'])}-{_ms(f['p80_ms'])}",
            f"{r['gbs']:.1f}",
            f"{r['pct_roofline']:.0f}% {'R' if r['roofline'] == 'read' else 'RW'}",
            _speedup(r["speedup_numpy"]),
            _speedup(r["speedup_torch"]),
        ])
    return rows


def header_lines(report: dict) -> list[str]:
    m, v = report["machine"], report["versions"]
    mem = m["memory"].get("total")
    lines = [
        f"fastlsm {v['fastlsm']}, {report['date']}: {report['command']}",
        f"machine: {m['cpu']}, {m['usable_cores']} cores"
        + (f", {mem / 2**30:.0f} GiB" if mem else "")
        + f"; threads: {report['threads']} ({report['threading_layer']})",
        f"numba {v['numba']}, numpy {v['numpy']}, torch {v['torch'] or 'not installed'}",
        "roofline (read-only / read+write GB/s, measured in this run interleaved with "
        "the kernels, same threads; median over the cases of each size):",
    ]
    for r in report["roofline"]:
        shapes = ", ".join(_shape(sh) for sh in r["shapes"])
        lines.append(
            f"  {r['bytes'] / 1e6:7.1f} MB ({shapes}): {r['read_gbs']:.1f} / {r['rw_gbs']:.1f}"
        )
    lines.append(
        "float32; fastlsm median and 20th-80th percentile times; % of the read-only (R) or "
        "read+write (RW) roofline; vs X = X's median / fastlsm's"
    )
    return lines


def format_table(report: dict, markdown: bool = False) -> str:
    rows = table_rows(report)
    out = []
    if markdown:
        for line in header_lines(report):  # roofline entries become a bullet list
            if line.startswith("  "):
                out.append("- " + line.strip())
            else:
                out += ([""] if out and out[-1].startswith("- ") else []) + [line + "  "]
        out.append("")
        out.append("| " + " | ".join(COLUMNS) + " |")
        align = ["---", "---"] + ["--:"] * (len(COLUMNS) - 2)
        out.append("|" + "|".join(align) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        out += header_lines(report) + [""]
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
                  for i, c in enumerate(COLUMNS)]

        def fmt(cells):
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        out.append(fmt(COLUMNS))
        out.append(fmt(["-" * w for w in widths]))
        out += [fmt(r) for r in rows]
    for s in report["skipped"]:
        out.append(f"skipped {s['kernel']} {_shape(s['shape'])}: {s['reason']}")
    return "\n".join(out) + "\n"


def write_csv(report: dict, path: str) -> None:
    """One line per kernel, shape and provider (Liger-Kernel's layout), with machine and date."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", "shape", "provider", "median_ms", "p20_ms", "p80_ms", "gbs",
                    "samples", "threads", "fastlsm", "cpu", "date"])
        for r in report["results"]:
            for name, t in r["providers"].items():
                w.writerow([r["kernel"], "x".join(map(str, r["shape"])), name,
                            f"{t['median_ms']:.6g}", f"{t['p20_ms']:.6g}", f"{t['p80_ms']:.6g}",
                            f"{t['gbs']:.4g}", t["samples"], report["threads"],
                            report["versions"]["fastlsm"], report["machine"]["cpu"],
                            report["date"]])
