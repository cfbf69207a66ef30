"""The table of the C ABI's kernel entry points, and the Numba ``@cfunc`` s it describes.

:data:`ENTRIES` is the one place each entry point is written: its name, its C signature and
the kernel it calls. From it come

- the Numba signature of every ``@cfunc`` (parsed from the C signature, :func:`numba_sig`);
- the C side's entry enum, name table and function-pointer typedefs (:func:`c_table`,
  pasted before ``_capi.c`` by the build);
- the public prototypes, declared before ``fastlsm.h`` is included (:func:`c_table`), so a
  header that disagrees with the table does not compile; ``tests/test_capi_abi.py`` also
  checks that the header declares exactly :func:`public_prototypes`.

Adding an entry point is one :class:`Entry` row (plus a template if no existing one fits)
and its prototype in ``fastlsm.h``; row-shaped ones (``wrap="rows"``) get their C wrapper
generated, others need theirs in ``_capi.c``.

Every parallel kernel is registered twice with the same C signature: ``<name>_par`` calls
the family's parallel entry kernel (the very function the Python API calls; the C side sets
the calling host thread's Numba thread count first, through the threading layer's
``set_num_threads`` registered here), ``<name>_ser`` a serial copy of it
(:func:`serial_copy`: the same Python function compiled with ``parallel=False``, so
``prange`` runs as ``range`` over the same row functions; it never enters the Python
runtime). Both give the same bits. The templates below name their kernel ``KERNEL``; each
variant is a copy of the template whose ``KERNEL`` is bound to one kernel (:func:`bind`).

Entry points return an ``int64``: -1 on success, else the kernel's result (the first bad
index, or a status), which only the C side turns into a ``fastlsm_status`` and a message.
Importing this module does not compile anything; :func:`compile_all` does (from the cache:
``capi build`` warms it), and the C library asks for each entry point on its first use
(:func:`load`: a host pays only for what it calls), always after launching Numba's worker
threads (a cached cfunc calling a parallel kernel otherwise
aborts with ``Symbol not found: allocate_sched``).
"""

from __future__ import annotations

import re
import types as pytypes
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numba import carray, cfunc, types

from .. import _jit
from .._kernels import beam as _beam
from .._kernels import cross_entropy as _ce
from .._kernels import normalize as _norm
from .._kernels import sequence as _seq
from .._kernels.decoder import config as _config

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


def serial_copy(dispatcher):
    """A serial (``parallel=False``) compilation of a parallel entry kernel's Python function.

    Its globals are the kernel module's, so it calls the same row functions with the same JIT
    policy; its own qualified name gives it its own cache entry.
    """
    f = dispatcher.py_func
    g = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__module__ = f.__module__
    g.__qualname__ = f.__qualname__ + "__serial"
    g.__doc__ = f"Serial copy of :func:`{f.__qualname__}` (see fastlsm.capi._entries)."
    return _jit.kernel(g)


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
    st = KERNEL(carray(logits, (n, vocab)), bs, beams, np.empty((n, cap), np.float64),
                np.empty((n, cap), np.int64), np.empty(n, np.int64), sc, tk, bm,
                np.empty((batch, cap), np.float64))
    return _beam_store(st, sc, tk, bm, cand_scores, cand_tokens, cand_beams)


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


# --------------------------------------------------------------------------- the table


class Entry(NamedTuple):
    """One kernel entry point of the C ABI.

    ``name``: the C side's key (``K_<name>``, typedef ``<name>_fn``); ``csig``: its C
    signature, ``T`` standing for the logits' C type; ``template`` and ``kernel``: what it
    runs (a parallel kernel also gets its serial copy); ``public``: the prototypes of
    ``fastlsm.h`` whose C wrappers call it (``T``/``S`` expand as in csig); ``dtypes``:
    ``(suffix, C type)`` pairs, one entry point each (``()``: one, untyped); ``wrap``:
    ``"rows"`` generates the C wrapper too (``ROWS_ENTRY`` of ``_capi.c``: x, out, rows,
    cols), so a row-shaped entry point is this row plus its prototype in ``fastlsm.h``.
    """

    name: str
    csig: str
    template: Callable
    kernel: Callable
    public: tuple = ()
    dtypes: tuple = (("f32", "float"), ("f64", "double"))
    wrap: str = ""


