"""bfloat16 and float16 logits (issue 11): conversions, exactness, special values, dtypes.

16-bit outputs are held to 1 ulp of the float64 reference computed from the 16-bit input
values and rounded to the output dtype (``naive.ulp_error``); float32 outputs to the float32
tolerance table of conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import naive
import numpy as np
import pytest

import fastlsm
from fastlsm._dtypes import kernel_view
from fastlsm._kernels import half

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
ALL_BITS = np.arange(1 << 16, dtype=np.uint16)


def _convert(src, dst_dtype):
    """``half.convert_rows`` on one row of ``src`` (a 1-D array of any kernel kind)."""
    dst = np.empty((1, src.size), dst_dtype)
    half.convert_rows(kernel_view(src)[None], kernel_view(dst))
    return dst[0]


def _store_cases():
    """float32 values that exercise rounding: ties both ways, subnormals, the largest
    finite values, overflow, signed zeros, infinities, NaNs, plus random bit patterns."""
    rng = np.random.default_rng(11)
    special = np.array(
        [0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000, 0x3F800000, 0x3F808000,
         0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x7F800000,
         0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FA00000, 0x477FE000, 0x477FEFFF,
         0x477FF000, 0x33800000, 0x33000000, 0x33000001, 0x387FC000, 0x38800000],
        dtype=np.uint32,
    )
    # every float32 just below, at and just above each halfway point of both 16-bit grids
    grid = ALL_BITS.astype(np.uint32)
    bf_half = (grid << 16) | 0x8000
    f16_mid = ALL_BITS.view(F16)[np.isfinite(ALL_BITS.view(F16))].astype(np.float32)
    f16_mid = ((f16_mid[:-1].astype(np.float64) + f16_mid[1:]) / 2).astype(np.float32)
    ties = np.concatenate([bf_half, f16_mid.view(np.uint32)])
    near = np.concatenate([ties - 1, ties, ties + 1])
    rand = rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([special, near, rand]).view(np.float32)


@HALVES
def test_load_is_exact_for_every_bit_pattern(dtype):
    """Every one of the 65536 patterns widens to the float32 ml_dtypes gives (vector body
    and masked tail: lengths 65536 and 65536 - 7); signalling NaNs come back quiet."""
    want = ALL_BITS.view(dtype).astype(np.float32).view(np.uint32)
    nan = np.isnan(ALL_BITS.view(dtype).astype(np.float32))
    quiet = np.where(nan, want | 0x00400000, want)  # hardware quiets a signalling NaN
    for n in (ALL_BITS.size, ALL_BITS.size - 7):
        got = _convert(ALL_BITS.view(dtype)[:n], np.float32).view(np.uint32)
        if dtype == BF16:
            np.testing.assert_array_equal(got, want[:n])
        else:
            np.testing.assert_array_equal(got, quiet[:n])


@HALVES
def test_store_rounds_to_nearest_even_once(dtype):
    """float32 -> 16-bit is bitwise ml_dtypes' (round to nearest, ties to even) for ties,
    subnormals, 65504 / overflow to inf, zeros and random patterns; NaN stays NaN (for
    bfloat16 exactly ml_dtypes' quiet NaN, sign kept)."""
    x = _store_cases()
    got = _convert(x, dtype)
    with np.errstate(all="ignore"):
        want = x.astype(dtype)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(got[nan].astype(np.float32)).all()
    if dtype == BF16:
        np.testing.assert_array_equal(got.view(np.uint16)[nan], want.view(np.uint16)[nan])


def test_store_matches_correct_rounding_of_the_exact_value():
    """The reference's own rounding agrees with the kernels on float32 inputs (where
    ml_dtypes is exact): the 16-bit checks below rest on it."""
    x = _store_cases()
    x = x[np.isfinite(x)][:20000]
    for dtype in (BF16, F16):
        np.testing.assert_array_equal(
            naive.round_to(x.astype(np.float64), dtype).view(np.uint16),
            _convert(x, dtype).view(np.uint16),
        )


def _conversion_bits():
    """Bits of every 16-bit pattern widened and of random float32 patterns rounded, for
    both 16-bit kinds (what the subprocesses below print)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1 << 32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)
    out = []
    for view in (np.uint16, np.int16):
        wide = np.empty((1, ALL_BITS.size), np.float32)
        half.convert_rows(ALL_BITS.view(view)[None], wide)
        narrow = np.empty((1, x.size), view)
        half.convert_rows(x[None], narrow)
        out += [wide.tobytes(), narrow.tobytes()]
    return b"".join(out)


def _run_for_cpu(tmp_path, cpu, script):
    env = dict(os.environ, FASTLSM_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME=cpu,
               NUMBA_CPU_FEATURES="", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          check=True, timeout=300).stdout


def test_same_bits_on_an_avx2_only_cpu(tmp_path):
    """Compiled for Haswell (AVX2 + F16C, no AVX-512) the conversions give the same bits as
    for this CPU: no AVX-512 FP16/BF16 instruction decides a result."""
    script = ("import sys, test_half; "
              "sys.stdout.buffer.write(test_half._conversion_bits())")
    assert _run_for_cpu(tmp_path, "haswell", script) == _conversion_bits()


_LAZY_SCRIPT = """
import sys, numpy as np, fastlsm
print("ml_dtypes" in sys.modules)
x = np.array([[1.5, -2.0, 3.25]], np.float32)
y = fastlsm.log_softmax(x, dtype="bfloat16")  # a name of ml_dtypes: imported on demand
print(y.dtype, "ml_dtypes" in sys.modules)
import ml_dtypes
print(np.array_equal(fastlsm.log_softmax(x.astype(ml_dtypes.bfloat16)), y))
"""


def test_import_does_not_import_ml_dtypes():
    """``import fastlsm`` leaves ml_dtypes unimported (about a second of CPU); bfloat16 works
    once the caller has it, and ``dtype="bfloat16"`` imports it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _LAZY_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    assert out.split() == ["False", "bfloat16", "True", "True"]


_GENERIC_SCRIPT = """
import numpy as np, ml_dtypes
from fastlsm._dtypes import kernel_view, widened
x = np.array([[1.5, -2.0, 3.25]])
print(widened(x.astype(ml_dtypes.bfloat16)).tolist())
try:
    kernel_view(x.astype(np.float16))
except TypeError as e:
    print("TypeError", "F16C" in str(e))
"""


def test_float16_without_f16c_is_a_type_error(tmp_path):
    """On a target CPU without float16 conversions (``NUMBA_CPU_NAME=generic``) float16 data
    is refused with a TypeError instead of a kernel whose compilation would abort the
    process; bfloat16 needs no special instruction and works."""
    lines = _run_for_cpu(tmp_path, "generic", _GENERIC_SCRIPT).decode().splitlines()
    assert lines == ["[[1.5, -2.0, 3.25]]", "TypeError True"]


# ------------------------------------------------------------------ log_softmax / softmax


def _logits(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _assert_ulp(got, ref, limit=1):
    err = naive.ulp_error(got, ref)
    assert err.max(initial=0) <= limit, (
        f"{err.max()} ulp at {np.unravel_index(np.argmax(err), err.shape)}: "
        f"got {got.flat[np.argmax(err)]}, reference {np.asarray(ref).flat[np.argmax(err)]}"
    )


@HALVES
@pytest.mark.parametrize("shape", [(3, 1), (4, 17), (5, 1000), (2, 4099)])
@pytest.mark.parametrize("scale", [1.0, 8.0, 300.0])
def test_normalizers_within_1_ulp(dtype, shape, scale, rng):
    x = _logits(rng, shape, dtype, scale)
    x64 = x.astype(np.float64)
    ls, sm = fastlsm.log_softmax(x), fastlsm.softmax(x)
    assert ls.dtype == dtype and sm.dtype == dtype
    _assert_ulp(ls, naive.log_softmax(x64))
    _assert_ulp(sm, naive.softmax(x64))


@HALVES
def test_float32_results_from_16_bit_input(dtype, rng, tolerance):
    """``dtype=np.float32`` (or a float32 ``out``) and logsumexp: float32 results computed
    from the 16-bit values, within float32's tolerance of the float64 reference."""
    x = _logits(rng, (6, 3001), dtype)
    x64 = x.astype(np.float64)
    tol = tolerance[np.float32]
    ls = fastlsm.log_softmax(x, dtype=np.float32)
    assert ls.dtype == np.float32
    np.testing.assert_allclose(ls, naive.log_softmax(x64), **tol)
    out = np.empty(x.shape, np.float32)
    assert fastlsm.softmax(x, out=out) is out
    np.testing.assert_allclose(out, naive.softmax(x64), **tol)
    lse = fastlsm.logsumexp(x)
    assert lse.dtype == np.float32
    np.testing.assert_allclose(lse, naive.logsumexp(x64), **tol)
    # the 16-bit result is the float32 one rounded once
    _assert_ulp(fastlsm.log_softmax(x), ls.astype(np.float64))


@HALVES
def test_out_of_either_dtype_any_layout_and_in_place(dtype, rng):
    x = _logits(rng, (7, 33), dtype)
    want = fastlsm.log_softmax(x)
    out = np.empty((33, 7), dtype).T  # a non-contiguous out
    assert fastlsm.log_softmax(x, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(
        fastlsm.log_softmax(x.T.copy(), axis=0).view(np.uint16), want.T.view(np.uint16)
    )
    y = x.copy()
    assert fastlsm.softmax(y, out=y) is y
    np.testing.assert_array_equal(y.view(np.uint16), fastlsm.softmax(x).view(np.uint16))


@HALVES
def test_dtype_and_out_errors(dtype):
    x = np.zeros((2, 3), dtype)
    with pytest.raises(TypeError, match="dtype"):
        fastlsm.log_softmax(x, out=np.empty((2, 3), np.float64), dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        fastlsm.softmax(x, dtype=np.int32)
    with pytest.raises(TypeError, match="out has dtype"):
        fastlsm.log_softmax(x, out=np.empty((2, 3), np.float64))
    with pytest.raises(TypeError, match="float32"):
        fastlsm.logsumexp(x, out=np.empty(2, dtype))
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        fastlsm.log_softmax(np.zeros(3, np.complex64))
    # int16 is not a 16-bit float: integers are computed in float64 (SciPy's convention)
    assert fastlsm.log_softmax(np.zeros(3, np.int16)).dtype == np.float64


def test_dtype_converts_first_like_pytorch(rng):
    x = _logits(rng, (3, 50), np.float32)
    got = fastlsm.log_softmax(x, dtype=BF16)
    assert got.dtype == BF16
    _assert_ulp(got, naive.log_softmax(x.astype(BF16).astype(np.float64)))
    np.testing.assert_array_equal(
        fastlsm.softmax(x.astype(F16), dtype=np.float64), fastlsm.softmax(x.astype(F16)
                                                                         .astype(np.float64))
    )


@HALVES
def test_special_values(dtype):
    inf, nan = np.inf, np.nan
    x = np.array(
        [[0.0, -inf, 1.0, -inf], [-inf, -inf, -inf, -inf], [0.0, nan, 1.0, 2.0],
         [inf, 0.0, 1.0, -inf], [3.0, 3.0, 3.0, 3.0]], dtype
    )
    x64 = x.astype(np.float64)
    ls, sm, lse = fastlsm.log_softmax(x), fastlsm.softmax(x), fastlsm.logsumexp(x)
    _assert_ulp(ls, naive.log_softmax(x64))
    _assert_ulp(sm, naive.softmax(x64))
    np.testing.assert_array_equal(np.isnan(lse), np.isnan(naive.logsumexp(x64)))
    np.testing.assert_allclose(lse, naive.logsumexp(x64), rtol=2e-6)
    assert ls[0, 1] == -inf and sm[0, 1] == 0
    # V = 1 and empty
    one = np.array([[5.0], [-inf]], dtype)
    np.testing.assert_array_equal(fastlsm.log_softmax(one).astype(np.float32),
                                  [[0.0], [nan]])
    np.testing.assert_array_equal(fastlsm.softmax(one).astype(np.float32), [[1.0], [nan]])
    empty = np.zeros((3, 0), dtype)
    assert fastlsm.log_softmax(empty).shape == (3, 0)
    assert fastlsm.log_softmax(empty).dtype == dtype
    np.testing.assert_array_equal(fastlsm.logsumexp(empty), [-inf] * 3)


def test_float16_extremes():
    """The float16 maximum (65504) and subnormal logits and outputs."""
    fmax = np.finfo(F16).max
    x = np.array([[fmax, 0.0, -fmax], [fmax, fmax, fmax], [6e-8, -6e-8, 0.0],
                  [0.0, -11.0, -16.0], [0.0, -17.0, -20.0]], F16)
    x64 = x.astype(np.float64)
    _assert_ulp(fastlsm.log_softmax(x), naive.log_softmax(x64))
    sm = fastlsm.softmax(x)
    _assert_ulp(sm, naive.softmax(x64))
    assert 0 < sm[4, 1] < np.finfo(F16).smallest_normal  # a float16 subnormal output
    np.testing.assert_allclose(fastlsm.logsumexp(x), naive.logsumexp(x64), rtol=2e-6)


@HALVES
def test_same_bits_for_any_thread_count(dtype, rng):
    x = _logits(rng, (64, 2000), dtype)
    t = _targets(rng, 64, 2000)
    before = fastlsm.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            fastlsm.set_num_threads(n)
            got.append([f(x).view(np.uint16).copy() for f in (fastlsm.log_softmax,
                                                             fastlsm.softmax)])
            got[-1].append(fastlsm.logsumexp(x).view(np.uint32).copy())
            r = fastlsm.cross_entropy_with_grad(x, t, reduction="none", label_smoothing=0.1)
            got[-1] += [r.loss.copy(), r.grad.view(np.uint16).copy()]
    finally:
        fastlsm.set_num_threads(before)
    for a, b in zip(*got, strict=True):
        np.testing.assert_array_equal(a, b)


@HALVES
@pytest.mark.parametrize("cols", [1000, 700_001], ids=["plain", "streamed"])
def test_special_rows_beside_finite_rows_keep_the_bits_of_each_row_alone(dtype, cols, rng):
    """The pipelined passes round a row without the NaN case when its maximum and sum are
    finite (bfloat16); rows with a NaN, a +inf or only -inf beside them must still give the
    bits each row gets alone (one-row calls write through the general rounding), NaN
    payloads included."""
    x = (4 * rng.standard_normal((6, cols))).astype(np.float32)
    x[:, ::7] = -np.inf
    x[1, cols // 2] = np.nan
    x[3, 5] = np.inf
    x[4] = -np.inf
    x = x.astype(dtype)
    x.view(np.uint16)[2, 3] = 0x7FA1 if dtype == BF16 else 0x7D01  # a NaN with a payload
    for f in (fastlsm.log_softmax, fastlsm.softmax):
        got = f(x)
        for i in range(x.shape[0]):
            want = f(x[i : i + 1])
            assert got[i : i + 1].tobytes() == want.tobytes(), (f.__name__, i)
        assert np.isnan(got[1:5].astype(np.float32)).all()


# ------------------------------------------------------------------ losses, sequences, beams


def _targets(rng, n, c, ignore=True):
    t = rng.integers(0, c, n)
    if ignore:
        t[::5] = -100
    return t


def _ce_case(rng, dtype, n, c, opts):
    """Logits, index targets (every 5th ignored) and options (``weight="w"``: random)."""
    opts = dict(opts)
    if opts.get("weight") == "w":
        opts["weight"] = rng.uniform(0.5, 2.0, c)
    return _logits(rng, (n, c), dtype), _targets(rng, n, c), opts


@HALVES
@pytest.mark.parametrize(
    "opts",
    [{}, {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.1},
     {"weight": "w", "reduction": "mean"}],
    ids=["mean", "none", "sum-smooth", "weighted"],
)
def test_cross_entropy_float32_loss_and_16_bit_grad(dtype, opts, rng, tolerance):
    x, t, opts = _ce_case(rng, dtype, 40, 777, opts)
    loss = fastlsm.cross_entropy(x, t, **opts)
    r = fastlsm.cross_entropy_with_grad(x, t, return_lse=True, **opts)
    want_loss, want_grad, _ = naive.cross_entropy(x.astype(np.float64), t, **opts)
    assert loss.dtype == np.float32 and r.loss.dtype == np.float32 and r.lse.dtype == np.float32
    np.testing.assert_allclose(loss, want_loss, **tolerance[np.float32])
    np.testing.assert_array_equal(loss, r.loss)  # the same loss, bitwise
    assert r.grad.dtype == dtype
    _assert_ulp(r.grad, want_grad)
    np.testing.assert_allclose(r.lse, naive.logsumexp(x.astype(np.float64)),
                               **tolerance[np.float32])
    y = x.copy()
    g = fastlsm.cross_entropy_with_grad(y, t, inplace=True, **opts)
    assert g.grad is y
    np.testing.assert_array_equal(y.view(np.uint16), r.grad.view(np.uint16))


@HALVES
def test_cross_entropy_probability_targets_and_axis(dtype, rng, tolerance):
    x = _logits(rng, (3, 50, 4), dtype)  # classes along axis 1
    q = rng.dirichlet(np.ones(50), (3, 4)).transpose(0, 2, 1).astype(dtype)
    got = fastlsm.cross_entropy_with_grad(x, q, axis=1, reduction="sum")
    x64 = np.moveaxis(x.astype(np.float64), 1, -1)
    q64 = np.moveaxis(q.astype(np.float64), 1, -1)
    lp = naive.log_softmax(x64)
    np.testing.assert_allclose(got.loss, -(q64 * lp).sum(), **tolerance[np.float32])
    _assert_ulp(got.grad, np.moveaxis(np.exp(lp) * q64.sum(-1, keepdims=True) - q64, -1, 1))


@HALVES
def test_nll_loss_and_special_rows(dtype, rng, tolerance):
    x = _logits(rng, (6, 30), dtype)
    x[1, 3] = -np.inf
    x[2, :] = -np.inf
    x[3, 4] = np.nan
    t = np.array([0, 3, 1, 2, 5, -100])
    loss = fastlsm.cross_entropy(x, t, reduction="none")
    np.testing.assert_array_equal(loss, fastlsm.cross_entropy(x.astype(np.float32), t,
                                                              reduction="none"))
    assert loss[1] == np.inf and np.isnan(loss[2]) and np.isnan(loss[3]) and loss[5] == 0
    want, _, _ = naive.cross_entropy(x[[0, 4]].astype(np.float64), t[[0, 4]], reduction="none")
    np.testing.assert_allclose(loss[[0, 4]], want, **tolerance[np.float32])
    lp = fastlsm.log_softmax(x[[0, 4, 5]])
    nll = fastlsm.nll_loss(lp, t[[0, 4, 5]])
    assert nll.dtype == np.float32
    lp64 = lp.astype(np.float64)
    np.testing.assert_allclose(nll, -(lp64[0, 0] + lp64[1, 5]) / 2, **tolerance[np.float32])


@HALVES
def test_sequence_logprobs_float32(dtype, rng, tolerance):
    x = _logits(rng, (2, 5, 300), dtype)
    tok = rng.integers(0, 300, (2, 5))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    tl, sl = fastlsm.sequence_logprobs(x, tok, mask=mask)
    assert tl.dtype == np.float32 and sl.dtype == np.float32
    lp = naive.log_softmax(x.astype(np.float64))
    want = np.where(mask, np.take_along_axis(lp, tok[..., None], -1)[..., 0], 0.0)
    np.testing.assert_allclose(tl, want, **tolerance[np.float32])
    np.testing.assert_allclose(sl, want.sum(-1), **tolerance[np.float32])


@HALVES
def test_beam_step_and_search_on_16_bit_logits(dtype, rng):
    """Candidates from 16-bit logits are those of their exact float32 values; a step
    function may return 16-bit logits."""
    x = _logits(rng, (2, 3, 200), dtype)
    bs = np.log(rng.uniform(0.1, 1.0, (2, 3)))
    got = fastlsm.beam_step(x, bs)
    want = fastlsm.beam_step(x.astype(np.float32), bs)
    assert got[0].dtype == np.float32
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    table = _logits(rng, (50, 40), dtype)

    def step(ids, _parents, cast=None):
        out = table[ids[:, -1] % 50]
        return out if cast is None else out.astype(cast)

    args = dict(num_beams=3, max_new_tokens=5, eos_token_id=7)
    half_run = fastlsm.beam_search(step, np.array([[1, 2], [3, 4]]), **args)
    f32_run = fastlsm.beam_search(lambda i, p: step(i, p, np.float32),
                                  np.array([[1, 2], [3, 4]]), **args)
    np.testing.assert_array_equal(half_run.sequences, f32_run.sequences)
    np.testing.assert_array_equal(half_run.sequences_scores, f32_run.sequences_scores)


@HALVES
@pytest.mark.parametrize(
    "opts",
    [{"softcap": 15.0, "z_loss": 1e-3}, {"label_smoothing": 0.2, "reduction": "none"},
     {"softcap": 5.0, "reduction": "sum", "weight": "w"}],
    ids=["softcap-z", "smooth-none", "softcap-weighted"],
)
def test_cross_entropy_is_the_float32_path_on_the_exact_values(dtype, opts, rng):
    """16-bit logits give the float32 kernel's loss and lse bits for their exact float32
    values, and its gradient rounded once (every option; index and probability targets)."""
    x, t, opts = _ce_case(rng, dtype, 24, 301, opts)
    x32 = x.astype(np.float32)
    for target in (t, rng.dirichlet(np.ones(x.shape[1]), x.shape[0]).astype(np.float32)):
        got = fastlsm.cross_entropy_with_grad(x, target, return_lse=True, **opts)
        want = fastlsm.cross_entropy_with_grad(x32, target, return_lse=True, **opts)
        np.testing.assert_array_equal(got.loss, want.loss)
        np.testing.assert_array_equal(got.lse, want.lse)
        np.testing.assert_array_equal(fastlsm.cross_entropy(x, target, **opts), want.loss)
        np.testing.assert_array_equal(got.grad.view(np.uint16),
                                      want.grad.astype(dtype).view(np.uint16))


@HALVES
def test_sampling_and_sequence_extras_read_16bit_logits_as_their_float32_values(dtype, rng):
    """sample / verify_draft / the sequence_logprobs extras widen 16-bit logits exactly: the
    same results as the float32 call on the same values."""
    x = (rng.standard_normal((3, 4, 300)) * 3).astype(dtype)
    x32 = x.astype(np.float32)
    kw = dict(temperature=0.8, top_p=0.9, top_k=50, seed=[1, 2, 3], num_logprobs=3)
    a, b = fastlsm.sample(x[:, 0], **kw), fastlsm.sample(x32[:, 0], **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.top_logprobs, b.top_logprobs)
    draft = rng.integers(0, 300, (3, 3))
    va = fastlsm.verify_draft(x, draft, temperature=0.7, seed=5)
    vb = fastlsm.verify_draft(x32, draft, temperature=0.7, seed=5)
    np.testing.assert_array_equal(va.tokens, vb.tokens)
    tok = rng.integers(0, 300, (3, 4))
    ra = fastlsm.sequence_logprobs(x, tok, top_logprobs=2, return_rank=True)
    rb = fastlsm.sequence_logprobs(x32, tok, top_logprobs=2, return_rank=True)
    np.testing.assert_array_equal(ra.token_logprobs, rb.token_logprobs)
    np.testing.assert_array_equal(ra.ranks, rb.ranks)
