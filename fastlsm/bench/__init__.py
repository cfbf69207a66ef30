"""Benchmark library behind ``fastlsm bench``, ``bench/*.py`` and the README table.

One job per module, each importing only the ones above it in this list:

- :mod:`~fastlsm.bench.registry`: what a case is (:class:`KernelSpec`, :class:`Case`,
  :class:`Provider`), the shared input :class:`Pool`, the dtypes, case selection.
- :mod:`~fastlsm.bench.baselines`: the NumPy idioms timed beside fastlsm.
- :mod:`~fastlsm.bench.cases`: the declared cases (:data:`KERNELS`, :data:`SHAPES`).
- :mod:`~fastlsm.bench.ceilings`: the physical ceilings (a read pass, a streaming copy).
- :mod:`~fastlsm.bench.machine`: CPU, memory, versions, threading layer.
- :mod:`~fastlsm.bench.progress`: the progress line on stderr.
- :mod:`~fastlsm.bench.harness`: timing (:func:`run_case`) and the whole run (:func:`run`).
- :mod:`~fastlsm.bench.report`: text/markdown tables, CSV, the plot.
"""

from __future__ import annotations

from .cases import KERNELS, SHAPES
from .harness import FORMAT, run, run_case, set_threads, summarize
from .machine import machine_info, versions
from .registry import (
    CALL_BOUND_BYTES,
    DTYPES,
    PROVIDERS,
    Case,
    Inputs,
    KernelSpec,
    Pool,
    Provider,
    select_cases,
)
from .report import format_table, plot, write_csv

__all__ = [
    "CALL_BOUND_BYTES",
    "DTYPES",
    "FORMAT",
    "KERNELS",
    "PROVIDERS",
    "SHAPES",
    "Case",
    "Inputs",
    "KernelSpec",
    "Pool",
    "Provider",
    "format_table",
    "machine_info",
    "plot",
    "run",
    "run_case",
    "select_cases",
    "set_threads",
    "summarize",
    "versions",
    "write_csv",
]
