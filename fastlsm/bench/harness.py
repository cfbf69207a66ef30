"""Timing: one case at a time, every provider and both ceilings in the same rounds.

:func:`run_case` warms up (JIT compile, page faults), then runs whole rounds: in each round
every provider runs its own block of consecutive calls, about 0.1 s of them (0.02 s with
``--quick``), provider order rotating between rounds. PyTorch and Numba bring two OpenMP
runtimes: alternating them call by call would slow both, and the first call after another
provider's block pays its after-effects (measured 20-25% on 10-15 ms kernels with 0.02 s
blocks). Each call is timed alone; we report the median and the 20th/80th percentiles.

:func:`run` runs every selected case with the two ceiling passes of its size as two more
providers (same rounds, same machine load) and returns a JSON-ready report. A call-bound
case (logits under ``registry.CALL_BOUND_BYTES``) gets the floor of a call instead (a
compiled no-op given the same arrays). References run in the case's rounds too: a 16-bit
case times the float32 kernel of its shape, a fresh-output case its ``out=`` twin.
"""

from __future__ import annotations

import datetime
import gc
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import numba
import numpy as np

import fastlsm

from . import cases as declared
from .ceilings import (
    CEILING_KEYS,
    CEILING_PROVIDERS,
    ceiling_figures,
    ceiling_providers,
    ceiling_threads,
)
from .machine import machine_info, threading_layer, versions
from .progress import Progress
from .registry import DTYPES, Case, Inputs, KernelSpec, Pool, Provider, select_cases

FORMAT = "fastlsm-bench/3"
"""The report's format tag (2: physical read/copy ceilings, dtypes, per-provider %; 3:
call-bound rows, same-run references: the float32 kernel of a 16-bit row, the out= twin of
a fresh-output row)."""


