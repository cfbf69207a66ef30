"""``fastlsm bench`` and its library (:mod:`fastlsm.bench`): the command run as a user runs it
(in subprocesses, one behind a pseudo-terminal of 80 columns), and the library's parts.

No timing is asserted: only the structure of what the command reports and the values its
parts compute (the ceiling passes' sums and copies, the call-bound rule, the table cells).
"""

from __future__ import annotations

import datetime
import fcntl
import io
import json
import math
import os
import pty
import struct
import subprocess
import sys
import termios

import naive
import numpy as np
import pytest
from test_cli import ENV, HAVE_TORCH, ROOT, run_fastlsm

import fastlsm
from fastlsm import bench, cli
from fastlsm.bench import baselines, ceilings, report
from fastlsm.bench.progress import Progress
from fastlsm.bench.registry import spec_shapes

# --------------------------------------------------------------------------- fastlsm bench


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One ``fastlsm bench --quick`` run, shared by the tests below: (json, csv, stdout, stderr)."""
    d = tmp_path_factory.mktemp("bench")
    js, csv = d / "bench.json", d / "bench.csv"
    proc = run_fastlsm(
        "bench",
        "--quick",
        "--repeat",
        "2",
        "--threads",
        "2",
        "--json",
        str(js),
        "--csv",
        str(csv),
        "--markdown",
        timeout=900,  # a hang guard: cold kernel cache on a loaded 2-core machine took over 240 s
    )
    return json.loads(js.read_text()), csv.read_text(), proc.stdout, proc.stderr, js


def test_bench_json_header(quick_report):
    rep = quick_report[0]
    assert rep["format"] == bench.FORMAT
    datetime.datetime.fromisoformat(rep["date"])
    m = rep["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["memory"]["total"] > 0
    assert rep["threads"] == min(2, fastlsm._jit.numba.config.NUMBA_NUM_THREADS)
    assert rep["threading_layer"] in ("omp", "tbb")
    v = rep["versions"]
    assert v["fastlsm"] == fastlsm.__version__ and v["numpy"] == np.__version__
    assert set(v) >= {"numba", "llvmlite", "cffi", "torch"}
    assert rep["config"] == {
        "repeat": 2,
        "quick": True,
        "only": [],
        "dtypes": ["float32"],
        "torch": HAVE_TORCH,
    }


def test_bench_json_ceilings(quick_report):
    rep = quick_report[0]
    sizes = {(r["ceilings"]["bytes"], r["ceilings"]["threads"]) for r in rep["results"]}
    assert sizes == {(c["bytes"], c["threads"]) for c in rep["ceilings"]}
    for c in rep["ceilings"]:
        assert c["cases"] >= 1
        assert all(math.prod(sh) * 4 == c["bytes"] for sh, _ in c["shapes"])
        call_bound = c["bytes"] < bench.CALL_BOUND_BYTES
        keys = ["call_ms"] if call_bound else ["read_gbs", "copy_gbs", "read_ms", "copy_ms"]
        assert set(c) == {"bytes", "threads", "shapes", "cases", *keys}, c
        for key in keys:
            assert math.isfinite(c[key]) and c[key] > 0, (key, c)
    by_kernel = {(r["kernel"], tuple(r["shape"])): r["ceilings"]["threads"] for r in rep["results"]}
    assert by_kernel[("logsumexp", (1, 8))] == 1  # call-bound: the floor of one call
    assert by_kernel[("logsumexp", (1, 32000))] == 1  # one row: one thread, as the kernel
    assert by_kernel[("logsumexp", (64, 4096))] == rep["threads"]


def test_bench_json_rows(quick_report):
    rep = quick_report[0]
    # Every declared kernel and quick shape is either measured or skipped with a reason.
    declared = {(k.name, s) for k in bench.KERNELS for s in spec_shapes(k, bench.SHAPES, True)}
    measured = {(r["kernel"], tuple(r["shape"])) for r in rep["results"]}
    skipped = {(s["kernel"], tuple(s["shape"])) for s in rep["skipped"]}
    assert measured | skipped == declared and not measured & skipped
    assert all("not available" in s["reason"] for s in rep["skipped"])
    assert {"log_softmax", "log_softmax_out", "softmax_out", "logsumexp"} <= {
        k for k, _ in measured
    }
    for r in rep["results"]:
        assert "fastlsm" in r["providers"] and ("torch" in r["providers"]) == HAVE_TORCH
        call_bound = math.prod(r["shape"]) * 4 < bench.CALL_BOUND_BYTES
        assert r["bound"] == ("call" if call_bound else r["ceiling"])
        for name, t in r["providers"].items():
            assert 0 < t["p20_ms"] <= t["median_ms"] <= t["p80_ms"], (r["kernel"], name, t)
            assert t["samples"] >= 2 and t["gbs"] > 0
            if call_bound:  # no % of a bandwidth ceiling
                assert t["pct_ceiling"] is None and r["ceiling_gbs"] is None
            else:
                assert t["pct_ceiling"] == pytest.approx(100 * t["gbs"] / r["ceiling_gbs"])
        # a fresh output is timed beside its out= twin, in the same rounds
        fresh = r["kernel"] in ("log_softmax", "softmax")
        assert set(r["same_run"]) == ({"fastlsm_out"} if fresh else set())
        assert (r["vs_out"] is not None) == fresh and r["vs_float32"] is None
        if fresh:
            twin = r["same_run"]["fastlsm_out"]
            assert r["vs_out"] == pytest.approx(
                r["providers"]["fastlsm"]["median_ms"] / twin["median_ms"]
            )
        assert r["ceiling"] in ("read", "copy") and r["dtype"] == "float32"
        assert r["ceiling"] == (
            "copy" if "softmax" in r["kernel"] or "grad" in r["kernel"] else "read"
        )
        if not call_bound:
            assert r["ceiling_gbs"] == r["ceilings"][f"{r['ceiling']}_gbs"]
        assert r["bytes"] >= 4 * math.prod(r["shape"])
        assert r["gbs"] == pytest.approx(r["bytes"] / r["providers"]["fastlsm"]["median_ms"] / 1e6)
        assert r["pct_ceiling"] == r["providers"]["fastlsm"]["pct_ceiling"]
        assert (r["speedup_torch"] is not None) == HAVE_TORCH


def test_bench_markdown_table_and_csv(quick_report):
    rep, csv, stdout, stderr, _ = quick_report
    lines = stdout.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| kernel | dtype | shape | median ms")
    assert ("| PyTorch ms | PyTorch % |" in table[0]) == HAVE_TORCH
    assert "% of ceiling" in table[0]
    assert len(table) == 2 + len(rep["results"])
    head = "\n".join(line for line in lines if not line.startswith("|"))
    assert rep["machine"]["cpu"] in head and rep["date"] in head
    assert f"threads: {rep['threads']}" in head
    bullets = [line for line in lines if line.startswith("- ")]
    assert len(bullets) == len(rep["ceilings"])
    for line, c in zip(bullets, rep["ceilings"]):
        assert ("call-bound" in line) == ("call_ms" in c), line
        assert ("read" in line and "copy" in line) == ("read_gbs" in c), line
    assert "log_softmax(out=)" in stdout and "% copy" in stdout and "% read" in stdout
    call_rows = [line for line in table if "| [1, 8] |" in line]
    assert call_rows and all("| call |" in line for line in call_rows)  # no % of a ceiling
    assert "same run" in table[0] and "x out= time" in stdout  # fresh rows beside out=
    assert "log_softmax(out=) [1, 8]" in stderr  # progress goes to stderr
    rows = csv.strip().splitlines()
    assert rows[0].startswith("kernel,shape,dtype,provider,median_ms")
    assert len(rows) == 1 + sum(len(r["providers"]) for r in rep["results"])


def test_bench_json_to_stdout_and_16_bit_dtypes():
    proc = run_fastlsm(
        "bench",
        "--quick",
        "--repeat",
        "2",
        "--only",
        "logsumexp",
        "--dtype",
        "bfloat16,float16",
        "--no-torch",
        "--no-progress",
        "--json",
        "-",
    )
    rep = json.loads(proc.stdout)  # stdout holds the JSON only; the table went to stderr
    assert "logsumexp" in proc.stderr and rep["config"]["dtypes"] == ["bfloat16", "float16"]
    seen = {(r["dtype"], tuple(r["shape"])) for r in rep["results"]}
    seen |= {(s["dtype"], tuple(s["shape"])) for s in rep["skipped"]}
    lse = next(k for k in bench.KERNELS if k.name == "logsumexp")
    shapes = spec_shapes(lse, bench.SHAPES, quick=True)
    assert seen == {(d, s) for d in ("bfloat16", "float16") for s in shapes}
    for s in rep["skipped"]:  # a dtype fastlsm rejects is skipped, saying so
        assert s["reason"].startswith("not supported yet"), s
        assert f"skipped logsumexp {report.shape_text(s['shape'])} {s['dtype']}" in proc.stderr
    for r in rep["results"]:  # bytes at 2 per element, the float32 kernel in the same rounds
        assert r["bytes"] == 2 * (math.prod(r["shape"]) + r["shape"][0])
        assert set(r["same_run"]) == {"fastlsm_float32"}
        f32 = r["same_run"]["fastlsm_float32"]["median_ms"]
        assert r["vs_float32"] == pytest.approx(f32 / r["providers"]["fastlsm"]["median_ms"])
        if r["bound"] != "call":  # % of the ceiling of the 16-bit array's own bytes
            assert r["ceilings"]["bytes"] == 2 * math.prod(r["shape"])
    assert rep["results"] and "x float32 el/s" in proc.stderr


def test_bench_plot_and_load(quick_report, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    proc = run_fastlsm("bench", "--load", str(quick_report[4]), "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.stdout == bench.format_table(quick_report[0])  # --load renders, no run


def test_bench_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    assert cli.main(["bench", "--quick", "--plot", "x.png"]) == 2  # before any timing
    assert "pip install 'fastlsm[plot]'" in capsys.readouterr().err


def test_bench_progress_in_an_80_column_terminal():
    """Behind a pseudo-terminal of 80 columns, every redraw fits in 79 and no line is added."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastlsm",
            "bench",
            "--quick",
            "--repeat",
            "3",
            "--only",
            "logsumexp,sequence_logprobs",
            "--no-torch",
        ],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=ENV,
        cwd=ROOT,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0
    shown = b"".join(chunks).decode()
    assert "\n" not in shown.strip("\r\n"), shown  # redrawn in place, never a new line
    frames = [f for f in shown.split("\r") if f.strip()]
    assert len(frames) >= 4 and all(len(f) <= 79 for f in frames), frames
    assert any("eta" in f and "sequence_logprobs" in f for f in frames), frames
    assert b"logsumexp" in out