_ROWS = "int64_t (const T *x, T *out, int64_t rows, int64_t cols)"
_OPT = "const double *weight, int64_t n_weight, const double *token_weight, int64_t n_token"
_GRAD = "double grad_scale, const double *grad_output, int64_t n_grad_output"
_LOSS = "int64_t reduction, " + _GRAD
_CE_OPTS = "double label_smoothing, double z_loss, double softcap, " + _LOSS
_CE_OUT = "T *loss, T *lse, int64_t n_lse, T *grad, int64_t grad_rows"
_CE_API = (
    "const T *logits, const void *target, int target_type, int64_t rows, int64_t cols, "
    "const T *class_weight, const T *token_weight, const T *grad_output, "
    "const fastlsm_cross_entropy_options *options, T *loss, T *lse, T *grad"
)
_DEC = "const int64_t *cfg, int64_t cfg_len, const double *fcfg"
_STATE = "double *fstate, int64_t fsize, int64_t *istate, int64_t isize"
_STEP_FN = ("fastlsm_step_fn_S step, void *user_data, int64_t *sequences, int64_t *lengths, "
            "T *sequence_scores, T *token_logprobs, int64_t *out_width")

ENTRIES = (
    Entry("log_softmax", _ROWS, rows_out, _norm.log_softmax_rows,
          ("int fastlsm_log_softmax_S(const T *x, T *out, int64_t rows, int64_t cols)",),
          wrap="rows"),
    Entry("softmax", _ROWS, rows_out, _norm.softmax_rows,
          ("int fastlsm_softmax_S(const T *x, T *out, int64_t rows, int64_t cols)",),
          wrap="rows"),
    Entry("logsumexp", _ROWS, rows_reduce, _norm.logsumexp_rows,
          ("int fastlsm_logsumexp_S(const T *x, T *out, int64_t rows, int64_t cols)",),
          wrap="rows"),
    Entry("cross_entropy",
          f"int64_t (const T *logits, const int64_t *target, int64_t rows, int64_t cols, {_OPT}, "
          f"int64_t ignore_index, {_CE_OPTS}, {_CE_OUT})",
          cross_entropy, _ce.cross_entropy_rows,
          (("int fastlsm_cross_entropy_S(const T *logits, const int64_t *target, int64_t rows, "
           "int64_t cols, const T *class_weight, int64_t ignore_index, T label_smoothing, "
           "int reduction, T *loss, T *grad)"),
           f"int fastlsm_cross_entropy_ex_S({_CE_API})")),
    Entry("cross_entropy_probs",
          f"int64_t (const T *logits, const T *target, int64_t rows, int64_t cols, {_OPT}, "
          f"{_CE_OPTS}, {_CE_OUT})",
          cross_entropy_probs, _PROBS_KERNEL),
    Entry("nll_loss",
          f"int64_t (const T *log_probs, const int64_t *target, int64_t rows, int64_t cols, "
          f"{_OPT}, int64_t ignore_index, {_LOSS}, T *loss, T *grad, int64_t grad_rows)",
          nll_loss, _ce.nll_loss_rows,
          (("int fastlsm_nll_loss_S(const T *log_probs, const void *target, int target_type, "
           "int64_t rows, int64_t cols, const T *class_weight, const T *token_weight, "
           "const T *grad_output, const fastlsm_cross_entropy_options *options, T *loss, "
           "T *grad)"),)),
    Entry("sequence_logprobs",
          "int64_t (const T *logits, const int64_t *tokens, const uint8_t *mask, "
          "int64_t has_mask, int64_t batch, int64_t steps, int64_t vocab, T *token_logprobs, "
          "int64_t has_token, T *seq_logprobs)",
          sequence_logprobs, _seq.sequence_logprobs_rows,
          (("int fastlsm_sequence_logprobs_S(const T *logits, const int64_t *tokens, "
           "const uint8_t *mask, int64_t batch, int64_t steps, int64_t vocab, "
           "T *token_logprobs, T *seq_logprobs)"),
           ("int fastlsm_sequence_logprobs_i32_S(const T *logits, const int32_t *tokens, "
           "const uint8_t *mask, int64_t batch, int64_t steps, int64_t vocab, "
           "T *token_logprobs, T *seq_logprobs)"))),
    Entry("beam_step",
          "int64_t (const T *logits, const T *beam_scores, int64_t batch, int64_t beams, "
          "int64_t vocab, int64_t num_candidates, T *cand_scores, int64_t *cand_tokens, "
          "int64_t *cand_beams)",
          beam_step, _beam.beam_step_rows,
          (("int fastlsm_beam_step_S(const T *logits, const T *beam_scores, int64_t batch, "
           "int64_t beams, int64_t vocab, int64_t num_candidates, T *cand_scores, "
           "int64_t *cand_tokens, int64_t *cand_beams)"),)),
    Entry("beam_pack_config",
          "int64_t (int64_t *cfg, int64_t cfg_len, double *fcfg, int64_t batch, "
          "int64_t prompt_len, int64_t vocab, int64_t num_beams, int64_t max_new_tokens, "
          "const int64_t *eos_ids, int64_t num_eos, int64_t pad_token_id, "
          "double length_penalty, int64_t early_stopping, int64_t num_return_sequences, "
          "int64_t min_new_tokens, int64_t no_repeat_ngram_size, double repetition_penalty, "
          "double patience, int64_t renormalize)",
          beam_pack_config, _config.pack_config, dtypes=()),
    Entry("beam_layout", "int64_t (const int64_t *cfg, int64_t cfg_len, int64_t *layout)",
          beam_layout, _beam.beam_search_layout, dtypes=()),
    Entry("beam_init",
          f"int64_t ({_DEC}, const int64_t *input_ids, int64_t batch, int64_t prompt_len, "
          f"{_STATE})",
          beam_init, _beam.beam_search_init, dtypes=()),
    Entry("beam_finalize",
          f"int64_t ({_DEC}, {_STATE}, int64_t *out_seqs, double *out_scores, "
          "double *out_logp, int64_t *out_len, int64_t nout, int64_t max_len, int64_t max_new)",
          beam_finalize, _beam.beam_search_finalize, dtypes=()),
    Entry("beam_advance",
          f"int64_t ({_DEC}, {_STATE}, const T *logits, int64_t rows, int64_t vocab)",
          beam_advance, _beam.beam_search_advance,
          (("int fastlsm_beam_search_S(const fastlsm_beam_search_config *config, "
           "const int64_t *input_ids, int64_t batch, int64_t prompt_len, int64_t vocab, "
           f"{_STEP_FN})"),
           ("int fastlsm_beam_search_i32_S(const fastlsm_beam_search_config *config, "
           "const int32_t *input_ids, int64_t batch, int64_t prompt_len, int64_t vocab, "
           f"{_STEP_FN})"))),
)


