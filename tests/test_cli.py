"""The ``fastlsm`` command (``fastlsm info``, ``fastlsm bench``) and its benchmark library.

The commands run in subprocesses (``python -m fastlsm``) exactly as a user runs them. No
timing is asserted: only the structure and sanity of what they report.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlsm
from fastlsm import bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


def run_fastlsm(*args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "fastlsm", *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )
    assert proc.returncode == 0, f"fastlsm {' '.join(args)} failed:\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------- fastlsm info


def test_info_text_lists_versions_threads_and_cache():
    out = run_fastlsm("info").stdout
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key in ("fastlsm", "numba", "llvmlite", "numpy", "cffi", "torch", "threading layer",
                "threads", "cpu", "cores", "memory", "compile cache"):
        assert key in fields, f"missing {key!r} in:\n{out}"
    assert fields["fastlsm"] == fastlsm.__version__
    assert fields["threading layer"] in ("omp", "tbb")  # never workqueue
    assert int(fields["threads"].split()[0]) >= 1


def test_info_data():  # what `fastlsm info --json` prints, in process (saves a start-up)
    data = cli.info()
    assert json.loads(json.dumps(data)) == data
    assert data["versions"]["fastlsm"] == fastlsm.__version__
    assert data["versions"]["numpy"] == np.__version__
    assert (data["versions"]["torch"] is not None) == HAVE_TORCH
    assert data["threading_layer"] in ("omp", "tbb")
    assert 1 <= data["threads"] <= data["max_threads"]
    assert data["cores"] >= 1 and data["usable_cores"] >= 1
    assert data["memory"]["total"] > 0
    assert data["cache_dir"] == fastlsm._jit.cache_dir()


# --------------------------------------------------------------------------- fastlsm bench


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One ``fastlsm bench --quick`` run, shared by the tests below: (json, csv, stdout, stderr)."""
    d = tmp_path_factory.mktemp("bench")
    js, csv = d / "bench.json", d / "bench.csv"
    proc = run_fastlsm("bench", "--quick", "--repeat", "2", "--threads", "2",
                       "--json", str(js), "--csv", str(csv), "--markdown")
    return json.loads(js.read_text()), csv.read_text(), proc.stdout, proc.stderr


def test_bench_json_header(quick_report):
    report = quick_report[0]
    assert report["format"] == "fastlsm-bench/1"
    datetime.datetime.fromisoformat(report["date"])
    m = report["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["memory"]["total"] > 0
    assert report["threads"] == min(2, fastlsm._jit.numba.config.NUMBA_NUM_THREADS)
    assert report["threading_layer"] in ("omp", "tbb")
    v = report["versions"]
    assert v["fastlsm"] == fastlsm.__version__ and v["numpy"] == np.__version__
    assert set(v) >= {"numba", "llvmlite", "cffi", "torch"}
    assert report["config"] == {"repeat": 2, "quick": True, "only": [], "torch": HAVE_TORCH}


def test_bench_json_roofline(quick_report):
    report = quick_report[0]
    sizes = {r["elements"] for r in report["roofline"]}
    assert sizes == {math.prod(r["shape"]) for r in report["results"]}
    for r in report["roofline"]:
        assert r["bytes"] == 4 * r["elements"]
        assert r["cases"] >= 1 and all(math.prod(sh) == r["elements"] for sh in r["shapes"])
        for key in ("read_gbs", "rw_gbs", "read_ms", "rw_ms"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)


def test_bench_json_rows(quick_report):
    report = quick_report[0]
    # Every declared kernel and quick shape is either measured or skipped with a reason.
    declared = {(k.name, tuple(s)) for k in bench.KERNELS for s in bench.QUICK_SHAPES[k.family]}
    measured = {(r["kernel"], tuple(r["shape"])) for r in report["results"]}
    skipped = {(s["kernel"], tuple(s["shape"])) for s in report["skipped"]}
    assert measured | skipped == declared and not measured & skipped
    assert all("not available" in s["reason"] for s in report["skipped"])
    assert {"log_softmax", "log_softmax_out", "softmax", "logsumexp"} <= {k for k, _ in measured}
    for r in report["results"]:
        providers = {"fastlsm", "numpy"} | ({"torch"} if HAVE_TORCH else set())
        assert set(r["providers"]) == providers
        for name, t in r["providers"].items():
            assert 0 < t["p20_ms"] <= t["median_ms"] <= t["p80_ms"], (r["kernel"], name, t)
            assert t["samples"] >= 2 and t["gbs"] > 0
        assert r["roofline"] in ("read", "rw")
        measured = r["roofline_measured"]  # interleaved with this case's providers
        assert measured["elements"] == math.prod(r["shape"])
        assert measured["read_gbs"] > 0 and measured["rw_gbs"] > 0
        assert r["roofline_gbs"] == measured[f"{r['roofline']}_gbs"]
        assert r["bytes"] >= 4 * math.prod(r["shape"])
        assert r["gbs"] == pytest.approx(r["bytes"] / r["providers"]["fastlsm"]["median_ms"] / 1e6)
        assert r["pct_roofline"] == pytest.approx(100 * r["gbs"] / r["roofline_gbs"])
        assert r["speedup_numpy"] > 0
        assert (r["speedup_torch"] is not None) == HAVE_TORCH


def test_bench_markdown_table_and_csv(quick_report):
    report, csv, stdout, stderr = quick_report
    lines = stdout.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| kernel | shape | median ms")
    assert len(table) == 2 + len(report["results"])
    assert any("roofline" in line and "GB/s" in line for line in lines if not line.startswith("|"))
    assert "log_softmax(out=)" in stdout
    assert "log_softmax [" in stderr  # progress goes to stderr
    rows = csv.strip().splitlines()
    assert rows[0].startswith("kernel,shape,provider,median_ms")
    assert len(rows) == 1 + sum(len(r["providers"]) for r in report["results"])


def test_bench_only_and_list():
    out = run_fastlsm("bench", "--list").stdout
    assert all(k.name in out for k in bench.KERNELS)
    proc = subprocess.run(
        [sys.executable, "-m", "fastlsm", "bench", "--only", "no_such_kernel"],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 2 and "--list" in proc.stderr


def test_bench_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--repeat", "0"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--threads", "two"])


