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
``set_num_threads`` registered here), ``<name>_ser`` its serial copy (the same Python
function compiled with ``parallel=False``: the kernel's ``.serial``, which Python runs for
one-thread problems; it never enters the Python runtime). Both give the same bits. Entries
marked ``inline`` (the row normalizers, whose one-row calls are a few nanoseconds of work)
take an *uncached* serial copy instead: Numba compiles an uncached function into its caller,
so the cfunc inlines the kernel, while a cached one (``.serial``) is linked as an opaque call
(a one-row [1, 8] C call measured 116 ns against 87). The others keep ``.serial``: an inlined
copy would be a second compilation of the whole kernel (the cross-entropy, sampling and
beam-search kernels take many seconds each) to save nanoseconds on calls that do far more
work. The templates (:mod:`._templates`) name their kernel ``KERNEL``; each variant is a copy
of a template whose ``KERNEL`` is bound to one kernel.

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
from collections.abc import Callable
from typing import NamedTuple

import numba
from numba import cfunc, types

from .. import _jit
from .._kernels import beam as _beam
from .._kernels import cross_entropy as _ce
from .._kernels import normalize as _norm
from .._kernels import sampling as _samp
from .._kernels import sampling_params as _sp
from .._kernels import sequence as _seq
from .._kernels.decoder import config as _config
from ._templates import (
    _PROBS_KERNEL,
    beam_advance,
    beam_finalize,
    beam_init,
    beam_layout,
    beam_pack_config,
    beam_step,
    bind,
    cross_entropy,
    cross_entropy_probs,
    nll_loss,
    rows_out,
    rows_reduce,
    sample,
    sample_check,
    sequence_logprobs,
    verify_draft,
)

# --------------------------------------------------------------------------- the table


class Dtype(NamedTuple):
    """One element dtype of the ABI: the entry points' suffix and three C types.

    ``T``: the elements as the kernel sees them (16-bit data as integer views of its bits:
    ``uint16_t`` for bfloat16, ``int16_t`` for float16, see ``fastlsm/_dtypes.py``); ``R``:
    float results (lse, losses, scores, weights: float32 for the 16-bit dtypes); ``P``: the
    elements in the public prototypes (``uint16_t`` bits for both 16-bit dtypes).
    """

    suffix: str
    T: str
    R: str
    P: str
    code: int  # the C side's DT_* value (element size and dispatch)


F32 = Dtype("f32", "float", "float", "float", 0)
F64 = Dtype("f64", "double", "double", "double", 1)
BF16 = Dtype("bf16", "uint16_t", "float", "uint16_t", 2)
F16 = Dtype("f16", "int16_t", "float", "uint16_t", 3)
FLOATS = (F32, F64)
ALL = (F32, F64, BF16, F16)


class Entry(NamedTuple):
    """One kernel entry point of the C ABI.

    ``name``: the C side's key (``K_<name>``, typedef ``<name>_fn``); ``csig``: its C
    signature (``T``, ``R`` as in :class:`Dtype`); ``template`` and ``kernel``: what it runs
    (a parallel kernel also gets its serial copy); ``public``: the prototypes of
    ``fastlsm.h`` whose C wrappers call it (``S``, ``P``, ``R`` expand as in :class:`Dtype`);
    ``dtypes``: :class:`Dtype` s, one entry point each (``()``: one, untyped); ``wrap``:
    ``"rows"`` generates the C wrapper too (``ROWS_ENTRY`` of ``_capi.c``: x, out, rows,
    cols), so a row-shaped entry point is this row plus its prototype in ``fastlsm.h``.
    ``inline``: its ``_ser`` variant inlines an uncached serial copy of the kernel (see the
    module docstring).
    Hand-written wrappers are instantiated once per dtype by the generated
    ``FASTLSM_DTYPES_<name>(X)`` (``X(S, P, R, DT)`` for each of ``dtypes``).

    ``stride``: how the public entry points take a row stride (elements between the starts
    of consecutive rows of every ``[rows, V]`` array of the call, ``>= V``: padded rows),
    the one place this is decided: ``"arg"``, a ``_strided`` variant of each prototype with
    a last argument ``int64_t row_stride`` (the prototypes are published: the ABI policy
    forbids adding an argument to them), generated into ``fastlsm.h``
    (:func:`strided_prototypes`); ``"options"`` / ``"params"``, the ``row_stride`` field of
    the options / params struct (structs may grow, see the header's ABI policy); ``""``, no
    rows.
    """

    name: str
    csig: str
    template: Callable
    kernel: Callable
    public: tuple = ()
    dtypes: tuple = FLOATS
    wrap: str = ""
    stride: str = ""
    inline: bool = False