def _torch() -> object | None:
    """The ``torch`` module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _timed(p: Provider) -> float:
    if p.prepare is not None:
        p.prepare()
    t0 = time.perf_counter()
    p.fn()
    return time.perf_counter() - t0


def summarize(samples: Sequence[float]) -> dict:
    """Median and 20/80 percentiles in milliseconds, plus the sample count."""
    a = np.asarray(samples, dtype=np.float64) * 1e3
    p20, med, p80 = np.percentile(a, [20, 50, 80])
    return {"median_ms": float(med), "p20_ms": float(p20), "p80_ms": float(p80), "samples": a.size}


def run_case(
    providers: dict[str, Provider],
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
    individually timed calls, as many as fit in ``block_seconds`` (at least 1, at most
    ``max_block``). A provider that already has ``min_rounds`` rounds and has spent
    ``budget_seconds`` sits out the remaining rounds (slow baselines on big shapes).
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


def set_threads(threads: int | None, torch: object | None = None) -> int:
    """Apply one thread count to fastlsm (and PyTorch); returns it."""
    if threads is not None:
        fastlsm.set_num_threads(threads)
    n = fastlsm.get_num_threads()
    if torch is not None:
        torch.set_num_threads(n)
    return n


def _probe(case: Case, providers: dict[str, Provider]) -> str | None:
    """Why fastlsm cannot run this case (None: it can); drops peers that cannot.

    fastlsm raising TypeError on a 16-bit dtype means the dtype is not supported yet: the
    case is skipped with that line (other errors propagate: they are bugs). Peers are tried
    on 16-bit dtypes only (some have no 16-bit path); their calls are warm-ups anyway.
    """
    names = list(providers) if case.dtype.itemsize == 2 else ["fastlsm"]
    for name in names:
        p = providers[name]
        try:
            if p.prepare is not None:
                p.prepare()
            p.fn()
        except Exception as e:
            if name != "fastlsm":
                del providers[name]  # a peer without this dtype: left out of the row
            elif isinstance(e, TypeError) and case.dtype.itemsize == 2:
                return f"not supported yet (fastlsm: {e})"
            else:
                raise
    return None


def _references(case: Case, pool: Pool, kernels: Sequence[KernelSpec]) -> dict[str, Provider]:
    """fastlsm calls timed in the case's own rounds as references for its row.

    ``fastlsm_float32``: the float32 kernel of the same shape, for a 16-bit case (issue 11
    compares elements per second); ``fastlsm_out``: the ``out=`` twin of a kernel that
    allocates its output (:attr:`KernelSpec.out_twin`), same shape and dtype.
    """
    refs = {}
    if case.dtype.itemsize == 2 and "float32" in case.spec.dtypes:
        f32 = Inputs(pool, case.shape, DTYPES["float32"])
        refs["fastlsm_float32"] = case.spec.setup(f32)["fastlsm"]
    if case.spec.out_twin is not None:
        twin = next(k for k in kernels if k.name == case.spec.out_twin)
        refs["fastlsm_out"] = twin.setup(Inputs(pool, case.shape, case.dtype))["fastlsm"]
    return refs


def _row(case: Case, timings: dict, ceilings: dict, refs: dict) -> dict:
    spec = case.spec
    nbytes = spec.nbytes(case.shape, case.dtype.itemsize)
    bound = "call" if case.call_bound else spec.ceiling
    ceiling_gbs = None if case.call_bound else ceilings[f"{spec.ceiling}_gbs"]
    for t in timings.values():
        t["gbs"] = nbytes / (t["median_ms"] * 1e-3) / 1e9
        t["pct_ceiling"] = None if ceiling_gbs is None else 100.0 * t["gbs"] / ceiling_gbs
    fast = timings["fastlsm"]
    row = {
        "kernel": spec.name,
        "label": spec.label,
        "family": spec.family,
        "shape": list(case.shape),
        "dtype": case.dtype.name,
        "bytes": nbytes,
        "ceiling": spec.ceiling,
        "bound": bound,
        "ceiling_gbs": ceiling_gbs,
        "ceilings": ceilings,
        "gbs": fast["gbs"],
        "pct_ceiling": fast["pct_ceiling"],
        "providers": timings,
        "same_run": refs,
        # elements per second of this 16-bit row / of the float32 kernel, same shape
        "vs_float32": (
            refs["fastlsm_float32"]["median_ms"] / fast["median_ms"]
            if "fastlsm_float32" in refs
            else None
        ),
        # a fresh output's time / the out= twin's time, same shape and dtype
        "vs_out": (
            fast["median_ms"] / refs["fastlsm_out"]["median_ms"] if "fastlsm_out" in refs else None
        ),
    }
    for peer in ("numpy", "torch", "hf"):
        row[f"speedup_{peer}"] = (
            timings[peer]["median_ms"] / fast["median_ms"] if peer in timings else None
        )
    return row


def run(
    *,
    repeat: int = 10,
    threads: int | None = None,
    only: Iterable[str] | None = None,
    quick: bool = False,
    dtypes: Sequence[str] = ("float32",),
    use_torch: bool = True,
    progress: bool = True,
    stream: TextIO | None = None,
    command: str = "fastlsm bench",
) -> dict:
    """Run the benchmark and return the report (the structure ``--json`` writes)."""
    torch = _torch() if use_torch else None
    caller_threads = numba.get_num_threads()
    n_threads = set_threads(threads, torch)
    cases, skipped = select_cases(declared.KERNELS, declared.SHAPES, only, quick, dtypes)
    # 16-bit cases time the float32 kernel of their shape too: the pool holds float32 outputs
    pool = Pool(
        max((c.elements for c in cases), default=1),
        max((max(c.dtype.itemsize, 4 if c.dtype.itemsize == 2 else 0) for c in cases), default=4),
    )

    def weight(case: Case) -> float:  # per round; a fixed part for the call overheads
        return case.nbytes + 4e6

    bar = Progress(sum(weight(c) for c in cases) * repeat, stream=stream, enabled=progress)
    results = []
    try:
        for case in cases:
            bar.label(f"{case.spec.label} {list(case.shape)} {case.dtype.name}")
            providers = case.spec.setup(Inputs(pool, case.shape, case.dtype, torch))
            why = _probe(case, providers)
            if why is not None:
                skipped.append(
                    {
                        "kernel": case.spec.name,
                        "shape": list(case.shape),
                        "dtype": case.dtype.name,
                        "reason": why,
                    }
                )
                bar.advance(weight(case) * repeat)
                continue
            refs = _references(case, pool, declared.KERNELS)
            providers.update(refs)
            n_ceil = 1 if case.call_bound else ceiling_threads(case.elements, case.thread_rows)
            buffers = pool.ceiling_buffers(case.nbytes)
            providers.update(ceiling_providers(*buffers, n_ceil, call=case.call_bound))
            timings = run_case(
                providers,
                repeat,
                on_round=lambda c=case: bar.advance(weight(c)),
                block_seconds=0.02 if quick else 0.1,
            )
            del providers
            ceilings = ceiling_figures(
                4 * (case.nbytes // 4),
                {name: timings.pop(name) for name in list(timings) if name in CEILING_PROVIDERS},
                n_ceil,
            )
            refs = {name: timings.pop(name) for name in refs}
            results.append(_row(case, timings, ceilings, refs))
    finally:
        bar.close()
        numba.set_num_threads(caller_threads)

    return {
        "format": FORMAT,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "threads": n_threads,
        "threading_layer": threading_layer(),
        "versions": versions(torch),
        "config": {
            "repeat": repeat,
            "quick": quick,
            "only": list(only or []),
            "dtypes": list(dtypes),
            "torch": torch is not None,
        },
        "ceilings": ceiling_summary(results),
        "results": results,
        "skipped": skipped,
    }


def ceiling_summary(results: Sequence[dict]) -> list[dict]:
    """One entry per array size and thread count: the median over its cases of each ceiling."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["ceilings"]
        groups.setdefault((c["bytes"], c["threads"]), []).append(r)
    out = []
    for (nbytes, n_threads), rows in sorted(groups.items()):
        keys = [k for k in CEILING_KEYS if k in rows[0]["ceilings"]]
        out.append(
            {
                "bytes": nbytes,
                "threads": n_threads,
                "shapes": sorted({(tuple(r["shape"]), r["dtype"]) for r in rows}),
                "cases": len(rows),
                **{key: float(np.median([r["ceilings"][key] for r in rows])) for key in keys},
            }
        )
    return out


__all__ = ["DTYPES", "FORMAT", "ceiling_summary", "run", "run_case", "set_threads", "summarize"]
