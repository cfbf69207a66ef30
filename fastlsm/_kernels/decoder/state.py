"""The decoder's state: one declarative table of named arrays over two caller-owned buffers.

The decoder is a state machine over caller-allocated memory, so that Python and C drive the
very same compiled code: ``istate`` (int64) holds a header (``ST_*``) then the int fields,
``fstate`` (float64) the float fields, each field a C-contiguous array at an offset. The
table :data:`FIELDS` (name, dtype, shape, meaning) is the only description of that memory:

- :func:`beam_search_layout` derives every offset and extent from it, once per call, into a
  ``layout`` array (``layout[L_<NAME>]`` the offset of field NAME in its buffer,
  ``layout[L_INT_SIZE]`` / ``layout[L_FLOAT_SIZE]`` the lengths to allocate,
  ``layout[L_SHAPES + 3 * L_<NAME> + j]`` its extent ``j``, 1 past its rank);
- :func:`state_views` turns the layout into a :data:`DecoderState` of named array views,
  which the kernels use (``st.seqs[r, t]``); hosts (Python, C) read the few fields they
  need (``seqs``, ``parents``) through the same ``layout``.

Shapes are written with the dimensions of :data:`Dims`: ``batch`` B, ``beams`` K,
``prompt_len`` L, ``max_len`` M = L + max_new_tokens, ``max_new`` G, ``rows`` N = B * K,
``cands`` C candidates per batch item and step (transformers: max(2, 1 + n_eos) * K),
``hyps`` H finished hypotheses kept per batch item (round(K * patience)), ``spec``
S = 2 * M + n_eos tokens with a ban or a penalty per row and step.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..._jit import kernel
from .config import (
    CFG_BATCH,
    CFG_BEAMS,
    CFG_CANDIDATES,
    CFG_MAX_HYPS,
    CFG_MAX_LEN,
    CFG_NUM_EOS,
    CFG_PROMPT_LEN,
    CFG_SIZE,
    FCFG_SIZE,
)

Dims = namedtuple(
    "Dims", ["batch", "beams", "prompt_len", "max_len", "max_new", "rows", "cands", "hyps",
             "spec"])
"""The sizes a field's shape is written in (see the module docstring)."""

FIELDS = (
    # name           dtype      shape                     meaning
    ("seqs",         "int64",   "rows, max_len",          "running sequences, prompt included"),
    ("seqs_tmp",     "int64",   "rows, max_len",          "scratch: the next step's sequences"),
    ("parents",      "int64",   "rows",                   "row each beam continues (-1: start)"),
    ("hyp_id",       "int64",   "batch, hyps",            "finished, best first: arrival*H+slot"),
    ("hyp_tok",      "int64",   "batch, hyps, max_new",   "generated tokens, by slot"),
    ("hyp_len",      "int64",   "batch, hyps",            "generated lengths (EOS in), by slot"),
    ("hyp_count",    "int64",   "batch",                  "number of finished hypotheses"),
    ("done",         "int64",   "batch",                  "1 once the batch item cannot improve"),
    ("row_n",        "int64",   "rows",                   "scratch: candidates of each row"),
    ("row_tok",      "int64",   "rows, cands",            "scratch: their tokens"),
    ("cand_tok",     "int64",   "batch, cands",           "scratch: a batch item's candidates"),
    ("cand_beam",    "int64",   "batch, cands",           "scratch: their beams"),
    ("spec_tok",     "int64",   "rows, spec",             "scratch: banned/penalized tokens"),
    ("spec_kind",    "int64",   "rows, spec",             "scratch: ban or penalty"),
    ("beam_scores",  "float64", "rows",                   "running scores (sum of log-probs)"),
    ("run_logp",     "float64", "rows, max_new",          "per-token log-probs of the beams"),
    ("run_logp_tmp", "float64", "rows, max_new",          "scratch: the next step's"),
    ("hyp_score",    "float64", "batch, hyps",            "finished scores, ranked with hyp_id"),
    ("hyp_logp",     "float64", "batch, hyps, max_new",   "per-token log-probs, by slot"),
    ("row_val",      "float64", "rows, cands",            "scratch: each row's candidate logps"),
    ("cand_score",   "float64", "batch, cands",           "scratch: a batch item's candidates"),
    ("cand_logp",    "float64", "batch, cands",           "scratch: their log-probs"),
    ("spec_val",     "float64", "rows, spec",             "scratch: banned/penalized logits"),
)
"""(name, dtype, shape, meaning) of every state array, in buffer order."""

