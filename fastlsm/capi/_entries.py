"""Numba ``@cfunc`` entry points of the C ABI, and their registration with the C library.

Every entry point exists in two variants with the same C signature:

- ``par``: calls the family's parallel entry kernel (the very function the Python API
  calls). The C side first sets the calling host thread's Numba thread count through the
  threading layer's ``set_num_threads`` (registered here; calling ``numba.set_num_threads``
  inside a cfunc would make it uncacheable). A parallel launch takes the GIL briefly
  (Numba's ``numba_parallel_for``).
- ``ser``: calls a serial copy of the same entry kernel (:func:`serial_copy`: the same Python
  function compiled with ``parallel=False``, so ``prange`` runs as ``range`` over the same row
  functions). It never enters the Python runtime.

Both give the same bits: each row is computed by the same row function in both. The C side
(``_capi.c``) validates arguments, then picks ``ser`` when one thread is configured or the
problem is small, else ``par``. Entry points return an ``int64`` status whose meaning is
given per family below (``-1``: success, unless stated otherwise).

Importing this module does not compile anything; :func:`compile_all` does (from the cache).
Numba's worker threads must be launched before any cfunc is created (a cached cfunc calling
a parallel kernel otherwise aborts with ``Symbol not found: allocate_sched``):
:func:`compile_all` does it first.
"""

from __future__ import annotations

import types as pytypes

import numba
import numpy as np
from numba import carray, cfunc, types

from .. import _jit
from .._kernels import beam as _beam
from .._kernels import cross_entropy as _ce
from .._kernels import normalize as _norm
from .._kernels import sequence as _seq

F32 = types.float32
F64 = types.float64
I64 = types.int64
P = types.CPointer


def serial_copy(dispatcher):
    """A serial (``parallel=False``) compilation of a parallel entry kernel's Python function.

    The copy gets its own qualified name, hence its own cache entry (Numba keys its cache on
    the function's name and signature, not on the ``parallel`` flag). Its globals are the
    kernel module's, so it calls the same row functions with the same JIT policy.
    """
    f = dispatcher.py_func
    g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__module__ = f.__module__
    g.__qualname__ = f.__qualname__ + "__serial"
    g.__doc__ = f"Serial copy of :func:`{f.__qualname__}` (see fastlsm.capi._entries)."
    return _jit.kernel(g)


# --------------------------------------------------------------------------- normalizers
# C signature: int64 (const T *x, T *out, int64 rows, int64 cols) -> -1.
# x and out are [rows, cols] (logsumexp: out is [rows]); rows >= 1, cols >= 0, checked in C.

_log_softmax_rows_ser = serial_copy(_norm.log_softmax_rows)
_softmax_rows_ser = serial_copy(_norm.softmax_rows)
_logsumexp_rows_ser = serial_copy(_norm.logsumexp_rows)


def log_softmax_par(x, out, rows, cols):
    _norm.log_softmax_rows(carray(x, (rows, cols)), carray(out, (rows, cols)))
    return -1


def log_softmax_ser(x, out, rows, cols):
    _log_softmax_rows_ser(carray(x, (rows, cols)), carray(out, (rows, cols)))
    return -1


def softmax_par(x, out, rows, cols):
    _norm.softmax_rows(carray(x, (rows, cols)), carray(out, (rows, cols)))
    return -1


def softmax_ser(x, out, rows, cols):
    _softmax_rows_ser(carray(x, (rows, cols)), carray(out, (rows, cols)))
    return -1


def logsumexp_par(x, out, rows, cols):
    _norm.logsumexp_rows(carray(x, (rows, cols)), carray(out, (rows,)))
    return -1


def logsumexp_ser(x, out, rows, cols):
    _logsumexp_rows_ser(carray(x, (rows, cols)), carray(out, (rows,)))
    return -1


def _rows_sig(t):
    return I64(P(t), P(t), I64, I64)