# --------------------------------------------------------------------------- the library


def test_select_cases_patterns():
    cases, _ = bench.select_cases(["log_softmax*"], quick=False)
    assert {c.spec.name for c in cases} == {"log_softmax", "log_softmax_out"}
    assert [c.shape for c in cases if c.spec.name == "log_softmax"] == [
        (64, 32000), (4096, 32000), (512, 128256), (8192, 1000)]
    cases, skipped = bench.select_cases(["cross_entropy"], quick=False)  # a family
    names = {c.spec.name for c in cases} | {s["kernel"] for s in skipped}
    assert names == {"cross_entropy", "cross_entropy_grad"}


def test_pool_shares_one_buffer():
    pool = bench.Pool(6 * 10)
    a, b = pool.logits((6, 10)), pool.logits((2, 3, 10))
    assert a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(a, b) and np.array_equal(a.reshape(-1), b.reshape(-1))
    assert not np.shares_memory(a, pool.out((6, 10)))
    t = pool.integers((6,), 10)
    assert t.dtype == np.int64 and t.min() >= 0 and t.max() < 10
    assert pool.integers((6,), 10) is t
    s = pool.scores((2, 4))
    assert np.all(s <= 0) and np.all(np.diff(s, axis=1) <= 0)


def test_numpy_baselines_match_fastlsm():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7, 11)).astype(np.float32)
    np.testing.assert_allclose(bench._np_log_softmax(x), fastlsm.log_softmax(x), atol=1e-5)
    np.testing.assert_allclose(bench._np_softmax(x), fastlsm.softmax(x), atol=1e-6)
    t = rng.integers(0, 11, size=(5, 7))
    tok, seq = bench._np_sequence_logprobs(x, t)
    ref = np.take_along_axis(fastlsm.log_softmax(x), t[..., None], -1)[..., 0]
    np.testing.assert_allclose(tok, ref, atol=1e-5)
    np.testing.assert_allclose(seq, ref.sum(-1), atol=1e-4)
    x2 = x.reshape(35, 11)
    loss, grad = bench._np_cross_entropy_with_grad(x2, t.reshape(-1))
    assert loss == pytest.approx(bench._np_cross_entropy(x2, t.reshape(-1)), rel=1e-5)
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-6)
    scores = np.array([[0.0, -1.0, -2.5, -3.0]] * 5, np.float32)
    x3 = x.reshape(5, 7, 11)[:, :4]
    vals, toks, beams = bench._np_beam_step(np.ascontiguousarray(x3), scores)
    cand = fastlsm.log_softmax(x3) + scores[..., None]
    for b in range(5):
        ref = np.sort(cand[b].reshape(-1))[::-1][:8]
        np.testing.assert_allclose(vals[b], ref, atol=1e-5)
        np.testing.assert_allclose(cand[b, beams[b], toks[b]], vals[b], atol=1e-5)


def test_roofline_kernels_compute_what_they_claim():
    x = np.arange(300_000, dtype=np.float32) % 7
    out = np.empty_like(x)
    partial = np.empty(-(-x.size // bench._CHUNK), np.float32)
    bench._read_pass(x, partial)
    assert partial.sum(dtype=np.float64) == pytest.approx(float(x.sum(dtype=np.float64)))
    bench._rw_pass(x, out, np.float32(0.5))
    np.testing.assert_array_equal(out, x - np.float32(0.5))
    r = bench.measure_roofline(x, out, rounds=2)
    assert r["bytes"] == x.nbytes and r["read_gbs"] > 0 and r["rw_gbs"] > 0


def test_run_case_rounds_and_budget():
    calls = {"a": 0, "prep": 0}

    def a():
        calls["a"] += 1

    def prep():
        calls["prep"] += 1

    t = bench.run_case({"a": bench.Provider(a, prepare=prep)}, 4, block_seconds=0,
                       settle_seconds=0)
    assert t["a"]["samples"] == 4 and calls["a"] == 6 and calls["prep"] == 6  # 2 warm-ups
    t = bench.run_case({"a": bench.Provider(a)}, 10, block_seconds=0, settle_seconds=0,
                       min_rounds=3, budget_seconds=0)
    assert t["a"]["samples"] == 3  # over budget after the minimum


def test_summarize_and_progress():
    s = bench.summarize([0.001, 0.002, 0.003, 0.004, 0.005])
    assert s == {"median_ms": 3.0, "p20_ms": pytest.approx(1.8), "p80_ms": pytest.approx(4.2),
                 "samples": 5}
    stream = io.StringIO()
    bar = bench.Progress(3, stream=stream)
    bar.label("log_softmax [4, 8]")
    bar.advance(3)
    bar.close()
    assert "log_softmax [4, 8]" in stream.getvalue()
