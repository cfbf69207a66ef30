#!/usr/bin/env python
"""Cold start and per-call overhead of the C ABI (libfastlsm.so), measured from a C host.

    python bench/bench_capi.py                  # uses (or builds) the default library
    python bench/bench_capi.py --lib P          # a library installed with `capi install --prefix P`
    python bench/bench_capi.py --json out.json  # also write the results as JSON
    python bench/bench_capi.py --lib A --lib B --rounds 3   # two libraries, rounds alternated

What is measured (all in fresh C processes started with `env -i`, i.e. an empty environment):

- cold start: wall time from exec to the end of the first call (log_softmax of a 1x8 float32
  input), warm kernel cache; the median of --starts processes. Also the time of the first
  call alone (the runtime start-up: Python, NumPy, Numba, loading cached kernels), as seen by
  the C program.
- per-call overhead: median time per call of fastlsm_log_softmax_f32 on a 1x8 input in a loop
  (the kernel work is a few nanoseconds), with the default thread count and with
  fastlsm_set_num_threads(1); then with 8 host threads calling concurrently (threads=1), as
  calls per second per host thread. Inputs under 32768 elements always run on the calling
  thread (no parallel launch), as in the Python API.
- parallel launch: time per call on 8x4096 (32768 elements: the smallest input that uses
  Numba's pool) with the default thread count vs one thread.
- throughput: log_softmax on 64x32000 float32 with the default thread count and one thread.

The machine is shared and noisy: numbers are medians of repeated runs, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BENCH_C = r"""
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fastlsm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double per_call(int64_t rows, int64_t cols, long iters) {
    float *x = malloc(rows * cols * sizeof *x), *y = malloc(rows * cols * sizeof *y);
    for (int64_t i = 0; i < rows * cols; i++) x[i] = (float)(i % 13) * 0.25f;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (long i = 0; i < iters; i++)
            if (fastlsm_log_softmax_f32(x, y, rows, cols) != FASTLSM_OK) exit(3);
        double t = (now() - t0) / iters;
        if (t < best) best = t;
    }
    free(x), free(y);
    return best;
}

typedef struct { long iters; double seconds; } job;

static void *worker(void *arg) {
    job *j = arg;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
    double t0 = now();
    for (long i = 0; i < j->iters; i++)
        if (fastlsm_log_softmax_f32(x, y, 1, 8) != FASTLSM_OK) exit(3);
    j->seconds = now() - t0;
    return NULL;
}