NAMES = tuple(f[0] for f in FIELDS)
F = namedtuple("Field", NAMES)(*range(len(FIELDS)))
"""Field indices by name (``F.seqs``): ``layout[F.seqs]`` is the offset of ``seqs`` (C sees
the same numbers as ``BEAM_L_SEQS``, ... see :func:`fastlsm._kernels.decoder.c_constants`)."""
L_INT_SIZE = len(FIELDS)  # layout[L_INT_SIZE]: length of istate
L_FLOAT_SIZE = L_INT_SIZE + 1  # layout[L_FLOAT_SIZE]: length of fstate
L_SHAPES = L_FLOAT_SIZE + 1  # layout[L_SHAPES + 3 * field + j]: extent j of the field
LAYOUT_SIZE = L_SHAPES + 3 * len(FIELDS)

_FLOAT = np.array([dtype == "float64" for _, dtype, _, _ in FIELDS], np.bool_)
_ONE = len(Dims._fields)  # index of the constant extent 1 in a dims vector
_SHAPE = np.array([[Dims._fields.index(d.strip()) for d in shape.split(",")]
                   + [_ONE] * (3 - len(shape.split(","))) for _, _, shape, _ in FIELDS],
                  np.int64)

# istate header
ST_CUR_LEN = 0  # current sequence length (prompt included)
ST_STATUS = 1  # last status returned
ST_BAD_ROW = 2  # row b*K+k of the logits that had NaN/+inf (status BEAM_BAD_LOGITS)
ST_STEPS = 3  # number of completed advance calls
ST_VOCAB = 4  # vocabulary size seen at the first step (later steps must match)
HEADER = 8

# status codes (returned by init/advance/finalize and kept in istate[ST_STATUS])
BEAM_RUNNING = 0  # call the model and advance again
BEAM_DONE = 1  # search finished: call beam_search_finalize
BEAM_BAD_LOGITS = 2  # a logits row had NaN or +inf (row in istate[ST_BAD_ROW]); state unchanged
BEAM_BAD_SHAPE = 3  # buffers too small, logits of the wrong shape, or C > K * V
BEAM_NOT_RUNNING = 4  # advance called after the search finished
BEAM_BAD_MASK = 5  # a token bitmask row allows no token (row in istate[ST_BAD_ROW]); unchanged

DecoderState = namedtuple("DecoderState", NAMES)
"""Named views of the state arrays (:func:`state_views`)."""


@kernel
def dims(cfg):
    """The :data:`Dims` of a packed configuration."""
    nb = cfg[CFG_BATCH]
    nk = cfg[CFG_BEAMS]
    lp = cfg[CFG_PROMPT_LEN]
    ml = cfg[CFG_MAX_LEN]
    return Dims(batch=nb, beams=nk, prompt_len=lp, max_len=ml, max_new=ml - lp, rows=nb * nk,
                cands=cfg[CFG_CANDIDATES], hyps=cfg[CFG_MAX_HYPS],
                spec=2 * ml + cfg[CFG_NUM_EOS])


