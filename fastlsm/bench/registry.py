"""What a benchmark case is, the inputs every case shares, and which cases a run selects.

A **case** is one :class:`KernelSpec` (a name, a family, the ceiling that bounds it, the bytes
it moves, a setup factory) at one shape and one dtype. The setup receives the case's
:class:`Inputs` and returns one :class:`Provider` per implementation: ``"fastlsm"`` always,
then whichever of ``"numpy"``, ``"torch"``, ``"hf"`` apply (``inputs.torch`` is None when
PyTorch is not used). The declared cases live in :mod:`fastlsm.bench.cases`; to add a family,
add its shapes to ``SHAPES`` there and its specs to ``KERNELS``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

import fastlsm

PROVIDERS = ("fastlsm", "numpy", "torch", "hf")
"""Provider names, in table order; ``hf`` is Hugging Face's implementation where one exists."""

DTYPES = {
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
"""Logits dtypes ``--dtype`` accepts (16-bit inputs as ``ml_dtypes.bfloat16``/``np.float16``)."""

CALL_BOUND_BYTES = 1 << 15
"""Cases whose logits are smaller than this (32 KiB) are **call-bound**: their bytes move in
a fraction of a microsecond at cache speed (32 KiB at 80 GB/s: 0.4 us), less than the fixed
cost of a Python call (argument checks, dispatch, launch), so a % of a bandwidth ceiling
would measure that cost, not bandwidth. Their rows report the time of a call beside
PyTorch's and beside the floor of any call into compiled code from Python (a compiled no-op
given the same arrays), instead of a % of a ceiling."""


@dataclass
class Provider:
    """One implementation of a case: ``fn()`` is timed; ``prepare()`` (untimed) runs first."""

    fn: Callable[[], object]
    prepare: Callable[[], object] | None = None


class Pool:
    """Inputs shared by every case of a run, so that a full run holds few logits-sized arrays.

    One float32 buffer of standard normal values times 2 (fixed seed) backs every case's
    logits: ``logits(shape, float32)`` is a C-contiguous view of its first ``prod(shape)``
    elements; other dtypes are one converted copy each, made on first use. One byte buffer
    backs every output (``out(shape, dtype)``) and the ceilings' destination. Small arrays
    (targets, scores) are cached by shape.

    Parameters
    ----------
    max_elements : int
        The largest ``prod(shape)`` of the run.
    max_itemsize : int
        The largest dtype size of the run (the buffers hold ``max_elements`` of it).
    """

    def __init__(self, max_elements: int, max_itemsize: int = 4, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.max_elements = max_elements
        self.max_bytes = max_elements * max_itemsize
        self._x: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._converted: dict[np.dtype, np.ndarray] = {}
        self._small: dict[tuple, np.ndarray] = {}

    def _source(self) -> np.ndarray:
        if self._x is None:  # as many float32 as the largest case has bytes / 4
            n = max(self.max_elements, -(-self.max_bytes // 4))
            self._x = self.rng.standard_normal(n, dtype=np.float32)
            self._x *= np.float32(2.0)
        return self._x

    def _out_bytes(self) -> np.ndarray:
        if self._out is None:
            self._out = np.empty(self.max_bytes + 8, np.uint8)
            self._out.fill(0)  # fault the pages in once, outside any timing
        return self._out

    def logits(self, shape: Sequence[int], dtype: np.dtype = DTYPES["float32"]) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        if dtype == np.float32:
            return self._source()[:n].reshape(shape)
        if dtype not in self._converted:
            self._converted[dtype] = self._source()[: self.max_elements].astype(dtype)
        return self._converted[dtype][:n].reshape(shape)

    def out(self, shape: Sequence[int], dtype: np.dtype = DTYPES["float32"]) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        return self._out_bytes()[: n * dtype.itemsize].view(dtype).reshape(shape)

    def ceiling_buffers(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        """Float32 source and destination of ``nbytes // 4`` elements for the ceilings."""
        n = nbytes // 4
        return self._source()[:n], self._out_bytes()[: 4 * n].view(np.float32)

    def integers(self, shape: Sequence[int], high: int) -> np.ndarray:
        key = ("int", tuple(shape), high)
        if key not in self._small:
            self._small[key] = self.rng.integers(0, high, size=shape, dtype=np.int64)
        return self._small[key]

    def scores(self, shape: Sequence[int]) -> np.ndarray:
        """Beam scores: sorted, negative, like a decoder's running log-probabilities."""
        key = ("scores", tuple(shape))
        if key not in self._small:
            s = -np.sort(self.rng.exponential(2.0, size=shape), axis=-1)
            self._small[key] = np.ascontiguousarray(s, dtype=np.float32)
        return self._small[key]


@dataclass
class Inputs:
    """What a setup factory gets: the pool, the case's shape and dtype, and torch or None."""

    pool: Pool
    shape: tuple
    dtype: np.dtype
    torch: object | None = None

    def logits(self) -> np.ndarray:
        return self.pool.logits(self.shape, self.dtype)

    def out(self) -> np.ndarray:
        return self.pool.out(self.shape, self.dtype)

    def targets(self) -> np.ndarray:
        """Class indices of the batch shape (``shape[:-1]``), uniform over the vocabulary."""
        return self.pool.integers(self.shape[:-1], self.shape[-1])

    def tensor(self, a: np.ndarray) -> Any:
        """``a`` as a PyTorch tensor sharing its memory (bfloat16 through a uint16 view)."""
        torch = self.torch
        if a.dtype == DTYPES["bfloat16"]:
            return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
        return torch.from_numpy(a)


Setup = Callable[[Inputs], dict]


@dataclass
class KernelSpec:
    """One benchmarked kernel.

    ``ceiling`` is ``"read"`` for kernels that only read the logits, ``"copy"`` for kernels
    that write an output of their size (see :mod:`fastlsm.bench.ceilings`). ``nbytes(shape,
    itemsize)`` is the bytes the kernel must move. ``requires`` names the fastlsm functions
    the fastlsm provider needs (cases whose functions are missing are skipped, not failed).
    ``shapes`` overrides the family's shapes for this kernel (``{"default": [...],
    "quick": [...]}``). ``out_twin`` names the kernel that writes into a preallocated
    output, for a kernel that allocates a fresh one: its fastlsm call is timed in the same
    rounds, and the row shows the fresh/out= time ratio.
    """

    name: str  # id used by --only and in JSON
    family: str  # key of cases.SHAPES
    label: str  # shown in the table
    ceiling: str  # "read" or "copy"
    nbytes: Callable[[tuple, int], int]
    setup: Setup
    requires: tuple = ()
    shapes: dict | None = None
    dtypes: tuple = tuple(DTYPES)  # dtypes the case is defined for
    out_twin: str | None = None
    thread_rows: Callable[[tuple, np.dtype], int] | None = None  # rows the thread rule
    # counts, if not the shape's (a sampler's single long row counts as two: it is split)


@dataclass
class Case:
    spec: KernelSpec
    shape: tuple
    dtype: np.dtype = field(default_factory=lambda: DTYPES["float32"])

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def thread_rows(self) -> int:
        """The rows the kernels' thread rule counts (``_jit.launch``)."""
        if self.spec.thread_rows is None:
            return self.rows
        return self.spec.thread_rows(self.shape, self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the logits (the ceilings' array size)."""
        return self.elements * self.dtype.itemsize

    @property
    def call_bound(self) -> bool:
        """Whether the logits are under :data:`CALL_BOUND_BYTES` (see there)."""
        return self.nbytes < CALL_BOUND_BYTES


def spec_shapes(spec: KernelSpec, shapes: dict, quick: bool) -> list[tuple]:
    """The shapes ``spec`` runs at: its own ``shapes`` or its family's."""
    table = spec.shapes if spec.shapes is not None else shapes[spec.family]
    return [tuple(s) for s in table["quick" if quick else "default"]]


def _matches(spec: KernelSpec, patterns: Iterable[str] | None) -> bool:
    if not patterns:
        return True
    return any(
        fnmatch.fnmatchcase(spec.name, p) or fnmatch.fnmatchcase(spec.family, p) for p in patterns
    )


def select_cases(
    kernels: Sequence[KernelSpec],
    shapes: dict,
    only: Iterable[str] | None = None,
    quick: bool = False,
    dtypes: Sequence[str] = ("float32",),
) -> tuple[list[Case], list[dict]]:
    """Cases to run (kernel order, then dtype, then shape) and the ones skipped, with why.

    ``only`` is a list of shell-style patterns matched against kernel names and families
    (``log_softmax*``, ``cross_entropy``, ``beam_step``).
    """
    cases, skipped = [], []
    for spec in kernels:
        if not _matches(spec, only):
            continue
        missing = [name for name in spec.requires if not hasattr(fastlsm, name)]
        for dtype in dtypes:
            for shape in spec_shapes(spec, shapes, quick):
                reason = None
                if missing:
                    reason = f"fastlsm.{missing[0]} is not available in this build"
                elif dtype not in spec.dtypes:
                    reason = f"not defined for {dtype}"
                if reason:
                    skipped.append(
                        {
                            "kernel": spec.name,
                            "shape": list(shape),
                            "dtype": dtype,
                            "reason": reason,
                        }
                    )
                else:
                    cases.append(Case(spec, shape, DTYPES[dtype]))
    return cases, skipped