# --------------------------------------------------------------------------- cross-entropy
# C signature: int64 (const T *logits, const int64 *target, int64 rows, int64 cols,
#   const T *class_weight, int64 has_weight, int64 ignore_index, float64 label_smoothing,
#   int64 reduction, T *loss, T *grad, int64 has_grad)
# -> -1, or the first bad target index (checked in C first: never expected here).
# Calls cross_entropy_rows exactly as fastlsm.losses does: float64 class weights, no
# token weights, z_loss 0, softcap 0 (off), grad_scale 1, no grad_output, no lse.

_cross_entropy_rows_ser = serial_copy(_ce.cross_entropy_rows)


@_jit.kernel
def _ce_arrays(logits, target, rows, cols, weight, has_weight, reduction, loss, grad, has_grad):
    x = carray(logits, (rows, cols))
    t = carray(target, (rows,))
    w = np.empty(cols if has_weight else 0, np.float64)
    if has_weight:
        src = carray(weight, (cols,))
        for j in range(cols):
            w[j] = np.float64(src[j])
    out = carray(loss, (rows if reduction == _ce.NONE else 1,))
    g = carray(grad, (rows if has_grad else 0, cols))
    work = np.empty(rows if reduction != _ce.NONE else 0, np.float64)
    return x, t, w, out, g, work


def cross_entropy_par(logits, target, rows, cols, weight, has_weight, ignore_index, smoothing,
                      reduction, loss, grad, has_grad):
    x, t, w, out, g, work = _ce_arrays(logits, target, rows, cols, weight, has_weight,
                                       reduction, loss, grad, has_grad)
    e = np.empty(0, np.float64)
    return _ce.cross_entropy_rows(x, t, w, e, ignore_index, smoothing, 0.0, 0.0, reduction,
                                  1.0, e, out, out[:0], g, work)


def cross_entropy_ser(logits, target, rows, cols, weight, has_weight, ignore_index, smoothing,
                      reduction, loss, grad, has_grad):
    x, t, w, out, g, work = _ce_arrays(logits, target, rows, cols, weight, has_weight,
                                       reduction, loss, grad, has_grad)
    e = np.empty(0, np.float64)
    return _cross_entropy_rows_ser(x, t, w, e, ignore_index, smoothing, 0.0, 0.0, reduction,
                                   1.0, e, out, out[:0], g, work)


def _ce_sig(t):
    return I64(P(t), P(I64), I64, I64, P(t), I64, I64, F64, I64, P(t), P(t), I64)


# --------------------------------------------------------------------------- sequences
# C signature: int64 (const T *logits, const int64 *tokens, const uint8 *mask, int64 has_mask,
#   int64 batch, int64 steps, int64 vocab, T *token_logprobs, int64 has_token, T *seq_logprobs)
# -> -1, or the first bad flat token index. batch, steps, vocab >= 1 (C handles the rest).
# Results are computed in float64 scratch and rounded once, as fastlsm.sequence_logprobs does.

_sequence_logprobs_rows_ser = serial_copy(_seq.sequence_logprobs_rows)


@_jit.kernel
def _seq_arrays(logits, tokens, mask, has_mask, batch, steps, vocab):
    n = batch * steps
    m = carray(mask, (n,)) if has_mask else np.ones(n, np.uint8)
    return (carray(logits, (n, vocab)), carray(tokens, (n,)), m, np.empty(n, np.float64),
            np.empty(batch, np.float64))


@_jit.kernel
def _seq_store(status, tok, seq, token_logprobs, has_token, seq_logprobs):
    if status >= 0:
        return status
    if has_token:
        out = carray(token_logprobs, tok.shape)
        for i in range(tok.size):
            out[i] = tok[i]
    out = carray(seq_logprobs, seq.shape)
    for b in range(seq.size):
        out[b] = seq[b]
    return status


def sequence_par(logits, tokens, mask, has_mask, batch, steps, vocab, token_logprobs,
                 has_token, seq_logprobs):
    x, t, m, tok, seq = _seq_arrays(logits, tokens, mask, has_mask, batch, steps, vocab)
    st = _seq.sequence_logprobs_rows(x, t, m, steps, tok, seq)
    return _seq_store(st, tok, seq, token_logprobs, has_token, seq_logprobs)