LIBRARY_PROTOTYPES = (
    "const char *fastlsm_version_string(void)",
    "int fastlsm_version_number(void)",
    "const char *fastlsm_strerror(int status)",
    "const char *fastlsm_last_error(void)",
    "int fastlsm_init(void)",
    "int fastlsm_set_num_threads(int n)",
    "int fastlsm_get_num_threads(void)",
    "int fastlsm_max_threads(void)",
    "fastlsm_cross_entropy_options fastlsm_cross_entropy_default_options(void)",
    "fastlsm_beam_search_config fastlsm_beam_search_default_config(void)",
)
"""Public functions that call no kernel (defined in ``_capi.c`` alone)."""


def _expand(text: str, suffix: str, ctype: str) -> str:
    return re.sub(r"\bS\b", suffix, re.sub(r"\bT\b", ctype, re.sub(r"_S\b", "_" + suffix, text)))


def variants():
    """``(key, C signature, Python function to compile)`` for every registered cfunc."""
    for e in ENTRIES:
        for suffix, ctype in e.dtypes or (("", ""),):
            key = f"{e.name}_{suffix}" if suffix else e.name
            csig = _expand(e.csig, suffix, ctype)
            if e.kernel.targetoptions.get("parallel"):
                yield key + "_par", csig, bind(e.template, key + "_par", e.kernel)
                yield key + "_ser", csig, bind(e.template, key + "_ser", serial_copy(e.kernel))
            else:
                yield key + "_ser", csig, bind(e.template, key + "_ser", e.kernel)


