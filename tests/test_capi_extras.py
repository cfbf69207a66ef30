"""The C ABI's 16-bit and sampling entry points: capi/examples/half.c and sample.c, built and
run by the suite, compared bit for bit with the Python API on the same inputs.
"""

from __future__ import annotations

import ml_dtypes
import naive
import numpy as np
import pytest
from capi_support import _exe, _parse, _run, assert_bitwise, build_capi, needs_gcc, reference

pytestmark = needs_gcc

ROWS, VOCAB, TOP, K = 3, 50, 3, 2
KINDS = {"bf16": np.dtype(ml_dtypes.bfloat16), "f16": np.dtype(np.float16)}


@pytest.fixture(scope="session")
def capi(tmp_path_factory):
    return build_capi(tmp_path_factory)


def _bits(values, dtype):
    return np.asarray(values).astype(np.uint16).view(dtype)


def assert_bits16(actual_bits, expected):
    """16-bit results: the same bit patterns (NaN payloads included)."""
    np.testing.assert_array_equal(np.asarray(actual_bits).astype(np.uint16),
                                  np.asarray(expected).view(np.uint16).reshape(-1))


def test_half_example_matches_python_bitwise(capi):
    out = _parse(_run([_exe(capi, "half")]).stdout)
    target = np.array([2, 0, 6])
    calls, inputs = [], {}
    for kind, dtype in KINDS.items():
        x = _bits(out[f"x_{kind}"], dtype).reshape(3, 7)
        inputs[kind] = x
        calls += [("log_softmax", (x,), {}), ("logsumexp", (x,), {}),
                  ("cross_entropy_with_grad", (x, target), {})]
    refs = iter(reference(capi, calls))
    for kind, dtype in KINDS.items():
        x = inputs[kind]
        assert np.isneginf(x[0, 3].astype(np.float32))
        ls, lse, ce = next(refs), next(refs), next(refs)
        assert ls.dtype == dtype and lse.dtype == np.float32 and ce.grad.dtype == dtype
        assert_bits16(out[f"log_softmax_{kind}"], ls)
        assert_bitwise(out[f"logsumexp_{kind}"].astype(np.float32), lse)
        assert_bitwise(out[f"loss_{kind}"].astype(np.float32), ce.loss.reshape(1))
        assert_bits16(out[f"grad_{kind}"], ce.grad)
        # and the values are right: within 1 ulp of float64 math on the 16-bit inputs
        assert naive.ulp_error(ls, naive.log_softmax(x.astype(np.float64))).max() <= 1