def sequence_ser(logits, tokens, mask, has_mask, batch, steps, vocab, token_logprobs,
                 has_token, seq_logprobs):
    x, t, m, tok, seq = _seq_arrays(logits, tokens, mask, has_mask, batch, steps, vocab)
    st = _sequence_logprobs_rows_ser(x, t, m, steps, tok, seq)
    return _seq_store(st, tok, seq, token_logprobs, has_token, seq_logprobs)


def _seq_sig(t):
    return I64(P(t), P(I64), P(types.uint8), I64, I64, I64, I64, P(t), I64, P(t))


# --------------------------------------------------------------------------- beam step
# C signature: int64 (const T *logits, const T *beam_scores, int64 batch, int64 beams,
#   int64 vocab, int64 num_candidates, T *cand_scores, int64 *cand_tokens, int64 *cand_beams)
# -> -1, or the first row b * beams + k holding a NaN or +inf (outputs then untouched).
# As fastlsm.beam_step: float64 beam scores and candidate scores, rounded once at the end.

_beam_step_rows_ser = serial_copy(_beam.beam_step_rows)


@_jit.kernel
def _beam_arrays(logits, beam_scores, batch, beams, vocab, cap):
    n = batch * beams
    src = carray(beam_scores, (n,))
    bs = np.empty(n, np.float64)
    for i in range(n):
        bs[i] = np.float64(src[i])
    return (carray(logits, (n, vocab)), bs, np.empty((n, cap), np.float64),
            np.empty((n, cap), np.int64), np.empty(n, np.int64),
            np.empty((batch, cap), np.float64), np.empty((batch, cap), np.int64),
            np.empty((batch, cap), np.int64), np.empty((batch, cap), np.float64))


@_jit.kernel
def _beam_store(status, scores, tokens, beams, cand_scores, cand_tokens, cand_beams):
    if status >= 0:
        return status
    s = carray(cand_scores, (scores.size,))
    t = carray(cand_tokens, (scores.size,))
    b = carray(cand_beams, (scores.size,))
    fs = scores.reshape(scores.size)
    ft = tokens.reshape(scores.size)
    fb = beams.reshape(scores.size)
    for i in range(scores.size):
        s[i] = fs[i]
        t[i] = ft[i]
        b[i] = fb[i]
    return status


def beam_step_par(logits, beam_scores, batch, beams, vocab, cap, cand_scores, cand_tokens,
                  cand_beams):
    x, bs, rv, rt, rn, sc, tk, bm, lp = _beam_arrays(logits, beam_scores, batch, beams, vocab,
                                                     cap)
    st = _beam.beam_step_rows(x, bs, beams, rv, rt, rn, sc, tk, bm, lp)
    return _beam_store(st, sc, tk, bm, cand_scores, cand_tokens, cand_beams)


def beam_step_ser(logits, beam_scores, batch, beams, vocab, cap, cand_scores, cand_tokens,
                  cand_beams):
    x, bs, rv, rt, rn, sc, tk, bm, lp = _beam_arrays(logits, beam_scores, batch, beams, vocab,
                                                     cap)
    st = _beam_step_rows_ser(x, bs, beams, rv, rt, rn, sc, tk, bm, lp)
    return _beam_store(st, sc, tk, bm, cand_scores, cand_tokens, cand_beams)


def _beam_sig(t):
    return I64(P(t), P(t), I64, I64, I64, I64, P(t), P(I64), P(I64))


# --------------------------------------------------------------------------- decoder
# The C decoder (fastlsm_beam_search_*) drives the same state machine as fastlsm.beam_search:
# layout -> init -> (host step callback -> advance)* -> finalize, over int64/float64 state
# buffers it allocates itself. Signatures (cfg int64 [cfg_len], fcfg float64 [2]):
#   beam_layout(cfg, cfg_len, layout)                                    -> status
#   beam_init(cfg, cfg_len, fcfg, input_ids, batch, prompt_len, fstate, fsize, istate, isize)
#   beam_advance_T(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, logits, rows, vocab)
#   beam_finalize(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, out_seqs, out_scores,
#                 out_logp, out_len, nout, max_len, max_new)           -> width or -status

_beam_search_advance_ser = serial_copy(_beam.beam_search_advance)


def beam_layout(cfg, cfg_len, layout):
    return _beam.beam_search_layout(carray(cfg, (cfg_len,)), carray(layout, (_beam.LAYOUT_SIZE,)))