def public_prototypes() -> list[str]:
    """Every function ``fastlsm.h`` must declare, as ``ret name(params)`` strings."""
    out = list(LIBRARY_PROTOTYPES)
    for e in ENTRIES:
        for proto in e.public:
            out += [_expand(proto, s, t) for s, t in e.dtypes]
    return out


_C_TYPES = {
    "int64_t": types.int64, "int32_t": types.int32, "double": types.float64,
    "float": types.float32, "uint8_t": types.uint8, "uint16_t": types.uint16,
    "void": types.voidptr,
}


def _ctype(param: str):
    """The Numba type of one C parameter declaration (``const float *x`` -> float32*)."""
    words = param.replace("*", " * ").replace("const", " ").split()
    base = _C_TYPES[words[0]]
    if "*" in words:
        return base if base is types.voidptr else types.CPointer(base)
    return base


def numba_sig(csig: str):
    """The Numba signature of a C signature ``ret (params)``."""
    ret, params = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", csig).groups()
    return _C_TYPES[ret](*[_ctype(p) for p in params.split(",")])


def c_table() -> str:
    """C text pasted before ``_capi.c``: public prototypes, entry enum, names and typedefs."""
    keys, wrappers = [], []
    lines = ["/* Generated from fastlsm/capi/_entries.py ENTRIES: do not edit. */",
             "#include <stdint.h>", '#include "fastlsm.h"']
    lines += [f"FASTLSM_API {p};" for p in public_prototypes()]
    for e in ENTRIES:
        for suffix, ctype in e.dtypes or (("", ""),):
            key = f"{e.name}_{suffix}" if suffix else e.name
            keys.append(key)
            if e.wrap == "rows":
                wrappers.append(f"ROWS_ENTRY({e.name}, {suffix}, {ctype})")
            ret, params = re.fullmatch(r"(\w+) \((.*)\)", _expand(e.csig, suffix, ctype)).groups()
            lines.append(f"typedef {ret} (*{key}_fn)({params});")
    lines.append("enum { " + ", ".join(f"K_{k}" for k in keys) + ", E_COUNT };")
    lines.append("static const char *const entry_names[E_COUNT] = {"
                 + ", ".join(f'"{k}"' for k in keys) + "};")
    lines.append("#define FASTLSM_ROWS_WRAPPERS " + " ".join(wrappers))
    return "\n".join(lines) + "\n"


BEAM_CONFIG_VALUES = {
    "batch": "batch", "prompt_len": "prompt_len", "vocab": "vocab",
    "num_beams": "c->num_beams", "max_new_tokens": "c->max_new_tokens",
    "num_eos": "c->num_eos_token_ids", "pad_token_id": "c->pad_token_id",
    "length_penalty": "c->length_penalty", "early_stopping": "c->early_stopping",
    "num_return_sequences": "c->num_return_sequences", "min_new_tokens": "c->min_new_tokens",
    "no_repeat_ngram_size": "c->no_repeat_ngram_size",
    "repetition_penalty": "c->repetition_penalty", "patience": "c->patience",
}
"""The C expression of each value a beam-search config message may name (``c`` is the
``fastlsm_beam_search_config``)."""