_ROWS = "int64_t (const T *x, T *out, int64_t rows, int64_t cols)"
_REDUCE = "int64_t (const T *x, R *out, int64_t rows, int64_t cols)"
_OPT = "const double *weight, int64_t n_weight, const double *token_weight, int64_t n_token"
_GRAD = "double grad_scale, const double *grad_output, int64_t n_grad_output"
_LOSS = "int64_t reduction, " + _GRAD
_CE_OPTS = "double label_smoothing, double z_loss, double softcap, " + _LOSS
_CE_OUT = "R *loss, R *lse, int64_t n_lse, T *grad, int64_t grad_rows"
_CE_API = (
    "const P *logits, const void *target, int target_type, int64_t rows, int64_t cols, "
    "const R *class_weight, const R *token_weight, const R *grad_output, "
    "const fastlsm_cross_entropy_options *options, R *loss, R *lse, P *grad"
)
_DEC = "const int64_t *cfg, int64_t cfg_len, const double *fcfg"
_STATE = "double *fstate, int64_t fsize, int64_t *istate, int64_t isize"
_STEP_FN = ("fastlsm_step_fn_S step, void *user_data, int64_t *sequences, int64_t *lengths, "
            "R *sequence_scores, R *token_logprobs, int64_t *out_width")
_SEQ_API = ("const P *logits, const I *tokens, const uint8_t *mask, int64_t batch, "
            "int64_t steps, int64_t vocab, R *token_logprobs, R *seq_logprobs")
_SAMPLE_IN = ("const double *bias, int64_t bias_rows, const int32_t *mask, int64_t mask_words, "
              "const int64_t *hist, int64_t hist_len, const double *params, "
              "const uint64_t *seeds, const uint64_t *steps, const uint64_t *ctr")
_SAMPLE_API = ("const P *logits, int64_t rows, int64_t vocab, "
               "const fastlsm_sample_params *params, const I *history, int64_t history_len, "
               "const I *logprob_token_ids, int64_t token_ids_rows, int64_t num_token_ids, "
               "I *tokens, R *logprobs, I *top_tokens, R *top_logprobs, "
               "R *token_id_logprobs")
_VERIFY_API = ("const P *target_logits, const P *draft_logits, const I *draft_tokens, "
               "int64_t rows, int64_t k, int64_t vocab, const fastlsm_sample_params *params, "
               "const I *history, int64_t history_len, int64_t *num_accepted, I *tokens")


def _ids(*protos: str) -> tuple:
    """Each prototype with int64_t ids (``I``), then with int32_t ids (``_i32_`` names)."""
    out = [p.replace("const I *", "const int64_t *").replace("I *", "int64_t *")
           for p in protos]
    out += [re.sub(r"(fastlsm_\w+?)_S\(", r"\1_i32_S(", p).replace(
        "const I *", "const int32_t *").replace("I *", "int32_t *") for p in protos]
    return tuple(out)