def beam_init(cfg, cfg_len, fcfg, input_ids, batch, prompt_len, fstate, fsize, istate, isize):
    return _beam.beam_search_init(
        carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)),
        carray(input_ids, (batch, prompt_len)), carray(fstate, (fsize,)),
        carray(istate, (isize,)),
    )


def beam_advance_par(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, logits, rows, vocab):
    return _beam.beam_search_advance(
        carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)), carray(fstate, (fsize,)),
        carray(istate, (isize,)), carray(logits, (rows, vocab)),
    )


def beam_advance_ser(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, logits, rows, vocab):
    return _beam_search_advance_ser(
        carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)), carray(fstate, (fsize,)),
        carray(istate, (isize,)), carray(logits, (rows, vocab)),
    )


def beam_finalize(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, out_seqs, out_scores,
                  out_logp, out_len, nout, max_len, max_new):
    return _beam.beam_search_finalize(
        carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)), carray(fstate, (fsize,)),
        carray(istate, (isize,)), carray(out_seqs, (nout, max_len)),
        carray(out_scores, (nout,)), carray(out_logp, (nout, max_new)),
        carray(out_len, (nout,)),
    )


_PI = P(I64)
_PF = P(F64)
_DECODER = [
    ("beam_layout_ser", beam_layout, I64(_PI, I64, _PI)),
    ("beam_init_ser", beam_init, I64(_PI, I64, _PF, _PI, I64, I64, _PF, I64, _PI, I64)),
    ("beam_finalize_ser", beam_finalize,
     I64(_PI, I64, _PF, _PF, I64, _PI, I64, _PI, _PF, _PF, _PI, I64, I64, I64)),
] + [
    (f"beam_advance_{suffix}_{variant}", fn, I64(_PI, I64, _PF, _PF, I64, _PI, I64, P(t), I64, I64))
    for suffix, t in (("f32", F32), ("f64", F64))
    for variant, fn in (("par", beam_advance_par), ("ser", beam_advance_ser))
]


# --------------------------------------------------------------------------- the table

# (C entry name, Python function, C signature); names must match the table in _capi.c.
ENTRIES = [
    (f"{name}_{suffix}_{variant}", fn, sig(t))
    for name, par, ser, sig in (
        ("log_softmax", log_softmax_par, log_softmax_ser, _rows_sig),
        ("softmax", softmax_par, softmax_ser, _rows_sig),
        ("logsumexp", logsumexp_par, logsumexp_ser, _rows_sig),
        ("cross_entropy", cross_entropy_par, cross_entropy_ser, _ce_sig),
        ("sequence_logprobs", sequence_par, sequence_ser, _seq_sig),
        ("beam_step", beam_step_par, beam_step_ser, _beam_sig),
    )
    for suffix, t in (("f32", F32), ("f64", F64))
    for variant, fn in (("par", par), ("ser", ser))
] + _DECODER

_compiled: dict | None = None


def launch_threads() -> None:
    """Start Numba's thread pool (fixing the threading layer chosen by ``fastlsm._jit``)."""
    from numba.np.ufunc import parallel

    parallel._launch_threads()


def compile_all() -> dict:
    """Compile (or load from the cache) every entry point: ``{name: CFunc}``."""
    global _compiled
    if _compiled is None:
        launch_threads()
        _compiled = {
            name: cfunc(sig, cache=True, nopython=True)(fn) for name, fn, sig in ENTRIES
        }
    return _compiled


def register(ffi, lib) -> None:
    """Hand every entry point's address to the C library (called by the embedded init code)."""
    import ctypes

    from numba.np.ufunc import parallel

    import fastlsm

    for name, cf in compile_all().items():
        lib.fastlsm__register(name.encode(), ffi.cast("void *", cf.address))
    lib.fastlsm__ready(
        fastlsm.__version__.encode(),
        numba.config.NUMBA_NUM_THREADS,
        _jit.get_num_threads(),
        _jit.SERIAL_WORK,
        ffi.cast("void *", ctypes.cast(parallel._set_num_threads, ctypes.c_void_p).value),
    )