def beam_config_errors() -> str:
    """C function ``beam_config_error``: the message of each ``check_config`` status, the
    very text Python raises (from ``_kernels.decoder.config.printf_message``)."""
    from ._build import c_string

    lines = ["static int beam_config_error(const char *fname, int64_t code,",
             "                             const fastlsm_beam_search_config *c, int64_t batch,",
             "                             int64_t prompt_len, int64_t vocab)", "{",
             "    (void)prompt_len;", "    switch (code) {"]
    for code in sorted(_config.CONFIG_ERRORS):
        fmt, names = _config.printf_message(code)
        args = "".join(
            f", (double){BEAM_CONFIG_VALUES[n]}" if dict(_config.CONFIG_ARGS)[n] == "float64"
            else f", (long long){BEAM_CONFIG_VALUES[n]}" for n in names)
        lines.append(f"    case {code}: return fail(FASTLSM_ERR_INVALID_ARGUMENT, "
                     f"\"%s: \" {c_string(fmt)}, fname{args});")
    lines += [("    default: return fail(FASTLSM_ERR_INTERNAL, \"%s: the configuration check "
              "returned %lld\", fname, (long long)code);"), "    }", "}"]
    return "\n".join(lines) + "\n"


_compiled: dict | None = None


def launch_threads() -> None:
    """Start Numba's thread pool with a thread-safe layer.

    The embedded interpreter belongs to the library, so no user's Numba choice is at stake:
    ``FASTLSM_THREADING_LAYER`` (``omp`` / ``tbb``) if set, else Numba's ``threadsafe``
    choice (TBB or OpenMP), never ``workqueue``, which aborts the process when two host
    threads call in at once.
    """
    import numba
    from numba.np.ufunc import parallel

    from .. import _jit

    if not parallel._is_initialized:
        _jit._choose_layer()
        if not _jit._user_chose_layer():
            _jit._preload_tbb()
            numba.config.THREADING_LAYER = "threadsafe"
    parallel._launch_threads()


def compile_entry(key: str) -> dict:
    """Compile (or load from the cache) the cfuncs of entry point ``key`` (its ``_par`` and
    ``_ser`` variants, or ``_ser`` alone): ``{name: CFunc}``."""
    global _compiled
    launch_threads()
    if _compiled is None:
        _compiled = {}
    for name, csig, fn in variants():
        if name.rsplit("_", 1)[0] == key and name not in _compiled:
            _compiled[name] = cfunc(numba_sig(csig), cache=True, nopython=True)(fn)
    return {n: cf for n, cf in _compiled.items() if n.rsplit("_", 1)[0] == key}


def compile_all() -> dict:
    """Compile (or load from the cache) every entry point: ``{name: CFunc}``."""
    for key in {name.rsplit("_", 1)[0] for name, _, _ in variants()}:
        compile_entry(key)
    return dict(_compiled)


def load(ffi, lib, key: str) -> int:
    """Register entry point ``key`` with the C library (``fastlsm__load``): 0, or -1 with the
    error handed to C (which then reports the entry point as unavailable)."""
    try:
        for name, cf in compile_entry(key).items():
            lib.fastlsm__register(name.encode(), ffi.cast("void *", cf.address))
        return 0
    except Exception as e:  # noqa: BLE001 (reported in C: nothing may cross the ABI)
        msg = f"{key}: {type(e).__name__}: {e}"
        lib.fastlsm__init_failed(msg.encode("utf-8", "replace")[:2000])
        return -1


def register(ffi, lib) -> None:
    """Hand the runtime facts to the C library (called by the embedded init code); entry
    points are compiled and registered one by one on first use (:func:`load`)."""
    import ctypes

    from numba.np.ufunc import parallel

    import fastlsm

    launch_threads()
    lib.fastlsm__ready(
        fastlsm.__version__.encode(),
        numba.config.NUMBA_NUM_THREADS,
        _jit.get_num_threads(),
        _jit.SERIAL_WORK,
        ffi.cast("void *", ctypes.cast(parallel._set_num_threads, ctypes.c_void_p).value),
    )