int main(int argc, char **argv) {
    double t0 = now();
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
    int st = fastlsm_log_softmax_f32(x, y, 1, 8);
    double first = now() - t0;
    if (st != FASTLSM_OK) {
        fprintf(stderr, "%s\n", fastlsm_last_error());
        return 2;
    }
    printf("first_call_s %.6f\n", first);
    if (argc > 1 && strcmp(argv[1], "cold") == 0) return 0;
    long n = argc > 2 ? atol(argv[2]) : 200000;
    printf("threads %d\n", fastlsm_get_num_threads());
    printf("call_1x8_default_s %.9f\n", per_call(1, 8, n));
    printf("launch_8x4096_default_s %.9f\n", per_call(8, 4096, 200));
    printf("throughput_64x32000_default_s %.9f\n", per_call(64, 32000, 5));
    if (fastlsm_set_num_threads(1) != FASTLSM_OK) return 4;
    printf("call_1x8_serial_s %.9f\n", per_call(1, 8, n));
    printf("launch_8x4096_serial_s %.9f\n", per_call(8, 4096, 200));
    printf("throughput_64x32000_serial_s %.9f\n", per_call(64, 32000, 5));
    pthread_t tid[8];
    job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i].iters = n;
        pthread_create(&tid[i], NULL, worker, &jobs[i]);
    }
    double total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(tid[i], NULL);
        total += jobs[i].seconds;
    }
    printf("call_1x8_8host_serial_s %.9f\n", total / (8.0 * n));
    return 0;
}
"""


def _library(lib_dir: str | None) -> str:
    from fastlsm import capi

    d = os.path.abspath(lib_dir or capi.default_out_dir())
    if not os.path.exists(os.path.join(d, "lib", "libfastlsm.so")):
        print(f"building the library into {d} ...", file=sys.stderr)
        capi.build(d)
    return d


def _parse(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, value = line.split()
        out[key] = float(value)
    return out


def run(lib_dir: str | None, starts: int, iters: int) -> dict:
    from fastlsm.capi import _build

    d = _library(lib_dir)
    with tempfile.TemporaryDirectory(prefix="fastlsm-bench-capi-") as tmp:
        src, exe = os.path.join(tmp, "bench.c"), os.path.join(tmp, "bench")
        with open(src, "w") as f:
            f.write(BENCH_C)
        subprocess.run(
            [
                _build.compiler(),
                "-O2",
                "-Wall",
                src,
                "-o",
                exe,
                *_build.flags(d).split(),
                "-lpthread",
            ],
            check=True,
        )
        subprocess.run(["env", "-i", exe, "cold"], check=True, capture_output=True)  # warm
        walls, firsts = [], []
        for _ in range(starts):
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["env", "-i", exe, "cold"], check=True, capture_output=True, text=True
            )
            walls.append(time.perf_counter() - t0)
            firsts.append(_parse(proc.stdout)["first_call_s"])
        proc = subprocess.run(
            ["env", "-i", exe, "calls", str(iters)], check=True, capture_output=True, text=True
        )
    calls = _parse(proc.stdout)
    return {
        "library": d,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cold_start_wall_s": statistics.median(walls),
        "cold_start_first_call_s": statistics.median(firsts),
        "cold_start_runs": walls,
        **calls,
    }


def table(r: dict) -> str:
    us = 1e6
    rows = [
        (
            "cold start: exec -> first result (env -i, warm cache)",
            f"{r['cold_start_wall_s']:.3f} s",
        ),
        (
            "cold start: first call alone (runtime start-up)",
            f"{r['cold_start_first_call_s']:.3f} s",
        ),
        (
            f"per call, 1x8 float32, default threads ({int(r['threads'])})",
            f"{r['call_1x8_default_s'] * us:.3f} us",
        ),
        (
            "per call, 1x8 float32, fastlsm_set_num_threads(1)",
            f"{r['call_1x8_serial_s'] * us:.3f} us",
        ),
        (
            "per call, 1x8, 8 host threads at once (threads=1)",
            f"{r['call_1x8_8host_serial_s'] * us:.3f} us",
        ),
        (
            "8x4096 (parallel launch), default threads",
            f"{r['launch_8x4096_default_s'] * us:.1f} us",
        ),
        ("8x4096, one thread", f"{r['launch_8x4096_serial_s'] * us:.1f} us"),
        (
            "64x32000 log_softmax, default threads",
            f"{r['throughput_64x32000_default_s'] * 1e3:.2f} ms",
        ),
        ("64x32000 log_softmax, one thread", f"{r['throughput_64x32000_serial_s'] * 1e3:.2f} ms"),
    ]
    w = max(len(a) for a, _ in rows)
    lines = [f"fastlsm C ABI ({r['library']}, {r['cpus']} CPUs, {r['date']})", ""]
    lines += [f"| {'measurement'.ljust(w)} | {'median':>10} |", f"|{'-' * (w + 2)}|{'-' * 12}|"]
    lines += [f"| {a.ljust(w)} | {b:>10} |" for a, b in rows]
    return "\n".join(lines)


def compare(libs: list[str], rounds: int, starts: int, iters: int) -> list[list[dict]]:
    """``rounds`` runs of each library, alternated (A B A B ...): results per library."""
    out: list[list[dict]] = [[] for _ in libs]
    for _ in range(rounds):
        for i, lib in enumerate(libs):
            out[i].append(run(lib, starts, iters))
    return out


def ratios(results: list[list[dict]]) -> str:
    """Each library's median per measurement over its rounds, divided by the first's."""
    keys = [k for k, v in results[0][0].items() if isinstance(v, float) and k != "cpus"]
    med = [{k: statistics.median(r[k] for r in res) for k in keys} for res in results]
    lines = [f"{'measurement':40} " + " ".join(f"{f'lib {i}':>12}" for i in range(len(med)))
             + "  ratio (last / first)"]
    for k in keys:
        lines.append(f"{k:40} " + " ".join(f"{m[k]:12.3g}" for m in med)
                     + f"  {med[-1][k] / med[0][k]:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lib", action="append",
                   help="prefix given to `capi install` (default: its default); twice or "
                        "more: compare them, rounds alternated")
    p.add_argument("--starts", type=int, default=7, help="fresh processes for the cold start")
    p.add_argument("--iters", type=int, default=200000, help="calls per timing loop")
    p.add_argument("--rounds", type=int, default=3, help="rounds per library when comparing")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if shutil.which("env") is None:
        p.error("needs `env` to run the host in an empty environment")
    if args.lib and len(args.lib) > 1:
        results = compare(args.lib, args.rounds, args.starts, args.iters)
        for i, lib in enumerate(args.lib):
            print(f"lib {i}: {lib}")
        print(ratios(results))
        r = {"libraries": args.lib, "rounds": results}
    else:
        r = run(args.lib[0] if args.lib else None, args.starts, args.iters)
        print(table(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