ENTRIES = (
    Entry("log_softmax", _ROWS, rows_out, _norm.log_softmax_rows,
          ("int fastlsm_log_softmax_S(const P *x, P *out, int64_t rows, int64_t cols)",),
          ALL, wrap="rows", stride="arg", inline=True),
    Entry("softmax", _ROWS, rows_out, _norm.softmax_rows,
          ("int fastlsm_softmax_S(const P *x, P *out, int64_t rows, int64_t cols)",),
          ALL, wrap="rows", stride="arg", inline=True),
    Entry("logsumexp", _REDUCE, rows_reduce, _norm.logsumexp_rows,
          ("int fastlsm_logsumexp_S(const P *x, R *out, int64_t rows, int64_t cols)",),
          ALL, wrap="rows", stride="arg", inline=True),
    Entry("cross_entropy",
          f"int64_t (const T *logits, const int64_t *target, int64_t rows, int64_t cols, {_OPT}, "
          f"int64_t ignore_index, {_CE_OPTS}, {_CE_OUT})",
          cross_entropy, _ce.cross_entropy_rows,
          (("int fastlsm_cross_entropy_S(const P *logits, const int64_t *target, int64_t rows, "
           "int64_t cols, const R *class_weight, int64_t ignore_index, R label_smoothing, "
           "int reduction, R *loss, P *grad)"),
           f"int fastlsm_cross_entropy_ex_S({_CE_API})"), ALL, stride="options"),
    Entry("cross_entropy_probs",
          f"int64_t (const T *logits, const R *target, int64_t rows, int64_t cols, {_OPT}, "
          f"{_CE_OPTS}, {_CE_OUT})",
          cross_entropy_probs, _PROBS_KERNEL, (), ALL, stride="options"),
    Entry("nll_loss",
          f"int64_t (const T *log_probs, const int64_t *target, int64_t rows, int64_t cols, "
          f"{_OPT}, int64_t ignore_index, {_LOSS}, R *loss, T *grad, int64_t grad_rows)",
          nll_loss, _ce.nll_loss_rows,
          (("int fastlsm_nll_loss_S(const P *log_probs, const void *target, int target_type, "
           "int64_t rows, int64_t cols, const R *class_weight, const R *token_weight, "
           "const R *grad_output, const fastlsm_cross_entropy_options *options, R *loss, "
           "P *grad)"),), ALL, stride="options"),
    Entry("sequence_logprobs",
          "int64_t (const T *logits, const int64_t *tokens, const uint8_t *mask, "
          "int64_t has_mask, int64_t batch, int64_t steps, int64_t vocab, R *token_logprobs, "
          "int64_t has_token, R *seq_logprobs)",
          sequence_logprobs, _seq.sequence_logprobs_rows,
          _ids(f"int fastlsm_sequence_logprobs_S({_SEQ_API})"), ALL, stride="arg"),
    Entry("beam_step",
          "int64_t (const T *logits, const R *beam_scores, int64_t batch, int64_t beams, "
          "int64_t vocab, int64_t num_candidates, R *cand_scores, int64_t *cand_tokens, "
          "int64_t *cand_beams)",
          beam_step, _beam.beam_step_rows,
          (("int fastlsm_beam_step_S(const P *logits, const R *beam_scores, int64_t batch, "
           "int64_t beams, int64_t vocab, int64_t num_candidates, R *cand_scores, "
           "int64_t *cand_tokens, int64_t *cand_beams)"),), ALL, stride="arg"),
    Entry("sample",
          f"int64_t (const T *x, int64_t rows, int64_t vocab, {_SAMPLE_IN}, int64_t raw, "
          "const int64_t *lp_ids, int64_t lp_rows, int64_t lp_cols, int64_t *tokens, "
          "R *logprobs, int64_t *top_tok, R *top_lp, int64_t num_top, R *id_lp, "
          "int64_t *status)",
          sample, _samp.sample_rows, _ids(f"int fastlsm_sample_S({_SAMPLE_API})"), ALL,
          stride="params"),
    Entry("sample_params", "int64_t (const double *params, int64_t rows)", sample_check,
          _sp.check_params, dtypes=()),
    Entry("verify_draft",
          "int64_t (const T *tl, const T *dl, int64_t has_draft, const int64_t *draft, "
          f"int64_t rows, int64_t k, int64_t vocab, {_SAMPLE_IN}, int64_t *num_acc, "
          "int64_t *out, int64_t *status)",
          verify_draft, _samp.verify_rows, _ids(f"int fastlsm_verify_draft_S({_VERIFY_API})"),
          ALL, stride="params"),
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
           f"{_STEP_FN})")), ALL),
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
    "fastlsm_sample_params fastlsm_sample_default_params(void)",
)
"""Public functions that call no kernel (defined in ``_capi.c`` alone)."""


