"""The C ABI: build libfastlsm.so once, compile every C example, run them in an empty
environment, and compare their outputs bit for bit with the Python API.

No float64 reference is needed here (``tests/naive.py``): the C results must be the bits of
the same kernels run from Python (``capi_support.reference``), whose values the other test
modules check against the references.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from capi_support import (
    CAPI,
    EXAMPLES,
    _exe,
    _parse,
    _run,
    assert_bitwise,
    build_capi,
    needs_gcc,
    reference,
)

import fastlsm

pytestmark = needs_gcc


@pytest.fixture(scope="session")
def capi(tmp_path_factory):
    return build_capi(tmp_path_factory)


# --------------------------------------------------------------------------- build


def test_install_writes_a_prefix(capi):
    d = capi["dir"]
    real, soname, link = (
        f"libfastlsm.so.{fastlsm.__version__}",
        f"libfastlsm.so.{fastlsm.__version__.split('.')[0]}",
        "libfastlsm.so",
    )
    assert sorted(os.listdir(d)) == ["include", "lib"]
    assert os.listdir(os.path.join(d, "include")) == ["fastlsm.h"]
    assert sorted(os.listdir(capi["lib"])) == sorted(["cmake", "pkgconfig", real, soname, link])
    assert os.readlink(os.path.join(capi["lib"], soname)) == real
    assert os.readlink(os.path.join(capi["lib"], link)) == soname
    with (
        open(os.path.join(capi["include"], "fastlsm.h")) as a,
        open(os.path.join(CAPI, "fastlsm.h")) as b,
    ):
        assert a.read() == b.read()
    with open(os.path.join(capi["lib"], "pkgconfig", "fastlsm.pc")) as f:
        pc = f.read()
    assert f"Version: {fastlsm.__version__}" in pc and "-lfastlsm" in pc
    assert sorted(os.listdir(os.path.join(capi["lib"], "cmake", "fastlsm"))) == [
        "fastlsmConfig.cmake",
        "fastlsmConfigVersion.cmake",
    ]
    lib = capi["lib"]
    assert capi["flags"] == [f"-I{d}/include", f"-L{lib}", f"-Wl,-rpath,{lib}", "-lfastlsm"]


def test_library_has_a_versioned_soname(capi):
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    out = subprocess.run(
        [readelf, "-d", os.path.join(capi["lib"], "libfastlsm.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    major = fastlsm.__version__.split(".")[0]
    assert f"Library soname: [libfastlsm.so.{major}]" in out
    host = subprocess.run(
        [readelf, "-d", _exe(capi, "errors")], capture_output=True, text=True, check=True
    ).stdout
    assert f"Shared library: [libfastlsm.so.{major}]" in host  # what a host records


@pytest.mark.parametrize("which", [["--cflags"], ["--libs"], ["--cflags", "--libs"], []])
def test_flags_parts_and_missing_build(capi, tmp_path, which):
    env = {k: v for k, v in capi["env"].items()}
    run = [sys.executable, "-m", "fastlsm.capi", "flags", *which]
    got = subprocess.run(
        [*run, "--prefix", capi["dir"]], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    cflags, libs = capi["flags"][:1], capi["flags"][1:]
    assert got == (
        cflags if which == ["--cflags"] else libs if which == ["--libs"] else cflags + libs
    )
    missing = subprocess.run(
        [*run, "--prefix", str(tmp_path / "nothing")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0 and "no fastlsm C library" in missing.stderr
    assert missing.stdout == ""


def test_header_version_matches_package():
    with open(os.path.join(CAPI, "fastlsm.h")) as f:
        header = f.read()
    assert f'#define FASTLSM_VERSION_STRING "{fastlsm.__version__}"' in header
    major, minor, patch = (int(p) for p in fastlsm.__version__.split("."))
    assert f"#define FASTLSM_VERSION_MAJOR {major}\n" in header
    assert f"#define FASTLSM_VERSION_MINOR {minor}\n" in header
    assert f"#define FASTLSM_VERSION_PATCH {patch}\n" in header


def test_library_exports_only_the_abi(capi):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run(
        [nm, "-D", "--defined-only", os.path.join(capi["lib"], "libfastlsm.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    with open(os.path.join(CAPI, "fastlsm.h")) as f:
        header = f.read()
    declared = {name for name in exported if f" {name}(" in header or f"*{name}(" in header}
    assert exported - declared == {"PyInit__fastlsm_cffi"}
    from fastlsm.capi import _entries

    table = {p.split("(")[0].split()[-1].lstrip("*") for p in _entries.public_prototypes()}
    assert table == exported - {"PyInit__fastlsm_cffi"}  # every table entry is defined


def test_every_example_compiles_with_wall_werror(capi):
    assert capi["errors"] == {}
    sources = {n[:-2] for n in os.listdir(EXAMPLES) if n.endswith(".c")}
    assert {"log_softmax", "errors", "threads", "train_step", "beam_search"} <= sources
    assert sources <= set(capi["exes"])


def test_header_compiles_as_cxx(capi, tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    src = tmp_path / "h.cpp"
    src.write_text(
        '#include "fastlsm.h"\nint main() { return fastlsm_version_number() > 0 ? 0 : 1; }\n'
    )
    subprocess.run(
        [gxx, "-Wall", "-Werror", "-fsyntax-only", f"-I{capi['include']}", str(src)], check=True
    )


# --------------------------------------------------------------------------- normalizers


def _check_normalizers(capi, out):
    rows, cols = (int(v) for v in out["shape"][:2])
    calls, expected = [], []
    for dt, suffix in ((np.float32, "f32"), (np.float64, "f64")):
        x = out[f"x_{suffix}"].astype(dt).reshape(rows, cols)
        for name in ("log_softmax", "softmax", "logsumexp"):
            calls.append((name, (x,), {}))
            shape = (rows,) if name == "logsumexp" else (rows, cols)
            expected.append(out[f"{name}_{suffix}"].astype(dt).reshape(shape))
    calls.append(("log_softmax", (out["x_f32"].astype(np.float32).reshape(rows, cols),), {}))
    expected.append(out["inplace_log_softmax_f32"].astype(np.float32).reshape(rows, cols))
    for got, want in zip(expected, reference(capi, calls)):
        assert_bitwise(got, want)


def _shape_line(stdout):
    line = next(ln for ln in stdout.splitlines() if ln.startswith("shape "))
    _, rows, cols, _, threads = line.split()
    return np.array([float(rows), float(cols), float(threads)])


@pytest.mark.parametrize("args", [(), ("64", "1000", "2"), ("64", "1000", "1"), ("3", "1", "")])
def test_log_softmax_example_matches_python_bitwise(capi, args):
    proc = _run([_exe(capi, "log_softmax"), *[a for a in args if a]])
    out = _parse(proc.stdout)
    out["shape"] = _shape_line(proc.stdout)
    assert proc.stdout.startswith(f"fastlsm {fastlsm.__version__} (header {fastlsm.__version__})")
    if len(args) == 3 and args[2]:
        assert out["shape"][2] == float(args[2])
    x32 = out["x_f32"]
    assert np.isneginf(x32[1]) if x32.size > 1 else True
    _check_normalizers(capi, out)


def test_log_softmax_example_under_address_sanitizer(capi):
    proc = _run(
        [_exe(capi, "log_softmax_asan")],
        env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99"},
    )
    assert "ERROR: AddressSanitizer" not in proc.stderr
    out = _parse(proc.stdout)
    out["shape"] = _shape_line(proc.stdout)
    _check_normalizers(capi, out)


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("kernel_threads", ["0", "1"])
def test_threaded_host_gets_identical_results(capi, kernel_threads):
    proc = _run([_exe(capi, "threads"), kernel_threads, "8", "20"])
    lines = proc.stdout.splitlines()
    assert lines[-1] == "all ok"
    per_thread = [ln for ln in lines if ln.startswith("thread ")]
    assert len(per_thread) == 8
    assert all(ln.endswith("status 0, mismatches 0") for ln in per_thread)
    if kernel_threads == "1":
        assert lines[0].startswith("kernel threads 1,")


def test_threads_honour_fastlsm_num_threads(capi):
    proc = _run([_exe(capi, "threads"), "0", "2", "2"], env={"FASTLSM_NUM_THREADS": "1"})
    assert proc.stdout.startswith("kernel threads 1, host threads 2")


# --------------------------------------------------------------------------- errors


def _cases(stdout):
    cases = {}
    for line in stdout.splitlines():
        if line.startswith("case "):
            head, _, message = line.partition(" | ")
            _, name, _, status, code, _, untouched = head.split()
            cases[name] = (int(status), code, untouched == "1", message)
    return cases


EXPECTED = {
    "ok_log_softmax": 0,
    "null_x": 1,
    "null_out": 1,
    "negative_rows": 2,
    "negative_cols": 2,
    "overflow_int64": 2,
    "overflow_bytes": 2,
    "zero_rows": 0,
    "threads_zero": 4,
    "threads_too_many": 4,
    "ce_ok": 0,
    "ce_null_target": 1,
    "ce_null_loss": 1,
    "ce_target_high": 3,
    "ce_target_negative": 3,
    "ce_ignored_ok": 0,
    "ce_bad_reduction": 4,
    "ce_bad_smoothing": 4,
    "seq_token_high": 3,
    "seq_null_seq": 1,
    "beam_zero_candidates": 4,
    "beam_too_many": 4,
    "beam_search_returns": 4,
    "beam_search_patience": 4,
    "beam_search_vocab": 4,
    "beam_search_struct": 4,
    "beam_search_ok": 0,
}
CONFIG_CASES = {  # errors.c's beam-search configurations, as fastlsm.beam_search arguments
    "beam_search_returns": ({"num_return_sequences": 5}, 10),
    "beam_search_patience": ({"patience": 0.1}, 10),
    "beam_search_vocab": ({}, 1),
}


def test_every_error_code(capi):
    proc = _run([_exe(capi, "errors")])
    strerror = dict(
        ln.split(" ", 2)[1:] for ln in proc.stdout.splitlines() if ln.startswith("strerror")
    )
    assert len(set(strerror.values())) == 8  # 7 codes + "unknown status"
    assert strerror["-1"] == strerror["7"] == "unknown status"
    assert f"version {fastlsm.__version__} " in proc.stdout
    assert "init status 0 FASTLSM_OK | \n" in proc.stdout + "\n"
    cases = _cases(proc.stdout)
    assert set(cases) == set(EXPECTED)
    for name, (status, _code, untouched, message) in cases.items():
        assert status == EXPECTED[name], (name, status, message)
        if status != 0:
            assert untouched, f"{name}: failed but wrote its outputs"
            assert message, f"{name}: no last_error message"
        else:
            assert message == "", (name, message)
    assert "x is NULL" in cases["null_x"][3]
    assert "target[2] = 4" in cases["ce_target_high"][3]
    assert "tokens[0, 3] = 3 is outside the vocabulary [0, 3)" in cases["seq_token_high"][3]
    assert "between 1 and" in cases["threads_zero"][3]
    for name, (kwargs, vocab) in CONFIG_CASES.items():  # the very message Python raises

        def step(ids, parents, vocab=vocab):
            return np.zeros((ids.shape[0], vocab), np.float32)

        with pytest.raises(ValueError) as err:
            fastlsm.beam_search(
                step,
                np.array([[1, 2]]),
                num_beams=4,
                max_new_tokens=20,
                eos_token_id=None,
                **kwargs,
            )
        message = str(err.value).removeprefix("step 0: ")
        assert cases[name][3] == f"fastlsm_beam_search_f32: {message}", name
    assert "struct_size = 0" in cases["beam_search_struct"][3]


def test_runtime_error_when_python_package_is_broken(capi, tmp_path):
    broken = tmp_path / "fastlsm"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('deliberately broken for a test')\n")
    proc = _run([_exe(capi, "errors")], env={"FASTLSM_PYTHONPATH": str(tmp_path)})
    assert "init status 5 FASTLSM_ERR_RUNTIME" in proc.stdout
    assert "deliberately broken for a test" in proc.stdout
    cases = _cases(proc.stdout)
    for name, (status, _code, untouched, message) in cases.items():
        assert untouched, name
        if EXPECTED[name] not in (0, 3) and name != "threads_too_many" and name not in CONFIG_CASES:
            # argument checks (NULL, sizes, options) need no runtime: they come first; targets,
            # tokens and beam-search configurations are checked once, by the kernels
            assert status == EXPECTED[name], (name, status, message)
        else:
            assert status == 5 and "deliberately broken" in message, (name, status, message)


def test_internal_error_by_fault_injection(capi):
    proc = _run([_exe(capi, "errors")], env={"FASTLSM_CAPI_FAULT": "internal"})
    cases = _cases(proc.stdout)
    assert cases["ok_log_softmax"][:2] == (6, "FASTLSM_ERR_INTERNAL")
    assert cases["ce_ok"][0] == 6 and cases["ce_ok"][2]
    assert "FASTLSM_CAPI_FAULT" in cases["ok_log_softmax"][3]
    assert cases["null_x"][0] == 1  # argument checks still come first


# --------------------------------------------------------------------------- Python host


def test_python_host_can_load_the_library(capi):
    code = textwrap.dedent(
        f"""
        import ctypes, numpy as np
        lib = ctypes.CDLL({os.path.join(capi["lib"], "libfastlsm.so")!r})
        x = np.array([[1.0, 2.0, 3.0]], np.float32)
        y = np.empty_like(x)
        fp = ctypes.POINTER(ctypes.c_float)
        st = lib.fastlsm_log_softmax_f32(x.ctypes.data_as(fp), y.ctypes.data_as(fp),
                                         ctypes.c_int64(1), ctypes.c_int64(3))
        print(st, *[v.hex() for v in y.ravel().tolist()])
        """
    )
    env = dict(capi["env"])
    env.pop("PYTHONPATH")  # the library adds the package to sys.path itself
    proc = _run([sys.executable, "-c", code], env=env)
    status, *values = proc.stdout.split()
    assert status == "0"
    got = np.array([float.fromhex(v) for v in values], np.float32)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert_bitwise(got, reference(capi, [("log_softmax", (x,), {})])[0])


# --------------------------------------------------------------------------- cross-entropy


def test_train_step_example_matches_python_bitwise(capi):
    proc = _run([_exe(capi, "train_step")])
    out = _parse(proc.stdout)
    losses = [float(ln.split()[3]) for ln in proc.stdout.splitlines() if ln.startswith("step ")]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]  # SGD makes progress

    n, c = 16, 5
    first = out["first_logits"].astype(np.float32).reshape(n, c)
    target = np.arange(n) % c
    t2 = target.copy()
    t2[[3, 7]] = 9
    weight = np.array([1.0, 2.0, 0.5, 0.0, 3.0], np.float32)
    calls = [
        ("cross_entropy_with_grad", (first, target), {}),
        ("cross_entropy", (first, target), {"reduction": "sum"}),
    ]
    keys = []
    for dt, suffix in ((np.float32, "f32"), (np.float64, "f64")):
        x = first if dt == np.float32 else first.astype(np.float64) * 1.75
        for red in ("none", "mean", "sum"):
            for use_w in (0, 1):
                for smooth in (0, 1):
                    calls.append(
                        (
                            "cross_entropy_with_grad",
                            (x, t2),
                            {
                                "reduction": red,
                                "ignore_index": 9,
                                "weight": weight.astype(dt) if use_w else None,
                                "label_smoothing": 0.25 if smooth else 0.0,
                            },
                        )
                    )
                    keys.append((dt, f"ce_{suffix}_{red}_w{use_w}_s{smooth}"))
    first_res, nograd, *results = reference(capi, calls)
    assert_bitwise(out["first_loss"].astype(np.float32), first_res.loss.reshape(1))
    assert_bitwise(out["first_grad"].astype(np.float32).reshape(n, c), first_res.grad)
    assert_bitwise(out["ce_f32_sum_nograd_loss"].astype(np.float32), nograd.reshape(1))
    assert len(results) == 24
    for (dt, key), res in zip(keys, results):
        assert_bitwise(out[key + "_loss"].astype(dt), res.loss.reshape(-1))
        assert_bitwise(out[key + "_grad"].astype(dt).reshape(n, c), res.grad)
    # and against this process's fastlsm, to float tolerance (see reference())
    np.testing.assert_allclose(
        out["first_grad"].reshape(n, c),
        fastlsm.cross_entropy_with_grad(first, target).grad,
        atol=1e-6,
    )


# --------------------------------------------------------------------------- beam search


def _beam_outputs(capi):
    proc = _run([_exe(capi, "beam_search")])
    out = _parse(proc.stdout)
    ints = {}
    for line in proc.stdout.splitlines():
        name, *values = line.split()
        if name.endswith(("_sequences", "_lengths", "_tokens", "_beams")):
            ints[name] = np.array([int(v) for v in values], np.int64)
    head = next(ln for ln in proc.stdout.splitlines() if ln.startswith("search_calls"))
    return out, ints, head.split()


def test_beam_search_example_matches_python_bitwise(capi):
    out, ints, head = _beam_outputs(capi)
    assert head[3] == "0", "the step callback saw a bad parent_beams argument"
    table = out["table"].astype(np.float32).reshape(3, 12, 12)
    calls = []

    def step(ids, parents):  # the C model, in this process: checks the callback contract
        assert (parents is None) == (len(calls) == 0)
        calls.append(ids.shape)
        return table[ids.shape[1] % 3][ids[:, -1]]

    prompts = np.array([[2, 5], [0, 11]])
    common = {
        "num_beams": 3,
        "max_new_tokens": 6,
        "eos_token_id": [1],
        "pad_token_id": 0,
        "num_return_sequences": 2,
    }
    local = fastlsm.beam_search(step, prompts, **common)
    opts64 = dict(
        common,
        early_stopping="never",
        length_penalty=0.5,
        no_repeat_ngram_size=2,
        repetition_penalty=1.3,
    )
    ref, ref64 = reference(
        capi,
        [
            ("beam_search", ((table, np.float32), prompts), common),
            ("beam_search", ((table, np.float64), prompts), opts64),
        ],
    )
    np.testing.assert_array_equal(ref.sequences, local.sequences)
    assert int(head[1]) == len(calls) and int(head[5]) == ref.sequences.shape[1]
    width = ref.sequences.shape[1]
    seqs = ints["search_f32_sequences"].reshape(4, 8)
    np.testing.assert_array_equal(seqs[:, :width], ref.sequences)
    assert (seqs[:, width:] == 0).all()
    np.testing.assert_array_equal(ints["search_f32_lengths"], ref.lengths)
    assert_bitwise(
        out["search_f32_scores"].astype(np.float32), ref.sequences_scores.astype(np.float32)
    )
    logp = out["search_f32_logprobs"].astype(np.float32).reshape(4, 6)
    assert_bitwise(logp[:, : width - 2], ref.token_logprobs.astype(np.float32))
    assert (logp[:, width - 2 :] == 0).all()

    w64 = int(out["search_f64_width"][0])
    assert w64 == ref64.sequences.shape[1]
    np.testing.assert_array_equal(
        ints["search_f64_sequences"].reshape(4, 8)[:, :w64], ref64.sequences
    )
    assert_bitwise(out["search_f64_scores"], ref64.sequences_scores)



def test_beam_search_bf16_example_matches_python_bitwise(capi):
    """fastlsm_beam_search_bf16: a step callback filling bfloat16 bits gives the results of
    fastlsm.beam_search with a step function returning the same bfloat16 logits."""
    import ml_dtypes

    out, ints, _ = _beam_outputs(capi)
    table = out["table"].astype(np.float32).reshape(3, 12, 12)
    common = {"num_beams": 3, "max_new_tokens": 6, "eos_token_id": [1], "pad_token_id": 0,
              "num_return_sequences": 2}
    (ref,) = reference(
        capi, [("beam_search", ((table, ml_dtypes.bfloat16), np.array([[2, 5], [0, 11]])),
                common)])
    width = int(out["search_bf16_width"][0])
    assert width == ref.sequences.shape[1]
    seqs = ints["search_bf16_sequences"].reshape(4, 8)
    np.testing.assert_array_equal(seqs[:, :width], ref.sequences)
    np.testing.assert_array_equal(ints["search_bf16_lengths"], ref.lengths)
    assert_bitwise(
        out["search_bf16_scores"].astype(np.float32), ref.sequences_scores.astype(np.float32)
    )

def test_beam_step_and_sequence_logprobs_match_python_bitwise(capi):
    out, ints, _ = _beam_outputs(capi)
    x = out["table"].astype(np.float32).reshape(3, 12, 12)[1, :6].reshape(2, 3, 12)
    bs = np.array([[0.0, -0.5, -np.inf], [-1.0, -1.25, -2.0]], np.float32)
    tok = np.array([[3, 7, 1], [0, 11, 5]])
    mask = np.array([[1, 1, 1], [1, 0, 1]], bool)
    (scores, tokens, beams), (tlp, slp) = reference(
        capi,
        [
            ("beam_step", (x, bs), {"num_candidates": 6}),
            ("sequence_logprobs", (x, tok), {"mask": mask}),
        ],
    )
    assert_bitwise(out["step_scores"].astype(np.float32).reshape(2, 6), scores)
    np.testing.assert_array_equal(ints["step_tokens"].reshape(2, 6), tokens)
    np.testing.assert_array_equal(ints["step_beams"].reshape(2, 6), beams)
    assert_bitwise(out["seq_token_logprobs"].astype(np.float32).reshape(2, 3), tlp)
    assert_bitwise(out["seq_logprobs"].astype(np.float32), slp)