@kernel(entry=True)
def beam_search_layout(cfg, layout):
    """Offsets and extents of the state arrays: ``layout`` int64 ``[LAYOUT_SIZE]``, filled.

    See the module docstring for its contents. Returns 0, or BEAM_BAD_SHAPE for an invalid
    configuration (``layout`` then unspecified).
    """
    if cfg.shape[0] < CFG_SIZE or cfg[CFG_NUM_EOS] < 0 or cfg.shape[0] < CFG_SIZE + cfg[
            CFG_NUM_EOS]:
        return np.int64(BEAM_BAD_SHAPE)
    d = dims(cfg)
    if (d.batch < 1 or d.beams < 1 or d.prompt_len < 0 or d.max_new < 1 or d.cands < d.beams
            or d.hyps < 1):
        return np.int64(BEAM_BAD_SHAPE)
    extent = np.ones(_ONE + 1, np.int64)
    for j in range(_ONE):
        extent[j] = d[j]
    size_i = np.int64(HEADER)
    size_f = np.int64(0)
    for f in range(_SHAPE.shape[0]):
        n = np.int64(1)
        for j in range(3):
            e = extent[_SHAPE[f, j]]
            layout[L_SHAPES + 3 * f + j] = e
            n *= e
        if _FLOAT[f]:
            layout[f] = size_f
            size_f += n
        else:
            layout[f] = size_i
            size_i += n
    layout[L_INT_SIZE] = size_i
    layout[L_FLOAT_SIZE] = size_f
    return np.int64(0)


@kernel
def _view1(buf, lay, f):
    o = lay[f]
    return buf[o:o + lay[L_SHAPES + 3 * f]]


@kernel
def _view2(buf, lay, f):
    o = lay[f]
    a = lay[L_SHAPES + 3 * f]
    b = lay[L_SHAPES + 3 * f + 1]
    return buf[o:o + a * b].reshape((a, b))


@kernel
def _view3(buf, lay, f):
    o = lay[f]
    a = lay[L_SHAPES + 3 * f]
    b = lay[L_SHAPES + 3 * f + 1]
    c = lay[L_SHAPES + 3 * f + 2]
    return buf[o:o + a * b * c].reshape((a, b, c))


@kernel
def state_views(lay, fst, ist):
    """The :data:`DecoderState` over ``fst``/``ist`` laid out by ``lay`` (ranks as FIELDS)."""
    return DecoderState(
        seqs=_view2(ist, lay, F.seqs),
        seqs_tmp=_view2(ist, lay, F.seqs_tmp),
        parents=_view1(ist, lay, F.parents),
        hyp_id=_view2(ist, lay, F.hyp_id),
        hyp_tok=_view3(ist, lay, F.hyp_tok),
        hyp_len=_view2(ist, lay, F.hyp_len),
        hyp_count=_view1(ist, lay, F.hyp_count),
        done=_view1(ist, lay, F.done),
        row_n=_view1(ist, lay, F.row_n),
        row_tok=_view2(ist, lay, F.row_tok),
        cand_tok=_view2(ist, lay, F.cand_tok),
        cand_beam=_view2(ist, lay, F.cand_beam),
        spec_tok=_view2(ist, lay, F.spec_tok),
        spec_kind=_view2(ist, lay, F.spec_kind),
        beam_scores=_view1(fst, lay, F.beam_scores),
        run_logp=_view2(fst, lay, F.run_logp),
        run_logp_tmp=_view2(fst, lay, F.run_logp_tmp),
        hyp_score=_view2(fst, lay, F.hyp_score),
        hyp_logp=_view3(fst, lay, F.hyp_logp),
        row_val=_view2(fst, lay, F.row_val),
        cand_score=_view2(fst, lay, F.cand_score),
        cand_logp=_view2(fst, lay, F.cand_logp),
        spec_val=_view2(fst, lay, F.spec_val),
    )


@kernel
def checked_layout(cfg, fcfg, fst, ist):
    """``(ok, layout)``: ok when ``cfg`` is valid and ``fcfg``, ``fst``, ``ist`` are large
    enough for it."""
    lay = np.empty(LAYOUT_SIZE, np.int64)
    if beam_search_layout(cfg, lay) != 0:
        return False, lay
    ok = (fcfg.shape[0] >= FCFG_SIZE and ist.shape[0] >= lay[L_INT_SIZE]
          and fst.shape[0] >= lay[L_FLOAT_SIZE])
    return ok, lay