def _expand(text: str, dt: Dtype) -> str:
    """``text`` for dtype ``dt``: ``_S`` / ``S`` -> suffix, ``T``, ``R``, ``P`` -> C types."""
    text = re.sub(r"_S\b", "_" + dt.suffix, text)
    return re.sub(r"\b([SPRT])\b", lambda m: {"S": dt.suffix, "T": dt.T, "R": dt.R,
                                               "P": dt.P}[m.group(1)], text)


_UNTYPED = Dtype("", "", "", "", -1)


def _keyed(e: Entry):
    """``(key, dtype)`` of each entry point of ``e`` (``name_<suffix>``, or ``name``)."""
    for dt in e.dtypes or (_UNTYPED,):
        yield (f"{e.name}_{dt.suffix}" if dt.suffix else e.name), dt


def variants():
    """``(key, C signature, Python function to compile)`` for every registered cfunc."""
    for e in ENTRIES:
        for key, dt in _keyed(e):
            csig = _expand(e.csig, dt)
            if e.kernel.targetoptions.get("parallel"):
                yield key + "_par", csig, bind(e.template, key + "_par", e.kernel)
                serial = _serial(e.kernel) if e.inline else e.kernel.serial
                yield key + "_ser", csig, bind(e.template, key + "_ser", serial)
            else:
                yield key + "_ser", csig, bind(e.template, key + "_ser", e.kernel)


def _serial(kernel):
    """An uncached serial copy of a parallel entry kernel (see the module docstring)."""
    return _jit.kernel(_jit._serial_copy(kernel.py_func))


def public_prototypes() -> list[str]:
    """Every function ``fastlsm.h`` must declare, as ``ret name(params)`` strings."""
    out = list(LIBRARY_PROTOTYPES)
    for e in ENTRIES:
        for proto in e.public:
            out += [_expand(proto, dt) for dt in e.dtypes]
    return out + strided_prototypes()


def _strided(proto: str) -> str:
    """The ``_strided`` variant of a prototype: ``name_S`` -> ``name_strided_S``, with a
    last argument ``int64_t row_stride``."""
    return re.sub(r"_S\(", "_strided_S(", proto)[:-1] + ", int64_t row_stride)"


def strided_prototypes() -> list[str]:
    """The ``_strided`` entry points (every entry with ``stride="arg"``, every dtype)."""
    return [_expand(_strided(p), dt) for e in ENTRIES if e.stride == "arg" for p in e.public
            for dt in e.dtypes]


HEADER_BEGIN = "/* BEGIN generated by `python -m fastlsm.capi header --update`: do not edit */"
HEADER_END = "/* END generated */"


def _wrap(proto: str, width: int = 100) -> str:
    """``FASTLSM_API <proto>;`` broken at commas, continuation lines under the ``(``."""
    head, params = proto.split("(", 1)
    lead = f"FASTLSM_API {head}("
    lines, cur = [], lead
    for i, p in enumerate(params.rstrip(")").split(", ")):
        piece = p + (", " if i < params.count(", ") else ");")
        if len(cur) + len(piece.rstrip()) > width and cur.strip() != lead.strip():
            lines.append(cur.rstrip())
            cur = " " * len(lead)
        cur += piece
    return "\n".join(lines + [cur])


def header_block() -> str:
    """The generated part of ``fastlsm.h``: the ``_strided`` prototypes, between
    :data:`HEADER_BEGIN` and :data:`HEADER_END`."""
    return "\n".join([HEADER_BEGIN, *(_wrap(p) for p in strided_prototypes()), HEADER_END])


def update_header(path: str, write: bool) -> bool:
    """Whether ``path``'s generated block is :func:`header_block`; ``write``: make it so."""
    with open(path) as f:
        text = f.read()
    a, b = text.index(HEADER_BEGIN), text.index(HEADER_END) + len(HEADER_END)
    new = text[:a] + header_block() + text[b:]
    if write and new != text:
        with open(path, "w") as f:
            f.write(new)
    return new == text


