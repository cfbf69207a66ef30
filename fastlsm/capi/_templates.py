"""The C ABI's entry templates: the Python bodies of the ``@cfunc`` entry points.

Each template takes exactly the arguments of its C signature (the table in
:mod:`fastlsm.capi._entries`), wraps the pointers as arrays and calls the same kernels as the
Python API, returning a status; it never raises. A template names its kernel ``KERNEL``;
each variant is a copy of the template whose ``KERNEL`` is bound to one kernel
(:func:`bind`).
"""

from __future__ import annotations

import types as pytypes
from collections.abc import Callable

import numpy as np
from numba import carray

from .. import _jit
from .._kernels import beam as _beam
from .._kernels import cross_entropy as _ce
from .._kernels import sampling as _samp

KERNEL: Callable = None  # bound per variant by bind()


def bind(template, suffix: str, kernel):
    """A copy of ``template`` whose global ``KERNEL`` is ``kernel``, qualified ``__suffix``.

    The copy has its own qualified name, hence its own Numba cache entry (the cache is keyed
    on the function's name and signature, not on what its globals hold).
    """
    f = template
    g = pytypes.FunctionType(f.__code__, {**f.__globals__, "KERNEL": kernel}, f.__name__,
                             f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__module__ = f.__module__
    g.__qualname__ = f"{f.__qualname__}__{suffix}"
    return g


# --------------------------------------------------------------------------- templates
# Each takes exactly the arguments of its C signature (see ENTRIES). Sizes are checked in C
# (rows >= 1 and products that fit in memory); optional arrays are (pointer, size) pairs,
# size 0 meaning absent.


def rows_out(x, out, rows, cols):
    KERNEL(carray(x, (rows, cols)), carray(out, (rows, cols)))
    return -1


def rows_reduce(x, out, rows, cols):
    KERNEL(carray(x, (rows, cols)), carray(out, (rows,)))
    return -1


@_jit.kernel
def _loss_args(weight, n_weight, token_weight, n_token, grad_output, n_grad_output, loss, rows,
               reduction):
    """The arrays every loss kernel takes: class and token weights, grad_output, loss."""
    return (carray(weight, (n_weight,)), carray(token_weight, (n_token,)),
            carray(grad_output, (n_grad_output,)),
            carray(loss, (rows if reduction == _ce.NONE else 1,)))


@_jit.kernel
def _ce_outputs(lse, n_lse, grad, grad_rows, cols):
    """lse, grad and an absent work buffer (the kernel allocates its float64 scratch)."""
    return carray(lse, (n_lse,)), carray(grad, (grad_rows, cols)), np.empty(0, np.float64)


def cross_entropy(logits, target, rows, cols, weight, n_weight, token_weight, n_token,
                  ignore_index, smoothing, z_loss, softcap, reduction, grad_scale, grad_output,
                  n_grad_output, loss, lse, n_lse, grad, grad_rows):
    w, tw, go, lo = _loss_args(weight, n_weight, token_weight, n_token, grad_output,
                               n_grad_output, loss, rows, reduction)
    ls, g, work = _ce_outputs(lse, n_lse, grad, grad_rows, cols)
    return KERNEL(carray(logits, (rows, cols)), carray(target, (rows,)), w, tw, ignore_index,
                  smoothing, z_loss, softcap, reduction, grad_scale, go, lo, ls, g, work)


def cross_entropy_probs(logits, target, rows, cols, weight, n_weight, token_weight, n_token,
                        smoothing, z_loss, softcap, reduction, grad_scale, grad_output,
                        n_grad_output, loss, lse, n_lse, grad, grad_rows):
    w, tw, go, lo = _loss_args(weight, n_weight, token_weight, n_token, grad_output,
                               n_grad_output, loss, rows, reduction)
    ls, g, work = _ce_outputs(lse, n_lse, grad, grad_rows, cols)
    x, t = carray(logits, (rows, cols)), carray(target, (rows, cols))
    if PROBS_OWN_KERNEL:
        return KERNEL(x, t, w, tw, smoothing, z_loss, softcap, reduction, grad_scale, go, lo,
                      ls, g, work)
    return KERNEL(x, t, w, tw, -100, smoothing, z_loss, softcap, reduction, grad_scale, go, lo,
                  ls, g, work)


# Probability targets: a kernel of their own, or (the kernel consolidation of issue 9, branch
# h/core) cross_entropy_rows itself given a 2-D target, ignore_index unused. A compile-time
# constant: the branch not taken is never typed.
PROBS_OWN_KERNEL = hasattr(_ce, "cross_entropy_probs_rows")
_PROBS_KERNEL = _ce.cross_entropy_probs_rows if PROBS_OWN_KERNEL else _ce.cross_entropy_rows


def nll_loss(log_probs, target, rows, cols, weight, n_weight, token_weight, n_token,
             ignore_index, reduction, grad_scale, grad_output, n_grad_output, loss, grad,
             grad_rows):
    w, tw, go, lo = _loss_args(weight, n_weight, token_weight, n_token, grad_output,
                               n_grad_output, loss, rows, reduction)
    g = carray(grad, (grad_rows, cols))
    return KERNEL(carray(log_probs, (rows, cols)), carray(target, (rows,)), w, tw, ignore_index,
                  reduction, grad_scale, go, lo, g, np.empty(0, np.float64))


@_jit.kernel
def _seq_store(status, tok, seq, token_logprobs, has_token, seq_logprobs):
    """Round the float64 results once into the caller's outputs (only on success)."""
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


def sequence_logprobs(logits, tokens, mask, has_mask, batch, steps, vocab, token_logprobs,
                      has_token, seq_logprobs):
    n = batch * steps
    m = carray(mask, (n,)) if has_mask else np.ones(n, np.uint8)
    tok = np.empty(n, np.float64)
    seq = np.empty(batch, np.float64)
    st = KERNEL(carray(logits, (n, vocab)), carray(tokens, (n,)), m, steps, tok, seq)
    return _seq_store(st, tok, seq, token_logprobs, has_token, seq_logprobs)


@_jit.kernel
def _beam_store(status, scores, tokens, beams, cand_scores, cand_tokens, cand_beams):
    """Copy the float64 candidates into the caller's outputs (only on success)."""
    if status >= 0:
        return status
    n = scores.size
    s, t, b = carray(cand_scores, (n,)), carray(cand_tokens, (n,)), carray(cand_beams, (n,))
    fs, ft, fb = scores.reshape(n), tokens.reshape(n), beams.reshape(n)
    for i in range(n):
        s[i] = fs[i]
        t[i] = ft[i]
        b[i] = fb[i]
    return status


def beam_step(logits, beam_scores, batch, beams, vocab, cap, cand_scores, cand_tokens,
              cand_beams):
    n = batch * beams
    src = carray(beam_scores, (n,))
    bs = np.empty(n, np.float64)
    for i in range(n):
        bs[i] = np.float64(src[i])
    sc = np.empty((batch, cap), np.float64)
    tk = np.empty((batch, cap), np.int64)
    bm = np.empty((batch, cap), np.int64)
    # 16-bit rows as they are (their uint16/int16 views): the kernel widens in registers
    st = KERNEL(carray(logits, (n, vocab)), bs, beams, np.empty((n, cap), np.float64),
                np.empty((n, cap), np.int64), np.empty(n, np.int64), sc, tk, bm,
                np.empty((batch, cap), np.float64))
    return _beam_store(st, sc, tk, bm, cand_scores, cand_tokens, cand_beams)


@_jit.kernel
def _sample_inputs(rows, vocab, bias, bias_rows, mask, mask_words, hist, hist_len, params,
                   seeds, steps, ctr):
    """The arrays both samplers take (a bias of 0 rows is absent: ``[1, 0]``)."""
    return (carray(bias, (max(bias_rows, 1), vocab if bias_rows > 0 else 0)),
            carray(hist, (rows, hist_len)), carray(params, (rows, _samp.NPARAM)),
            carray(seeds, (rows,)), carray(steps, (rows,)), carray(ctr, (rows,)))


@_jit.kernel
def _first_bad(status):
    """-1 if every row's status is OK, else the first failing row."""
    for i in range(status.size):
        if status[i] != _samp.OK:
            return np.int64(i)
    return np.int64(-1)


@_jit.kernel
def _sample_store(r, tk, lp, tt, tl, il, tokens, logprobs, top_tok, top_lp, id_lp):
    """Copy the results into the caller's outputs (only when every row succeeded)."""
    if r >= 0:
        return r
    nb, nt, nm = tk.size, tt.shape[1], il.shape[1]
    t, o = carray(tokens, (nb,)), carray(logprobs, (nb,))
    a, b, c = carray(top_tok, (nb, nt)), carray(top_lp, (nb, nt)), carray(id_lp, (nb, nm))
    for i in range(nb):
        t[i] = tk[i]
        o[i] = lp[i]
        for j in range(nt):
            a[i, j] = tt[i, j]
            b[i, j] = tl[i, j]
        for j in range(nm):
            c[i, j] = il[i, j]
    return r


def sample(x, rows, vocab, bias, bias_rows, mask, mask_words, hist, hist_len, params, seeds,
           steps, ctr, raw, lp_ids, lp_rows, lp_cols, tokens, logprobs, top_tok, top_lp,
           num_top, id_lp, status):
    b, h, p, sd, sp, ct = _sample_inputs(rows, vocab, bias, bias_rows, mask, mask_words, hist,
                                         hist_len, params, seeds, steps, ctr)
    st = carray(status, (rows,))
    tk, lp = np.empty(rows, np.int64), np.empty(rows, np.float64)
    tt, tl = np.empty((rows, num_top), np.int64), np.empty((rows, num_top), np.float64)
    il = np.empty((rows, lp_cols), np.float64)
    # 16-bit rows as they are (their uint16/int16 views): the kernel widens one row at a time
    KERNEL(carray(x, (rows, vocab)), b, carray(mask, (rows, mask_words)), h, p,
           sd, sp, ct, raw != 0, carray(lp_ids, (lp_rows, lp_cols)), tk, lp, tt, tl, il, st,
           None)  # no split: C runs a single row on one thread (fastlsm._kernels.sampling)
    return _sample_store(_first_bad(st), tk, lp, tt, tl, il, tokens, logprobs, top_tok,
                         top_lp, id_lp)


@_jit.kernel
def _verify_store(r, na, out, num_acc, tokens):
    """Copy the results into the caller's outputs (only when every row succeeded)."""
    if r >= 0:
        return r
    a, t = carray(num_acc, na.shape), carray(tokens, out.shape)
    for i in range(na.size):
        a[i] = na[i]
        for j in range(out.shape[1]):
            t[i, j] = out[i, j]
    return r


def verify_draft(tl, dl, has_draft, draft, rows, k, vocab, bias, bias_rows, mask, mask_words,
                 hist, hist_len, params, seeds, steps, ctr, num_acc, out, status):
    b, h, p, sd, sp, ct = _sample_inputs(rows, vocab, bias, bias_rows, mask, mask_words, hist,
                                         hist_len, params, seeds, steps, ctr)
    st = carray(status, (rows,))
    na, o = np.zeros(rows, np.int64), np.full((rows, k + 1), -1, np.int64)
    kd = k if has_draft else 0
    KERNEL(carray(tl, (rows, k + 1, vocab)), carray(dl, (rows, kd, vocab)),
           carray(draft, (rows, k)), b, carray(mask, (rows, k + 1, mask_words)), h, p, sd, sp,
           ct, na, o, st)
    return _verify_store(_first_bad(st), na, o, num_acc, out)


def sample_check(params, rows):
    return KERNEL(carray(params, (rows, _samp.NPARAM)))


# The decoder (fastlsm_beam_search_*) drives the state machine of fastlsm.beam_search:
# layout -> init -> (host step callback -> advance)* -> finalize, over int64/float64 state
# buffers the C side allocates. cfg is int64 [cfg_len], fcfg float64 [FCFG_SIZE].


def beam_pack_config(cfg, cfg_len, fcfg, batch, prompt_len, vocab, num_beams, max_new_tokens,
                     eos_ids, num_eos, pad_token_id, length_penalty, early_stopping,
                     num_return_sequences, min_new_tokens, no_repeat_ngram_size,
                     repetition_penalty, patience, renormalize):
    return KERNEL(carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)), batch, prompt_len,
                  vocab, num_beams, max_new_tokens, carray(eos_ids, (num_eos,)), pad_token_id,
                  length_penalty, early_stopping, num_return_sequences, min_new_tokens,
                  no_repeat_ngram_size, repetition_penalty, patience, renormalize)


def beam_layout(cfg, cfg_len, layout):
    return KERNEL(carray(cfg, (cfg_len,)), carray(layout, (_beam.LAYOUT_SIZE,)))


def beam_init(cfg, cfg_len, fcfg, input_ids, batch, prompt_len, fstate, fsize, istate, isize):
    return KERNEL(carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)),
                  carray(input_ids, (batch, prompt_len)), carray(fstate, (fsize,)),
                  carray(istate, (isize,)))


def beam_advance(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, logits, rows, vocab):
    return KERNEL(carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)),
                  carray(fstate, (fsize,)), carray(istate, (isize,)),
                  carray(logits, (rows, vocab)))


def beam_finalize(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, out_seqs, out_scores,
                  out_logp, out_len, nout, max_len, max_new):
    return KERNEL(carray(cfg, (cfg_len,)), carray(fcfg, (_beam.FCFG_SIZE,)),
                  carray(fstate, (fsize,)), carray(istate, (isize,)),
                  carray(out_seqs, (nout, max_len)), carray(out_scores, (nout,)),
                  carray(out_logp, (nout, max_new)), carray(out_len, (nout,)))