def test_bench_only_and_list():
    out = run_fastlsm("bench", "--list").stdout
    assert all(k.name in out for k in bench.KERNELS)
    proc = run_fastlsm("bench", "--only", "no_such_kernel", check=False)
    assert proc.returncode == 2 and "--list" in proc.stderr


def test_bench_rejects_bad_arguments():
    for args in (["--repeat", "0"], ["--threads", "two"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["bench", *args])
    ns = cli.build_parser().parse_args(["bench", "--dtype", "float32,bfloat16"])
    assert ns.dtype == ["float32", "bfloat16"]


# --------------------------------------------------------------------------- the library


def test_select_cases_patterns_and_dtypes():
    cases, _ = bench.select_cases(bench.KERNELS, bench.SHAPES, ["log_softmax*"])
    assert {c.spec.name for c in cases} == {"log_softmax", "log_softmax_out"}
    assert [c.shape for c in cases if c.spec.name == "log_softmax_out"] == [
        (1, 8),
        (1, 32000),
        (1, 128256),
        (64, 32000),
        (64, 128256),
        (4096, 32000),
        (512, 128256),
    ]
    assert [c.shape for c in cases if c.spec.name == "log_softmax"] == [
        (4096, 32000),
        (512, 128256),
    ]  # fresh outputs: where page faults matter
    cases, skipped = bench.select_cases(bench.KERNELS, bench.SHAPES, ["cross_entropy"])
    names = {c.spec.name for c in cases} | {s["kernel"] for s in skipped}
    assert names == {"cross_entropy", "cross_entropy_grad"}  # a family
    cases, _ = bench.select_cases(
        bench.KERNELS, bench.SHAPES, ["logsumexp"], quick=True, dtypes=["float64", "bfloat16"]
    )
    assert [(c.dtype.name, c.shape) for c in cases] == [
        (dt, sh) for dt in ("float64", "bfloat16") for sh in [(1, 8), (1, 32000), (64, 4096)]
    ]
    assert [c.nbytes for c in cases] == [64, 256000, 2097152, 16, 64000, 524288]
    assert [c.call_bound for c in cases] == [True, False, False, True, False, False]


def test_pool_shares_buffers_across_shapes_and_dtypes():
    pool = bench.Pool(6 * 10, max_itemsize=8)
    a, b = pool.logits((6, 10)), pool.logits((2, 3, 10))
    assert a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(a, b) and np.array_equal(a.reshape(-1), b.reshape(-1))
    assert not np.shares_memory(a, pool.out((6, 10)))
    for name, dt in bench.DTYPES.items():
        x, o = pool.logits((6, 10), dt), pool.out((6, 10), dt)
        assert x.dtype == dt and o.dtype == dt and o.shape == (6, 10), name
        np.testing.assert_allclose(x.astype(np.float64), a, rtol=2**-7)  # a's values
    src, dst = pool.ceiling_buffers(6 * 10 * 8)  # float64's bytes, as float32
    assert src.dtype == dst.dtype == np.float32 and src.size == dst.size == 120
    assert np.shares_memory(src, a) and np.shares_memory(dst, pool.out((6, 10)))
    t = pool.integers((6,), 10)
    assert t.dtype == np.int64 and t.min() >= 0 and t.max() < 10
    assert pool.integers((6,), 10) is t
    s = pool.scores((2, 4))
    assert np.all(s <= 0) and np.all(np.diff(s, axis=1) <= 0)


def test_numpy_baselines_match_the_references():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7, 11)).astype(np.float32)
    np.testing.assert_allclose(baselines.log_softmax(x), naive.log_softmax(x), atol=1e-5)
    np.testing.assert_allclose(baselines.softmax(x), naive.softmax(x), atol=1e-6)
    np.testing.assert_allclose(baselines.lse(x)[..., 0], naive.logsumexp(x), atol=1e-5)
    t = rng.integers(0, 11, size=(5, 7))
    for got, want in zip(baselines.sequence_logprobs(x, t), naive.sequence_logprobs(x, t)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    x2, t2 = x.reshape(35, 11), t.reshape(-1)
    loss, grad = baselines.cross_entropy_with_grad(x2, t2)
    want_loss, want_grad = naive.cross_entropy(x2, t2)[:2]  # (loss, grad[, lse])
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert baselines.cross_entropy(x2, t2) == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, atol=1e-6)
    scores = np.array([[0.0, -1.0, -2.5, -3.0]] * 5, np.float32)
    x3 = np.ascontiguousarray(x[:, :4])
    # fastlsm.beam_step is itself checked against the float64 reference (test_beam_step.py)
    for got, want in zip(baselines.beam_step(x3, scores), fastlsm.beam_step(x3, scores)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    widened = baselines.widened(baselines.lse, x.astype(bench.DTYPES["bfloat16"]))()
    assert widened.dtype == np.float32  # 16-bit logits computed in float32, as users must


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [300_001, (1 << 20) + 3])  # plain stores, streaming stores
def test_ceiling_passes_compute_what_they_claim(threads, size):
    x = np.arange(size, dtype=np.float32) % 7 - 3  # odd size: a 4-byte tail
    out = np.zeros_like(x)
    p = ceilings.ceiling_providers(x, out, threads)
    p["ceiling_copy"].prepare()
    p["ceiling_copy"].fn()
    np.testing.assert_array_equal(out, x)  # bit for bit: s = 1, a = b = 0
    words = x.view(np.uint8)[: x.nbytes // 8 * 8].view(np.uint64)
    partial = np.zeros(threads, np.uint64)
    (ceilings.read_pass if threads > 1 else ceilings.read_pass.serial)(words, threads, partial)
    with np.errstate(over="ignore"):
        assert partial.sum() == words.sum()  # wrapping uint64 sums, any split
    one = np.zeros(1, np.uint64)
    ceilings.read_pass.serial(words[:37], 1, one)  # 32 words in vectors, 5 one by one
    assert one[0] == words[:37].sum()
    timings = {"ceiling_read": {"median_ms": 1.0}, "ceiling_copy": {"median_ms": 2.0}}
    fig = ceilings.ceiling_figures(x.nbytes, timings, threads)
    assert fig["read_gbs"] == pytest.approx(x.nbytes / 1e6)
    assert fig["copy_gbs"] == pytest.approx(x.nbytes / 1e6)  # twice the bytes in twice the time
    call = ceilings.ceiling_providers(x, out, threads, call=True)
    assert set(call) == {"ceiling_call"} and call["ceiling_call"].fn() == 0
    fig = ceilings.ceiling_figures(x.nbytes, {"ceiling_call": {"median_ms": 0.25}}, 1)
    assert fig == {"bytes": x.nbytes, "threads": 1, "call_ms": 0.25}


def test_parallel_ceiling_passes_run_on_every_thread():
    """Regression: the parallel passes ran the serial code (one shared cache entry)."""
    for compiled in (ceilings.read_pass, ceilings.copy_pass):
        assert compiled.serial.py_func.__qualname__.endswith("__serial")
        assert compiled.serial.py_func is not compiled.py_func
        assert compiled.targetoptions.get("parallel")


def test_ceiling_threads_follow_the_kernels():
    assert ceilings.ceiling_threads(1000, 10) == 1  # below SERIAL_WORK
    assert ceilings.ceiling_threads(128256, 1) == 1  # one row
    assert ceilings.ceiling_threads(64 * 32000, 64) == fastlsm.get_num_threads()


def test_run_case_rounds_and_budget():
    calls = {"a": 0, "prep": 0}

    def a():
        calls["a"] += 1

    def prep():
        calls["prep"] += 1

    t = bench.run_case({"a": bench.Provider(a, prepare=prep)}, 4, block_seconds=0, settle_seconds=0)
    assert t["a"]["samples"] == 4 and calls["a"] == 6 and calls["prep"] == 6  # 2 warm-ups
    t = bench.run_case(
        {"a": bench.Provider(a)},
        10,
        block_seconds=0,
        settle_seconds=0,
        min_rounds=3,
        budget_seconds=0,
    )
    assert t["a"]["samples"] == 3  # over budget after the minimum


def test_summarize():
    s = bench.summarize([0.001, 0.002, 0.003, 0.004, 0.005])
    assert s == {
        "median_ms": 3.0,
        "p20_ms": pytest.approx(1.8),
        "p80_ms": pytest.approx(4.2),
        "samples": 5,
    }


@pytest.mark.parametrize("columns", [20, 80, 200])
def test_progress_line_fits_any_width(columns):
    bar = Progress(10.0, stream=io.StringIO())
    bar.label("cross_entropy_with_grad(inplace) [4096, 32000] float32")
    assert bar.eta() is None and len(bar.line(columns)) == columns - 1
    assert "eta ?" in bar.line(200)
    bar.advance(4.0)
    line = bar.line(columns)
    assert len(line) == columns - 1
    assert bar.eta() is not None and bar.eta() >= 0
    if columns >= 80:
        assert " 40% " in line and "eta " in line and "[4096, 32000]" in line


def test_progress_without_a_terminal_prints_one_line_per_case():
    stream = io.StringIO()
    bar = Progress(3, stream=stream)
    bar.label("log_softmax [4, 8]")
    bar.advance(3)
    bar.label("softmax [4, 8]")
    bar.close()
    assert stream.getvalue().splitlines() == ["[  0%] log_softmax [4, 8]", "[100%] softmax [4, 8]"]


def test_bench_load_rejects_what_is_not_a_report(tmp_path, capsys):
    missing, other = tmp_path / "missing.json", tmp_path / "other.json"
    other.write_text('{"format": "fastlsm-bench/1"}')
    assert cli.main(["bench", "--load", str(missing)]) == 2
    assert "cannot read a report" in capsys.readouterr().err
    assert cli.main(["bench", "--load", str(other)]) == 2
    assert f"not a {bench.FORMAT} report" in capsys.readouterr().err


def test_table_cells_for_call_bound_16_bit_and_fresh_rows():
    """The cells the README table shows, from a hand-made report (no timing)."""

    def row(label, shape, dtype, ms, bound, pct, **extra):
        t = {"median_ms": ms, "p20_ms": ms, "p80_ms": ms, "samples": 5, "gbs": 1.0}
        return {
            "label": label,
            "shape": shape,
            "dtype": dtype,
            "gbs": 1.0,
            "bound": bound,
            "ceiling": "copy",
            "pct_ceiling": pct,
            "providers": {"fastlsm": {**t, "pct_ceiling": pct}},
            "speedup_numpy": None,
            **extra,
        }

    rep = {
        "results": [
            row("log_softmax(out=)", [1, 8], "float32", 0.002641, "call", None),
            row("log_softmax(out=)", [4096, 32000], "bfloat16", 18.0, "copy", 0.04, vs_float32=2),
            row("log_softmax", [4096, 32000], "float32", 68.5, "copy", 84.2, vs_out=1.94),
        ]
    }
    cols, cells = report.columns(rep), report.table_rows(rep)
    assert cols[-1] == "same run" and cols[6] == "% of ceiling"
    assert [c[3] for c in cells] == ["0.00264", "18.0", "68.5"]  # 3 significant digits
    assert [c[6] for c in cells] == ["call", "0.04% copy", "84% copy"]
    assert [c[-1] for c in cells] == ["-", "2.00x float32 el/s", "1.94x out= time"]
    assert report.size_text(32) == "32 B" and report.size_text(4_096_000) == "4.1 MB"
