"""C ABI parity with Python, and hosts as users build them: pkg-config, CMake, Rust, make.

Uses the session's library build (``capi_support.build_capi``). Each host is skipped cleanly
when its toolchain (pkg-config, cmake + a C++ compiler, cargo, make) is missing. Like
``test_capi.py``, it compares bits with the Python API and so needs no float64 reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import capi_support as cs
import numpy as np
import pytest
from capi_support import CAPI, EXAMPLES, GCC, needs_gcc

import fastlsm

pytestmark = needs_gcc


@pytest.fixture(scope="session")
def capi(tmp_path_factory):
    return cs.build_capi(tmp_path_factory)


N, C = 6, 5


def _status_lines(stdout):
    out = {}
    for line in stdout.splitlines():
        head, sep, message = line.partition(" | ")
        if sep and " status " in head:
            name, _, status = head.split()
            out[name] = (int(status), message)
    return out


def test_losses_example_matches_python_bitwise(capi):
    proc = cs._run([cs._exe(capi, "losses")])
    out = cs._parse(proc.stdout)
    f32 = {
        k: out[k].astype(np.float32)
        for k in ("x_f32", "probs", "weight", "token_weight", "grad_output")
    }
    x = f32["x_f32"].reshape(N, C)
    xd = out["x_f64"].reshape(N, C)
    probs = f32["probs"].reshape(N, C)
    w, tw, go = f32["weight"], f32["token_weight"], f32["grad_output"]
    t32 = np.array([0, 4, -100, 2, 1, 3], np.int32)
    t64 = np.array([1, 4, 0, -100, 2, 3], np.int64)
    lp = fastlsm.log_softmax(x)  # only an input of the NLL: recomputed by the library too
    calls = [
        (
            "cross_entropy_with_grad",
            (x, t32),
            {
                "weight": w,
                "token_weight": tw,
                "label_smoothing": 0.125,
                "z_loss": 1e-3,
                "softcap": 3.0,
                "return_lse": True,
            },
        ),
        (
            "cross_entropy_with_grad",
            (xd, t64),
            {
                "weight": w.astype(np.float64),
                "token_weight": tw.astype(np.float64),
                "label_smoothing": 0.125,
                "z_loss": 1e-3,
                "softcap": 3.0,
                "reduction": "none",
                "grad_output": go.astype(np.float64),
                "return_lse": True,
            },
        ),
        (
            "cross_entropy_with_grad",
            (x, probs),
            {"reduction": "sum", "z_loss": 0.01, "grad_output": 0.5},
        ),
        ("log_softmax", (x,), {}),
        ("nll_loss", (lp, t64), {"reduction": "none"}),
        ("sequence_logprobs", (x.reshape(2, 3, C), np.array([[1, 0, 4], [2, 2, 3]])), {}),
        ("cross_entropy", (x, t64), {}),
    ]
    allm, none64, soft, lp_ref, nll_none, (tok, seq), default = cs.reference(capi, calls)
    cs.assert_bitwise(out["all_mean_loss"].astype(np.float32), allm.loss.reshape(1))
    cs.assert_bitwise(out["all_mean_lse"].astype(np.float32), allm.lse)
    cs.assert_bitwise(out["all_mean_grad"].astype(np.float32).reshape(N, C), allm.grad)
    cs.assert_bitwise(out["none64_loss"], none64.loss)
    cs.assert_bitwise(out["none64_lse"], none64.lse)
    cs.assert_bitwise(out["none64_grad"].reshape(N, C), none64.grad)
    cs.assert_bitwise(out["probs_sum_loss"].astype(np.float32), soft.loss.reshape(1))
    cs.assert_bitwise(out["probs_sum_grad"].astype(np.float32).reshape(N, C), soft.grad)
    nll_calls = [("nll_loss", (lp_ref, t32), {"weight": w, "token_weight": tw})]
    (nll_mean,) = cs.reference(capi, nll_calls)
    cs.assert_bitwise(out["nll_mean_loss"].astype(np.float32), nll_mean.reshape(1))
    cs.assert_bitwise(out["nll_none_loss"].astype(np.float32), nll_none)
    # the NLL gradient: -token_weight * weight[t] / den at the target, 0 elsewhere
    keep = t32 != -100
    den = np.sum(w[t32[keep]].astype(np.float64) * tw[keep])
    want = np.zeros((N, C))
    want[np.flatnonzero(keep), t32[keep]] = -(tw[keep] * w[t32[keep]].astype(np.float64)) / den
    np.testing.assert_allclose(out["nll_mean_grad"].reshape(N, C), want, rtol=1e-6)
    for width in ("32", "64"):
        cs.assert_bitwise(out[f"seq{width}_token"].astype(np.float32), tok.reshape(-1))
        cs.assert_bitwise(out[f"seq{width}_sum"].astype(np.float32), seq)
    # an older, smaller options struct: the fields it lacks take their defaults
    cs.assert_bitwise(out["old_struct_loss"].astype(np.float32), default.reshape(1))
    cs.assert_bitwise(out["default_loss"].astype(np.float32), default.reshape(1))
    assert "padded_same 1" in proc.stdout.splitlines()  # row_stride: same bits, padding kept
    st = _status_lines(proc.stdout)
    assert st["short_stride"][0] == 2 and "row_stride=4" in st["short_stride"][1]
    assert st["newer_struct"][0] == 4 and "newer fastlsm.h" in st["newer_struct"][1]
    assert st["unset_struct"][0] == 4 and "struct_size = 0" in st["unset_struct"][1]
    assert st["bad_target_type"][0] == 4 and "target_type=7" in st["bad_target_type"][1]
    assert st["bad_target32"][0] == 3 and "target[4] = 5 is out of range" in st["bad_target32"][1]
    assert st["bad_weight"][0] == 4 and "class_weight must be non-negative" in st["bad_weight"][1]


# --------------------------------------------------------------------------- module path


def test_module_path_never_holds_the_build_directory(capi, tmp_path):
    """Build from a folder holding decoy numpy/ and fastlsm/ packages (and add more after
    the build): a host loading the library never imports them."""
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "imported"

    def decoys():
        for name in ("numpy", "fastlsm", "numba"):
            pkg = work / name
            pkg.mkdir(exist_ok=True)
            (pkg / "__init__.py").write_text(
                f"open({str(marker)!r}, 'a').write({name!r})\nraise ImportError('decoy')\n"
            )

    prefix = tmp_path / "prefix"
    env = dict(capi["env"], PYTHONSAFEPATH="1")  # the build itself must import the real ones
    decoys()
    cs._run(
        [sys.executable, "-m", "fastlsm.capi", "install", "--prefix", str(prefix), "--no-check"],
        env=env, cwd=work, timeout=900,
    )
    del env["PYTHONSAFEPATH"]
    exe = tmp_path / "host"
    host_c = os.path.join(EXAMPLES, "pkgconfig", "host.c")
    rpath = f"-Wl,-rpath,{prefix}/lib"
    cmd = [GCC, host_c, "-o", str(exe), f"-I{prefix}/include", f"-L{prefix}/lib", rpath]
    subprocess.run([*cmd, "-lfastlsm"], check=True)
    decoys()
    with open(prefix / "lib" / "libfastlsm.so", "rb") as f:
        binary = f.read()
    assert str(work).encode() not in binary
    # run from the decoy folder too (the host's working directory is not searched either)
    proc = cs._run([str(exe)], env={"FASTLSM_CACHE_DIR": env["FASTLSM_CACHE_DIR"]}, cwd=work)
    assert proc.stdout.startswith("pkgconfig ")
    assert not marker.exists(), marker.read_text()


# --------------------------------------------------------------------------- hosts


def _expected_bits(capi):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    (y,) = cs.reference(capi, [("log_softmax", (x,), {})])
    return [f"{int(b):08x}" for b in y.reshape(-1).view(np.uint32)]


def test_pkgconfig_host(capi, tmp_path):
    pkg = shutil.which("pkg-config")
    if pkg is None:
        pytest.skip("pkg-config is not installed")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(capi["lib"], "pkgconfig"))
    flags = subprocess.run(
        [pkg, "--cflags", "--libs", "fastlsm"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    version = subprocess.run(
        [pkg, "--modversion", "fastlsm"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version == fastlsm.__version__
    exe = str(tmp_path / "host")
    subprocess.run(
        [GCC, "-Wall", "-Werror", os.path.join(EXAMPLES, "pkgconfig", "host.c"), "-o", exe, *flags],
        check=True,
    )
    out = cs._run([exe]).stdout.split()
    assert out == ["pkgconfig", fastlsm.__version__, *_expected_bits(capi)]


def test_cmake_cxx_host(capi, tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("cmake or a C++ compiler is not installed")
    build = tmp_path / "build"
    subprocess.run(
        [
            cmake,
            "-S",
            os.path.join(EXAMPLES, "cpp_cmake"),
            "-B",
            str(build),
            f"-DCMAKE_PREFIX_PATH={capi['dir']}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True)
    lines = cs._run([str(build / "host")]).stdout.splitlines()
    assert lines[0].split() == ["cmake", fastlsm.__version__, *_expected_bits(capi)]
    assert lines[1].startswith("exception a target index is out of range: ")
    assert "target[0] = 7" in lines[1]
    # a version request the package cannot satisfy fails at configure time
    src = tmp_path / "newer"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(p LANGUAGES C)\n"
        f"find_package(fastlsm {int(fastlsm.__version__.split('.')[0]) + 1}.0 REQUIRED)\n"
    )
    bad = subprocess.run(
        [cmake, "-S", str(src), "-B", str(tmp_path / "b2"), f"-DCMAKE_PREFIX_PATH={capi['dir']}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "fastlsm" in bad.stderr


def test_rust_host(capi, tmp_path):
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    env = dict(os.environ, FASTLSM_PREFIX=capi["dir"], CARGO_TARGET_DIR=str(tmp_path / "t"))
    src = tmp_path / "rust"
    shutil.copytree(os.path.join(EXAMPLES, "rust"), src, ignore=shutil.ignore_patterns("target"))
    subprocess.run(
        [cargo, "build", "--offline", "--quiet"],
        cwd=src,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    lines = cs._run([str(tmp_path / "t" / "debug" / "fastlsm-rust-host")]).stdout.splitlines()
    assert lines[0].split() == ["rust", fastlsm.__version__, *_expected_bits(capi)]
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    (loss,) = cs.reference(capi, [("cross_entropy", (x, np.array([2])), {})])
    assert lines[1] == f"rust_loss {int(np.float32(loss).view(np.uint32)):08x}"
    assert lines[2].startswith("rust_error a target index is out of range")


def test_make_run_after_the_readme_setup(capi, tmp_path):
    """``make -C capi run`` with the Makefile's own default PYTHON (the repository's .venv)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(capi["src"], repo, symlinks=True)  # the package and capi/
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # as a venv's
    (venv / "python").chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": capi["env"]["HOME"],
        "PYTHONPATH": str(repo),
        "FASTLSM_CACHE_DIR": capi["env"]["FASTLSM_CACHE_DIR"],
    }
    proc = subprocess.run(
        [make, "-C", str(repo / "capi"), "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert str(venv / "python") in proc.stdout
    assert proc.stdout.count("== ") == len([n for n in os.listdir(EXAMPLES) if n.endswith(".c")])


# --------------------------------------------------------------------------- fuzzing

FUZZ = os.path.join(CAPI, "fuzz", "fuzz_capi.c")


def test_fuzz_random_inputs_under_address_sanitizer(capi, tmp_path):
    """The fuzz target's own driver (no libFuzzer needed): random inputs for 15 s."""
    exe = str(tmp_path / "fuzz")
    subprocess.run(
        [
            GCC,
            "-DFASTLSM_FUZZ_MAIN",
            "-std=c11",
            "-g",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsanitize=address",
            FUZZ,
            "-o",
            exe,
            *capi["flags"],
            "-lm",
        ],
        check=True,
    )
    proc = cs._run([exe, "15", "7"], env={"ASAN_OPTIONS": "detect_leaks=0"}, timeout=300)
    assert proc.stdout.startswith("fuzz ok: ") and int(proc.stdout.split()[2]) > 100


def test_fuzz_with_libfuzzer(capi, tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang (libFuzzer) is not installed")
    exe = str(tmp_path / "fuzz")
    cc = subprocess.run(
        [clang, "-g", "-O1", "-fsanitize=fuzzer", FUZZ, "-o", exe, *capi["flags"], "-lm"],
        capture_output=True,
        text=True,
        check=False,
    )
    if cc.returncode != 0 and "fuzzer" in cc.stderr:
        pytest.skip(f"this clang has no libFuzzer: {cc.stderr[-300:]}")
    assert cc.returncode == 0, cc.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = cs._run(
        [exe, "-max_total_time=15", "-rss_limit_mb=0", "-seed=1", str(corpus)],
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done " in proc.stderr