def test_sample_example_matches_python_bitwise(capi):
    proc = _run([_exe(capi, "sample")])
    assert proc.stdout.rstrip().endswith("ok")
    out = _parse(proc.stdout)
    x = out["x"].astype(np.float32).reshape(ROWS, VOCAB)
    assert np.isneginf(x[0, 5])
    hist = np.array([1, 2, -1, -1, 3, 3, 3, 9, 0, -1, -1, -1]).reshape(ROWS, 4)
    hist32 = np.array([7, 7, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1], np.int32).reshape(ROWS, 4)
    bias = np.zeros(VOCAB)
    bias[7], bias[8] = 2.5, -np.inf
    mask = np.full((ROWS, 2), -1, np.int32)
    mask[2] = [0x0000FF00, 0]
    tl = out["target_logits"].astype(np.float32).reshape(ROWS, K + 1, VOCAB)
    dl = out["draft_logits"].astype(np.float32).reshape(ROWS, K, VOCAB)
    draft = np.array([3, 4, 10, 11, 20, 21]).reshape(ROWS, K)
    a_kw = dict(temperature=0.8, top_p=0.9, repetition_penalty=1.2, history=hist, seed=7,
                step=2, num_logprobs=TOP, logprob_token_ids=np.array([4, 5]))
    b_kw = dict(temperature=np.array([0.0, 0.7, 1.3]), top_k=np.array([0, 5, 0]),
                min_p=np.array([0.0, 0.0, 0.05]), seed=np.array([11, 12, 13]), step=5,
                frequency_penalty=0.5, presence_penalty=0.25, logit_bias=bias,
                token_bitmask=mask, history=hist32, num_logprobs=TOP,
                logprobs_mode="processed")
    a, b, v = reference(capi, [("sample", (x,), a_kw), ("sample", (x,), b_kw),
                               ("verify_draft", (tl, draft),
                                dict(draft_logits=dl, seed=3, top_k=20))])
    np.testing.assert_array_equal(out["a_tokens"], a.tokens)
    assert_bitwise(out["a_logprobs"].astype(np.float32), a.logprobs)
    np.testing.assert_array_equal(out["a_top_tokens"].reshape(ROWS, TOP), a.top_tokens)
    assert_bitwise(out["a_top_logprobs"].astype(np.float32).reshape(ROWS, TOP), a.top_logprobs)
    assert_bitwise(out["a_token_id_logprobs"].astype(np.float32).reshape(ROWS, 2),
                   a.token_id_logprobs)
    np.testing.assert_array_equal(out["b_tokens"], b.tokens)
    assert 8 <= out["b_tokens"][2] < 16  # the bitmask's row
    assert_bitwise(out["b_logprobs"].astype(np.float32), b.logprobs)
    assert out["b_logprobs"][0] == 0.0  # processed: a greedy row's token has probability 1
    np.testing.assert_array_equal(out["b_top_tokens"].reshape(ROWS, TOP), b.top_tokens)
    assert_bitwise(out["b_top_logprobs"].astype(np.float32).reshape(ROWS, TOP), b.top_logprobs)
    np.testing.assert_array_equal(out["v_num_accepted"], v.num_accepted)
    np.testing.assert_array_equal(out["v_tokens"].reshape(ROWS, K + 1), v.tokens)
    np.testing.assert_array_equal(out["old_tokens"], a.tokens)  # older struct: same result


def test_sample_error_leaves_outputs_untouched(capi):
    proc = _run([_exe(capi, "sample")])
    line = next(s for s in proc.stdout.splitlines() if s.startswith("error "))
    assert line == ("error 4 fastlsm_sample_f32: params->temperature must be finite and >= 0 "
                    "(0 = greedy), got -1")
    assert _parse(proc.stdout)["untouched"].tolist() == [-7, -7, -7]


STRIDED_CHECKS = [f"{name}_{s}" for s in ("f32", "f64", "bf16", "f16") for name in (
    "log_softmax", "softmax", "logsumexp", "inplace_log_softmax", "sequence_logprobs",
    "sequence_logprobs_i32", "beam_step")] + [
    f"{name}_{s}" for s in ("bf16", "f16", "f32") for name in ("sample", "verify_draft")] + [
    "short_stride", "short_sample_stride"]


def test_padded_rows_give_the_packed_bits(capi):
    """capi/examples/strided.c: every entry over rows, every dtype, NaN in the padding."""
    proc = _run([_exe(capi, "strided")])
    lines = proc.stdout.splitlines()
    assert lines[-1] == "all ok"
    checks = [ln.split()[0] for ln in lines[:-1] if ln.endswith((" ok", " FAIL"))]
    assert sorted(checks) == sorted(STRIDED_CHECKS)
    short = next(ln for ln in lines if ln.startswith("short_stride status"))
    assert short == ("short_stride status 2 | fastlsm_log_softmax_strided_f32: row_stride=36: "
                     "it must be >= the row length 37, and rows * row_stride must fit in memory")
    assert "params->row_stride=36: it must be 0 (packed) or >= the row length 37" in next(
        ln for ln in lines if ln.startswith("short_sample_stride status"))


def test_16bit_sampler_matches_python_bitwise(capi):
    """fastlsm_sample_bf16 = fastlsm.sample on the same bfloat16 logits (one kernel)."""
    out = _parse(_run([_exe(capi, "strided")]).stdout)
    x = _bits(out["x_bf16"], KINDS["bf16"]).reshape(6, 37)
    (ref,) = reference(capi, [("sample", (x,), {"temperature": 0.9, "top_p": 0.95, "seed": 3})])
    np.testing.assert_array_equal(out["sample_bf16_tokens"], ref.tokens)
    assert_bitwise(out["sample_bf16_logprobs"].astype(np.float32), ref.logprobs)