_C_TYPES = {
    "int64_t": types.int64, "int32_t": types.int32, "double": types.float64,
    "float": types.float32, "uint8_t": types.uint8, "uint16_t": types.uint16,
    "int16_t": types.int16, "uint64_t": types.uint64, "void": types.voidptr,
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


def _param_types(proto: str) -> list[str]:
    """The C types of a prototype's parameters (``const P *x`` -> ``const P *``)."""
    params = re.fullmatch(r"[^(]*\((.*)\)", proto).group(1).split(",")
    return [re.sub(r"\s*\w+$", "", p.strip()).replace(" *", " *") for p in params]


def _dispatch(e: Entry) -> list[str]:
    """The per-dtype macros of a typed entry: ``FASTLSM_DTYPES_<name>(X)`` (``X(S, P, R,
    DT)`` per dtype, to instantiate a hand-written wrapper), ``KID_<name>(dt)`` (the entry
    id of a ``DT_*`` value) and ``KCALL_<name>(dt, fn, ...)`` (a call through its type)."""
    *rest, last = e.dtypes
    name = e.name
    kid = f"K_{name}_{last.suffix}"
    call = f"(({name}_{last.suffix}_fn)(fn))(__VA_ARGS__)"
    for d in reversed(rest):
        kid = f"(dt) == DT_{d.suffix.upper()} ? K_{name}_{d.suffix} : {kid}"
        call = f"(dt) == DT_{d.suffix.upper()} ? (({name}_{d.suffix}_fn)(fn))(__VA_ARGS__) : {call}"
    return [f"#define FASTLSM_DTYPES_{name}(X) " + " ".join(
                f"X({d.suffix}, {d.P}, {d.R}, DT_{d.suffix.upper()})" for d in e.dtypes),
            f"#define KID_{name}(dt) ({kid})", f"#define KCALL_{name}(dt, fn, ...) ({call})"]


def _constants() -> list[str]:
    """``#define`` s the C wrappers share with the kernels (one source: the kernel modules),
    and each sampling parameter's names and range in words, by column (the messages of
    :func:`fastlsm._kernels.sampling_params.check_params` results)."""
    from ._build import c_string as c_str

    names = ("NPARAM", "P_T", "P_K", "P_P", "P_MINP", "P_TYP", "P_REP", "P_FREQ", "P_PRES",
             "OK", "NO_TOKEN", "BAD_VALUE")
    return [f"#define SAMPLE_{n} {int(getattr(_samp, n))}" for n in names] + [
        f"#define SAMPLE_NEUTRAL {float(_sp.NEUTRAL)!r}",
        "static const struct { const char *name, *array, *what; } sample_param_names[] = {"
        + ", ".join(f"{{{c_str(n)}, {c_str(a)}, {c_str(w)}}}"
                    for _, n, a, w in sorted(_sp.PARAMS)) + "};"]


def c_table() -> str:
    """C text pasted before ``_capi.c``: public prototypes, entry enum, names, typedefs, the
    per-dtype instantiation macros and the constants shared with the kernels."""
    keys, wrappers = [], []
    lines = ["/* Generated from fastlsm/capi/_entries.py ENTRIES: do not edit. */",
             "#include <stdint.h>", '#include "fastlsm.h"']
    lines += [f"FASTLSM_API {p};" for p in public_prototypes()]
    lines += [f"#define DT_{d.suffix.upper()} {d.code}" for d in ALL]
    for e in ENTRIES:
        for key, dt in _keyed(e):
            keys.append(key)
            if e.wrap == "rows":
                x, out = _param_types(_expand(e.public[0], dt))[:2]
                elementwise = int(e.template is rows_out)
                wrappers.append(f"ROWS_ENTRY({e.name}, {dt.suffix}, {x}, {out}, {elementwise})")
            ret, params = re.fullmatch(r"(\w+) \((.*)\)", _expand(e.csig, dt)).groups()
            lines.append(f"typedef {ret} (*{key}_fn)({params});")
        if e.dtypes:
            lines += _dispatch(e)
    lines.append("enum { " + ", ".join(f"K_{k}" for k in keys) + ", E_COUNT };")
    lines.append("static const char *const entry_names[E_COUNT] = {"
                 + ", ".join(f'"{k}"' for k in keys) + "};")
    lines.append("#define FASTLSM_ROWS_WRAPPERS " + " ".join(wrappers))
    lines += _constants()
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
